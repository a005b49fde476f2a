"""Governance rules on pack telemetry and digital-twin outputs, as pure functions.

Each check takes what a model returned (or what the telemetry asset stored) and gives a
dg.AssetCheckResult; tests call them directly on clean and dirty frames. `CHECKS_BY_MODEL` says
which checks guard which model's asset: the asset factory attaches them to the models that are
enabled; a model without an entry simply has no output check yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import dagster as dg
import numpy as np
import pandas as pd

WORST_OFFENDERS = 10
ALERT_REQUIRED = ["start_time_s", "end_time_s", "cell", "kind", "severity", "extreme_v"]


def _table(frame: pd.DataFrame) -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.head(WORST_OFFENDERS).to_markdown(index=False) if len(frame) else "_none_")


def telemetry_row_accounting_check(rows_in_source: int, samples_stored: int, channels: int,
                                   long_rows: int) -> dg.AssetCheckResult:
    """Every row of the pack source is a stored sample, with one long row per channel."""
    passed = rows_in_source == samples_stored and long_rows == samples_stored * channels
    return dg.AssetCheckResult(
        check_name="telemetry_row_accounting",
        asset_key="telemetry",
        passed=passed,
        metadata={"rows_in_source": rows_in_source, "samples_stored": samples_stored, "channels": channels,
                  "long_rows": long_rows, "expected_long_rows": samples_stored * channels},
        description=None if passed else "stored telemetry does not account for every source row and channel",
    )


def soc_within_bounds_check(soc_cells: pd.DataFrame, soc_pack: pd.Series,
                            asset_key: str = "soc_ocv_estimation") -> dg.AssetCheckResult:
    """Every known SOC (cells and pack) within [0, 1]; unknown (NaN) SOC is counted, not failed
    (before any anchor a cell's SOC may be unknown when no initial SOC is set)."""
    cells = soc_cells.to_numpy(dtype="float64")
    pack = soc_pack.to_numpy(dtype="float64")
    outside_cells = (cells < 0) | (cells > 1)
    outside_pack = (pack < 0) | (pack > 1)
    rows = np.flatnonzero(outside_cells.any(axis=1) | outside_pack)
    offenders = soc_cells.iloc[rows].assign(soc_pack=pack[rows]).reset_index()
    passed = not len(rows)
    return dg.AssetCheckResult(
        check_name="soc_within_bounds",
        asset_key=asset_key,
        passed=passed,
        metadata={
            "samples": len(pack),
            "samples_outside_0_1": len(rows),
            "unknown_cell_values": int(np.isnan(cells).sum()),
            "min_soc": float(np.nanmin(cells)) if np.isfinite(cells).any() else None,
            "max_soc": float(np.nanmax(cells)) if np.isfinite(cells).any() else None,
            "worst_offenders": _table(offenders),
        },
        description=None if passed else "SOC outside [0, 1]",
    )


def eq_cycles_non_decreasing_check(eq_cycles: pd.Series, asset_key: str = "eq_cycles") -> dg.AssetCheckResult:
    """Equivalent cycles only grow (throughput is never negative); no missing values."""
    values = eq_cycles.to_numpy(dtype="float64")
    steps = np.diff(values)
    drops = np.flatnonzero(steps < 0) + 1
    missing = int(np.isnan(values).sum())
    passed = not len(drops) and not missing
    offenders = pd.DataFrame({"sample": eq_cycles.index[drops], "before": values[drops - 1], "after": values[drops]})
    return dg.AssetCheckResult(
        check_name="eq_cycles_non_decreasing",
        asset_key=asset_key,
        passed=passed,
        metadata={"samples": len(values), "decreases": len(drops), "missing_values": missing,
                  "last_value": float(values[-1]) if len(values) else None, "worst_offenders": _table(offenders)},
        description=None if passed else "equivalent cycles decrease or are missing",
    )


def alerts_complete_check(alerts: pd.DataFrame, asset_key: str = "voltage_monitor") -> dg.AssetCheckResult:
    """Every alert has start, end, cell, kind, severity and extreme value, and ends at or after
    its start."""
    absent = [c for c in ALERT_REQUIRED if c not in alerts.columns]
    if absent:
        return dg.AssetCheckResult(
            check_name="alerts_complete", asset_key=asset_key, passed=False,
            metadata={"missing_columns": dg.MetadataValue.json(absent)},
            description=f"alert records lack the columns {', '.join(absent)}",
        )
    incomplete = alerts[ALERT_REQUIRED].isna().any(axis=1)
    backwards = pd.to_numeric(alerts["end_time_s"], errors="coerce") < pd.to_numeric(alerts["start_time_s"], errors="coerce")
    bad = alerts[incomplete | backwards]
    passed = bad.empty
    return dg.AssetCheckResult(
        check_name="alerts_complete",
        asset_key=asset_key,
        passed=passed,
        metadata={"alerts": len(alerts), "incomplete": int(incomplete.sum()), "end_before_start": int(backwards.sum()),
                  "by_kind": dg.MetadataValue.json(alerts["kind"].value_counts().to_dict() if len(alerts) else {}),
                  "worst_offenders": _table(bad)},
        description=None if passed else "alerts with a missing field or ending before they start",
    )


def no_open_fault_check(faults: pd.DataFrame, evaluability: pd.DataFrame | None = None,
                        asset_key: str = "pack_fault_diagnosis") -> dg.AssetCheckResult:
    """Warns (never blocks): the pack has a diagnosed fault still open at the end of its
    telemetry; the metadata names each with its evidence and what could not be evaluated."""
    open_faults = faults.loc[faults["active_at_end"].astype(bool)] if len(faults) and "active_at_end" in faults else faults.iloc[0:0]
    not_evaluable = {}
    if evaluability is not None and len(evaluability) and "evaluable" in evaluability:
        rows = evaluability.loc[~evaluability["evaluable"].astype(bool)]
        not_evaluable = {str(r.get("kind", i)): str(r.get("reason", "")) for i, r in rows.iterrows()}
    first = open_faults.iloc[0] if len(open_faults) else None
    return dg.AssetCheckResult(
        check_name="no_open_fault",
        asset_key=asset_key,
        passed=open_faults.empty,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"faults": len(faults), "open": len(open_faults),
                  "by_kind": dg.MetadataValue.json(open_faults["kind"].value_counts().to_dict() if len(open_faults) else {}),
                  "not_evaluable": dg.MetadataValue.json(not_evaluable),
                  "open_faults": _table(open_faults)},
        description=("no open fault" + (f"; not evaluable: {', '.join(not_evaluable)}" if not_evaluable else "")) if first is None else
        f"{len(open_faults)} open fault(s), e.g. {first['cell']}: {first['kind']} ({first['severity']}): {str(first.get('evidence', ''))[:200]}",
    )


