"""Governance in-process, on a temporary instance, warehouse and report folder:

1. a cycler file with a short gap, an incomplete cycle and a spike goes through ingest and
   validation: the gap is filled and marked, the cycle quarantined whole, the spike flagged and
   kept, and the three new data checks pass on what is stored;
2. a model is trained (soh linear, quick) on the fleet's features and registered;
3. `data_cards` writes the dataset's card (collection process from the sidecar and the README,
   quarantine counts by reason, licence, citation) and `audit_log` records every run: a row per
   materialized asset partition with run id, code version, data hash, config and check outcomes,
   so the registry's published test RMSE traces back to the training set's data hash and run.
"""

import json

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest

from battery_pipeline.assets import cell_pipeline, governance, models, reports
from battery_pipeline.partitions import cell_partitions
from battery_pipeline.resources import ModelStore, SourceCatalog, Warehouse
from battery_pipeline_tests.fixtures import cycling_frame, write_csv
from battery_pipeline_tests.pipeline.test_models_pipeline import read

ASSETS = dg.load_assets_from_modules([cell_pipeline, models, reports, governance])
SIDECAR = {
    "dataset": "governance test lab", "chemistry": "NMC", "nominal_capacity_ah": 2.0, "voltage_min_v": 2.5,
    "voltage_max_v": 4.2, "licence": "CC0-1.0", "citation": "Test Lab (2025), gap fixture",
    "description": "CC charge / CC discharge at 0.5C, 25 degC chamber, logged every 30 s",
}


def gappy_frame() -> pd.DataFrame:
    frame = cycling_frame(n_cycles=4)  # 80 samples a cycle
    frame.loc[5:7, "voltage_v"] = np.nan  # cycle 0: a 3-sample gap inside the charge
    frame.loc[80 + np.array([2, 12, 22, 32, 42, 52, 62, 72, 75]), "voltage_v"] = np.nan  # cycle 1: 11 % missing
    frame.loc[210, "voltage_v"] += 0.3  # cycle 2: a spike inside the discharge
    return frame


@pytest.fixture(scope="module")
def governed(tmp_path_factory, fleet_tables):
    tmp = tmp_path_factory.mktemp("governance")
    data = tmp / "incoming"
    write_csv(data, "gappy.csv", gappy_frame())
    (data / "gappy.cell.json").write_text(json.dumps(SIDECAR))
    (data / "README.md").write_text("Gap fixture. Cells cycled in a 25 degC chamber by the test lab.\n")
    cycle_features, cycle_labels, _ = fleet_tables
    with duckdb.connect(str(tmp / "warehouse.duckdb")) as conn:  # the fleet's per-cycle tables for training
        for name, frame in (("cycle_features", cycle_features[cycle_features["cycle_number"] % 4 == 0]),
                            ("cycle_labels", cycle_labels[cycle_labels["cycle_number"] % 4 == 0])):
            conn.register("_frame", frame)
            conn.execute(f"CREATE TABLE {name} AS SELECT * FROM _frame")
            conn.unregister("_frame")
    resources = {
        "warehouse": Warehouse(database=str(tmp / "warehouse.duckdb")),
        "catalog": SourceCatalog(data_dirs=[str(data)], use_demo_when_empty=False),
        "model_store": ModelStore(models_dir=str(tmp / "models"), results_dir=str(tmp / "results"), reports_dir=str(tmp / "reports")),
    }

    def run(selection, **kwargs):
        selection = dg.AssetSelection.assets(*selection).required_multi_asset_neighbors()
        return dg.materialize(ASSETS, selection=selection, instance=instance, resources=resources, **kwargs)

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(cell_partitions.name, ["gappy"])
        runs = {
            "cell": run(
                ["cells", "raw_samples", "validated_samples"], partition_key="gappy",
                run_config={"ops": {"cell_pipeline": {"config": {"max_quarantine_rate": 0.5}}}},
            ),
            "train": run(
                ["soh_training_set", "soh_linear_model", "model_registry"],
                run_config={"ops": {"soh_linear_model": {"config": {"quick": True}}}},
            ),
            "governance": run(["data_cards", "audit_log"]),
        }
        runs["audit_again"] = run(["audit_log"])
        yield tmp, runs


