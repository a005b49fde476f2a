"""Small fleets: too few cells to train on is a state of the data, not a failure.

* Through the real CLI on a folder holding one real cycler file (the Maccor diagnostic export of
  ../shared/datasets): the cell runs, training is skipped with the number of cells it needs,
  train_models_job and score_cells_job are never launched, the command exits 0; the user's pack
  folder is run and the demo packs are neither built nor run.
* train_models_job as a Dagster user launches it (in-process, on two simulated cells): the run
  succeeds, the training sets are not materialized and say why, every model is skipped.
* A fleet with enough cells for SOH but too few uncensored ones for RUL: the CLI trains SOH only.
"""

from __future__ import annotations

import shutil

import dagster as dg
import duckdb

from battery_pipeline import cli
from battery_pipeline.assets import models
from battery_pipeline.resources import Warehouse
from battery_pipeline.science.ml.splits import MIN_TRAINING_CELLS
from battery_pipeline.science.twin.pack_sim import simulate_pack, write_pack
from battery_pipeline_tests.conftest import dataset_file
from battery_pipeline_tests.pipeline.test_models_pipeline import train

CELL_FILE = "cycler_samples/PredictionDiagnostics_000109_tztest.010"  # Maccor, 2165 rows, 4 cycles
CELL = "PredictionDiagnostics_000109_tztest.010"
NEEDS = f"training needs at least {MIN_TRAINING_CELLS} cells"


def write_tables(db_path, fleet_tables, cells: list[str], censored: tuple[str, ...] = ()):
    """The fleet's cycle_features / cycle_labels / cells of `cells` only (every 4th cycle);
    `censored` cells lose their end of life, as cells still cycling do."""
    features, labels, registry = fleet_tables
    features = features[features["cell_id"].isin(cells) & (features["cycle_number"] % 4 == 0)]
    labels = labels[labels["cell_id"].isin(cells) & (labels["cycle_number"] % 4 == 0)].copy()
    labels.loc[labels["cell_id"].isin(censored), "censored"] = True
    with duckdb.connect(str(db_path)) as conn:
        for name, frame in (("cycle_features", features), ("cycle_labels", labels), ("cells", registry[registry["cell_id"].isin(cells)])):
            conn.register("_frame", frame)
            conn.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM _frame")
            conn.unregister("_frame")


