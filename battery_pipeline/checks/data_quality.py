"""Data-quality governance rules, as pure functions returning `AssetCheckResult`.

Pure, so tests call each one on a clean and a dirty input without running Dagster; the assets
call them on what they just stored. Every result's metadata shows what the rule found (counts,
worst offenders), so a failing check in the UI explains itself.
"""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd

from battery_pipeline.checks.outcomes import not_evaluated
from battery_pipeline.science.schema import SAMPLE_COLUMNS, CellCycleSample, column_differences
from battery_pipeline.science.validation import schema_failure_cases

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
    """Every validated row satisfies the pandera model (collecting all failures; pandera judges
    the rows a vectorized screen of the same checks picks, `schema_failure_cases`)."""
    cases = schema_failure_cases(frame)
    if cases is None:
        failures = pd.DataFrame(columns=["column", "check", "failure_case", "index"])
    else:
        failures = cases[["column", "check", "failure_case", "index"]]
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


def row_accounting_check(raw_rows: int, validated_rows: int, quarantined_rows: int,
                         kept_by_validation: int | None = None) -> dg.AssetCheckResult:
    """Nothing lost: every raw row is either validated or quarantined, exactly once; and the
    stored validated rows are as many as validation kept (`kept_by_validation`, when known)."""
    difference = raw_rows - validated_rows - quarantined_rows
    unlike_validation = kept_by_validation is not None and validated_rows != kept_by_validation
    problems = []
    if difference:
        problems.append(f"{difference} raw rows are neither validated nor quarantined")
    if unlike_validation:
        problems.append(f"{validated_rows} validated rows are stored, validation kept {kept_by_validation}")
    return dg.AssetCheckResult(
        check_name="row_accounting",
        asset_key="validated_samples",
        passed=not problems,
        metadata={
            "raw_rows": raw_rows,
            "validated_rows": validated_rows,
            "quarantined_rows": quarantined_rows,
            "unaccounted_rows": difference,
            **({"rows_kept_by_validation": kept_by_validation} if kept_by_validation is not None else {}),
        },
        description="; ".join(problems) or None,
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
    if len(cycles) == 0:
        return not_evaluated("cycle_numbers_continuous", "validated_samples", "no validated samples (a summary-level source, or every sample quarantined)")
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
    if not raw_rows:
        return not_evaluated("quarantine_rate", "quarantined_samples", "the source has no samples (a summary-level source)",
                             threshold=float(max_rate))
    rate = len(quarantined) / raw_rows
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


# --- the seed's data rules on sampling gaps and outliers (science.sample_quality) ---------------


def incomplete_cycles_quarantined_check(per_cycle: pd.DataFrame, max_missing_share: float) -> dg.AssetCheckResult:
    """No cycle with over `max_missing_share` of its raw samples missing a measurement has a row in
    validated_samples (it is quarantined whole). `per_cycle`: cycle_number, raw_rows,
    missing_rows, validated_rows, as stored."""
    share = per_cycle["missing_rows"] / per_cycle["raw_rows"].where(per_cycle["raw_rows"] > 0)
    over = per_cycle.assign(missing_share=share.round(4))[share > max_missing_share]
    leaked = over[over["validated_rows"] > 0]
    return dg.AssetCheckResult(
        check_name="incomplete_cycles_quarantined",
        asset_key="validated_samples",
        passed=leaked.empty,
        metadata={
            "max_missing_share": float(max_missing_share),
            "cycles_with_missing_samples": int((per_cycle["missing_rows"] > 0).sum()),
            "cycles_over_limit": len(over),
            "cycles_over_limit_in_validated": len(leaked),
            "worst_offenders": _table(over.sort_values("missing_share", ascending=False)),
        },
        description=None if leaked.empty else f"{len(leaked)} cycles over the missing-sample limit reached validated_samples",
    )


def interpolation_marked_check(filled: pd.DataFrame, flags: pd.DataFrame) -> dg.AssetCheckResult:
    """Every value that is missing in raw_samples but present in validated_samples (`filled`:
    source_file, source_row, channel) is marked `interpolated` in sample_flags, and no mark
    points at a value that was measured: nothing invented without a mark."""
    keys = ["source_file", "source_row", "channel"]
    marked = flags.loc[flags["flag"] == "interpolated", keys] if len(flags) else pd.DataFrame(columns=keys)
    filled, marked = filled[keys].astype({"source_file": str}), marked.astype({"source_file": str})
    both = filled.merge(marked, on=keys, how="outer", indicator=True)
    unmarked = both[both["_merge"] == "left_only"][keys]
    stale = both[both["_merge"] == "right_only"][keys]
    passed = unmarked.empty and stale.empty
    return dg.AssetCheckResult(
        check_name="interpolation_marked",
        asset_key="validated_samples",
        passed=passed,
        metadata={
            "interpolated_values": len(filled),
            "by_channel": dg.MetadataValue.json({str(k): int(v) for k, v in filled["channel"].value_counts().items()}),
            "unmarked_values": len(unmarked),
            "marks_on_measured_values": len(stale),
            "worst_offenders": _table(pd.concat([unmarked.assign(problem="not marked"), stale.assign(problem="not interpolated")])),
        },
        description=None if passed else f"{len(unmarked)} interpolated values without a mark, {len(stale)} marks on measured values",
    )


def outliers_kept_check(outliers: pd.DataFrame, validated_rows: int) -> dg.AssetCheckResult:
    """Outliers are flagged, not dropped: every `outlier` mark in sample_flags points at a sample
    stored in validated_samples with the flagged value (`outliers`: the marks joined to the stored
    value, column `stored_value`, NaN where the sample is not stored)."""
    kept = np.isclose(outliers["stored_value"].astype(float), outliers["value"].astype(float), rtol=0, atol=1e-12)
    missing = outliers[~kept]
    by_channel = outliers["channel"].value_counts() if len(outliers) else pd.Series(dtype=int)
    worst = outliers.assign(abs_residual=(outliers["value"] - outliers["reference_value"]).abs()).sort_values(
        "abs_residual", ascending=False
    ) if len(outliers) else outliers
    return dg.AssetCheckResult(
        check_name="outliers_kept",
        asset_key="validated_samples",
        passed=missing.empty,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "outliers_flagged": len(outliers),
            "share_of_samples": round(len(outliers) / validated_rows, 6) if validated_rows else 0.0,
            "by_channel": dg.MetadataValue.json({str(k): int(v) for k, v in by_channel.items()}),
            "flagged_but_not_stored": len(missing),
            "largest": _table(worst[["cycle_number", "source_file", "source_row", "channel", "value", "reference_value", "detail"]]
                              if len(worst) else worst),
        },
        description=None if missing.empty else f"{len(missing)} flagged outliers are not in validated_samples as flagged",
    )
