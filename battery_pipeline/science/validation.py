"""Validation: every raw sample ends either valid or quarantined with a reason, never dropped.

Two layers:
  1. the pandera model `CellCycleSample`, run lazily so *all* failures are collected (types,
     nulls, allowed step types, non-negative time...);
  2. physical rules that need the cell's metadata: voltage inside the chemistry window with a
     margin, |current| plausible for the rated capacity, temperature in [-40, 90] degC, time
     never going backwards within the cell's test, no duplicate (cell, cycle, time) samples.

A row failing several rules is quarantined once, under the first rule in `RULE_ORDER`, so the
row accounting `raw = valid + quarantined` holds exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pandera.errors

from battery_pipeline.science.schema import (
    QUARANTINE_COLUMNS,
    REQUIRED_MEASUREMENTS,
    SAMPLE_COLUMNS,
    STRING_COLUMNS,
    TEMPERATURE_RANGE_C,
    CellCycleSample,
    column_differences,
)

RULE_ORDER = (
    "schema",
    "missing_value",
    "voltage_out_of_window",
    "current_implausible",
    "temperature_out_of_range",
    "duplicate_sample",
    "time_not_monotonic",
)


@dataclass(frozen=True)
class ValidationRules:
    # Terminal voltage legitimately leaves the rated window for a moment (IR drop at the end of
    # a high-rate discharge, overshoot at CV start); beyond these margins it is a sensor or unit
    # error.
    voltage_margin_low_v: float = 0.2
    voltage_margin_high_v: float = 0.1
    # Lab cells rarely see more than 10C; above 20C it is almost surely mA read as A.
    max_c_rate: float = 20.0
    temperature_range_c: tuple[float, float] = TEMPERATURE_RANGE_C


@dataclass(frozen=True)
class CellLimits:
    voltage_min_v: float
    voltage_max_v: float
    nominal_capacity_ah: float | None = None
    max_abs_current_a: float | None = None

    @classmethod
    def from_record(cls, record: dict) -> CellLimits:
        def number(key):
            value = record.get(key)
            return None if value is None or pd.isna(value) else float(value)

        return cls(
            voltage_min_v=float(record["voltage_min_v"]),
            voltage_max_v=float(record["voltage_max_v"]),
            nominal_capacity_ah=number("nominal_capacity_ah"),
            max_abs_current_a=number("max_abs_current_a"),
        )

    def current_limit_a(self, rules: ValidationRules) -> float | None:
        if self.max_abs_current_a is not None:
            return self.max_abs_current_a
        if self.nominal_capacity_ah is not None:
            return rules.max_c_rate * self.nominal_capacity_ah
        return None


@dataclass
class ValidationResult:
    valid: pd.DataFrame
    quarantined: pd.DataFrame

    def counts_by_reason(self) -> dict[str, int]:
        if self.quarantined.empty:
            return {}
        return {k: int(v) for k, v in self.quarantined["reason_code"].value_counts().items()}


class FrameShapeError(ValueError):
    """The frame's columns themselves are wrong (a reader bug), so no row can be judged."""


