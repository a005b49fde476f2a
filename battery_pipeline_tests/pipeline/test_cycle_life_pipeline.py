"""Severson's 41 training cells through Dagster: cohort -> frozen models -> every cell scored, with checks."""

from __future__ import annotations

import json

import dagster as dg
import duckdb
import numpy as np
import pytest

from battery_pipeline.assets import cycle_life
from battery_pipeline.science import synth
from battery_pipeline.science.sources import discover
from battery_pipeline_tests.conftest import dataset_file
from battery_pipeline_tests.fixtures import store_cells

CYCLE_LIFE_ASSETS = [cycle_life.cycle_life_training_set, cycle_life.cycle_life_models, cycle_life.cycle_life_predictions]


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory, datasets):
    tmp = tmp_path_factory.mktemp("cycle_life")
    source = dataset_file(datasets, "severson_qdlin")
    data = tmp / "incoming"
    (data / "train").mkdir(parents=True)
    for path in (source / "train").glob("cell*.csv"):
        (data / "train" / path.name).symlink_to(path)
    (data / "train_cycle_lives.csv").symlink_to(source / "train_cycle_lives.csv")
    # cells the models never saw: another lab's 3 Ah arrays (no metadata), and a simulated NMC
    # cell cycled from raw samples
    q = np.loadtxt(source / "train" / "cell5.csv", delimiter=",") * 3.0 / 1.1
    np.savetxt(data / "other_lab_cell.csv", q, delimiter=",", fmt="%.6g")
    fleet = synth.generate_fleet(n_cells=1, seed=5, cycles=105)
    synth.write_fleet(fleet, data / "simulated")
    for name in ("ground_truth_cells.csv", "ground_truth_cycles.csv", "injected_faults.csv"):
        (data / "simulated" / name).rename(tmp / name)
    database = tmp / "warehouse.duckdb"
    with dg.instance_for_test() as instance:
        resources = store_cells(instance, data, tmp)
        keys = discover([data]).keys()
        result = dg.materialize(CYCLE_LIFE_ASSETS, instance=instance, resources=resources, raise_on_error=False)
    with duckdb.connect(str(database), read_only=True) as conn:
        training = conn.execute(f"SELECT * FROM {cycle_life.TRAINING_SET}").df()
        predictions = conn.execute(f"SELECT * FROM {cycle_life.PREDICTIONS} ORDER BY cell_id").df()
    return result, training, predictions.set_index("cell_id"), tmp, keys


def test_the_cohort_is_the_41_training_cells_with_their_stated_lives(pipeline_run):
    result, training, _, _, _ = pipeline_run
    assert result.success
    assert len(training) == 41 and training["cell_id"].str.startswith("severson_train_").all()
    assert training["cycle_life_source"].str.startswith("stated: file: train_cycle_lives.csv").all()
    assert (training["delta_q_cycle"] == 100).all()


def test_checks_pass_the_paper_is_matched_and_the_figures_are_written(pipeline_run):
    result, _, _, tmp, _ = pipeline_run
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    for name in ("cycle_life_no_leakage", "cycle_life_beats_dummy", "cycle_life_matches_paper", "cycle_life_card_complete"):
        assert checks[name].passed, (name, checks[name].description)
    payload = json.loads((tmp / "results" / cycle_life.RESULTS_FILE).read_text())
    fitted = {m["feature_set"]: m["summary"] for m in payload["models"]}
    assert set(fitted) == {"variance", "discharge"} and "full" in payload["not_fitted"]
    assert fitted["variance"]["train_rmse_cycles"] == pytest.approx(103, rel=0.10)
    assert fitted["discharge"]["train_rmse_cycles"] == pytest.approx(76, rel=0.10)
    card = (tmp / "reports" / cycle_life.CARD_FILE).read_text()
    assert "## Domain" in card and "LFP" in card


def test_every_cell_with_100_cycles_is_scored_and_says_whether_it_fits_the_model(pipeline_run):
    result, _, predictions, _, keys = pipeline_run
    cohort = predictions[predictions["in_cohort"]]
    assert len(cohort) == 41 and cohort["in_domain"].all()
    assert ((cohort["lower"] < cohort["predicted_cycle_life"]) & (cohort["predicted_cycle_life"] < cohort["upper"])).all()
    assert (cohort["domain"] == "inside").all()
    # another lab's arrays, no metadata: a figure, marked as an extrapolation
    other = predictions.loc["other_lab_cell"]
    assert not other["in_cohort"] and other["domain"] == "extrapolated" and "chemistry not stated" in other["domain_note"]
    assert np.isfinite(other["predicted_cycle_life"])
    # a simulated NMC cell of 3 Ah: another chemistry and capacity, so no figure at all
    (simulated,) = [k for k in keys if k.startswith("SYN")]
    row = predictions.loc[simulated]
    assert row["domain"] == "outside" and np.isnan(row["predicted_cycle_life"]) and np.isnan(row["upper"])
    assert "chemistry NMC (the model saw LFP)" in row["domain_note"]
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["cycle_life_in_domain"].passed  # warns: 2 scored cells are not inside
    assert "2 of 43 scored cell(s) not inside" in checks["cycle_life_in_domain"].description
