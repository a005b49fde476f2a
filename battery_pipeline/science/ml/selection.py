"""Feature selection scored on unseen cells: greedy forward selection with cell-wise folds.

Why: with few training cells (NASA leave-one-cell-out trains on two), a model given every
feature also picks up relations that hold inside the training cells but not across cells (a
cell's own drift of temperature or resistance with age, protocol settings that differ per cell).
A feature that helps predict a cell the model has *not* seen is what transfers. So
`CellwiseSelectedRegressor` chooses features the way the benchmark scores models, only on the
training cells: nested, the test cells are never looked at.

`fit(X, y, groups)`:
  1. folds over the training rows by cell (`groups`): leave-one-cell-out when there are at most
     `max_folds` cells, else `max_folds` folds of whole cells (cells dealt round-robin in sorted
     order); without groups, or with one cell, `max_folds` contiguous blocks of rows (a series
     is then split in time, the closest thing to an unseen cell);
  2. greedy forward selection: start from no feature; at each step add the feature whose
     addition gives the lowest pooled out-of-fold RMSE of `selection_estimator` (default: a
     30-tree random forest); the first feature is always taken, later ones only when they lower
     it by more than `tol` (relative); at most `max_features`. Ties go to the earlier column;
     columns with no value in the selection rows are never candidates. For speed the folds use at most
     `max_rows` rows (every k-th row of the cell-ordered table, so every cell keeps rows);
  3. `estimator` (default: the zoo's random forest) is refitted on all rows, selected features.
Fitted: `selected_features_` (column indices), `selected_names_` (names with DataFrame input),
`selection_path_` (list of {"feature", "rmse"} per step), `model_`, `n_features_in_`.
Deterministic for a given seed (the forests are seeded from `random_state`).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.utils.validation import check_is_fitted, validate_data

from battery_pipeline.science.ml.forest import RandomForestBaseline


def cell_folds(n_rows: int, groups=None, max_folds: int = 5) -> list[np.ndarray]:
    """Held-out row indices of each fold (module docstring, step 1)."""
    if max_folds < 2:
        raise ValueError(f"max_folds must be >= 2, got {max_folds!r}")
    if groups is not None and len(groups) != n_rows:
        raise ValueError(f"groups has {len(groups)} entries for {n_rows} rows")
    names = np.unique(np.asarray(groups).astype(str)) if groups is not None else np.zeros(0)
    if len(names) >= 2:
        codes = np.searchsorted(names, np.asarray(groups).astype(str))
        fold_of_cell = np.arange(len(names)) % min(max_folds, len(names))
        fold = fold_of_cell[codes]
    else:
        k = min(max_folds, n_rows)
        fold = np.minimum(np.arange(n_rows) * k // max(n_rows, 1), k - 1)
    return [np.flatnonzero(fold == f) for f in np.unique(fold)]


class CellwiseSelectedRegressor(RegressorMixin, BaseEstimator):
    """Forward feature selection by cell-wise folds, then a refit (module docstring).

    Parameters
    ----------
    estimator : regressor or None, default None (RandomForestBaseline())
        Fitted on the selected features.
    selection_estimator : regressor or None, default None (RandomForestBaseline(30 trees))
        Scores candidate feature sets (cheaper than the final model).
    max_features : int, default 4
    max_folds : int, default 5
    max_rows : int, default 3000
        Rows used for the selection folds (every k-th row beyond it).
    tol : float, default 0.01
        A step must lower the out-of-fold RMSE by more than this fraction.
    random_state : int, default 0
        Given to both estimators (where they take one).
    """

    def __init__(
        self,
        estimator=None,
        selection_estimator=None,
        max_features: int = 4,
        max_folds: int = 5,
        max_rows: int = 3000,
        tol: float = 0.01,
        random_state: int = 0,
    ):
        self.estimator = estimator
        self.selection_estimator = selection_estimator
        self.max_features = max_features
        self.max_folds = max_folds
        self.max_rows = max_rows
        self.tol = tol
        self.random_state = random_state

    def _seeded(self, estimator):
        estimator = clone(estimator)
        if "random_state" in estimator.get_params():
            estimator.set_params(random_state=self.random_state)
        return estimator

    def _oof_rmse(self, X, y, folds, columns) -> float:
        sq = 0.0
        for held in folds:
            train = np.ones(len(y), dtype=bool)
            train[held] = False
            model = self._seeded(self._selector).fit(X[train][:, columns], y[train])
            sq += float(np.sum((model.predict(X[held][:, columns]) - y[held]) ** 2))
        return float(np.sqrt(sq / len(y)))

    def fit(self, X, y, groups=None):
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", dtype=np.float64, y_numeric=True)
        if int(self.max_features) != self.max_features or self.max_features < 1:
            raise ValueError(f"max_features must be an integer >= 1, got {self.max_features!r}")
        self._selector = self.selection_estimator or RandomForestBaseline(n_estimators=30)
        n = len(y)
        rows = np.arange(n)
        if groups is not None:
            rows = np.argsort(np.asarray(groups).astype(str), kind="stable")  # cell-ordered
        step = max(1, int(np.ceil(n / max(int(self.max_rows), 1))))
        rows = np.sort(rows[::step])
        Xs, ys = X[rows], y[rows]
        gs = None if groups is None else np.asarray(groups)[rows]
        folds = cell_folds(len(ys), gs, int(self.max_folds)) if len(ys) >= 2 else []
        candidates = [j for j in range(X.shape[1]) if np.isfinite(Xs[:, j]).any()] or [0]
        selected: list[int] = []
        path = []
        best = np.inf
        while len(selected) < min(int(self.max_features), len(candidates)):
            if not folds:  # fewer than 2 rows: nothing to score, keep the first column
                selected.append(candidates[0])
                break
            score, j = min((self._oof_rmse(Xs, ys, folds, selected + [j]), j) for j in candidates if j not in selected)
            if selected and not score < best * (1.0 - self.tol):
                break
            selected.append(j)
            path.append({"feature": self._name(j), "rmse": score})
            best = score
        self.selected_features_ = np.asarray(selected, dtype=np.int64)
        self.selected_names_ = [self._name(j) for j in selected]
        self.selection_path_ = path
        self.model_ = self._seeded(self.estimator or RandomForestBaseline()).fit(X[:, self.selected_features_], y)
        del self._selector
        return self

    def _name(self, j: int) -> str:
        names = getattr(self, "feature_names_in_", None)
        return str(names[j]) if names is not None else f"x{j}"

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        X = validate_data(self, X, ensure_all_finite="allow-nan", dtype=np.float64, reset=False)
        return np.asarray(self.model_.predict(X[:, self.selected_features_]), dtype=np.float64)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags
