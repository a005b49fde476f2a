"""Prediction intervals for any regressor: split conformal and cross-conformal prediction.

`ConformalRegressor(estimator)` holds out a calibration part of the training data, fits a clone
of `estimator` on the rest, and keeps the sorted nonconformity scores |y - f(x)| of the
calibration rows. `predict_interval(X, alpha)` then returns, for any alpha chosen at predict
time, [f(x) - q, f(x) + q] with q the ceil((n + 1)(1 - alpha))-th smallest of the n calibration
scores (q = +inf when that rank exceeds n: too few calibration rows for that alpha, the honest
answer is "no bound"). The width is the same for every x (conformalized quantile regression
would adapt it; the zoo's quantile boosters under-covered unseen cells, see `registry`).

Coverage guarantee (Vovk et al. 2005; Lei et al. 2018): if the calibration rows and a test row
are exchangeable, P(y in interval) >= 1 - alpha, and <= 1 - alpha + 1/(n + 1) when the scores have
no ties. It is *marginal* (on average over test rows, not for every x) and holds whatever the
model, however bad: a bad model gives wide intervals, not wrong ones.

Calibration split: with `groups` (cell ids) whole cells are held out, never rows of a cell that
is also in the training part. Rows of one cell are strongly correlated, so calibrating on held-out
rows of training cells would measure interpolation error inside known cells and under-cover a new
cell. Cell-wise calibration reflects the error on unseen cells; the guarantee above then holds
for a test row drawn like a random calibration row (cells exchangeable and equally represented),
and the coverage achieved on one particular new cell varies with how few cells calibrate it.
Without `groups` rows are split at random (exchangeable rows, e.g. one row per cell).

The point model sees only (1 - calibration_fraction) of the data; it is not refitted on all of
it, because the guarantee needs a model that never saw the calibration rows.

Cross-conformal (`cv_folds=K`): the training cells are dealt into K folds (seeded); for each fold
a clone fitted on the other folds scores the fold's rows, so every training row gets an
out-of-fold score, and the point model is then fitted on *all* rows (MAPIE's "cv" + "base"
scheme). Why: with a small fleet, split conformal costs the point model a quarter of its cells
(on the 8-cell demo fleet the LSTM kept 4 of 6 and did no better than the mean) and calibrates on
one or two cells, while cross-conformal trains on every cell and calibrates on every cell; it
costs K extra fits. The price is the guarantee: the refitted model is not the one scored, so the
bound above is not proven (CV+, Barber et al. 2021, would give >= 1 - 2 alpha at K models per
prediction). The fold models see fewer cells than the refit, so the scores tend to overstate the
error and the intervals to over-cover; the pipeline's `interval_coverage` check measures what
each model achieves on the test cells. The fold models' point predictions are kept
(`oof_prediction_`): they are a cross-validated error over held-out training cells for free,
which `cross_validation` uses to rank models without fitting them again.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
from joblib import Parallel, delayed
from scipy.sparse import issparse
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.utils.validation import check_is_fitted, column_or_1d

def conformal_quantile(sorted_scores: np.ndarray, alpha: float) -> float:
    """The ceil((n+1)(1-alpha))-th smallest score (1-based), +inf if that exceeds n."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    n = len(sorted_scores)
    # the tiny epsilon keeps e.g. (999+1)*0.9 = 900.0000000000001 from rounding up to 901
    rank = math.ceil((n + 1) * (1 - alpha) - 1e-9)
    if rank > n:
        return math.inf
    return float(sorted_scores[max(rank, 1) - 1])


def take_rows(X, rows: np.ndarray):
    """Rows of an array (any number of dimensions) or DataFrame by position."""
    return X.iloc[rows] if hasattr(X, "iloc") else np.asarray(X)[rows]


def accepts_groups(method) -> bool:
    """Does this fit/predict take a `groups` keyword (e.g. `lstm.LSTMRegressor`)?"""
    return "groups" in inspect.signature(method).parameters


