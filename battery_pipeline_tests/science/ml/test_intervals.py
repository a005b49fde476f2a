"""Split-conformal intervals: the quantile rule, cell-wise calibration, coverage near nominal."""

from __future__ import annotations

import math

import numpy as np
import pytest

from battery_pipeline.science.ml.intervals import ConformalRegressor, calibration_split, conformal_quantile, cross_folds
from battery_pipeline.science.ml.linear import RidgeBaseline
from battery_pipeline.science.ml.metrics import interval_metrics


def test_conformal_quantile_rank():
    scores = np.arange(1.0, 20.0)  # n = 19
    # ceil(20 * 0.9) = 18th smallest
    assert conformal_quantile(scores, 0.1) == 18.0
    # ceil(20 * 0.5) = 10th
    assert conformal_quantile(scores, 0.5) == 10.0
    # ceil(20 * 0.99) = 20 > n: no finite bound is honest
    assert conformal_quantile(scores, 0.01) == math.inf
    # (999 + 1) * 0.9 is 900.0000000000001 in floating point: still the 900th, not the 901st
    assert conformal_quantile(np.arange(1.0, 1000.0), 0.1) == 900.0
    with pytest.raises(ValueError, match="alpha"):
        conformal_quantile(scores, 1.0)


def test_calibration_split_holds_out_whole_cells_deterministically():
    groups = np.repeat(["a", "b", "c", "d", "e", "f", "g", "h"], 5)
    train, cal = calibration_split(len(groups), 0.25, groups, random_state=3)
    assert len(set(groups[cal])) == 2  # 25 % of 8 cells
    assert not set(groups[train]) & set(groups[cal])
    assert sorted(np.r_[train, cal].tolist()) == list(range(len(groups)))
    shuffled = groups[np.random.default_rng(0).permutation(len(groups))]
    _, cal_shuffled = calibration_split(len(groups), 0.25, shuffled, random_state=3)
    assert set(shuffled[cal_shuffled]) == set(groups[cal])  # row order does not pick the cells
    assert not np.array_equal(calibration_split(len(groups), 0.25, groups, random_state=4)[1], cal)
    with pytest.raises(ValueError, match="2 groups"):
        calibration_split(3, 0.25, ["a", "a", "a"])


def _linear_problem(n: int, seed: int):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    return X, X @ np.array([1.0, -2.0, 0.5]) + rng.normal(0.0, 0.5, n)


def test_coverage_near_nominal_on_2000_new_points():
    X, y = _linear_problem(1000, seed=1)
    X_new, y_new = _linear_problem(2000, seed=2)
    model = ConformalRegressor(RidgeBaseline(), alpha=0.1, random_state=0).fit(X, y)
    assert model.n_calibration_ == 250 and model.calibration_groups_ is None
    lower, upper = model.predict_interval(X_new)
    result = interval_metrics(y_new, lower, upper)
    assert abs(result["coverage"] - 0.90) <= 0.05
    # with noise sd 0.5 the ideal 90 % interval is +-1.645 x 0.5 wide
    assert result["mean_interval_width"] == pytest.approx(2 * 1.645 * 0.5, rel=0.15)
    # alpha at predict time: a smaller alpha gives a wider interval with more coverage
    wide = interval_metrics(y_new, *model.predict_interval(X_new, alpha=0.02))
    assert wide["coverage"] > result["coverage"] and wide["mean_interval_width"] > result["mean_interval_width"]
    np.testing.assert_allclose(model.predict(X_new), (lower + upper) / 2, rtol=0, atol=1e-12)


def test_group_calibration_uses_held_out_cells_only():
    X, y = _linear_problem(400, seed=4)
    groups = np.repeat([f"cell{i}" for i in range(8)], 50)
    model = ConformalRegressor(RidgeBaseline(), calibration_fraction=0.25).fit(X, y, groups=groups)
    assert len(model.calibration_groups_) == 2
    assert model.n_calibration_ == 100  # two whole cells of 50 rows
    lower, upper = model.predict_interval(X)
    assert (upper - lower > 0).all()


def test_cross_folds_deal_whole_cells_deterministically():
    groups = np.repeat([f"c{i}" for i in range(7)], 4)
    folds = cross_folds(len(groups), 3, groups, random_state=1)
    assert len(folds) == 3 and sorted(np.concatenate(folds).tolist()) == list(range(len(groups)))
    cells = [set(groups[f]) for f in folds]
    assert sorted(len(c) for c in cells) == [2, 2, 3] and not (cells[0] & cells[1] or cells[1] & cells[2])
    shuffled = groups[np.random.default_rng(0).permutation(len(groups))]
    assert sorted(map(sorted, (set(shuffled[f]) for f in cross_folds(len(groups), 3, shuffled, 1)))) == sorted(map(sorted, cells))
    assert len(cross_folds(6, 5, ["a", "a", "a", "b", "b", "b"])) == 2  # never more folds than cells
    assert len(cross_folds(10, 3)) == 3  # rows without groups
    with pytest.raises(ValueError, match="2 groups"):
        cross_folds(3, 3, ["a", "a", "a"])
    with pytest.raises(ValueError, match="cv_folds"):
        cross_folds(10, 1)


def test_cross_conformal_refits_on_every_row_and_covers_new_cells():
    X, y = _linear_problem(1200, seed=9)
    groups = np.repeat([f"cell{i}" for i in range(12)], 100)
    model = ConformalRegressor(RidgeBaseline(), alpha=0.1, cv_folds=3).fit(X, y, groups=groups)
    assert model.n_folds_ == 3 and model.n_calibration_ == 1200  # every row scored out of fold
    assert model.calibration_groups_ == sorted(set(groups))
    X_new, y_new = _linear_problem(2000, seed=10)
    # the point model is the estimator fitted on all 1200 rows, not on a part
    np.testing.assert_allclose(model.predict(X_new), RidgeBaseline().fit(X, y).predict(X_new), atol=1e-12)
    result = interval_metrics(y_new, *model.predict_interval(X_new))
    assert abs(result["coverage"] - 0.90) <= 0.05
    # the split scheme on the same data fits its point model on 9 of the 12 cells only
    split = ConformalRegressor(RidgeBaseline(), alpha=0.1).fit(X, y, groups=groups)
    assert split.n_folds_ == 0 and split.n_calibration_ == 300
