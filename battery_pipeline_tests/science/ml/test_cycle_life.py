"""Frozen Severson cycle-life models: Table 1 on the real training cells, intervals, domain, lives."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from battery_pipeline.science.cell_chain import STAGES, CellTask, compute_cell
from battery_pipeline.science.ml import cycle_life
from battery_pipeline.science.ml.datasets import MEASURED_LIFE_SOURCE, cycle_life_dataset, cycle_lives
from battery_pipeline.science.ml.severson import severson_features
from battery_pipeline.science.sources import discover
from battery_pipeline_tests.conftest import REPO_ROOT, dataset_file


@pytest.fixture(scope="module")
def severson_tables(datasets):
    """(cycle_features, cycle_labels, cells) of the 41 training cells through the cell chain."""
    features, labels, cells = [], [], []
    for source in discover([dataset_file(datasets, "severson_qdlin")]):
        outcome = compute_cell(CellTask(source, STAGES, label_settings=REPO_ROOT / "data" / "label_settings.json"))
        assert outcome.ok, (source.partition_key, outcome.error)
        features.append(outcome.tables["cycle_features"])
        labels.append(outcome.tables["cycle_labels"])
        cells.append(outcome.tables["cells"])
    return pd.concat(features, ignore_index=True), pd.concat(labels, ignore_index=True), pd.concat(cells, ignore_index=True)


@pytest.fixture(scope="module")
def variance_fit(severson_tables):
    features, labels, cells = severson_tables
    return cycle_life.fit_frozen(cycle_life_dataset(features, labels, cells=cells), "variance")


def test_the_variance_model_reproduces_table_1_on_the_training_cells(variance_fit):
    s = variance_fit.summary()
    assert s["cells"] == 41
    assert abs(s["train_rmse_vs_paper"]) <= 0.10, s  # Severson et al.: 103 cycles
    # held out, the error grows but stays far below the baseline's
    assert s["train_rmse_cycles"] < s["loo_rmse_cycles"] < 0.5 * s["dummy_loo_rmse_cycles"]
    assert 0.85 <= s["loo_interval_coverage"] <= 1.0
    lower, upper = variance_fit.interval(np.array([1000.0]))
    assert lower[0] == pytest.approx(1000.0 / s["interval_factor"]) and upper[0] == pytest.approx(1000.0 * s["interval_factor"])


def test_lives_are_the_stated_ones_with_their_line(severson_tables):
    _, labels, cells = severson_tables
    lives = cycle_lives(labels, cells)
    assert len(lives) == 41
    assert lives.loc["severson_train_cell1", "cycle_life"] == 2160
    assert lives.loc["severson_train_cell1", "cycle_life_source"].startswith("stated: file: train_cycle_lives.csv line 1")


def test_measured_lives_fill_in_where_none_is_stated(fleet_tables):
    features, labels, cells = fleet_tables
    lives = cycle_lives(labels, cells.assign(stated_cycle_life=pd.NA, stated_cycle_life_source="unknown"))
    assert len(lives) and (lives["cycle_life_source"] == MEASURED_LIFE_SOURCE).all()
    stated = cells.assign(stated_cycle_life=pd.array([777] + [pd.NA] * (len(cells) - 1), dtype="Int64"),
                          stated_cycle_life_source="sidecar: x.cell.json")
    first = str(cells["cell_id"].iloc[0])
    lives = cycle_lives(labels, stated)
    assert lives.loc[first, "cycle_life"] == 777 and lives.loc[first, "cycle_life_source"] == "stated: sidecar: x.cell.json"


def test_conformal_rank():
    residuals = np.arange(1.0, 10.0)  # 9 held-out errors
    assert cycle_life.conformal_halfwidth(residuals, 0.8) == 8.0  # ceil(10 * 0.8) = 8th smallest
    assert cycle_life.conformal_halfwidth(residuals[:5], 0.9) == math.inf  # 5 errors cannot give 90 %


def test_too_small_a_cohort_or_missing_features_is_refused(severson_tables):
    features, labels, cells = severson_tables
    table = cycle_life_dataset(features, labels, cells=cells)
    with pytest.raises(ValueError, match="needs \\['charge_time_mean_s'"):
        cycle_life.fit_frozen(table, "full")
    few = table.subset(table.cell_id.iloc[:4].tolist())
    with pytest.raises(ValueError, match="at least 5"):
        cycle_life.fit_frozen(few, "variance")


def test_applicability_names_what_lies_outside(severson_tables, variance_fit):
    features, _, cells = severson_tables
    per_cell = severson_features(features)
    domain = cycle_life.cohort_domain(cells)
    assert domain == {"chemistry": ["LFP"], "nominal_capacity_ah": [1.1]}
    record = cells.set_index("cell_id").loc["severson_train_cell3"]
    ranges = variance_fit.feature_range
    status, why = cycle_life.applicability(per_cell.loc["severson_train_cell3"], record, ranges, domain)
    assert status == "inside", why
    far = per_cell.loc["severson_train_cell3"].copy()
    far["log10_var_delta_q"] = 2.0
    status, why = cycle_life.applicability(far, record, ranges, domain)
    assert status == "extrapolated" and "log10_var_delta_q = 2 outside the cohort's" in why
    status, why = cycle_life.applicability(per_cell.loc["severson_train_cell3"], None, ranges, domain)
    assert status == "extrapolated" and "chemistry not stated" in why and "rated capacity not stated" in why
    other = record.copy()
    other["chemistry"], other["nominal_capacity_ah"] = "NMC", 3.0
    status, why = cycle_life.applicability(far, other, ranges, domain)
    assert status == "outside"
    assert "chemistry NMC (the model saw LFP)" in why and "rated capacity 3 Ah" in why and "log10_var_delta_q = 2" in why


def test_the_asset_layers_copies_of_the_constants_agree():
    # the assets module cannot import the models' modules at load time (scikit-learn): its copies
    from battery_pipeline.assets import cycle_life as assets
    from battery_pipeline.science.ml.severson import SEVERSON_FEATURE_SETS

    assert assets.FEATURE_SETS == tuple(SEVERSON_FEATURE_SETS)
    assert assets.MIN_COHORT_CELLS == cycle_life.MIN_COHORT_CELLS
    assert assets.CycleLifeConfig().coverage == cycle_life.DEFAULT_COVERAGE


def test_the_full_model_trains_where_raw_samples_carry_charge_time_temperature_and_resistance(fleet_tables):
    """Raw cycler data (the simulator's cells, run to end of life through validation, features and
    labels) carries what the arrays lack: the full model's features are finite and it fits."""
    features, labels, cells = fleet_tables
    table = cycle_life_dataset(features, labels, cells=cells)
    assert len(table.y) >= 5
    assert cycle_life.missing_features(table, "full") == []
    for column in ("charge_time_mean_s", "temperature_integral_c_s", "resistance_min_ohm", "resistance_change_ohm"):
        assert np.isfinite(table.X[column]).all(), column
    fit = cycle_life.fit_frozen(table, "full")
    s = fit.summary()
    assert s["cells"] == len(table.y) and math.isfinite(s["train_rmse_cycles"]) and math.isfinite(s["loo_rmse_cycles"])
    assert s["paper_train_rmse_cycles"] == 51  # the paper's figure is reported beside it, not claimed
