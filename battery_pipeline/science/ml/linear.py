"""Linear baselines (the seed's `baseline_lr`): ordinary least squares and ridge.

Both fit on median-imputed, standardised features (`preprocessing`), so ridge's penalty treats
every feature alike whatever its unit, and coefficients (`model_.coef_`) are per standard
deviation of the feature. Least squares uses scipy's lstsq: with collinear features (charge
capacity and energy, say) it returns the minimum-norm solution instead of failing.

Extrapolation guard: before predicting, each feature is clipped to its training range widened
by `clip_margin` (default 10 % of the range) on each side (`MedianImputeScaler(clip=True)`). A
linear model would otherwise extrapolate a feature of an odd cycle of a new cell without bound
(ridge SOH RMSE 1.16 on NASA leave-one-cell-out before clipping); the margin lets a trend run a
little past the training cells, as a slightly more aged cell needs, and no further.
"""

from __future__ import annotations

from sklearn.linear_model import LinearRegression, Ridge

from battery_pipeline.science.ml.base import TabularRegressor

# A tenth of each feature's training range: a cell somewhat beyond the training cells is
# extrapolated, an odd cycle with a feature many ranges away is not.
DEFAULT_CLIP_MARGIN = 0.1


class LinearBaseline(TabularRegressor):
    """Ordinary least squares on standardised features.

    Parameters
    ----------
    fit_intercept : bool, default True
    clip_margin : float, default 0.1
        Features are clipped to their training range widened by this fraction of it on each side.
    """

    _clip_features = True  # no extrapolation beyond the margin (module docstring)

    def __init__(self, fit_intercept: bool = True, clip_margin: float = DEFAULT_CLIP_MARGIN):
        self.fit_intercept = fit_intercept
        self.clip_margin = clip_margin

    def _make_model(self):
        return LinearRegression(fit_intercept=self.fit_intercept)


class RidgeBaseline(TabularRegressor):
    """Ridge regression (L2 penalty `alpha` on the standardised coefficients).

    Parameters
    ----------
    alpha : float, default 1.0
        Penalty strength, in units of the summed squared error (scikit-learn's Ridge).
    fit_intercept : bool, default True
    clip_margin : float, default 0.1
        As `LinearBaseline`.
    """

    _clip_features = True

    def __init__(self, alpha: float = 1.0, fit_intercept: bool = True, clip_margin: float = DEFAULT_CLIP_MARGIN):
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.clip_margin = clip_margin

    def _make_model(self):
        return Ridge(alpha=self.alpha, fit_intercept=self.fit_intercept)
