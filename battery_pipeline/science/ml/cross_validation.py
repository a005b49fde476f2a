"""Cross-validated predictions over held-out training cells: the error that ranks models.

Why not the validation split: with a small fleet it is one or two cells, and one cell is a noisy
judge (on the 8-cell demo fleet it promoted the RUL model that was 40 % worse on the test cell
than the best). Folds of the training cells give every training cell a turn as the unseen cell.

Every model of a task is judged on the same folds: `intervals.cross_folds` over the table's
cells with `registry.CONFORMAL_FOLDS` folds and the training seed, exactly the folds of the
cross-conformal intervals. A fitted cross-conformal wrapper (`ConformalRegressor` with
`cv_folds`) already holds its fold models' predictions of those folds (`oof_prediction_`), so
they are reused and nothing is fitted again (every zoo entry is such a wrapper); any other
estimator gets one clone fitted per fold. The predictions are clipped to the physical range
(`bounds`), as every prediction the pipeline publishes is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from battery_pipeline.science.ml.bounds import clip_to_range
from battery_pipeline.science.ml.datasets import TrainingTable
from battery_pipeline.science.ml.registry import CONFORMAL_FOLDS, fit_on, predict_on


@dataclass(frozen=True)
class OutOfFold:
    """Out-of-fold predictions, one per row of the table, and the cells of each fold."""

    prediction: np.ndarray
    fold_cells: list[list[str]]
    reused: bool  # True: the cross-conformal wrapper's own fold models, no extra fit


def out_of_fold_predictions(estimator, table: TrainingTable, seed: int = 0, n_folds: int = CONFORMAL_FOLDS) -> OutOfFold:
    """Predictions of each row of `table` by a model that never saw its cell (module docstring).

    `estimator`: fitted on `table` (a cross-conformal wrapper's folds are reused when they are
    these folds) or not (refitted per fold from its parameters). Needs 2 cells or more.
    """
    # imported here: the Dagster definitions import this module, and need no scikit-learn
    from sklearn.base import clone

    from battery_pipeline.science.ml.intervals import cross_folds

    folds = cross_folds(len(table), n_folds, table.groups, random_state=seed)
    fold_cells = [sorted({str(c) for c in table.groups[rows]}) for rows in folds]
    if _holds_these_folds(estimator, folds):
        return OutOfFold(clip_to_range(table.task, estimator.oof_prediction_)[0], fold_cells, reused=True)
    prediction = np.full(len(table), np.nan)
    for rows, cells in zip(folds, fold_cells):
        others = sorted(set(table.cells) - set(cells))
        model = fit_on(clone(estimator), table.subset(others))
        prediction[rows] = predict_on(model, table.subset(cells))  # subset keeps the row order
    return OutOfFold(prediction, fold_cells, reused=False)


def _holds_these_folds(estimator, folds: list[np.ndarray]) -> bool:
    from battery_pipeline.science.ml.intervals import ConformalRegressor

    if not isinstance(estimator, ConformalRegressor) or not getattr(estimator, "n_folds_", 0):
        return False
    fold_of_row = getattr(estimator, "fold_of_row_", None)
    if fold_of_row is None or len(fold_of_row) != sum(len(rows) for rows in folds):
        return False
    return all(np.array_equal(np.flatnonzero(fold_of_row == k), rows) for k, rows in enumerate(folds))
