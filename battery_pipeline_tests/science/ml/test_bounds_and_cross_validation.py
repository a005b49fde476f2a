"""Predictions stay physical, linear models do not extrapolate past their margin, every model is
ranked on the same out-of-fold predictions, and the fewest cells training needs is what the
split and the folds need."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from battery_pipeline.science.ml.bounds import PHYSICAL_RANGE, clip_to_range
from battery_pipeline.science.ml.cross_validation import out_of_fold_predictions
from battery_pipeline.science.ml.datasets import TrainingTable
from battery_pipeline.science.ml.intervals import ConformalRegressor, cross_folds
from battery_pipeline.science.ml.linear import LinearBaseline, RidgeBaseline
from battery_pipeline.science.ml.registry import fit_on, interval_on, make_estimator, predict_on, scored_on
from battery_pipeline.science.ml.splits import MIN_TRAIN_CELLS, MIN_TRAINING_CELLS, split_cells, training_shortfall


def fading_cells(n_cells: int = 6, cycles: int = 40, task: str = "rul", seed: int = 0) -> TrainingTable:
    """Cells whose RUL falls linearly with one feature (their fade), each at its own rate."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n_cells):
        cycle = np.arange(cycles)
        fade = cycle * (0.9 + 0.05 * k) + rng.normal(0, 0.5, cycles)
        frames.append(pd.DataFrame({"cell_id": f"c{k}", "cycle_number": cycle, "fade": fade, "noise": rng.normal(size=cycles),
                                    "y": (cycles - 1 - cycle) * (0.9 + 0.05 * k) + rng.normal(0, 1.0, cycles)}))
    rows = pd.concat(frames, ignore_index=True)
    return TrainingTable(task, "y", rows[["fade", "noise"]], rows["y"], rows["cell_id"], rows["cycle_number"], ("fade", "noise"))


def test_clip_to_range_counts_what_it_moves_and_leaves_nan_alone():
    values, moved = clip_to_range("soh", [-0.1, 0.5, 1.3, np.nan, 1.2])
    np.testing.assert_array_equal(values, [0.0, 0.5, 1.2, np.nan, 1.2])
    assert moved == 2
    assert clip_to_range("rul", [-200.0, 5.0, 1e6])[1] == 1
    assert PHYSICAL_RANGE["rul"][0] == 0.0
    with pytest.raises(ValueError, match="physical range"):
        clip_to_range("capacity", [1.0])


def test_rul_predictions_and_intervals_are_never_negative():
    table = fading_cells()
    train, late = table.subset(["c0", "c1", "c2", "c3"]), table.subset(["c4", "c5"])
    model = fit_on(make_estimator("linear", "rul", intervals=True), train)
    raw = model.predict(late.X)
    assert (raw < 0).any()  # the straight line does cross zero near end of life
    scored = scored_on(model, late)
    assert (scored.prediction >= 0).all() and (scored.lower >= 0).all() and (scored.upper >= 0).all()
    assert scored.clipped["prediction"] == int((raw < 0).sum()) > 0
    assert scored.clipped["lower"] >= scored.clipped["prediction"]  # a lower bound sits below its point
    np.testing.assert_array_equal(predict_on(model, late), scored.prediction)
    for a, b in zip(interval_on(model, late), (scored.lower, scored.upper)):
        np.testing.assert_array_equal(a, b)


def test_soh_predictions_stay_in_the_physical_range():
    table = fading_cells(task="soh")
    # SOH reaching 1.26 at the start of the fastest cell: the band around it passes 1.2
    soh = TrainingTable("soh", "soh", table.X, 0.75 + table.y / 80.0, table.cell_id, table.cycle_number, table.feature_columns)
    model = fit_on(make_estimator("ridge", "soh", intervals=True), soh)
    raw_lower, raw_upper = model.predict_interval(soh.X)
    scored = scored_on(model, soh)
    low, high = PHYSICAL_RANGE["soh"]
    assert ((scored.lower >= low) & (scored.upper <= high) & (scored.prediction <= high)).all()
    assert scored.clipped["upper"] == int((raw_upper > high).sum()) > 0
    assert scored.clipped["lower"] == int((raw_lower < low).sum())


