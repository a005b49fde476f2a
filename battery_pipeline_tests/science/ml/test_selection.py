"""Forward feature selection scored on held-out cells, and range clipping of the linear models."""

from __future__ import annotations

import numpy as np
import pytest

from battery_pipeline.science.ml.linear import RidgeBaseline
from battery_pipeline.science.ml.preprocessing import MedianImputeScaler
from battery_pipeline.science.ml.registry import make_estimator
from battery_pipeline.science.ml.selection import CellwiseSelectedRegressor, cell_folds


def cells_with_a_local_shortcut(n_cells: int = 4, rows: int = 60, seed: int = 0):
    """y = x0 in every cell (x0 transfers); x1 = y + a large per-cell offset (fits each cell
    perfectly on its own, useless on a new cell); x2 is noise."""
    rng = np.random.default_rng(seed)
    X, y, groups = [], [], []
    for cell in range(n_cells):
        target = rng.uniform(0.6, 1.0, rows)
        X.append(np.column_stack([target + rng.normal(0, 0.01, rows), target + 0.5 * cell, rng.normal(size=rows)]))
        y.append(target)
        groups += [f"c{cell}"] * rows
    return np.vstack(X), np.concatenate(y), np.array(groups)


def test_cell_folds_hold_out_whole_cells_or_blocks():
    groups = np.array(["b", "a", "b", "c", "a", "c", "d"])
    folds = cell_folds(len(groups), groups, max_folds=5)  # 4 cells <= 5: leave-one-cell-out
    assert [sorted(set(groups[f])) for f in folds] == [["a"], ["b"], ["c"], ["d"]]
    folds = cell_folds(len(groups), groups, max_folds=2)  # round-robin over sorted cells
    assert [sorted(set(groups[f])) for f in folds] == [["a", "c"], ["b", "d"]]
    blocks = cell_folds(10, None, max_folds=3)  # no cells: contiguous blocks
    assert [list(b) for b in blocks] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    with pytest.raises(ValueError, match="max_folds"):
        cell_folds(10, None, max_folds=1)


def test_selection_keeps_the_feature_that_transfers_across_cells():
    X, y, groups = cells_with_a_local_shortcut()
    model = CellwiseSelectedRegressor(
        estimator=RidgeBaseline(alpha=1e-6), selection_estimator=RidgeBaseline(alpha=1e-6), max_features=3
    ).fit(X, y, groups=groups)
    assert model.selected_names_ == ["x0"]  # the per-cell shortcut x1 never helps an unseen cell
    assert [step["feature"] for step in model.selection_path_] == ["x0"]
    X_new, y_new, _ = cells_with_a_local_shortcut(n_cells=6, seed=1)
    assert np.sqrt(np.mean((model.predict(X_new[-60:]) - y_new[-60:]) ** 2)) < 0.02


def test_selected_forest_from_the_registry_is_deterministic_and_names_columns():
    import pandas as pd

    X, y, groups = cells_with_a_local_shortcut(n_cells=3, rows=40)
    frame = pd.DataFrame(X, columns=["transfers", "shortcut", "noise"])
    first = make_estimator("selected_forest", "soh", seed=3)
    assert first.get_params()["random_state"] == 3
    first.fit(frame, y, groups=groups)
    again = make_estimator("selected_forest", "soh", seed=3).fit(frame, y, groups=groups)
    assert first.selected_names_[0] == "transfers"
    np.testing.assert_array_equal(first.predict(frame), again.predict(frame))


def test_clip_holds_values_to_the_training_range():
    X = np.array([[0.0, np.nan], [1.0, np.nan], [np.nan, np.nan], [2.0, np.nan]])
    scaler = MedianImputeScaler(scale=False, clip=True).fit(X)
    out = scaler.transform(np.array([[-5.0, 7.0], [5.0, np.nan], [np.nan, 1.0]]))
    # column 0 clipped to [0, 2], NaN imputed with the median 1; column 1 had no values: no bounds
    np.testing.assert_array_equal(out, [[0.0, 7.0], [2.0, 0.0], [1.0, 1.0]])
    assert np.array_equal(MedianImputeScaler(scale=False).fit(X).transform([[-5.0, 7.0]]), [[-5.0, 7.0]])
    widened = MedianImputeScaler(scale=False, clip=True, clip_margin=0.5).fit(X)  # range 0..2 -> -1..3
    np.testing.assert_array_equal(widened.transform(np.array([[-5.0, 7.0], [2.5, 1.0]])), [[-1.0, 7.0], [2.5, 1.0]])


def test_ridge_does_not_extrapolate_beyond_its_training_range_and_margin():
    x = np.linspace(0.0, 1.0, 50)[:, None]
    model = RidgeBaseline(alpha=1e-9).fit(x, 2.0 * x[:, 0])  # default margin: 10 % of the range
    np.testing.assert_allclose(model.predict([[10.0], [-3.0]]), [2.2, -0.2], atol=1e-6)
    exact = RidgeBaseline(alpha=1e-9, clip_margin=0.0).fit(x, 2.0 * x[:, 0])
    np.testing.assert_allclose(exact.predict([[10.0], [-3.0]]), [2.0, 0.0], atol=1e-6)