def calibration_split(
    n_samples: int, fraction: float, groups=None, random_state: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(train_rows, calibration_rows) as sorted row indices; whole groups when `groups` is given.

    At least one group (row) goes to each side; deterministic for a given random_state.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"calibration_fraction must be in (0, 1), got {fraction!r}")
    n_units, unit_of_row = _units(n_samples, groups, "conformal calibration")
    n_cal = min(max(1, round(fraction * n_units)), n_units - 1)
    held_out = np.random.default_rng(random_state).permutation(n_units)[:n_cal]
    calibration = np.isin(unit_of_row, held_out)
    return np.flatnonzero(~calibration), np.flatnonzero(calibration)


def cross_folds(n_samples: int, n_folds: int, groups=None, random_state: int = 0) -> list[np.ndarray]:
    """Row indices of each cross-conformal fold: whole groups dealt round-robin in a seeded order
    (rows without groups); min(n_folds, number of groups) folds, each sorted; deterministic."""
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise ValueError(f"cv_folds must be an integer >= 2, got {n_folds!r}")
    n_units, unit_of_row = _units(n_samples, groups, "cross-conformal calibration")
    fold_of_unit = np.empty(n_units, dtype=np.int64)
    fold_of_unit[np.random.default_rng(random_state).permutation(n_units)] = np.arange(n_units) % min(n_folds, n_units)
    fold = fold_of_unit[unit_of_row]
    return [np.flatnonzero(fold == k) for k in np.unique(fold)]


def _units(n_samples: int, groups, what: str) -> tuple[int, np.ndarray]:
    """(number of units, unit index of each row): whole groups, numbered in sorted name order so
    that row order does not matter, or single rows without groups."""
    if groups is None:
        if n_samples < 2:
            raise ValueError(f"{what} needs at least 2 rows (n_samples = {n_samples})")
        return n_samples, np.arange(n_samples)
    groups = np.asarray(groups).astype(str)
    if len(groups) != n_samples:
        raise ValueError(f"groups has {len(groups)} entries for {n_samples} rows")
    names, unit_of_row = np.unique(groups, return_inverse=True)
    if len(names) < 2:
        raise ValueError("group-wise conformal calibration needs at least 2 groups (cells)")
    return len(names), unit_of_row