@pytest.mark.parametrize("estimator", [LinearBaseline, RidgeBaseline])
def test_linear_models_clip_features_to_the_training_range_plus_the_margin(estimator):
    X = np.linspace(0.0, 10.0, 50)[:, None]
    y = 3.0 * X[:, 0] + 1.0
    model = estimator(clip_margin=0.1).fit(X, y)
    # 10 % of the range (1.0) beyond the maximum is as far as the model extrapolates
    np.testing.assert_allclose(model.predict([[1000.0]]), model.predict([[11.0]]))
    np.testing.assert_allclose(model.predict([[-1000.0]]), model.predict([[-1.0]]))
    assert model.predict([[11.0]])[0] > model.predict([[10.0]])[0]  # inside the margin it still extrapolates
    exact = estimator(clip_margin=0.0).fit(X, y)
    np.testing.assert_allclose(exact.predict([[1000.0]]), exact.predict([[10.0]]))
    assert estimator().clip_margin == 0.1 and "clip_margin" in estimator().get_params()


def test_conformal_wrapper_keeps_each_rows_prediction_by_the_model_that_did_not_see_its_cell():
    table = fading_cells()
    wrapped = fit_on(ConformalRegressor(RidgeBaseline(), cv_folds=3, random_state=5), table)
    folds = cross_folds(len(table), 3, table.groups, random_state=5)
    for k, rows in enumerate(folds):
        held = sorted(set(table.groups[rows]))
        alone = RidgeBaseline().fit(table.X.drop(index=rows), table.y.drop(index=rows))
        np.testing.assert_allclose(wrapped.oof_prediction_[rows], alone.predict(table.X.iloc[rows]))
        assert (wrapped.fold_of_row_[rows] == k).all() and len(held) == 2


def test_every_estimator_is_cross_validated_on_the_same_folds_and_wrappers_fit_nothing_again():
    table = fading_cells()
    wrapped = fit_on(make_estimator("ridge", "rul", seed=3, intervals=True), table)
    reused = out_of_fold_predictions(wrapped, table, seed=3)
    assert reused.reused
    refitted = out_of_fold_predictions(RidgeBaseline(), table, seed=3)  # an unwrapped estimator: one fit per fold
    assert not refitted.reused and refitted.fold_cells == reused.fold_cells
    np.testing.assert_allclose(reused.prediction, refitted.prediction)
    # the booster, refitted per fold unwrapped, predicts what its wrapper's fold models did
    booster = fit_on(make_estimator("gradient_boosting", "rul", seed=3, intervals=True, max_iter=10), table)
    unwrapped = out_of_fold_predictions(make_estimator("gradient_boosting", "rul", seed=3, max_iter=10), table, seed=3)
    assert not unwrapped.reused and (unwrapped.prediction >= 0).all()  # clipped like every published prediction
    np.testing.assert_array_equal(unwrapped.prediction, out_of_fold_predictions(booster, table, seed=3).prediction)
    other_seed = out_of_fold_predictions(wrapped, table, seed=4)  # other folds: not the wrapper's
    assert not other_seed.reused and other_seed.fold_cells != reused.fold_cells
    unfitted = clone(wrapped)
    assert not out_of_fold_predictions(unfitted, table, seed=3).reused


def test_the_fewest_cells_for_training_is_what_the_split_and_the_folds_need():
    enough = split_cells([f"c{i}" for i in range(MIN_TRAINING_CELLS)])
    assert training_shortfall(enough) is None
    assert len(enough.train) >= MIN_TRAIN_CELLS and enough.validation and enough.test
    for n in range(1, MIN_TRAINING_CELLS):
        split = split_cells([f"c{i}" for i in range(n)])
        assert f"at least {MIN_TRAINING_CELLS} cells" in training_shortfall(split)
    assert len(split_cells(["a", "b", "c"]).train) < MIN_TRAIN_CELLS  # why 3 cells are not enough
    lopsided = split_cells([f"c{i}" for i in range(5)], fractions=(0.2, 0.4, 0.4))
    assert "train cells" in training_shortfall(lopsided)