def test_one_cell_folder_through_the_cli_skips_training_and_runs_only_the_users_packs(datasets, tmp_path, monkeypatch, capsys):
    incoming, packs, demo_packs = tmp_path / "incoming", tmp_path / "packs", tmp_path / "demo_packs"
    incoming.mkdir()
    shutil.copyfile(dataset_file(datasets, CELL_FILE), incoming / CELL)
    write_pack(simulate_pack(n_cells=3, duration_h=2.0, seed=5, excursions=False, pack_id="user_pack"), packs)
    for name, path in {
        "DAGSTER_HOME": tmp_path / "dagster_home",
        "BATTERY_PIPELINE_DUCKDB": tmp_path / "warehouse.duckdb",
        # the CLI sets these two from its options; set here so that the test's end restores them
        "BATTERY_PIPELINE_DATA_DIRS": incoming,
        "BATTERY_PIPELINE_PACK_DIRS": packs,
        "BATTERY_PIPELINE_DEMO_DIR": tmp_path / "demo",
        "BATTERY_PIPELINE_DEMO_PACK_DIR": demo_packs,
        "BATTERY_PIPELINE_MODEL_DIR": tmp_path / "models",
        "BATTERY_PIPELINE_RESULTS_DIR": tmp_path / "results",
        "BATTERY_PIPELINE_REPORTS_DIR": tmp_path / "reports",
    }.items():
        monkeypatch.setenv(name, str(path))
    monkeypatch.delenv("BATTERY_PIPELINE_TWIN_CELLS", raising=False)
    monkeypatch.delenv(cli.POSTGRES_URL_ENV, raising=False)

    exit_code = cli.main(["run", "--data-dir", str(incoming), "--pack-dir", str(packs)])
    out = capsys.readouterr().out

    assert exit_code == 0, out
    assert "1 of 1 cell(s) succeeded" in out
    assert "SOH training skipped" in out and "RUL training skipped" in out and NEEDS in out, out
    assert "train_models_job and score_cells_job not launched" in out
    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:
        runs = instance.get_runs()
        assert {run.job_name for run in runs} == {"cell_pipeline_job", "anomalies_job", "pack_pipeline_job", "fault_report_job", "governance_job"}, out
        assert all(run.is_success for run in runs), [(r.job_name, r.status) for r in runs]
        assert instance.get_dynamic_partitions("packs") == ["user_pack"]
    assert not demo_packs.exists() and not (tmp_path / "demo").exists()  # nothing of the demo was built
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
        tables = {t for (t,) in conn.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        assert {"cycle_features", "cycle_labels"} <= tables
        assert not tables & {"soh_training_set", "rul_training_set", "model_registry"}
        assert conn.execute("SELECT DISTINCT pack_id FROM telemetry").fetchall() == [("user_pack",)]


def test_train_models_job_on_two_cells_succeeds_and_says_why_nothing_was_trained(tmp_path, fleet_tables):
    cells = sorted(fleet_tables[2]["cell_id"])[:2]
    write_tables(tmp_path / "warehouse.duckdb", fleet_tables, cells)
    with dg.instance_for_test() as instance:
        result = train(instance, tmp_path)
        assert result.success  # nothing failed: the data are too few, which the run says
        assert not result.get_asset_materialization_events()
        for task in models.TASKS:
            (observation,) = [
                e.asset_observation_data.asset_observation for e in result.all_events
                if e.is_asset_observation and e.asset_key.to_user_string() == f"{task}_training_set"
            ]
            reason = observation.metadata["skipped"].value
            assert reason.startswith(f"{task.upper()} training skipped: 2 ") and NEEDS in reason, reason
            assert observation.metadata["cells_needed"].value == MIN_TRAINING_CELLS
        checks = {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}
        assert set(checks) == {(f"{t}_training_set", c) for t in models.TASKS for c in ("split_disjoint", "no_feature_leakage")}
        for check in checks.values():  # nothing was checked, so nothing passed; and nothing to block
            assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
            assert check.description.startswith("not evaluated: ") and NEEDS in check.description
        skipped = {e.step_key for e in result.all_events if e.event_type_value == "STEP_SKIPPED"}
        assert {"soh_linear_model", "rul_lstm_model", "model_registry", "promoted_soh_model", "model_cards"} <= skipped
    assert not Warehouse(database=str(tmp_path / "warehouse.duckdb")).table_exists("model_registry")


def test_enough_cells_for_soh_but_not_for_rul_trains_soh_only(tmp_path, fleet_tables, capsys):
    cells = sorted(fleet_tables[2]["cell_id"])[:5]
    write_tables(tmp_path / "warehouse.duckdb", fleet_tables, cells, censored=tuple(cells[:2]))
    warehouse = Warehouse(database=str(tmp_path / "warehouse.duckdb"))
    shortfalls = models.training_shortfalls(warehouse)
    assert shortfalls["soh"] == ""
    assert shortfalls["rul"].startswith("RUL training skipped: 3 uncensored cell(s)") and NEEDS in shortfalls["rul"]
    assert cli.trainable_tasks(warehouse) == ["soh"]
    assert NEEDS in capsys.readouterr().out
    train_assets = cli.task_selection("train_models_job", ["soh"])
    assert "soh_training_set" in train_assets and "model_registry" in train_assets and "model_cards" in train_assets
    assert not [a for a in train_assets if a.startswith(("rul_", "promoted_rul"))]
    assert cli.task_selection("score_cells_job", ["soh"]) == ["soh_predictions"]
    assert cli.task_selection("train_models_job", list(models.TASKS)) is None  # the whole job
