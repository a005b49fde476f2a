"""The tabular estimators keep the scikit-learn contract, handle NaNs and learn a signal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

from battery_pipeline.science.ml.boosting import GradientBoostingBaseline
from battery_pipeline.science.ml.dummy import DummyBaseline
from battery_pipeline.science.ml.forest import RandomForestBaseline
from battery_pipeline.science.ml.intervals import ConformalRegressor
from battery_pipeline.science.ml.linear import LinearBaseline, RidgeBaseline
from battery_pipeline.science.ml.preprocessing import MedianImputeScaler
from battery_pipeline.science.ml.selection import CellwiseSelectedRegressor
from battery_pipeline_tests.science.ml.synthetic import learnable_regression, rmse

# Small settings keep every fit well under a second on two cores.
FAST = {
    "linear": LinearBaseline,
    "ridge": lambda: RidgeBaseline(alpha=0.5),
    "random_forest": lambda: RandomForestBaseline(n_estimators=30),
    "gradient_boosting": lambda: GradientBoostingBaseline(max_iter=60),
    "conformal_ridge": lambda: ConformalRegressor(RidgeBaseline()),
}
SEEDED = ("random_forest",)


@parametrize_with_checks(
    [
        DummyBaseline(),
        LinearBaseline(),
        RidgeBaseline(),
        RandomForestBaseline(n_estimators=10),
        GradientBoostingBaseline(max_iter=20),
        ConformalRegressor(),
        MedianImputeScaler(),
        MedianImputeScaler(clip=True),
        CellwiseSelectedRegressor(RidgeBaseline(), RidgeBaseline(), max_features=2),
    ]
)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("name", sorted(FAST))
def test_clone_and_params_round_trip(name):
    estimator = FAST[name]()
    params = estimator.get_params(deep=False)
    copy = clone(estimator)
    assert copy is not estimator
    assert set(copy.get_params(deep=False)) == set(params)
    for key, value in params.items():
        if not hasattr(value, "get_params"):  # nested estimators are cloned, not shared
            assert copy.get_params(deep=False)[key] == value, key
    first = next(k for k, v in params.items() if isinstance(v, (bool, int, float)))
    changed = (not params[first]) if isinstance(params[first], bool) else params[first] + 1
    assert copy.set_params(**{first: changed}).get_params()[first] == changed
    assert estimator.get_params()[first] == params[first]  # the original is untouched


@pytest.mark.parametrize("name", sorted(FAST))
def test_learns_through_nans_and_beats_the_dummy(name):
    X, y = learnable_regression(n=400)
    train, test = slice(0, 300), slice(300, None)
    dummy = DummyBaseline().fit(X[train], y[train])
    model = FAST[name]().fit(X[train], y[train])
    prediction = model.predict(X[test])
    assert prediction.shape == (100,) and np.isfinite(prediction).all()
    # y has std ~2.3 and noise 0.1; missing inputs (10 %) cost the rest
    assert rmse(y[test], prediction) < 0.5 * rmse(y[test], dummy.predict(X[test])), name


def test_dummy_predicts_the_training_mean_or_median():
    X, y = np.zeros((4, 2)), np.array([1.0, 2.0, 3.0, 10.0])
    assert DummyBaseline().fit(X, y).predict(np.ones((2, 2))).tolist() == [4.0, 4.0]
    assert DummyBaseline(strategy="median").fit(X, y).predict(X[:1]).tolist() == [2.5]
    with pytest.raises(ValueError, match="strategy"):
        DummyBaseline(strategy="mode").fit(X, y)


@pytest.mark.parametrize("name", sorted(FAST))
def test_same_seed_same_predictions(name):
    X, y = learnable_regression(n=200, seed=3)
    a = FAST[name]().fit(X, y).predict(X)
    b = FAST[name]().fit(X, y).predict(X)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", SEEDED)
def test_the_seed_is_used(name):
    X, y = learnable_regression(n=200, seed=3)
    a = FAST[name]().set_params(random_state=1).fit(X, y).predict(X)
    b = FAST[name]().set_params(random_state=2).fit(X, y).predict(X)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("name", ["linear", "random_forest", "gradient_boosting"])
def test_dataframe_input_checks_feature_names(name):
    X, y = learnable_regression(n=120)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    model = FAST[name]().fit(frame, y)
    assert list(model.feature_names_in_) == list(frame.columns)
    with pytest.warns(UserWarning, match="valid feature names"):
        from_array = model.predict(frame.to_numpy())
    np.testing.assert_array_equal(model.predict(frame), from_array)
    with pytest.raises(ValueError, match="feature names"):
        model.predict(frame[frame.columns[::-1]])


def test_predict_before_fit_and_bad_input_are_refused():
    with pytest.raises(NotFittedError):
        RidgeBaseline().predict(np.zeros((2, 3)))
    X, y = learnable_regression(n=50)
    with pytest.raises(ValueError, match="[Ii]nfinity"):
        RidgeBaseline().fit(np.where(np.isnan(X), np.inf, X), y)
    with pytest.raises(ValueError):
        RidgeBaseline().fit(X, np.r_[y[:-1], np.nan])  # unlabelled rows must be dropped first
    model = RidgeBaseline().fit(X, y)
    with pytest.raises(ValueError, match="features"):
        model.predict(X[:, :3])


def test_median_impute_scaler_conventions():
    X = np.array(
        [
            [1.0, np.nan, 5.0, 0.0],
            [3.0, np.nan, 5.0, np.nan],
            [np.nan, np.nan, 5.0, 4.0],
        ]
    )
    scaler = MedianImputeScaler().fit(X)
    np.testing.assert_array_equal(scaler.median_, [2.0, 0.0, 5.0, 2.0])  # all-NaN column -> 0
    out = scaler.transform(X)
    # column 0 imputed to [1, 3, 2]: mean 2, population std sqrt(2/3)
    np.testing.assert_allclose(out[:, 0], np.array([-1.0, 1.0, 0.0]) / np.sqrt(2 / 3))
    np.testing.assert_array_equal(out[:, 1], 0.0)  # empty column stays, as zeros
    np.testing.assert_array_equal(out[:, 2], 0.0)  # constant column: scale 1, not a 0 division
    assert np.isfinite(out).all()
    unscaled = MedianImputeScaler(scale=False).fit(X).transform(X)
    np.testing.assert_array_equal(unscaled[:, 3], [0.0, 2.0, 4.0])