def test_change_from_start_is_causal_per_cell_and_robust_to_an_odd_first_cycle():
    from battery_pipeline.science.ml.selection import change_from_start

    X = np.array([[10.0], [0.0], [12.0], [14.0], [20.0], [5.0], [6.0], [np.nan], [8.0]])
    groups = np.array(["a"] * 5 + ["b"] * 4)
    out = change_from_start(X, groups, start_cycles=3)
    # cell a: running medians 10, 5, 10 over its first 3 rows, then fixed at 10
    np.testing.assert_allclose(out[:5, 0], [0.0, -5.0, 2.0, 4.0, 10.0])
    # cell b: medians 5, 5.5, 5.5 (NaN skipped; its own row stays NaN), then 5.5
    np.testing.assert_allclose(out[5:, 0], [0.0, 0.5, np.nan, 2.5])
    # causal: appending later rows never changes earlier outputs
    np.testing.assert_allclose(change_from_start(X[:3], groups[:3], 3)[:, 0], out[:3, 0])
    with pytest.raises(ValueError, match="start_cycles"):
        change_from_start(X, groups, start_cycles=0)


def test_family_selection_picks_a_trend_that_extrapolates_to_an_older_cell():
    from battery_pipeline.science.ml.hybrid import LinearTrendForest

    rng = np.random.default_rng(0)
    X, y, groups = [], [], []
    for cell, low in enumerate((0.70, 0.75, 0.72, 0.78)):
        soh = np.linspace(1.0, low, 50)
        X.append(np.column_stack([soh + rng.normal(0, 0.003, 50), rng.normal(size=50)]))
        y.append(soh)
        groups += [f"c{cell}"] * 50
    X, y, groups = np.vstack(X), np.concatenate(y), np.array(groups)
    model = CellwiseSelectedRegressor(families=("forest", "linear", "linear_forest"), max_features=2).fit(
        X, y, groups=groups
    )
    assert model.family_ in ("linear", "linear_forest") and model.selected_names_[0] == "x0"
    assert set(model.family_scores_) == {"forest", "linear", "linear_forest"}
    old = np.column_stack([np.linspace(0.7, 0.6, 20), np.zeros(20)])  # aged beyond every training cell
    assert np.max(np.abs(model.predict(old) - old[:, 0])) < 0.02
    forest_only = CellwiseSelectedRegressor(families=("forest",), max_features=2).fit(X, y, groups=groups)
    assert forest_only.predict(old).min() > 0.69  # a forest stays inside the training targets
    # the hybrid's clip still bounds an absurd input (a charge cut short)
    trend = LinearTrendForest(residual_forest=False, alpha=1e-6).fit(X[:, :1], y)
    assert trend.predict([[-10.0]])[0] > 0.7 - 0.5 * 0.3 - 0.02
    with pytest.raises(ValueError, match="families"):
        CellwiseSelectedRegressor(families=("nope",)).fit(X, y, groups=groups)


def test_start_relative_columns_are_named_and_need_the_cells_at_predict_time():
    import pandas as pd

    X, y, groups = cells_with_a_local_shortcut(n_cells=3, rows=20)
    frame = pd.DataFrame(X, columns=["transfers", "shortcut", "noise"])
    model = CellwiseSelectedRegressor(start_cycles=5, max_features=2).fit(frame, y, groups=groups)
    assert all(n in ("transfers", "shortcut", "noise") or n.endswith("_change_from_start")
               for n in model.selected_names_)
    per_cell = model.predict(frame, groups=groups)
    one_cell = model.predict(frame.iloc[:20])  # no groups: the rows are one cell
    np.testing.assert_allclose(per_cell[:20], one_cell)


def test_trailing_mean_looks_back_only_within_each_cell():
    from battery_pipeline.science.ml.selection import trailing_mean

    X = np.array([[1.0], [3.0], [np.nan], [8.0], [10.0], [20.0]])
    groups = np.array(["b", "b", "b", "b", "a", "a"])  # order of the rows kept, not of the names
    out = trailing_mean(X, groups, cycles=2)
    np.testing.assert_allclose(out[:, 0], [1.0, 2.0, 3.0, 8.0, 10.0, 15.0])
    with pytest.raises(ValueError, match="cycles"):
        trailing_mean(X, groups, cycles=0)


def test_the_shortlist_screens_what_the_chosen_features_leave_unexplained():
    """y = x0 + x1 where x1 alone says nothing about y (like a CC and a CV charge capacity, whose
    sum is the charge): a screen of y alone would rank it below the noise columns; the residual
    screen puts it first once x0 is chosen, so a shortlist of one still finds it."""
    rng = np.random.default_rng(4)
    n_cells, rows = 4, 80
    t, u = rng.uniform(0.7, 1.0, n_cells * rows), rng.normal(0.0, 0.1, n_cells * rows)
    X = np.column_stack([t + u, -u, rng.normal(size=(n_cells * rows, 4))])
    groups = np.repeat([f"c{i}" for i in range(n_cells)], rows)
    model = CellwiseSelectedRegressor(max_features=2, max_candidates=1, tol=0.0).fit(X, t, groups=groups)
    assert model.selected_names_ == ["x0", "x1"]
    with pytest.raises(ValueError, match="max_candidates"):
        CellwiseSelectedRegressor(max_candidates=0).fit(X, t, groups=groups)
