"""A linear trend that may extrapolate, plus a random forest on its residuals.

Why: a forest predicts at most the largest target it was trained on. Leave-one-cell-out on NASA
B0005/6/7 holds out B0006, whose SOH runs 0.58-1.02 while the two training cells cover only
0.64-0.95: every cycle outside that band is predicted at the band's edge. Capacity fade is close
to linear in the charge-side signals over that range (charge capacity after a full discharge is
the charge the cell could hold), so a linear trend carries the prediction past the training band
and the forest only corrects what is left (bounded: residuals of the training rows).

Features are median-imputed, standardised and clipped to the training range widened by
`clip_margin` (default 0.5, i.e. half the training range on each side): far enough for a
trend to reach a cell that has aged 50 % of the training span further, not so far that an odd
cycle (a charge cut short: charge fraction ~0) drives the prediction to nonsense. A priori, not
tuned: NASA's clipped ridge (margin 0) loses the extrapolation entirely, no clip loses the
guard (preprocessing docstring: ridge RMSE 1.16 without clip).

`residual_forest=False` gives the trend alone (ridge with the widened clip).
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import Ridge

from battery_pipeline.science.ml.base import TabularRegressor


class LinearTrendForest(TabularRegressor):
    """Ridge trend on standardised, range-clipped features + random forest on the residuals.

    Parameters
    ----------
    alpha : float, default 1.0
        Ridge penalty of the trend (scikit-learn's Ridge, standardised features).
    residual_forest : bool, default True
        False: the trend alone.
    n_estimators, min_samples_leaf, max_features : forest parameters, as `forest.RandomForestBaseline`
    clip_margin : float, default 0.5
        Fraction of the training range by which the clip bounds are widened on each side.
    random_state : int, default 0
    """

    _clip_features = True

    def __init__(
        self,
        alpha: float = 1.0,
        residual_forest: bool = True,
        n_estimators: int = 100,
        min_samples_leaf: int = 2,
        max_features: float | int | str | None = 0.5,
        clip_margin: float = 0.5,
        random_state: int = 0,
    ):
        self.alpha = alpha
        self.residual_forest = residual_forest
        self.n_estimators = n_estimators
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.clip_margin = clip_margin
        self.random_state = random_state

    def _fit_model(self, Z: np.ndarray, y: np.ndarray) -> None:
        self.trend_ = Ridge(alpha=self.alpha).fit(Z, y)
        self.model_ = None
        if self.residual_forest:
            self.model_ = RandomForestRegressor(
                n_estimators=self.n_estimators,
                min_samples_leaf=self.min_samples_leaf,
                max_features=self.max_features,
                random_state=self.random_state,
            ).fit(Z, y - self.trend_.predict(Z))

    def predict(self, X) -> np.ndarray:
        Z = self._transform(X)  # model_ is None for the trend alone, but set: fitted
        out = self.trend_.predict(Z)
        if self.model_ is not None:
            out = out + self.model_.predict(Z)
        return np.asarray(out, dtype=np.float64)
