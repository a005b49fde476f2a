"""Linear baselines (the seed's `baseline_lr`): ordinary least squares and ridge.

Both fit on median-imputed, standardised features (`preprocessing`), so ridge's penalty treats
every feature alike whatever its unit, and coefficients (`model_.coef_`) are per standard
deviation of the feature. Least squares uses scipy's lstsq: with collinear features (charge
capacity and energy, say) it returns the minimum-norm solution instead of failing.
Features are clipped to their training range before use (`MedianImputeScaler(clip=True)`): a
linear model would otherwise extrapolate a feature of an odd cycle of a new cell without bound.
"""

from __future__ import annotations

from sklearn.linear_model import LinearRegression, Ridge

from battery_pipeline.science.ml.base import TabularRegressor


class LinearBaseline(TabularRegressor):
    """Ordinary least squares on standardised features.

    Parameters
    ----------
    fit_intercept : bool, default True
    """

    _clip_features = True  # no extrapolation beyond the training range (preprocessing docstring)

    def __init__(self, fit_intercept: bool = True):
        self.fit_intercept = fit_intercept

    def _make_model(self):
        return LinearRegression(fit_intercept=self.fit_intercept)


class RidgeBaseline(TabularRegressor):
    """Ridge regression (L2 penalty `alpha` on the standardised coefficients).

    Parameters
    ----------
    alpha : float, default 1.0
        Penalty strength, in units of the summed squared error (scikit-learn's Ridge).
    fit_intercept : bool, default True
    """

    _clip_features = True

    def __init__(self, alpha: float = 1.0, fit_intercept: bool = True):
        self.alpha = alpha
        self.fit_intercept = fit_intercept

    def _make_model(self):
        return Ridge(alpha=self.alpha, fit_intercept=self.fit_intercept)
