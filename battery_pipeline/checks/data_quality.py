"""Data-quality governance rules, as pure functions returning `AssetCheckResult`.

Pure, so tests call each one on a clean and a dirty input without running Dagster; the assets
call them on what they just stored. Every result's metadata shows what the rule found (counts,
worst offenders), so a failing check in the UI explains itself.
"""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import pandera.errors

from battery_pipeline.science.schema import SAMPLE_COLUMNS, CellCycleSample, column_differences

WORST_OFFENDERS = 10


def _table(frame: pd.DataFrame) -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.head(WORST_OFFENDERS).to_markdown(index=False) if len(frame) else "_none_")


def frame_shape_check(frame: pd.DataFrame, check_name: str = "raw_schema_conformance", asset: str = "raw_samples") -> dg.AssetCheckResult:
    """Columns and types exactly as the canonical schema (values are judged by validation)."""
    missing, extra = column_differences(frame)
    expected_types = {name: str(col.dtype) for name, col in CellCycleSample.to_schema().columns.items()}
    wrong_types = {}
    for name, expected in expected_types.items():
        if name in frame.columns:
            actual = frame[name].dtype
            ok = (
                (expected == "str" and (actual == object or isinstance(actual, pd.CategoricalDtype) or pd.api.types.is_string_dtype(actual)))
                or (expected == "int64" and actual == np.int64)
                or (expected == "float64" and actual == np.float64)
            )
            if not ok:
                wrong_types[name] = f"{actual} (expected {expected})"
    order_ok = [c for c in frame.columns if c in SAMPLE_COLUMNS] == [c for c in SAMPLE_COLUMNS if c in frame.columns]
    passed = not missing and not extra and not wrong_types and order_ok
    return dg.AssetCheckResult(
        check_name=check_name,
        asset_key=asset,
        passed=passed,
        metadata={
            "missing_columns": dg.MetadataValue.json(missing),
            "unexpected_columns": dg.MetadataValue.json(extra),
            "wrong_types": dg.MetadataValue.json(wrong_types),
            "column_order_ok": order_ok,
        },
    )


def schema_conformance_check(frame: pd.DataFrame) -> dg.AssetCheckResult:
    """Every validated row satisfies the pandera model (collecting all failures)."""
    try:
        CellCycleSample.validate(frame, lazy=True)
        failures = pd.DataFrame(columns=["column", "check", "failure_case", "index"])
    except pandera.errors.SchemaErrors as errors:
        failures = errors.failure_cases[["column", "check", "failure_case", "index"]]
    by_check = failures.groupby(["column", "check"], dropna=False).size() if len(failures) else pd.Series(dtype=int)
    return dg.AssetCheckResult(
        check_name="schema_conformance",
        asset_key="validated_samples",
        passed=len(failures) == 0,
        metadata={
            "rows_checked": len(frame),
            "failures": len(failures),
            "failures_by_rule": dg.MetadataValue.json({f"{c}:{k}": int(v) for (c, k), v in by_check.items()}),
            "worst_offenders": _table(failures.astype(str)),
        },
    )


def row_accounting_check(raw_rows: int, validated_rows: int, quarantined_rows: int) -> dg.AssetCheckResult:
    """Nothing lost: every raw row is either validated or quarantined, exactly once."""
    difference = raw_rows - validated_rows - quarantined_rows
    return dg.AssetCheckResult(
        check_name="row_accounting",
        asset_key="validated_samples",
        passed=difference == 0,
        metadata={
            "raw_rows": raw_rows,
            "validated_rows": validated_rows,
            "quarantined_rows": quarantined_rows,
            "unaccounted_rows": difference,
        },
        description=None if difference == 0 else f"{difference} raw rows are neither validated nor quarantined",
    )


def no_duplicates_check(frame: pd.DataFrame) -> dg.AssetCheckResult:
    """No two validated samples share (cell, cycle, time)."""
    keys = ["cell_id", "cycle_number", "time_s"]
    dup_mask = frame.duplicated(subset=keys, keep=False)
    groups = (
        frame.loc[dup_mask, keys].astype({"cell_id": str}).value_counts().reset_index(name="copies")
        if dup_mask.any()
        else pd.DataFrame(columns=[*keys, "copies"])
    )
    return dg.AssetCheckResult(
        check_name="no_duplicate_samples",
        asset_key="validated_samples",
        passed=not dup_mask.any(),
        metadata={"duplicated_keys": len(groups), "worst_offenders": _table(groups)},
    )


def cycle_continuity_check(cycle_numbers: pd.Series) -> dg.AssetCheckResult:
    """Cycle numbers form an unbroken run (a gap means a file or a cycle is missing)."""
    cycles = np.unique(cycle_numbers.to_numpy())
    gaps = []
    if len(cycles) > 1:
        steps = np.diff(cycles)
        for position in np.flatnonzero(steps > 1):
            gaps.append({"after_cycle": int(cycles[position]), "next_cycle": int(cycles[position + 1]), "missing": int(steps[position] - 1)})
    return dg.AssetCheckResult(
        check_name="cycle_numbers_continuous",
        asset_key="validated_samples",
        passed=not gaps,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "cycles": len(cycles),
            "first_cycle": int(cycles[0]) if len(cycles) else -1,
            "last_cycle": int(cycles[-1]) if len(cycles) else -1,
            "gaps": len(gaps),
            "worst_offenders": _table(pd.DataFrame(gaps).sort_values("missing", ascending=False) if gaps else pd.DataFrame()),
        },
    )


def quarantine_rate_check(raw_rows: int, quarantined: pd.DataFrame, max_rate: float) -> dg.AssetCheckResult:
    """Warn when more than `max_rate` of a cell's samples are rejected."""
    rate = len(quarantined) / raw_rows if raw_rows else 0.0
    by_reason = quarantined["reason_code"].value_counts() if len(quarantined) else pd.Series(dtype=int)
    examples = (
        quarantined.groupby("reason_code", observed=True).head(2)[["reason_code", "source_file", "source_row", "reason"]]
        if len(quarantined)
        else pd.DataFrame()
    )
    return dg.AssetCheckResult(
        check_name="quarantine_rate",
        asset_key="quarantined_samples",
        passed=rate <= max_rate,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "quarantine_rate": float(rate),
            "threshold": float(max_rate),
            "quarantined_rows": len(quarantined),
            "by_reason": dg.MetadataValue.json({str(k): int(v) for k, v in by_reason.items()}),
            "examples": _table(examples),
        },
    )
