"""Features and labels: `validated_samples` -> `cycle_features` (+ `cycle_curves`) -> `cycle_labels`.

The maths is `science.features` and `science.labels`; here we load a cell's partition, call them,
store the result and draw the plots shown in the UI. Summary-level sources (a per-cycle table
without raw samples, e.g. XJTU) arrive through `source_cycle_summaries` and land in the same
feature table with the columns they have.
"""

import dagster as dg
import pandas as pd

from battery_pipeline.assets.metadata import typed_feature_frame
from battery_pipeline.assets.plots import capacity_fade_plot, curves_plot
from battery_pipeline.checks import feature_quality
from battery_pipeline.checks.governance import check_spec
from battery_pipeline.lineage import lineage_metadata, partition_hash
from battery_pipeline.partitions import cell_partitions
from battery_pipeline.resources import DATA_DIR, DUCKDB_POOL, Warehouse
from battery_pipeline.science.cycle_classes import CLASS_COLUMNS, CYCLE_CLASSES, class_counts, classify_cycles
from battery_pipeline.science.features import (
    CYCLE_FEATURE_COLUMNS,
    SOH_LEAKAGE_COLUMNS,
    FeatureConfig,
    compute_curves,
    compute_cycle_features,
    soh_feature_columns,
)
from battery_pipeline.science.labels import (
    LABEL_COLUMNS,
    check_label_consistency,
    label_config_for,
    labels_for_cell,
)
from battery_pipeline.science.readers import CyclerReader
from battery_pipeline.science.schema import SAMPLE_COLUMNS
from battery_pipeline.science.sources import trusted_nominal

FEATURES_GROUP = "features"
LABEL_SETTINGS_FILE = DATA_DIR / "label_settings.json"


def feature_config_for(cell: pd.Series) -> FeatureConfig:
    """Feature settings for a cell: how its cycler logs step changes comes from its reader."""
    reader = CyclerReader.registry.get(str(cell.get("source_format")))
    return FeatureConfig(step_end_logging=reader.logs_step_end if reader else True)


@dg.multi_asset(
    specs=[
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
    ],
    partitions_def=cell_partitions,
    pool=DUCKDB_POOL,
    check_specs=[
        check_spec("features_finite", "cycle_features"),
        check_spec("one_row_per_cycle", "cycle_features"),
        check_spec("capacity_plausible", "cycle_features"),
        check_spec("efficiencies_physical", "cycle_features"),
        check_spec("cycles_classified", "cycle_features"),
    ],
)
def cycle_features(context: dg.AssetExecutionContext, warehouse: Warehouse):
    key = context.partition_key
    inputs = partition_hash(warehouse, ("validated_samples", "cells", "cell_impedance", "source_cycle_summaries"), "cell_id", key)
    samples = warehouse.read_partition("validated_samples", "cell_id", key, columns=SAMPLE_COLUMNS)
    cell = warehouse.read_partition("cells", "cell_id", key).iloc[0]
    nominal = trusted_nominal(cell)
    config = feature_config_for(cell)
    if len(samples):
        impedance = warehouse.read_partition("cell_impedance", "cell_id", key)
        features = compute_cycle_features(samples, nominal_capacity_ah=nominal, impedance=impedance, config=config)
        curves = compute_curves(samples, config)
        origin = "computed from validated samples"
    else:
        features = _summary_features(warehouse, key)
        curves = pd.DataFrame(columns=["cell_id", "cycle_number", "curve", "voltage_v", "value"])
        origin = "summary-level source (no raw samples)"
    features = typed_feature_frame(features[CYCLE_FEATURE_COLUMNS])
    classes = class_counts(features["cycle_class"])
    curves = curves.astype({"cell_id": str, "cycle_number": "int64", "curve": str, "voltage_v": "float64", "value": "float64"})
    warehouse.replace_partitions({"cycle_features": features, "cycle_curves": curves}, "cell_id", key)

    metadata = {
        "dagster/row_count": len(features),
        "origin": origin,
        "cycles": len(features),
        "features_available": int(features.drop(columns=["cell_id", "cycle_number", *CLASS_COLUMNS]).notna().any().sum()),
        "cycles_by_class": dg.MetadataValue.json(classes),
        **lineage_metadata(inputs),
    }
    if features["discharge_capacity_ah"].notna().any():
        metadata["capacity_fade"] = capacity_fade_plot(features, nominal)
    if len(curves):
        metadata["delta_q_curves"] = curves_plot(curves, "delta_q", "Q(V) - Q_ref(V) [Ah]", f"Q(V) difference: {key}")
        metadata["dqdv_curves"] = curves_plot(curves, "dqdv", "dQ/dV [Ah/V]", f"Incremental capacity: {key}")
    yield dg.MaterializeResult(asset_key="cycle_features", metadata=metadata)
    yield dg.MaterializeResult(asset_key="cycle_curves", metadata={"dagster/row_count": len(curves), **lineage_metadata(inputs)})
    yield feature_quality.features_finite_check(features)
    yield feature_quality.one_row_per_cycle_check(features)
    yield feature_quality.capacity_plausible_check(
        features, nominal, nominal_source=str(cell.get("nominal_capacity_source") or "unknown")
    )
    yield feature_quality.efficiencies_physical_check(features)
    min_full = label_config_for(cell.get("dataset"), LABEL_SETTINGS_FILE).min_reference_cycles
    yield feature_quality.cycles_classified_check(features, CYCLE_CLASSES, min_full)


