"""Features and labels: `validated_samples` -> `cycle_features` (+ `cycle_curves`) -> `cycle_labels`.

The maths is `science.features` and `science.labels` (called through `science.cell_chain`);
`assets.cell_pipeline` computes and stores the stages, this module holds the specs and what the
UI shows of each cell, plots included. Summary-level sources (a per-cycle table
without raw samples, e.g. XJTU) arrive through `source_cycle_summaries` and land in the same
feature table with the columns they have.
"""

import dagster as dg
import pandas as pd

from battery_pipeline.assets.metadata import StageReport
from battery_pipeline.assets.plots import capacity_fade_plot, curves_plot
from battery_pipeline.checks import feature_quality
from battery_pipeline.checks.governance import check_spec
from battery_pipeline.resources import DATA_DIR
from battery_pipeline.science.cell_chain import CellOutcome
from battery_pipeline.science.cycle_classes import CLASS_COLUMNS, CYCLE_CLASSES, class_counts
from battery_pipeline.science.features import SOH_LEAKAGE_COLUMNS, soh_feature_columns
from battery_pipeline.science.labels import LABEL_COLUMNS, check_label_consistency, label_config_for
from battery_pipeline.science.sources import trusted_nominal

FEATURES_GROUP = "features"
LABEL_SETTINGS_FILE = DATA_DIR / "label_settings.json"
FEATURE_SETTINGS_FILE = DATA_DIR / "feature_settings.json"


FEATURES_SPECS = (
    dg.AssetSpec(
        "cycle_features",
        deps=["validated_samples", "cells", "cell_impedance", "source_cycle_summaries"],
        group_name=FEATURES_GROUP,
        kinds={"duckdb", "numpy"},
        description=(
            "One row per (cell, cycle): capacities, efficiencies, energies, voltages, "
            "temperatures, CC/CV charge split, resistance, charge-curve statistics, Q(V) "
            "difference and dQ/dV features."
        ),
    ),
    dg.AssetSpec(
        "cycle_curves",
        deps=["validated_samples"],
        group_name=FEATURES_GROUP,
        kinds={"duckdb"},
        description="Q(V), delta-Q(V) and dQ/dV curves of selected cycles, for plotting.",
    ),
)
FEATURES_CHECKS = (
    check_spec("features_finite", "cycle_features"),
    check_spec("one_row_per_cycle", "cycle_features"),
    check_spec("capacity_plausible", "cycle_features"),
    check_spec("efficiencies_physical", "cycle_features"),
    check_spec("cycles_classified", "cycle_features"),
)
LABELS_SPECS = (
    dg.AssetSpec(
        "cycle_labels",
        deps=["cycle_features", "cells", "source_cycle_summaries"],
        group_name=FEATURES_GROUP,
        kinds={"duckdb", "pandas"},
        description=(
            "SOH, end-of-life cycle, RUL in cycles and a censoring flag per (cell, cycle). Settings per "
            "dataset in data/label_settings.json (default: SOH against nominal, end of life at 80 %; "
            "NASA: its own Capacity field and 1.4 Ah)."
        ),
    ),
)
LABELS_CHECKS = (
    check_spec("labels_consistent", "cycle_labels"),
    check_spec("initial_soh_in_band", "cycle_labels"),
    check_spec("no_label_leakage", "cycle_labels"),
)


def describe_features(key: str, outcome: CellOutcome, cell: pd.Series, plots: bool = True) -> StageReport:
    """Metadata and checks of the features stage, from the computed tables (the storing process
    adds the lineage of the stored inputs)."""
    features, curves = outcome.tables["cycle_features"], outcome.tables["cycle_curves"]
    nominal = trusted_nominal(cell)
    metadata = {
        "dagster/row_count": len(features),
        "origin": outcome.feature_origin,
        "feature_settings": "; ".join(outcome.feature_settings) or "the code's defaults (data/feature_settings.json sets none for this cell)",
        "cycles": len(features),
        "features_available": int(features.drop(columns=["cell_id", "cycle_number", *CLASS_COLUMNS]).notna().any().sum()),
        "cycles_by_class": dg.MetadataValue.json(class_counts(features["cycle_class"])),
    }
    if plots and features["discharge_capacity_ah"].notna().any():
        metadata["capacity_fade"] = capacity_fade_plot(features, nominal)
    if plots and len(curves):
        metadata["delta_q_curves"] = curves_plot(curves, "delta_q", "Q(V) - Q_ref(V) [Ah]", f"Q(V) difference: {key}")
        metadata["dqdv_curves"] = curves_plot(curves, "dqdv", "dQ/dV [Ah/V]", f"Incremental capacity: {key}")
    min_full = label_config_for(cell.get("dataset"), LABEL_SETTINGS_FILE).min_reference_cycles
    checks = [
        feature_quality.features_finite_check(features),
        feature_quality.one_row_per_cycle_check(features),
        feature_quality.capacity_plausible_check(
            features, nominal, nominal_source=str(cell.get("nominal_capacity_source") or "unknown")
        ),
        feature_quality.efficiencies_physical_check(features),
        feature_quality.cycles_classified_check(features, CYCLE_CLASSES, min_full),
    ]
    return StageReport(
        {"cycle_features": metadata, "cycle_curves": {"dagster/row_count": len(curves)}},
        checks,
    )


def describe_labels(outcome: CellOutcome, cell: pd.Series, feature_columns: list[str]) -> StageReport:
    """Metadata and checks of the labels stage, from the computed tables (lineage as above)."""
    labels, config = outcome.tables["cycle_labels"], outcome.label_config
    first = labels.iloc[0] if len(labels) else None
    metadata = {
        "dagster/row_count": len(labels),
        "label_config": dg.MetadataValue.json(config.__dict__),
        "label_status": None if first is None else str(first["label_status"]),
        "soh_reference": None if first is None else str(first["soh_reference"]),
        "label_note": None if first is None else str(first["label_note"]),
        "nominal_capacity_source": str(cell.get("nominal_capacity_source") or "unknown"),
        "initial_soh": None if first is None or pd.isna(first["initial_soh"]) else round(float(first["initial_soh"]), 4),
        "labelled_cycles": int(labels["soh"].notna().sum()),
        "censored": bool(first["censored"]) if first is not None else None,
    }
    allowed = soh_feature_columns(feature_columns)
    labels_proper = set(LABEL_COLUMNS) - {"cell_id", "cycle_number"}  # keys, not labels
    checks = [
        feature_quality.labels_consistent_check(check_label_consistency(labels, outcome.label_cycles), labels),
        feature_quality.initial_soh_in_band_check(labels, config.initial_soh_band),
        feature_quality.no_label_leakage_check(allowed, labels_proper | set(SOH_LEAKAGE_COLUMNS)),
    ]
    return StageReport({"cycle_labels": metadata}, checks)