def validate_samples(
    frame: pd.DataFrame, limits: CellLimits, rules: ValidationRules = ValidationRules()
) -> ValidationResult:
    # Categorical string columns let pandera check a 20 M-row frame on its few distinct values.
    if not isinstance(frame.index, pd.RangeIndex) or frame.index.start != 0:
        frame = frame.reset_index(drop=True)
    frame = as_categorical(frame)
    n = len(frame)
    # rule_of_row: 0 = valid, k = rejected by RULE_ORDER[k - 1]; int8 keeps 20 M rows cheap.
    rule_of_row = np.zeros(n, dtype=np.int8)
    messages_of_rule: dict[int, list[tuple[np.ndarray, object]]] = {}

    def reject(mask: np.ndarray, rule: str, messages) -> None:
        """Record `rule` for rows in `mask` that no earlier rule has rejected."""
        fresh = mask & (rule_of_row == 0)
        if not fresh.any():
            return
        rule_id = RULE_ORDER.index(rule) + 1
        rule_of_row[fresh] = rule_id
        rows = np.flatnonzero(fresh)
        text = messages(fresh) if callable(messages) else messages
        messages_of_rule.setdefault(rule_id, []).append((rows, text))

    _schema_failures(frame, reject)

    time_s = frame["time_s"].to_numpy(dtype="float64", na_value=np.nan)
    voltage = frame["voltage_v"].to_numpy(dtype="float64", na_value=np.nan)
    current = frame["current_a"].to_numpy(dtype="float64", na_value=np.nan)
    temperature = frame["temperature_c"].to_numpy(dtype="float64", na_value=np.nan)
    cycle = frame["cycle_number"].to_numpy()

    for column, values in (("time_s", time_s), ("voltage_v", voltage), ("current_a", current)):
        reject(~np.isfinite(values), "missing_value", f"{column} is missing or not a number")

    v_low = limits.voltage_min_v - rules.voltage_margin_low_v
    v_high = limits.voltage_max_v + rules.voltage_margin_high_v
    outside = (voltage < v_low) | (voltage > v_high)
    reject(
        outside,
        "voltage_out_of_window",
        lambda rows: [
            f"voltage_v={v:.4g} V outside [{v_low:.3g}, {v_high:.3g}] V "
            f"(window {limits.voltage_min_v:g}-{limits.voltage_max_v:g} V with margin)"
            for v in voltage[rows]
        ],
    )

    current_limit = limits.current_limit_a(rules)
    if current_limit is not None:
        reject(
            np.abs(current) > current_limit,
            "current_implausible",
            lambda rows: [
                f"|current_a|={abs(i):.4g} A exceeds {current_limit:.3g} A "
                f"({rules.max_c_rate:g}C of {limits.nominal_capacity_ah} Ah); mA read as A?"
                for i in current[rows]
            ],
        )

    t_low, t_high = rules.temperature_range_c
    reject(
        (temperature < t_low) | (temperature > t_high),
        "temperature_out_of_range",
        lambda rows: [
            f"temperature_c={t:.4g} degC outside [{t_low:g}, {t_high:g}] degC"
            for t in temperature[rows]
        ],
    )

    usable = rule_of_row == 0
    duplicate = _duplicates(cycle, time_s, usable)
    reject(duplicate, "duplicate_sample", "same (cell, cycle_number, time_s) as an earlier sample")

    usable = rule_of_row == 0
    backwards, previous_max = _time_going_backwards(time_s, usable)
    reject(
        backwards,
        "time_not_monotonic",
        lambda rows: [
            f"time_s={t:.6g} s is earlier than {m:.6g} s already seen in this test"
            for t, m in zip(time_s[rows], previous_max[rows])
        ],
    )

    rejected = rule_of_row != 0
    if not rejected.any():  # the common case: no copy of a large frame
        return ValidationResult(valid=frame[SAMPLE_COLUMNS], quarantined=_empty_quarantine(frame))
    reason = np.empty(n, dtype=object)
    for rule_id, batches in messages_of_rule.items():
        for rows, text in batches:
            reason[rows] = text
    rejected_rows = np.flatnonzero(rejected)
    valid = frame.loc[~rejected, SAMPLE_COLUMNS].reset_index(drop=True)
    quarantined = frame.iloc[rejected_rows].copy()
    quarantined["reason_code"] = np.asarray(RULE_ORDER, dtype=object)[rule_of_row[rejected_rows] - 1]
    quarantined["reason"] = reason[rejected_rows]
    return ValidationResult(
        valid=_coerce(valid), quarantined=quarantined[QUARANTINE_COLUMNS].reset_index(drop=True)
    )


def _failure_cases(frame: pd.DataFrame) -> pd.DataFrame | None:
    try:
        # inplace: pandera would otherwise copy (and consolidate) the whole frame first
        CellCycleSample.validate(frame, lazy=True, inplace=True)
        return None
    except pandera.errors.SchemaErrors as errors:
        return errors.failure_cases