def _summary_features(warehouse: Warehouse, key: str) -> pd.DataFrame:
    if not warehouse.table_exists("source_cycle_summaries"):
        raise dg.Failure(description=f"cell {key!r} has neither validated samples nor a per-cycle summary")
    summary = warehouse.read_partition("source_cycle_summaries", "cell_id", key)
    if summary.empty or summary["discharge_capacity_ah"].isna().all():
        raise dg.Failure(description=f"cell {key!r} has neither validated samples nor a per-cycle summary")
    summary = summary.drop(columns=[c for c in CLASS_COLUMNS if c in summary.columns])
    return summary.join(classify_cycles(summary)).reindex(columns=CYCLE_FEATURE_COLUMNS)


def _source_summary(warehouse: Warehouse, key: str) -> pd.DataFrame | None:
    if not warehouse.table_exists("source_cycle_summaries"):
        return None
    return warehouse.read_partition("source_cycle_summaries", "cell_id", key)


@dg.asset(
    deps=["cycle_features", "cells", "source_cycle_summaries"],
    partitions_def=cell_partitions,
    pool=DUCKDB_POOL,
    group_name=FEATURES_GROUP,
    kinds={"duckdb", "pandas"},
    description=(
        "SOH, end-of-life cycle, RUL in cycles and a censoring flag per (cell, cycle). Settings per "
        "dataset in data/label_settings.json (default: SOH against nominal, end of life at 80 %; "
        "NASA: its own Capacity field and 1.4 Ah)."
    ),
    check_specs=[
        check_spec("labels_consistent", "cycle_labels"),
        check_spec("initial_soh_in_band", "cycle_labels"),
        check_spec("no_label_leakage", "cycle_labels"),
    ],
)
def cycle_labels(context: dg.AssetExecutionContext, warehouse: Warehouse):
    key = context.partition_key
    inputs = partition_hash(warehouse, ("cycle_features", "cells", "source_cycle_summaries"), "cell_id", key)
    features = warehouse.read_partition("cycle_features", "cell_id", key)
    cell = warehouse.read_partition("cells", "cell_id", key).iloc[0]
    config = label_config_for(cell.get("dataset"), LABEL_SETTINGS_FILE)
    summary = None
    if config.capacity_source == "source":
        summary = _source_summary(warehouse, key)
    try:
        labels, config, cycles = labels_for_cell(features, cell, config, summary)
    except ValueError as exc:
        raise dg.Failure(description=f"cell {key!r}: {exc} (label settings: {LABEL_SETTINGS_FILE})") from exc
    warehouse.replace_partition("cycle_labels", labels[LABEL_COLUMNS], "cell_id", key)
    first = labels.iloc[0] if len(labels) else None
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(labels),
            "label_config": dg.MetadataValue.json(config.__dict__),
            "label_status": None if first is None else str(first["label_status"]),
            "soh_reference": None if first is None else str(first["soh_reference"]),
            "label_note": None if first is None else str(first["label_note"]),
            "nominal_capacity_source": str(cell.get("nominal_capacity_source") or "unknown"),
            "initial_soh": None if first is None or pd.isna(first["initial_soh"]) else round(float(first["initial_soh"]), 4),
            "labelled_cycles": int(labels["soh"].notna().sum()),
            "censored": bool(first["censored"]) if first is not None else None,
            **lineage_metadata(inputs),
        }
    )
    yield feature_quality.labels_consistent_check(check_label_consistency(labels, cycles), labels)
    yield feature_quality.initial_soh_in_band_check(labels, config.initial_soh_band)
    allowed = soh_feature_columns(list(features.columns))
    labels_proper = set(LABEL_COLUMNS) - {"cell_id", "cycle_number"}  # keys, not labels
    yield feature_quality.no_label_leakage_check(allowed, labels_proper | set(SOH_LEAKAGE_COLUMNS))
