"""The code location loads, validates, and its asset graph is what we mean it to be."""

import subprocess
import sys

from battery_pipeline.definitions import defs
from battery_pipeline_tests.conftest import REPO_ROOT

# The zoo's per-cycle estimators, spelled out: adding one to science.ml.registry adds two model
# assets, and this list must then be updated on purpose.
MODEL_ESTIMATORS = (
    "dummy", "linear", "ridge", "random_forest", "selected_forest", "gradient_boosting", "lstm",
)

# Snapshot of the graph: an unintended change to assets, checks or edges fails here.
EXPECTED_ASSETS = {
    "cells": set(),
    "raw_samples": set(),
    "cell_impedance": set(),
    "source_cycle_summaries": set(),
    "validated_samples": {"raw_samples", "cells"},
    "quarantined_samples": {"raw_samples", "cells"},
    "sample_flags": {"raw_samples", "cells"},
    "cycle_features": {"validated_samples", "cells", "cell_impedance", "source_cycle_summaries"},
    "cycle_curves": {"validated_samples"},
    "bdf_exports": {"validated_samples"},
    "cycle_labels": {"cycle_features", "cells", "source_cycle_summaries"},
    # Models, across cells: one model asset per estimator of science.ml.registry and task.
    **{f"{task}_training_set": {"cycle_features", "cycle_labels"} for task in ("soh", "rul")},
    **{
        f"{task}_{estimator}_model": {f"{task}_training_set"}
        for task in ("soh", "rul")
        for estimator in MODEL_ESTIMATORS
    },
    "model_registry": {f"{task}_{estimator}_model" for task in ("soh", "rul") for estimator in MODEL_ESTIMATORS},
    **{f"promoted_{task}_model": {"model_registry", f"{task}_training_set"} for task in ("soh", "rul")},
    "model_metrics_report": {"model_registry", "promoted_soh_model", "promoted_rul_model"},
    "model_cards": {"model_registry", "promoted_soh_model", "promoted_rul_model"},
    **{f"{task}_predictions": {"cycle_features", "cycle_labels", f"promoted_{task}_model"} for task in ("soh", "rul")},
    # Early-life cycle life, across cells: the cohort, its frozen models, every cell scored.
    "cycle_life_training_set": {"cells", "cycle_features", "cycle_labels"},
    "cycle_life_models": {"cycle_life_training_set"},
    "cycle_life_predictions": {"cycle_life_models", "cells", "cycle_features", "cycle_labels"},
    "cycle_anomalies": {"cells", "cycle_features"},
    "temperature_forecast_models": {"cells", "validated_samples"},
    "pack_fault_report": {"packs", "pack_fault_diagnosis"},
    # Digital twin, per pack: one asset per enabled twin model (data/twin_settings.json).
    "packs": set(),
    "telemetry": {"validated_samples", "cells"},
    "eq_cycles": {"telemetry", "packs"},
    "soc_ocv_estimation": {"telemetry", "packs"},
    "voltage_monitor": {"telemetry", "packs"},
    "imbalance_analysis": {"telemetry", "packs"},
    "pack_fault_diagnosis": {"telemetry", "packs"},
    "available_energy": {"telemetry", "packs", "soc_ocv_estimation"},
    # Governance: data cards from the warehouse, the audit trail from the event log.
    "data_cards": {"cells", "raw_samples", "validated_samples", "quarantined_samples", "sample_flags"},
    "audit_log": set(),
}
EXPECTED_CHECKS = {
    ("raw_samples", "raw_schema_conformance"),
    ("validated_samples", "schema_conformance"),
    ("validated_samples", "row_accounting"),
    ("validated_samples", "no_duplicate_samples"),
    ("validated_samples", "cycle_numbers_continuous"),
    ("quarantined_samples", "quarantine_rate"),
    ("validated_samples", "incomplete_cycles_quarantined"),
    ("validated_samples", "interpolation_marked"),
    ("validated_samples", "outliers_kept"),
    ("cycle_features", "features_finite"),
    ("cycle_features", "one_row_per_cycle"),
    ("cycle_features", "capacity_plausible"),
    ("cycle_features", "efficiencies_physical"),
    ("cycle_features", "cycles_classified"),
    ("cycle_labels", "labels_consistent"),
    ("cycle_labels", "initial_soh_in_band"),
    ("cycle_labels", "no_label_leakage"),
    *((f"{task}_training_set", name) for task in ("soh", "rul") for name in ("split_disjoint", "no_feature_leakage")),
    *((f"{task}_{estimator}_model", "interval_coverage") for task in ("soh", "rul") for estimator in MODEL_ESTIMATORS),
    *((f"{task}_{estimator}_model", "reproducible") for task in ("soh", "rul") for estimator in MODEL_ESTIMATORS),
    *(
        (f"{task}_{estimator}_model", "beats_dummy")
        for task in ("soh", "rul")
        for estimator in MODEL_ESTIMATORS
        if estimator != "dummy"
    ),
    *((f"promoted_{task}_model", "promotion_gate") for task in ("soh", "rul")),
    ("model_cards", "model_card_complete"),
    ("cycle_life_training_set", "cycle_life_no_leakage"),
    ("cycle_life_models", "cycle_life_beats_dummy"),
    ("cycle_life_models", "cycle_life_matches_paper"),
    ("cycle_life_models", "cycle_life_card_complete"),
    ("cycle_life_predictions", "cycle_life_in_domain"),
    ("cycle_anomalies", "anomaly_rows_complete"),
    ("cycle_anomalies", "anomaly_scores_causal"),
    ("cycle_anomalies", "no_critical_anomaly"),
    ("cycle_anomalies", "anomalies_beat_baseline"),
    ("cycle_anomalies", "anomaly_card_complete"),
    ("temperature_forecast_models", "thermal_split_by_file"),
    ("pack_fault_report", "pack_faults_beat_baseline"),
    ("pack_fault_report", "pack_fault_card_complete"),
    ("pack_fault_report", "fault_detection_causal"),
    ("temperature_forecast_models", "thermal_no_future_temperature"),
    ("temperature_forecast_models", "thermal_beats_persistence"),
    ("temperature_forecast_models", "thermal_card_complete"),
    ("data_cards", "data_card_complete"),
    ("telemetry", "telemetry_row_accounting"),
    ("eq_cycles", "eq_cycles_non_decreasing"),
    ("soc_ocv_estimation", "soc_within_bounds"),
    ("voltage_monitor", "alerts_complete"),
    ("imbalance_analysis", "imbalance_confidence_within_bounds"),
    ("pack_fault_diagnosis", "no_open_fault"),
}