class ConformalRegressor(RegressorMixin, BaseEstimator):
    """Split- or cross-conformal wrapper giving `predict_interval` to any regressor (see module docstring).

    Parameters
    ----------
    estimator : regressor or None, default None
        Cloned and fitted on the training part; None -> `linear.RidgeBaseline()`.
    alpha : float, default 0.1
        Default miscoverage for `predict_interval` (nominal coverage 1 - alpha).
    calibration_fraction : float, default 0.25
        Share of the cells (with groups) or rows held out for calibration (split conformal).
    random_state : int, default 0
        Seeds the calibration split (the folds with `cv_folds`).
    cv_folds : int or None, default None
        K >= 2: cross-conformal with K folds of whole cells (module docstring);
        `calibration_fraction` is then unused. At most one fold per cell (row without groups).
    n_jobs : int or None, default None
        With `cv_folds`: fit the fold models and the refit in this many worker processes
        (joblib; None: one after the other, here). The same models either way.

    `fit(X, y, groups=None)`; X is passed through to the estimator unchanged (2-D or 3-D arrays,
    DataFrames; NaN handling is the estimator's). Fitted: `estimator_`, `calibration_scores_`
    (sorted), `n_calibration_`, `calibration_groups_` (the cells whose scores calibrate, or None),
    `n_folds_` (folds used; 0 for split conformal), and per training row `oof_prediction_` (the
    point prediction of the model that did not see the row; NaN for rows no model held out, i.e.
    the training part of split conformal) and `fold_of_row_` (its fold; -1 where not held out).
    """

    def __init__(
        self,
        estimator=None,
        alpha: float = 0.1,
        calibration_fraction: float = 0.25,
        random_state: int = 0,
        cv_folds: int | None = None,
        n_jobs: int | None = None,
    ):
        self.estimator = estimator
        self.alpha = alpha
        self.calibration_fraction = calibration_fraction
        self.random_state = random_state
        self.cv_folds = cv_folds
        self.n_jobs = n_jobs

    def _base(self):
        if self.estimator is not None:
            return clone(self.estimator)
        from battery_pipeline.science.ml.linear import RidgeBaseline

        return RidgeBaseline()

    def fit(self, X, y, groups=None):
        conformal_quantile(np.zeros(1), self.alpha)  # validates alpha before any work
        if issparse(X):
            raise TypeError("sparse input is not supported: pass a dense array or DataFrame")
        y = column_or_1d(y, warn=True)
        if np.iscomplexobj(y):
            raise ValueError("Complex data not supported")
        y = y.astype(np.float64)
        if not hasattr(X, "shape"):
            X = np.asarray(X)
        n = X.shape[0]
        if len(y) != n:
            raise ValueError(f"X has {n} rows, y has {len(y)}")
        if not np.isfinite(y).all():
            raise ValueError("y must be finite (drop unlabelled rows first)")
        groups_array = None if groups is None else np.asarray(groups)
        self.oof_prediction_ = np.full(n, np.nan)
        self.fold_of_row_ = np.full(n, -1, dtype=np.int64)
        if self.cv_folds is None:
            train, cal = calibration_split(n, self.calibration_fraction, groups, self.random_state)
            self.estimator_ = self._fitted(X, y, groups_array, train)
            cal_groups = None if groups_array is None else groups_array[cal]
            scores, self.oof_prediction_[cal] = self._scores(take_rows(X, cal), y[cal], cal_groups)
            self.fold_of_row_[cal] = 0
            self.n_folds_ = 0
        else:
            folds = cross_folds(n, self.cv_folds, groups, self.random_state)
            scores, cal = [], np.concatenate(folds)
            # the K fold models and the refit are independent: side by side in `n_jobs` processes
            # (each fit is the same in a worker as here, so the results do not depend on n_jobs)
            row_sets = [np.setdiff1d(np.arange(n), held) for held in folds] + [np.arange(n)]
            *fold_models, self.estimator_ = Parallel(n_jobs=self.n_jobs)(
                delayed(self._fitted)(X, y, groups_array, rows) for rows in row_sets
            )
            for k, (held, fold_model) in enumerate(zip(folds, fold_models)):
                held_groups = None if groups_array is None else groups_array[held]
                fold_scores, self.oof_prediction_[held] = self._scores(take_rows(X, held), y[held], held_groups, fold_model)
                scores.append(fold_scores)
                self.fold_of_row_[held] = k
            scores = np.concatenate(scores)
            cal_groups = None if groups_array is None else groups_array[cal]
            self.n_folds_ = len(folds)
        self.calibration_scores_ = np.sort(scores)
        self.n_calibration_ = len(cal)
        self.calibration_groups_ = None if cal_groups is None else sorted({str(g) for g in cal_groups})
        estimator = self.estimator_
        if hasattr(estimator, "n_features_in_"):
            self.n_features_in_ = estimator.n_features_in_
        if hasattr(estimator, "feature_names_in_"):
            self.feature_names_in_ = estimator.feature_names_in_
        return self

    def _fitted(self, X, y: np.ndarray, groups, rows: np.ndarray):
        """A fresh clone of the estimator fitted on `rows` (with their groups where it takes them)."""
        estimator = self._base()
        fit_kwargs = {}
        if groups is not None and accepts_groups(estimator.fit):
            fit_kwargs["groups"] = groups[rows]
        return estimator.fit(take_rows(X, rows), y[rows], **fit_kwargs)

    def _call(self, name: str, X, groups=None, model=None):
        method = getattr(self.estimator_ if model is None else model, name)
        if groups is not None and accepts_groups(method):
            return method(X, groups=groups)
        return method(X)

    def _scores(self, X, y: np.ndarray, groups=None, model=None) -> tuple[np.ndarray, np.ndarray]:
        """(nonconformity scores, point predictions) of the rows."""
        point = np.asarray(self._call("predict", X, groups, model), dtype=np.float64)
        return np.abs(y - point), point

    def predict(self, X, groups=None) -> np.ndarray:
        """The wrapped estimator's point prediction."""
        check_is_fitted(self, "estimator_")
        return np.asarray(self._call("predict", X, groups), dtype=np.float64)

    def predict_interval(self, X, alpha: float | None = None, groups=None) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) with nominal coverage 1 - alpha (default: the `alpha` parameter)."""
        check_is_fitted(self, "estimator_")
        q = conformal_quantile(self.calibration_scores_, self.alpha if alpha is None else alpha)
        point = self.predict(X, groups)
        return point - q, point + q

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags
