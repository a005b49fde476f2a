"""Validation: every raw sample ends either valid or quarantined with a reason, never dropped.

Two layers:
  1. the pandera model `CellCycleSample`, run lazily so *all* failures are collected (types,
     nulls, allowed step types, non-negative time...);
  2. physical rules that need the cell's metadata: voltage inside the chemistry window with a
     margin, |current| plausible for the rated capacity, temperature in [-40, 90] degC, time
     never going backwards within the cell's test, no duplicate (cell, cycle, time) samples.

A row failing several rules is quarantined once, under the first rule in `RULE_ORDER`, so the
row accounting `raw = valid + quarantined` holds exactly.

The seed's data rules on sampling gaps and outliers (`science.sample_quality`) run here too:
gaps of under 5 samples are interpolated (and every interpolated value is recorded in the flag
ledger, `ValidationResult.flags`), cycles with over 10 % of their samples missing are quarantined
whole (`cycle_incomplete`), and 3-sigma outliers are flagged in the ledger, never dropped.

Speed (benchmarks/ingest.py): no Python loop over rows and no copy of a clean frame. Pandera
validates only the rows that a vectorized screen of the schema's own checks (`_schema_suspects`)
says can fail, so its failure cases are the same as over the whole frame; the outlier medians
run on array views (`sample_quality`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pandera.errors

from battery_pipeline.science import sample_quality
from battery_pipeline.science.schema import (
    QUARANTINE_COLUMNS,
    REQUIRED_MEASUREMENTS,
    SAMPLE_COLUMNS,
    STRING_COLUMNS,
    TEMPERATURE_RANGE_C,
    CellCycleSample,
    column_differences,
    float_values,
)

RULE_ORDER = (
    "schema",
    "missing_value",
    "voltage_out_of_window",
    "current_implausible",
    "temperature_out_of_range",
    "duplicate_sample",
    "time_not_monotonic",
    "cycle_incomplete",
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
    # The seed's data rules: interpolate gaps under 5 points, drop cycles with over 10 % missing,
    # flag 3-sigma outliers (`science.sample_quality`). 0 points = never interpolate.
    max_gap_points: int = 4
    max_missing_share: float = 0.10
    outlier_sigma: float = 3.0


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
    # Ledger of values in `valid` that are not plain measurements: `interpolated` (filled gap) or
    # `outlier` (kept, flagged); columns `sample_quality.FLAG_COLUMNS`.
    flags: pd.DataFrame = None
    # Cycles with a missing sample: rows, missing rows, share, and whether the cycle was dropped.
    missing_by_cycle: pd.DataFrame = None

    def __post_init__(self):
        if self.flags is None:
            self.flags = sample_quality.empty_flags()
        if self.missing_by_cycle is None:
            self.missing_by_cycle = sample_quality.missing_share_by_cycle(
                np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
            ).assign(dropped=pd.Series(dtype=bool))

    def counts_by_reason(self) -> dict[str, int]:
        if self.quarantined.empty:
            return {}
        return {k: int(v) for k, v in self.quarantined["reason_code"].value_counts().items()}

    def flag_counts(self) -> dict[str, dict[str, int]]:
        """{flag: {channel: count}} of the ledger, e.g. {"interpolated": {"voltage_v": 3}}."""
        if self.flags.empty:
            return {}
        counts = self.flags.groupby(["flag", "channel"]).size()
        out: dict[str, dict[str, int]] = {}
        for (flag, channel), count in counts.items():
            out.setdefault(str(flag), {})[str(channel)] = int(count)
        return out

    def dropped_cycles(self) -> list[int]:
        table = self.missing_by_cycle
        return [int(c) for c in table.loc[table["dropped"].astype(bool), "cycle_number"]]


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
    _require_unique_provenance(frame)

    time_s = float_values(frame, "time_s")
    voltage = float_values(frame, "voltage_v")
    current = float_values(frame, "current_a")
    temperature = float_values(frame, "temperature_c")
    cycle = frame["cycle_number"].to_numpy()
    step = frame["step_index"].to_numpy()

    # Sampling gaps (seed's data rules): which cycles are too incomplete to keep, which short
    # gaps of the others can be interpolated. Decided on the raw values; `frame` is never changed.
    judged = rule_of_row == 0  # the schema has not rejected the row
    incomplete = ~np.isfinite(time_s) | ~np.isfinite(voltage) | ~np.isfinite(current)
    missing_by_cycle = sample_quality.missing_share_by_cycle(cycle, incomplete)
    missing_by_cycle["dropped"] = missing_by_cycle["missing_share"] > rules.max_missing_share
    dropped_cycles = missing_by_cycle.loc[missing_by_cycle["dropped"], "cycle_number"].to_numpy()
    in_dropped_cycle = np.isin(cycle, dropped_cycles) if len(dropped_cycles) else np.zeros(n, dtype=bool)
    segment = sample_quality.segment_breaks(cycle, step)
    blocked = ~judged | ~np.isfinite(time_s) | in_dropped_cycle
    gap_rows, gap_left, gap_right, gap_length = sample_quality.fillable_runs(
        incomplete, blocked, time_s, segment, rules.max_gap_points
    )
    fillable = np.zeros(n, dtype=bool)
    fillable[gap_rows] = True

    for column, values in (("time_s", time_s), ("voltage_v", voltage), ("current_a", current)):
        reject(~np.isfinite(values) & ~fillable, "missing_value", f"{column} is missing or not a number")

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

    # An interpolation is only as good as its two measured ends: a gap whose end sample was
    # rejected by a rule above is quarantined after all.
    if len(gap_rows):
        bad_end = (rule_of_row[gap_left] != 0) | (rule_of_row[gap_right] != 0)
        undone = np.zeros(n, dtype=bool)
        undone[gap_rows[bad_end]] = True
        ends = dict(zip(gap_rows[bad_end], zip(gap_left[bad_end], gap_right[bad_end])))
        reject(
            undone,
            "missing_value",
            lambda rows: [
                f"a measurement is missing; the gap could not be interpolated because sample "
                f"{_row_name(frame, ends[r][0])} or {_row_name(frame, ends[r][1])} around it was rejected"
                for r in np.flatnonzero(rows)
            ],
        )
    share_of = dict(zip(missing_by_cycle["cycle_number"], zip(missing_by_cycle["missing_rows"], missing_by_cycle["rows"])))
    reject(
        in_dropped_cycle,
        "cycle_incomplete",
        lambda rows: [
            f"cycle {c}: {share_of[c][0]} of {share_of[c][1]} samples miss a measurement "
            f"({share_of[c][0] / share_of[c][1]:.1%} > {rules.max_missing_share:.0%}): cycle dropped"
            for c in cycle[rows]
        ],
    )

    rejected = rule_of_row != 0
    fills = _gap_fills(
        {"voltage_v": voltage, "current_a": current}, time_s, gap_rows, gap_left, gap_right, gap_length, rejected
    )
    fills += _temperature_fills(temperature, time_s, segment, blocked, rejected, rules.max_gap_points)
    if not rejected.any() and not fills:  # the common case: no copy of a large frame
        # columns already in order (the readers' contract): a new frame on the same arrays
        valid = frame.copy(deep=False) if list(frame.columns) == SAMPLE_COLUMNS else frame[SAMPLE_COLUMNS]
        flags = _flags(valid, None, None, fills, rules, segment)
        return ValidationResult(valid=valid, quarantined=_empty_quarantine(frame), flags=flags,
                                missing_by_cycle=missing_by_cycle)
    if not rejected.any():
        valid = _coerce(frame[SAMPLE_COLUMNS].copy())
        for fill in fills:
            valid.iloc[fill.rows, valid.columns.get_loc(fill.column)] = fill.values
        return ValidationResult(valid=valid, quarantined=_empty_quarantine(frame),
                                flags=_flags(valid, np.arange(n), np.arange(n), fills, rules), missing_by_cycle=missing_by_cycle)
    reason = np.empty(n, dtype=object)
    for rule_id, batches in messages_of_rule.items():
        for rows, text in batches:
            reason[rows] = text
    rejected_rows = np.flatnonzero(rejected)
    valid = _coerce(frame.loc[~rejected, SAMPLE_COLUMNS].reset_index(drop=True))
    position_in_valid = np.cumsum(~rejected) - 1
    for fill in fills:
        valid.iloc[position_in_valid[fill.rows], valid.columns.get_loc(fill.column)] = fill.values
    quarantined = frame.iloc[rejected_rows].copy()
    quarantined["reason_code"] = np.asarray(RULE_ORDER, dtype=object)[rule_of_row[rejected_rows] - 1]
    quarantined["reason"] = reason[rejected_rows]
    return ValidationResult(
        valid=valid,
        quarantined=quarantined[QUARANTINE_COLUMNS].reset_index(drop=True),
        flags=_flags(valid, position_in_valid, np.flatnonzero(~rejected), fills, rules),
        missing_by_cycle=missing_by_cycle,
    )


def _row_name(frame: pd.DataFrame, position: int) -> str:
    return f"{frame['source_file'].iat[position]}:{int(frame['source_row'].iat[position])}"


def _gap_fills(channels, time_s, rows, left, right, length, rejected) -> list[sample_quality.GapFill]:
    """Interpolated values of the required channels for the gap rows that end valid."""
    keep = ~rejected[rows]
    rows, left, right, length = rows[keep], left[keep], right[keep], length[keep]
    fills = []
    for column, values in channels.items():
        missing = ~np.isfinite(values[rows])
        if missing.any():
            r, lft, rgt = rows[missing], left[missing], right[missing]
            fills.append(sample_quality.GapFill(column, r, sample_quality.interpolate(values, time_s, r, lft, rgt), lft, rgt, length[missing]))
    return fills


def _temperature_fills(temperature, time_s, segment, blocked, rejected, max_gap) -> list[sample_quality.GapFill]:
    """Short temperature gaps between two valid measured temperatures of the same step."""
    hole = ~np.isfinite(temperature)
    if not hole.any() or hole.all():
        return []
    rows, left, right, length = sample_quality.fillable_runs(hole, blocked, time_s, segment, max_gap)
    keep = ~rejected[rows] & ~rejected[left] & ~rejected[right]
    if not keep.any():
        return []
    rows, left, right, length = rows[keep], left[keep], right[keep], length[keep]
    return [sample_quality.GapFill("temperature_c", rows, sample_quality.interpolate(temperature, time_s, rows, left, right), left, right, length)]


def _flags(valid: pd.DataFrame, position_in_valid: np.ndarray, original_position: np.ndarray, fills,
           rules: ValidationRules, segment: np.ndarray | None = None) -> pd.DataFrame:
    """The ledger: every interpolated value, then every 3-sigma outlier of the valid samples.
    `position_in_valid[i]`: where raw row i is in `valid`; `original_position[j]`: the raw row of
    valid row j."""
    parts = []
    if position_in_valid is None:  # nothing rejected: raw row i is valid row i
        position_in_valid = original_position = np.arange(len(valid))
    interpolated = np.zeros(len(valid), dtype=bool) if fills else None
    for fill in fills:
        rows = position_in_valid[fill.rows]
        interpolated[rows] = True
        detail = _fill_details(valid, position_in_valid, fill)
        parts.append(sample_quality.flag_frame(valid, rows, "interpolated", fill.column, fill.values,
                                               np.full(len(rows), np.nan), detail))
    if len(valid):
        # a rejected sample between two valid ones breaks the segment: its neighbours were not
        # logged next to each other
        if segment is None:  # (given: the raw frame's, when nothing was rejected)
            segment = sample_quality.segment_breaks(valid["cycle_number"].to_numpy(), valid["step_index"].to_numpy())
        if len(original_position) and original_position[-1] != len(original_position) - 1:
            after_hole = np.zeros(len(valid), dtype=bool)
            after_hole[1:] = np.diff(original_position) > 1
            segment += np.cumsum(after_hole)
        work = (np.empty(len(valid)), np.empty(len(valid)))  # scratch shared by the channels
        for column in sample_quality.OUTLIER_CHANNELS:
            values = float_values(valid, column)
            rows, reference, score, sigma = sample_quality.outliers(
                values, segment, rules.outlier_sigma, sample_quality.SIGMA_FLOOR[column], exclude=interpolated,
                work=work,
            )
            if len(rows):
                detail = [f"{s:+.1f} sigma from the median of the 5 samples around it (sigma {sigma:.3g})" for s in score]
                parts.append(sample_quality.flag_frame(valid, rows, "outlier", column, values[rows], reference, detail))
    if not parts:
        return sample_quality.empty_flags()
    return pd.concat(parts, ignore_index=True)


def _fill_details(valid: pd.DataFrame, position_in_valid: np.ndarray, fill) -> list[str]:
    # The end samples are valid (a gap with a rejected end is quarantined), so they are in `valid`.
    files = valid["source_file"].astype(str).to_numpy()
    source_rows = valid["source_row"].to_numpy()
    a, b = position_in_valid[fill.left], position_in_valid[fill.right]
    return [
        f"interpolated linearly in time between {files[i]}:{source_rows[i]} and {files[j]}:{source_rows[j]} ({k}-point gap)"
        for i, j, k in zip(a, b, fill.gap_points)
    ]


_SCHEMA = CellCycleSample.to_schema()
_LAYOUTS_PASSED: set[tuple] = set()  # column layouts pandera accepted with no row to judge


def _check_fails(check, values: np.ndarray) -> np.ndarray | None:
    """Where a pandera row check of the schema fails on non-null `values` (None: a check this
    screen does not know, so pandera must see every row)."""
    stats = check.statistics
    if check.name == "greater_than_or_equal_to":
        return ~(values >= stats["min_value"])
    if check.name == "isin":
        return ~np.isin(values, list(stats["allowed_values"]))
    if check.name == "str_matches":
        pattern = re.compile(stats["pattern"])
        return np.array([pattern.match(v) is None for v in values], dtype=bool)
    return None


def _schema_suspects(frame: pd.DataFrame) -> np.ndarray | None:
    """Rows that may fail a row-level check of `CellCycleSample` (a superset: pandera judges
    them), from vectorized checks on the numbers and on the categories of the text columns. None
    when a column is not of the dtype the screen expects, or a check is unknown: then pandera
    validates every row itself."""
    suspect = np.zeros(len(frame), dtype=bool)
    for name, column in _SCHEMA.columns.items():
        series = frame[name]
        if series.dtype == object:
            # text as stored (DuckDB gives object columns): judged through its distinct values,
            # as a categorical's categories are
            codes, uniques = pd.factorize(series, use_na_sentinel=True)
            series = pd.Series(pd.Categorical.from_codes(codes, categories=uniques), index=series.index)
        if isinstance(series.dtype, pd.CategoricalDtype):
            categories = series.cat.categories
            if categories.dtype != object or not all(isinstance(c, str) for c in categories):
                return None
            bad = np.zeros(len(categories) + 1, dtype=bool)  # the last entry: code -1 (null)
            values = categories.to_numpy()
            for check in column.checks:
                fails = _check_fails(check, values)
                if fails is None:
                    return None
                bad[:-1] |= fails
            codes = series.cat.codes.to_numpy()
            if not column.nullable and (codes < 0).any():
                bad[-1] = True
            if bad.any():
                suspect |= bad[codes]
        elif str(series.dtype) == str(column.dtype) and series.dtype.kind in "if":
            values = series.to_numpy()
            null = np.isnan(values) if values.dtype.kind == "f" else None
            if null is not None and not column.nullable:
                suspect |= null
            for check in column.checks:
                fails = _check_fails(check, values)
                if fails is None:
                    return None
                suspect |= fails if null is None else fails & ~null
        else:
            return None
    return suspect


def _failure_cases(frame: pd.DataFrame) -> pd.DataFrame | None:
    # pandera over millions of rows is the slow part of validation: a vectorized screen picks the
    # rows that can fail, and pandera validates just those (with zero rows it still checks the
    # columns' dtypes and order), so the failure cases are pandera's own, row for row
    suspects = _schema_suspects(frame)
    layout = None
    if suspects is not None:
        frame = frame.iloc[np.flatnonzero(suspects)]
        if len(frame) == 0:
            # with no row to judge, pandera's verdict is a function of the column names and dtypes
            # (categoricals: their categories are text, `_schema_suspects` made sure)
            layout = tuple((name, "category" if isinstance(d, pd.CategoricalDtype) else str(d))
                           for name, d in frame.dtypes.items())
            if layout in _LAYOUTS_PASSED:
                return None
    try:
        # inplace: pandera would otherwise copy (and consolidate) the whole frame first
        CellCycleSample.validate(frame, lazy=True, inplace=True)
        if layout is not None:
            _LAYOUTS_PASSED.add(layout)
        return None
    except pandera.errors.SchemaErrors as errors:
        return errors.failure_cases


def schema_failure_cases(frame: pd.DataFrame) -> pd.DataFrame | None:
    """pandera's failure cases of `CellCycleSample` on the frame (None when it conforms), at the
    cost of the vectorized screen on conforming rows: what the `schema_conformance` check runs
    on the stored rows."""
    return _failure_cases(frame)


def _require_unique_provenance(frame: pd.DataFrame) -> None:
    """(source_file, source_row) names one sample: a rejected sample is found again by it, and the
    warehouse's validated_samples view takes the quarantined rows out of the raw ones by it."""
    files = frame["source_file"].cat.codes.to_numpy()
    rows = frame["source_row"].to_numpy()
    new_file = files[1:] != files[:-1]
    files_present = np.count_nonzero(np.bincount(files.astype(np.int64) + 1)) if len(files) else 0
    one_block_per_file = np.count_nonzero(new_file) + 1 == files_present
    if one_block_per_file and ((rows[1:] > rows[:-1]) | new_file).all():  # the readers' usual order
        return
    repeated = frame.duplicated(["source_file", "source_row"], keep=False)
    if repeated.any():
        first = frame.loc[repeated].iloc[0]
        raise FrameShapeError(
            f"{int(repeated.sum())} samples share their source_file and source_row with another, e.g. "
            f"{first['source_file']}:{int(first['source_row'])}: each sample needs its own row of its "
            "file (a reader bug)"
        )


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


def _usable(usable: np.ndarray) -> np.ndarray:
    """Positions of the usable rows; a range (no index arrays) when all are."""
    return np.arange(len(usable)) if usable.all() else np.flatnonzero(usable)


def _duplicates(cycle: np.ndarray, time_s: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """Later copies of a (cycle, time) pair seen before among usable rows."""
    idx = _usable(usable)
    out = np.zeros(len(cycle), dtype=bool)
    if len(idx) < 2:
        return out
    every = len(idx) == len(cycle)
    c, t = (cycle, time_s) if every else (cycle[idx], time_s[idx])
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
    idx = _usable(usable)
    backwards = np.zeros(len(time_s), dtype=bool)
    previous_max = np.full(len(time_s), np.nan)
    if len(idx) < 2:
        return backwards, previous_max
    t = time_s if len(idx) == len(time_s) else time_s[idx]
    running = np.maximum.accumulate(t)
    bad = np.flatnonzero(t[1:] < running[:-1]) + 1  # below the maximum of the rows before it
    backwards[idx[bad]] = True
    previous_max[idx[bad]] = running[bad - 1]
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