def test_asset_graph_matches_snapshot():
    graph = defs.resolve_asset_graph()
    assets = {key.to_user_string(): {p.to_user_string() for p in graph.get(key).parent_keys} for key in graph.get_all_asset_keys()}
    assert assets == EXPECTED_ASSETS
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    assert checks == EXPECTED_CHECKS


def test_every_check_has_a_one_line_description_in_the_ui():
    """The check pages of the UI say what each check guards (none shows 'No description')."""
    specs = [spec for assets_def in defs.resolve_asset_graph().assets_defs for spec in assets_def.check_specs]
    assert len({(s.asset_key, s.name) for s in specs}) == len(EXPECTED_CHECKS)
    missing = sorted({s.name for s in specs if not (s.description or "").strip()})
    assert missing == []
    assert all("\n" not in s.description for s in specs)


def test_every_warehouse_step_is_in_the_duckdb_pool():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.pools == {"duckdb"}, f"{key.to_user_string()} is not limited by the duckdb pool"


def test_dagster_definitions_validate_passes(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", str(REPO_ROOT / "workspace.yaml")],
        cwd=REPO_ROOT,
        env={"DAGSTER_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "Validation successful" in output
    # No warnings about our definitions (deprecation of the CLI command itself is not ours).
    ours = [line for line in output.splitlines() if "Warning" in line and "battery_pipeline" in line]
    assert not ours, ours
