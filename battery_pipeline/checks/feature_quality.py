"""Governance rules on per-cycle features and labels, as pure functions (tests call them directly)."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd

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
        description=None if passed else "infinite values, or no cycle has a discharge capacity",
    )


def capacity_plausible_check(
    features: pd.DataFrame, nominal_capacity_ah: float | None, low: float = 0.3, high: float = 1.3
) -> dg.AssetCheckResult:
    """Discharge capacity within [low, high] x nominal.

    Single cycles outside (a partial discharge at a file boundary, a check-up cycle) only warn;
    a median outside means wrong units or a wrong nominal capacity and is an error.
    """
    capacity = features["discharge_capacity_ah"].dropna()
    if not nominal_capacity_ah or capacity.empty:
        return dg.AssetCheckResult(
            check_name="capacity_plausible",
            asset_key="cycle_features",
            passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"skipped": "no nominal capacity or no discharge capacity"},
        )
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
            "median_fraction_of_nominal": round(median, 4),
            "bounds": f"[{low}, {high}] x nominal",
            "cycles_outside": len(outside),
            "worst_offenders": _table(outside),
        },
    )


def efficiencies_physical_check(features: pd.DataFrame, coulombic_max: float = 1.02) -> dg.AssetCheckResult:
    """Coulombic efficiency in (0, 1.02] (sensor tolerance), energy efficiency in (0, 1]."""
    ce, ee = features["coulombic_efficiency"], features["energy_efficiency"]
    bad = features[((ce <= 0) | (ce > coulombic_max)) | ((ee <= 0) | (ee > 1.0))]
    return dg.AssetCheckResult(
        check_name="efficiencies_physical",
        asset_key="cycle_features",
        passed=bad.empty,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "cycles_checked": int(ce.notna().sum()),
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
