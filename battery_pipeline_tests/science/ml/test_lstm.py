"""LSTMRegressor: windows, 2-D and 3-D input, early stopping, bit-identical reruns, save/load."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.utils.estimator_checks import check_estimator

from battery_pipeline.science.ml.dummy import DummyBaseline
from battery_pipeline.science.ml.lstm import LSTMRegressor, sliding_windows
from battery_pipeline_tests.science.ml.synthetic import rmse

# Small and quick: a few hundred windows, 8 units, a high learning rate.
QUICK = dict(hidden_size=8, learning_rate=1e-2, batch_size=32, max_epochs=40, patience=5)


def _sequence_task(n_groups: int = 6, length: int = 60, seed: int = 0):
    """Per group a time series whose target needs memory: y_t = mean of x0 over the last 4 steps."""
    rng = np.random.default_rng(seed)
    rows, targets, groups = [], [], []
    for g in range(n_groups):
        x = rng.normal(size=(length, 2))
        y = pd.Series(x[:, 0]).rolling(4, min_periods=1).mean().to_numpy()
        rows.append(x)
        targets.append(y)
        groups += [f"cell{g}"] * length
    return np.vstack(rows), np.concatenate(targets), np.array(groups)


def test_sliding_windows_stay_inside_their_group():
    X = np.arange(6.0)[:, None]
    groups = ["a", "b", "a", "b", "a", "b"]  # interleaved: a = rows 0, 2, 4; b = rows 1, 3, 5
    windows = sliding_windows(X, 3, groups)[:, :, 0]
    assert windows.tolist() == [[0, 0, 0], [1, 1, 1], [0, 0, 2], [1, 1, 3], [0, 2, 4], [1, 3, 5]]
    assert sliding_windows(X, 1)[:, :, 0].tolist() == X.tolist()
    assert sliding_windows(X, 2)[:, :, 0].tolist()[-1] == [4.0, 5.0]  # no groups: one series


def test_two_dimensional_input_learns_a_memory_task():
    X, y, groups = _sequence_task()
    train, test = groups != "cell5", groups == "cell5"
    model = LSTMRegressor(seq_len=6, **QUICK).fit(X[train], y[train], groups=groups[train])
    assert model.validation_groups_ is not None and len(model.validation_groups_) == 1
    prediction = model.predict(X[test], groups=groups[test])
    assert prediction.shape == (test.sum(),)
    dummy = DummyBaseline().fit(X[train], y[train]).predict(X[test])
    assert rmse(y[test], prediction) < 0.6 * rmse(y[test], dummy)
    # without memory (one step) the same task cannot be learnt as well
    memoryless = LSTMRegressor(seq_len=1, **QUICK).fit(X[train], y[train], groups=groups[train])
    assert rmse(y[test], prediction) < rmse(y[test], memoryless.predict(X[test], groups=groups[test]))


def test_three_dimensional_input_with_nans():
    X, y, groups = _sequence_task(n_groups=4)
    windows = sliding_windows(X, 5, groups)
    windows[::7, 0, 1] = np.nan  # missing values inside sequences are imputed
    model = LSTMRegressor(**QUICK).fit(windows[:180], y[:180])
    assert model.input_ndim_ == 3 and model.n_features_in_ == 2
    prediction = model.predict(windows[180:])
    assert prediction.shape == (60,) and np.isfinite(prediction).all()
    with pytest.raises(ValueError, match="3-D"):
        model.predict(X[180:])  # fitted on sequences: rows would be windowed differently
    with pytest.raises(ValueError, match="features"):
        model.predict(windows[180:, :, :1])


def test_early_stopping_stops_and_keeps_the_best_epoch():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(200, 3)), rng.normal(size=200)  # nothing to learn: validation loss stalls
    model = LSTMRegressor(seq_len=1, hidden_size=8, learning_rate=1e-2, max_epochs=200, patience=3).fit(X, y)
    assert model.stopped_early_
    assert model.n_epochs_ < 200
    assert model.n_epochs_ == model.best_epoch_ + 3
    val = [h["val_loss"] for h in model.history_]
    assert min(val) == val[model.best_epoch_ - 1]
    no_validation = LSTMRegressor(seq_len=1, hidden_size=4, max_epochs=7, validation_fraction=0.0).fit(X, y)
    assert no_validation.n_epochs_ == 7 and not no_validation.stopped_early_
    assert all(h["val_loss"] is None for h in no_validation.history_)


def test_same_seed_bit_identical_and_global_torch_state_restored():
    X, y, groups = _sequence_task(n_groups=3, length=40)
    before_rng = torch.random.get_rng_state()
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    params = dict(seq_len=4, dropout=0.2, max_epochs=8, hidden_size=8, random_state=11)
    a = LSTMRegressor(**params).fit(X, y, groups=groups).predict(X, groups=groups)
    b = LSTMRegressor(**params).fit(X, y, groups=groups).predict(X, groups=groups)
    assert a.tobytes() == b.tobytes()
    c = LSTMRegressor(**{**params, "random_state": 12}).fit(X, y, groups=groups).predict(X, groups=groups)
    assert not np.array_equal(a, c)
    assert torch.equal(torch.random.get_rng_state(), before_rng)
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == deterministic


def test_save_load_and_pickle_predict_identically(tmp_path):
    X, y, groups = _sequence_task(n_groups=3, length=40)
    frame = pd.DataFrame(X, columns=["current_a", "voltage_v"])
    model = LSTMRegressor(seq_len=4, max_epochs=5, hidden_size=8).fit(frame, y, groups=groups)
    expected = model.predict(frame, groups=groups)
    directory = model.save(tmp_path / "lstm")
    assert sorted(p.name for p in directory.iterdir()) == ["lstm.json", "lstm_state.pt"]
    loaded = LSTMRegressor.load(directory)
    assert loaded.get_params() == model.get_params()
    assert list(loaded.feature_names_in_) == ["current_a", "voltage_v"]
    assert loaded.history_ == model.history_ and loaded.best_epoch_ == model.best_epoch_
    assert loaded.predict(frame, groups=groups).tobytes() == expected.tobytes()
    assert pickle.loads(pickle.dumps(model)).predict(frame, groups=groups).tobytes() == expected.tobytes()
    assert "module_" not in clone(model).__dict__


def test_invalid_parameters_and_labels():
    X, y = np.zeros((20, 2)), np.zeros(20)
    with pytest.raises(ValueError, match="seq_len"):
        LSTMRegressor(seq_len=0).fit(X, y)
    with pytest.raises(ValueError, match="validation_fraction"):
        LSTMRegressor(validation_fraction=1.0).fit(X, y)
    with pytest.raises(ValueError, match="finite"):
        LSTMRegressor(max_epochs=1).fit(X, np.r_[y[:-1], np.nan])


FLOAT32_BATCHING = (
    "float32 network: a row's prediction may differ by rounding (~1e-7 relative) with the batch it "
    "is computed in, while scikit-learn compares to 1e-7"
)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.SkipTestWarning")
def test_scikit_learn_estimator_checks():
    # The full scikit-learn battery once, with settings that learn its toy problems quickly.
    check_estimator(
        LSTMRegressor(seq_len=1, hidden_size=8, learning_rate=5e-2, batch_size=128, max_epochs=15),
        expected_failed_checks={
            "check_methods_subset_invariance": FLOAT32_BATCHING,
            "check_methods_sample_order_invariance": FLOAT32_BATCHING,
        },
    )