def _schema_failures(frame: pd.DataFrame, reject) -> None:
    missing, extra = column_differences(frame)
    if missing or extra:
        raise FrameShapeError(f"sample frame columns wrong: missing {missing}, unexpected {extra}")
    n = len(frame)
    cases = _failure_cases(frame)
    if cases is None:
        return
    row_cases = cases[cases["index"].notna()]
    frame_cases = cases[cases["index"].isna()]
    # A column-level dtype failure means the frame, not a row, is wrong (a reader bug).
    dtype_cases = frame_cases[frame_cases["check"].astype(str).str.startswith("dtype")]
    if not dtype_cases.empty:
        detail = "; ".join(f"{r.column}: {r.check} got {r.failure_case}" for r in dtype_cases.itertuples())
        raise FrameShapeError(f"sample frame has wrong column types: {detail}")
    if row_cases.empty:
        return
    index = row_cases["index"].astype("int64").to_numpy()
    per_row = pd.DataFrame(
        {
            "column": row_cases["column"].astype(str).to_numpy(),
            "check": row_cases["check"].astype(str).to_numpy(),
            "message": (
                row_cases["column"].astype(str)
                + " fails "
                + row_cases["check"].astype(str)
                + " (value "
                + row_cases["failure_case"].astype(str)
                + ")"
            ).to_numpy(),
        },
        index=index,
    )
    per_row = per_row[~per_row.index.duplicated()]  # first failure per row
    # NaN in a measured column is reported by the clearer missing_value rule.
    null_in_measurement = per_row["column"].isin(REQUIRED_MEASUREMENTS) & per_row["check"].str.contains("null")
    per_row = per_row[~null_in_measurement]
    mask = np.zeros(n, dtype=bool)
    mask[per_row.index.to_numpy()] = True
    reject(mask, "schema", lambda rows: per_row["message"].reindex(np.flatnonzero(rows)).to_numpy())


def _duplicates(cycle: np.ndarray, time_s: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """Later copies of a (cycle, time) pair seen before among usable rows."""
    idx = np.flatnonzero(usable)
    out = np.zeros(len(cycle), dtype=bool)
    if len(idx) < 2:
        return out
    c, t = cycle[idx], time_s[idx]
    ordered = np.all((c[1:] > c[:-1]) | ((c[1:] == c[:-1]) & (t[1:] >= t[:-1])))
    if ordered:  # the usual case: O(n), duplicates are neighbours
        same = (c[1:] == c[:-1]) & (t[1:] == t[:-1])
        out[idx[1:][same]] = True
        return out
    dup = pd.DataFrame({"c": c, "t": t}).duplicated(keep="first").to_numpy()
    out[idx[dup]] = True
    return out


def _time_going_backwards(time_s: np.ndarray, usable: np.ndarray):
    """Usable rows whose time is below the running maximum of the usable rows before them."""
    idx = np.flatnonzero(usable)
    backwards = np.zeros(len(time_s), dtype=bool)
    previous_max = np.full(len(time_s), np.nan)
    if len(idx) < 2:
        return backwards, previous_max
    t = time_s[idx]
    running = np.maximum.accumulate(t)
    before = np.concatenate([[-np.inf], running[:-1]])
    bad = t < before
    backwards[idx[bad]] = True
    previous_max[idx[bad]] = before[bad]
    return backwards, previous_max


def as_categorical(frame: pd.DataFrame) -> pd.DataFrame:
    for column in STRING_COLUMNS:
        if column in frame and not isinstance(frame[column].dtype, pd.CategoricalDtype):
            frame[column] = frame[column].astype("category")
    return frame


def _empty_quarantine(frame: pd.DataFrame) -> pd.DataFrame:
    empty = frame.iloc[:0].copy()
    empty["reason_code"] = pd.Series(dtype=str)
    empty["reason"] = pd.Series(dtype=str)
    return empty[QUARANTINE_COLUMNS]


def _coerce(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype(
        {"cycle_number": "int64", "step_index": "int64", "source_row": "int64", "time_s": "float64"}
    )
