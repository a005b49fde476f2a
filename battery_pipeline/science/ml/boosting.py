"""Gradient boosting: a point model and a quantile model that gives prediction intervals.

Both use scikit-learn's HistGradientBoostingRegressor (histogram trees, fast on a few thousand
rows and two cores) on median-imputed, unscaled features (`preprocessing`). Early stopping is off
by default: scikit-learn's would hold out random *rows*, i.e. cycles of the training cells, which
says little about new cells (see `splits`); pick `max_iter` with a cell-wise validation split.

`QuantileGradientBoosting` fits three boosters: the mean (squared error, used by `predict`) and
the alpha/2 and 1 - alpha/2 quantiles (pinball loss). Its intervals have no finite-sample
coverage guarantee (quantile regression estimates the conditional quantiles; on small or shifted
data they under-cover); wrap it in `intervals.ConformalRegressor(method="cqr")` for one.
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor

from battery_pipeline.science.ml.base import TabularRegressor


class GradientBoostingBaseline(TabularRegressor):
    """Histogram gradient boosting, squared error.

    Parameters
    ----------
    max_iter : int, default 200
        Boosting rounds.
    learning_rate : float, default 0.1
    max_leaf_nodes : int, default 31
    min_samples_leaf : int, default 20
    l2_regularization : float, default 0.0
    early_stopping : bool, default False
        scikit-learn's row-wise early stopping (see module docstring for why it is off).
    random_state : int, default 0
        Only used by early stopping's validation split and feature subsampling.
    """

    _scale_features = False

    def __init__(
        self,
        max_iter: int = 200,
        learning_rate: float = 0.1,
        max_leaf_nodes: int = 31,
        min_samples_leaf: int = 20,
        l2_regularization: float = 0.0,
        early_stopping: bool = False,
        random_state: int = 0,
    ):
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.early_stopping = early_stopping
        self.random_state = random_state

    def _booster(self, **loss) -> HistGradientBoostingRegressor:
        return HistGradientBoostingRegressor(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization,
            early_stopping=self.early_stopping,
            random_state=self.random_state,
            **loss,
        )

    def _make_model(self):
        return self._booster()

    def _fit_model(self, Z: np.ndarray, y: np.ndarray) -> None:
        super()._fit_model(Z, y)
        self.n_iter_ = self.model_.n_iter_  # boosting rounds done (< max_iter only with early stopping)


class QuantileGradientBoosting(GradientBoostingBaseline):
    """Mean booster plus alpha/2 and 1 - alpha/2 quantile boosters.

    Parameters
    ----------
    alpha : float, default 0.1
        Miscoverage of the interval: nominal coverage 1 - alpha (0.1 -> 5 % and 95 % quantiles).
    Other parameters as `GradientBoostingBaseline`.

    Fitted: `model_` (mean), `lower_model_`, `upper_model_`.
    """

    def __init__(
        self,
        alpha: float = 0.1,
        max_iter: int = 200,
        learning_rate: float = 0.1,
        max_leaf_nodes: int = 31,
        min_samples_leaf: int = 20,
        l2_regularization: float = 0.0,
        early_stopping: bool = False,
        random_state: int = 0,
    ):
        super().__init__(
            max_iter=max_iter,
            learning_rate=learning_rate,
            max_leaf_nodes=max_leaf_nodes,
            min_samples_leaf=min_samples_leaf,
            l2_regularization=l2_regularization,
            early_stopping=early_stopping,
            random_state=random_state,
        )
        self.alpha = alpha

    def _fit_model(self, Z: np.ndarray, y: np.ndarray) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha!r}")
        self.model_ = self._booster().fit(Z, y)
        self.lower_model_ = self._booster(loss="quantile", quantile=self.alpha / 2).fit(Z, y)
        self.upper_model_ = self._booster(loss="quantile", quantile=1 - self.alpha / 2).fit(Z, y)
        self.n_iter_ = self.model_.n_iter_

    def point_estimator(self) -> GradientBoostingBaseline:
        """An unfitted estimator whose `predict` equals this one's (the mean booster, same
        parameters): what cross-validating the point prediction needs to fit, a third of the work."""
        return GradientBoostingBaseline(**{k: v for k, v in self.get_params().items() if k != "alpha"})

    def predict_interval(self, X, alpha: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) bounds, same units as y; `alpha` must be None or the fitted alpha."""
        if alpha is not None and not np.isclose(alpha, self.alpha):
            raise ValueError(
                f"quantile boosters were fitted for alpha={self.alpha}; refit for alpha={alpha}"
            )
        Z = self._transform(X)
        lower, upper = self.lower_model_.predict(Z), self.upper_model_.predict(Z)
        # independently fitted quantiles can cross on a few rows; an interval must not
        return np.minimum(lower, upper), np.maximum(lower, upper)
