"""Saved estimators load back and predict the same; scoring tables cover every cycle."""

import numpy as np
import pandas as pd
import pytest

from battery_pipeline.science.ml.datasets import rul_dataset, soh_dataset
from battery_pipeline.science.ml.inference import bootstrap_interval, scoring_table
from battery_pipeline.science.ml.persistence import JOBLIB_FILE, LSTM_DIR, load_estimator, save_estimator
from battery_pipeline.science.ml.registry import fit_on, interval_on, make_estimator, predict_on


@pytest.fixture(scope="module")
def soh_table(fleet_tables):
    features, labels, _ = fleet_tables
    keep = features["cell_id"].isin(sorted(features["cell_id"].unique())[:4])
    return soh_dataset(features[keep], labels[labels["cell_id"].isin(features.loc[keep, "cell_id"])])


@pytest.mark.parametrize("name", ["ridge", "random_forest", "lstm"])
def test_saved_estimator_predicts_identically_after_loading(tmp_path, soh_table, name):
    overrides = {"max_epochs": 2} if name == "lstm" else {}
    estimator = fit_on(make_estimator(name, "soh", intervals=True, **overrides), soh_table)
    written = save_estimator(estimator, tmp_path / name)
    loaded = load_estimator(tmp_path / name)
    assert np.array_equal(predict_on(loaded, soh_table), predict_on(estimator, soh_table))
    for a, b in zip(interval_on(loaded, soh_table), interval_on(estimator, soh_table)):
        assert np.array_equal(a, b)
    if name == "lstm":  # the network as a state_dict, never inside the pickle
        assert f"{LSTM_DIR}/lstm_state.pt" in written and JOBLIB_FILE in written
        assert b"torch" not in (tmp_path / name / JOBLIB_FILE).read_bytes()
    else:
        assert written == [JOBLIB_FILE]


def test_loading_from_an_empty_folder_says_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither"):
        load_estimator(tmp_path)


def test_scoring_table_covers_every_cycle_and_matches_training_features(fleet_tables):
    features, labels, _ = fleet_tables
    cell = sorted(features["cell_id"].unique())[0]
    cell_features, cell_labels = features[features["cell_id"] == cell], labels[labels["cell_id"] == cell]
    for task, builder, target in (("soh", soh_dataset, "soh"), ("rul", rul_dataset, "rul_cycles")):
        training = builder(features, labels)
        keys, X = scoring_table(task, cell_features, cell_labels, training.feature_columns)
        assert len(keys) == len(cell_features) and list(X.columns) == list(training.feature_columns)
        mine = training.subset([cell])
        # where the training table has a row, the scoring row holds the same features and truth
        merged = keys.assign(row=np.arange(len(keys))).merge(
            pd.DataFrame({"cycle_number": mine.cycle_number, "train_row": np.arange(len(mine))}), on="cycle_number"
        )
        assert len(merged) == len(mine)
        assert np.allclose(X.iloc[merged["row"]].to_numpy(), mine.X.iloc[merged["train_row"]].to_numpy(), equal_nan=True)
        assert np.allclose(keys["truth"].iloc[merged["row"]], mine.y.iloc[merged["train_row"]])


def test_scoring_table_leaves_unknown_truth_and_missing_features_as_nan(fleet_tables):
    features, labels, _ = fleet_tables
    cell = sorted(features["cell_id"].unique())[0]
    keys, X = scoring_table("soh", features[features["cell_id"] == cell], labels.iloc[:0], ["cc_charge_time_s", "not_a_feature"])
    assert keys["truth"].isna().all() and X["not_a_feature"].isna().all() and X["cc_charge_time_s"].notna().any()


def test_bootstrap_interval_brackets_the_metric_and_needs_two_cells():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=300)
    prediction = truth + rng.normal(scale=0.1, size=300) * np.repeat([1, 2, 3], 100)
    cells = np.repeat(["a", "b", "c"], 100)
    rmse = lambda t, p: float(np.sqrt(np.mean((t - p) ** 2)))  # noqa: E731
    low, high = bootstrap_interval(truth, prediction, cells, rmse)
    assert low <= rmse(truth, prediction) <= high and low < high
    assert all(np.isnan(bootstrap_interval(truth[:100], prediction[:100], cells[:100], rmse)))