def test_gap_cycle_and_spike_are_handled_and_their_checks_pass(governed):
    tmp, runs = governed
    checks = {e.check_name: e for e in runs["cell"].get_asset_check_evaluations()}
    for name in ("incomplete_cycles_quarantined", "interpolation_marked", "outliers_kept", "row_accounting"):
        assert checks[name].passed, name
    assert checks["interpolation_marked"].metadata["interpolated_values"].value == 3
    flags = read(tmp, "SELECT flag, channel, source_row FROM sample_flags ORDER BY flag, source_row")
    assert flags[flags["flag"] == "interpolated"]["source_row"].tolist() == [5, 6, 7]
    assert flags[flags["flag"] == "outlier"][["channel", "source_row"]].values.tolist() == [["voltage_v", 210]]
    reasons = read(tmp, "SELECT reason_code, count(*) AS n FROM quarantined_samples GROUP BY 1")
    assert dict(zip(reasons["reason_code"], reasons["n"])) == {"cycle_incomplete": 71, "missing_value": 9}
    stored = read(tmp, "SELECT voltage_v FROM validated_samples WHERE source_row IN (5, 6, 7, 210) ORDER BY source_row")
    assert stored["voltage_v"].notna().all()  # filled, and the spike kept
    raw = read(tmp, "SELECT count(*) FILTER (WHERE voltage_v IS NULL OR isnan(voltage_v)) AS holes FROM raw_samples")
    assert raw["holes"].iloc[0] == 12  # raw_samples keeps the holes


def test_data_card_is_written_complete_and_shown(governed):
    tmp, runs = governed
    result = runs["governance"]
    assert result.success
    (check,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "data_card_complete"]
    assert check.passed, check.metadata
    card = (tmp / "reports" / "data_cards" / "governance_test_lab.md").read_text()
    for text in ("## Collection process", SIDECAR["description"], "`README.md`: \"Gap fixture.", "| cycle_incomplete |     71 |",
                 "| missing_value    |      9 |", "| interpolated | voltage_v |        3 |", "CC0-1.0", SIDECAR["citation"],
                 "every raw sample is accounted for", "`max_missing_share` = 0.1", "gappy.csv",
                 # where each metadata value came from, and the labels section (this run stops at validation)
                 "nominal_capacity_source", "sidecar: ", "## Cycles and labels", "not labelled yet"):
        assert text in card, text
    metadata = result.asset_materializations_for_node("data_cards")[0].metadata
    assert metadata["card_governance_test_lab"].value == card
    assert "| data |" in metadata["governance_rules"].value


def test_audit_log_has_a_row_per_materialized_partition_with_lineage_config_and_checks(governed):
    tmp, runs = governed
    log = read(tmp, "SELECT * FROM audit_log")
    cell_rows = log[log["run_id"] == runs["cell"].run_id].set_index("asset_key")
    assert set(cell_rows.index) == {"cells", "raw_samples", "cell_impedance", "source_cycle_summaries",
                                    "validated_samples", "quarantined_samples", "sample_flags"}
    assert (cell_rows["partition"] == "gappy").all() and (cell_rows["outcome"] == "materialized").all()
    assert cell_rows["code_version"].str.match(r"^(git:[0-9a-f]{40}|package:)").all()
    assert cell_rows["data_hash"].notna().all()
    assert cell_rows.loc["raw_samples", "data_hash"].startswith("sha256:")
    assert json.loads(cell_rows.loc["validated_samples", "config"]) == {"max_quarantine_rate": 0.5}
    checks = {c["check"]: c for c in json.loads(cell_rows.loc["validated_samples", "checks"])}
    assert checks["interpolation_marked"] == {"check": "interpolation_marked", "passed": True, "severity": "ERROR", "blocking": True}
    assert set(checks) >= {"row_accounting", "incomplete_cycles_quarantined", "outliers_kept"}
    # the dropped cycle 1 leaves a hole in the cycle numbers: the (warning) check says so, and so does the log
    assert not cell_rows.loc["validated_samples", "checks_passed"]
    assert cell_rows.loc["validated_samples", "failed_checks"] == "cycle_numbers_continuous"
    assert checks["cycle_numbers_continuous"]["severity"] == "WARN"
    # every run is audited once: the second audit added only the first audit's own run
    assert log.groupby(["run_id", "asset_key", "partition"], dropna=False).size().max() == 1
    assert set(log["run_id"]) == {runs[k].run_id for k in ("cell", "train", "governance")}


def test_a_published_metric_traces_to_training_data_code_and_run(governed):
    tmp, runs = governed
    published = read(tmp, "SELECT * FROM model_registry WHERE model_name = 'soh_linear_model'").iloc[0]
    log = read(tmp, "SELECT * FROM audit_log WHERE outcome = 'materialized'")
    model_row = log[log["metadata"].map(lambda m: json.loads(m).get("model_id")) == published["model_id"]].iloc[0]
    assert json.loads(model_row["metadata"])["test_rmse"] == pytest.approx(published["test_error"])
    assert model_row["run_id"] == runs["train"].run_id and model_row["data_hash"] == published["data_hash"]
    assert json.loads(model_row["config"])["quick"] is True
    training = log[(log["asset_key"] == "soh_training_set") & (log["data_hash"] == published["data_hash"])]
    assert len(training) == 1
    assert training.iloc[0]["run_id"] == runs["train"].run_id
    assert training.iloc[0]["code_version"] == published["code_version"] == model_row["code_version"]
    assert json.loads(training.iloc[0]["checks"]) and training.iloc[0]["checks_passed"]
