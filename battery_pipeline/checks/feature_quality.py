"""Governance rules on per-cycle features and labels, as pure functions (tests call them directly)."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd

from battery_pipeline.checks.outcomes import not_evaluated

WORST_OFFENDERS = 10


def _table(frame: pd.DataFrame) -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.head(WORST_OFFENDERS).to_markdown(index=False) if len(frame) else "_none_")


def features_finite_check(features: pd.DataFrame) -> dg.AssetCheckResult:
    """No infinite feature values; NaN only where the data does not allow a feature."""
    numeric = features.select_dtypes("number")
    infinite = {c: int(n) for c, n in np.isinf(numeric).sum().items() if n}
    nan_share = numeric.isna().mean().sort_values(ascending=False)
    capacity_known = features["discharge_capacity_ah"].notna().any() if len(features) else False
    passed = not infinite and bool(capacity_known)
    return dg.AssetCheckResult(
        check_name="features_finite",
        asset_key="cycle_features",
        passed=passed,
        metadata={
            "rows": len(features),
            "infinite_values": dg.MetadataValue.json(infinite),
            "cycles_with_discharge_capacity": int(features["discharge_capacity_ah"].notna().sum()),
            "nan_share_by_column": dg.MetadataValue.json({c: round(float(v), 4) for c, v in nan_share.head(15).items()}),
        },
        description=None if passed else _finite_failure(infinite, bool(capacity_known), len(features)),
    )


def _finite_failure(infinite: dict[str, int], capacity_known: bool, cycles: int) -> str:
    """Which of the two conditions failed, in words a user can act on."""
    reasons = []
    if infinite:
        reasons.append("infinite values in " + ", ".join(f"{c} ({n})" for c, n in infinite.items()))
    if not capacity_known:
        reasons.append(
            f"none of the {cycles} cycle(s) has a discharge capacity (the file holds no discharge: "
            "charge or rest only, e.g. a formation or test segment), so SOH and RUL cannot be labelled"
        )
    return "; ".join(reasons)


def _full_cycles(features: pd.DataFrame) -> pd.DataFrame:
    return features[features["cycle_class"] == "full"] if "cycle_class" in features.columns else features


def capacity_plausible_check(
    features: pd.DataFrame, nominal_capacity_ah: float | None, low: float = 0.3, high: float = 1.3,
    nominal_source: str = "unknown",
) -> dg.AssetCheckResult:
    """Discharge capacity of the comparable full cycles within [low, high] x nominal.

    Single cycles outside (an end-of-life cell, a cycle the classes missed) only warn; a median
    outside means wrong units or a wrong nominal capacity and is an error. Without a rated
    capacity or a full cycle there is nothing to compare: not evaluated (WARN), never Passed.
    """
    full = _full_cycles(features)
    capacity = full["discharge_capacity_ah"].dropna()
    if not nominal_capacity_ah:
        return not_evaluated("capacity_plausible", "cycle_features",
                             f"no rated capacity known for the cell (source: {nominal_source})",
                             full_cycles=len(full))
    if capacity.empty:
        return not_evaluated("capacity_plausible", "cycle_features", "no comparable full cycle has a discharge capacity",
                             nominal_capacity_ah=float(nominal_capacity_ah))
    features = full
    fraction = capacity / nominal_capacity_ah
    outside = features.loc[fraction.index[(fraction < low) | (fraction > high)], ["cycle_number", "discharge_capacity_ah"]]
    median = float(fraction.median())
    median_ok = low <= median <= high
    return dg.AssetCheckResult(
        check_name="capacity_plausible",
        asset_key="cycle_features",
        passed=outside.empty,
        severity=dg.AssetCheckSeverity.WARN if median_ok else dg.AssetCheckSeverity.ERROR,
        metadata={
            "nominal_capacity_ah": float(nominal_capacity_ah),
            "nominal_capacity_source": nominal_source,
            "full_cycles_checked": len(capacity),
            "median_fraction_of_nominal": round(median, 4),
            "bounds": f"[{low}, {high}] x nominal",
            "cycles_outside": len(outside),
            "worst_offenders": _table(outside),
        },
    )


# Cycles whose charge and discharge are not one closed state-of-charge swing by definition:
# the first cycle (formation, or a cell that started part-charged) and aborted or rest-only ones.
EFFICIENCY_EXEMPT_CLASSES = ("formation", "partial", "rest_only")


def efficiencies_physical_check(features: pd.DataFrame, coulombic_max: float = 1.02) -> dg.AssetCheckResult:
    """Coulombic efficiency in (0, 1.02] (sensor tolerance), energy efficiency in (0, 1], on
    closed cycles (full and diagnostic; `EFFICIENCY_EXEMPT_CLASSES` are counted, not judged)."""
    exempt = features["cycle_class"].isin(EFFICIENCY_EXEMPT_CLASSES) if "cycle_class" in features.columns else pd.Series(False, index=features.index)
    judged = features[~exempt]
    ce, ee = judged["coulombic_efficiency"], judged["energy_efficiency"]
    if not ce.notna().any():
        return not_evaluated("efficiencies_physical", "cycle_features",
                             "no closed cycle (full or diagnostic) has both a charge and a discharge",
                             cycles_exempt=int(exempt.sum()))
    bad = judged[((ce <= 0) | (ce > coulombic_max)) | ((ee <= 0) | (ee > 1.0))]
    return dg.AssetCheckResult(
        check_name="efficiencies_physical",
        asset_key="cycle_features",
        passed=bad.empty,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "cycles_checked": int(ce.notna().sum()),
            "cycles_exempt": dg.MetadataValue.json(
                features.loc[exempt, "cycle_class"].value_counts().to_dict() if exempt.any() else {}
            ),
            "cycles_outside": len(bad),
            "coulombic_efficiency_median": float(ce.median()) if ce.notna().any() else None,
            "energy_efficiency_median": float(ee.median()) if ee.notna().any() else None,
            "worst_offenders": _table(bad[["cycle_number", "coulombic_efficiency", "energy_efficiency"]]),
        },
    )


def one_row_per_cycle_check(features: pd.DataFrame) -> dg.AssetCheckResult:
    duplicated = features[features.duplicated(["cell_id", "cycle_number"], keep=False)]
    return dg.AssetCheckResult(
        check_name="one_row_per_cycle",
        asset_key="cycle_features",
        passed=duplicated.empty,
        metadata={"rows": len(features), "duplicated_rows": len(duplicated), "worst_offenders": _table(duplicated[["cell_id", "cycle_number"]])},
    )


def labels_consistent_check(problems: list[str], labels: pd.DataFrame) -> dg.AssetCheckResult:
    censored = bool(labels["censored"].iloc[0]) if len(labels) else None
    return dg.AssetCheckResult(
        check_name="labels_consistent",
        asset_key="cycle_labels",
        passed=not problems,
        metadata={
            "rows": len(labels),
            "censored": censored,
            "eol_cycle": None if not len(labels) or pd.isna(labels["eol_cycle"].iloc[0]) else int(labels["eol_cycle"].iloc[0]),
            "problems": dg.MetadataValue.json(problems[:WORST_OFFENDERS]),
        },
    )


def no_label_leakage_check(allowed_features: list[str], forbidden: set[str]) -> dg.AssetCheckResult:
    """The SOH feature set contains no label and no column derived from the measured capacity."""
    leaked = sorted(set(allowed_features) & forbidden)
    return dg.AssetCheckResult(
        check_name="no_label_leakage",
        asset_key="cycle_labels",
        passed=not leaked,
        metadata={
            "soh_feature_columns": dg.MetadataValue.json(sorted(allowed_features)),
            "forbidden_columns": dg.MetadataValue.json(sorted(forbidden)),
            "leaked": dg.MetadataValue.json(leaked),
        },
    )


def cycles_classified_check(features: pd.DataFrame, classes: tuple[str, ...], min_full: int) -> dg.AssetCheckResult:
    """Every cycle has a known class; warns when fewer than `min_full` comparable full cycles
    leave the cell without SOH and end-of-life labels."""
    counts = features["cycle_class"].value_counts()
    unknown = features[~features["cycle_class"].isin(classes)]
    n_full = int(counts.get("full", 0))
    passed = unknown.empty and n_full >= min_full
    reasons = features.loc[features["cycle_class"] != "full", ["cycle_number", "cycle_class", "cycle_class_reason"]]
    return dg.AssetCheckResult(
        check_name="cycles_classified",
        asset_key="cycle_features",
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "cycles": len(features),
            "cycles_by_class": dg.MetadataValue.json({c: int(counts.get(c, 0)) for c in classes}),
            "comparable_full_cycles": n_full,
            "full_cycles_needed_for_labels": min_full,
            "unclassified_cycles": len(unknown),
            "not_full": _table(reasons),
        },
        description=None if passed else (
            f"{len(unknown)} cycle(s) without a class" if len(unknown)
            else f"{n_full} comparable full cycle(s), {min_full} needed: no SOH or end-of-life labels"
        ),
    )


def initial_soh_in_band_check(labels: pd.DataFrame, band: tuple[float, float]) -> dg.AssetCheckResult:
    """The cell's initial SOH against its stated reference lies in `band`; out of band is an
    error (its labels stay out of training); a cell without a reference is not evaluated (WARN)."""
    if labels.empty:
        return not_evaluated("initial_soh_in_band", "cycle_labels", "the cell has no cycles")
    first = labels.iloc[0]
    metadata = {
        "label_status": str(first["label_status"]),
        "soh_reference": str(first["soh_reference"]),
        "band": f"{band[0]}-{band[1]}",
        "label_note": str(first["label_note"]),
    }
    if first["label_status"] == "unlabelled":
        return not_evaluated("initial_soh_in_band", "cycle_labels", str(first["label_note"]), **metadata)
    initial = float(first["initial_soh"])
    passed = first["label_status"] == "labelled"
    return dg.AssetCheckResult(
        check_name="initial_soh_in_band",
        asset_key="cycle_labels",
        passed=bool(passed),
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"initial_soh": round(initial, 4), **metadata},
        description=None if passed else f"initial SOH {initial:.3f} outside {band[0]}-{band[1]}: labels kept out of training",
    )