def imbalance_confidence_check(rests: pd.DataFrame, cell_soc: pd.DataFrame,
                               asset_key: str = "imbalance_analysis") -> dg.AssetCheckResult:
    """Confidence of every rest and every (rest, cell) SOC within [0, 1], never missing."""
    bad_rests = rests[~rests["confidence"].between(0.0, 1.0)]
    bad_cells = cell_soc[~cell_soc["confidence"].between(0.0, 1.0)]  # NaN is not between: fails
    passed = bad_rests.empty and bad_cells.empty
    return dg.AssetCheckResult(
        check_name="imbalance_confidence_within_bounds",
        asset_key=asset_key,
        passed=passed,
        metadata={"rests": len(rests), "rests_out_of_bounds": len(bad_rests), "cell_values": len(cell_soc),
                  "cell_values_out_of_bounds": len(bad_cells),
                  "mean_confidence": float(rests["confidence"].mean()) if len(rests) else None,
                  "worst_offenders": _table(bad_cells if len(bad_cells) else bad_rests)},
        description=None if passed else "imbalance confidence outside [0, 1] or missing",
    )


@dataclass(frozen=True)
class OutputCheck:
    """A check on one model's outputs: `evaluate(outputs, asset_key)`."""

    name: str
    description: str
    blocking: bool
    evaluate: Callable[[Mapping[str, Any], str], dg.AssetCheckResult]


CHECKS_BY_MODEL: dict[str, list[OutputCheck]] = {
    "eq_cycles": [OutputCheck(
        "eq_cycles_non_decreasing", "Equivalent cycles never decrease and are never missing.", True,
        lambda out, key: eq_cycles_non_decreasing_check(out["eq_cycles"], key))],
    "soc_ocv_estimation": [OutputCheck(
        "soc_within_bounds", "Every known cell and pack SOC is within [0, 1].", True,
        lambda out, key: soc_within_bounds_check(out["soc_cells"], out["soc_pack"], key))],
    "voltage_monitor": [OutputCheck(
        "alerts_complete", "Every alert has start, end (>= start), cell, kind, severity and extreme value.", True,
        lambda out, key: alerts_complete_check(out["alerts"], key))],
    "imbalance_analysis": [OutputCheck(
        "imbalance_confidence_within_bounds", "Imbalance confidence of every rest and cell is within [0, 1].", True,
        lambda out, key: imbalance_confidence_check(out["rests"], out["cell_soc"], key))],
    "pack_fault_diagnosis": [OutputCheck(
        "no_open_fault", "Warns on a pack with a diagnosed fault still open at the end of its telemetry (cell, sensor or connection); blocks nothing.", False,
        lambda out, key: no_open_fault_check(out["fault_alerts"], out.get("evaluability"), key))],
}
