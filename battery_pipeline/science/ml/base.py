"""Common shape of the tabular estimators: validate, impute + standardise, fit a scikit-learn model.

Every estimator of the zoo follows the scikit-learn contract: `__init__` only stores its
parameters (no validation, no work), `fit(X, y)` learns and returns self, attributes learnt in
fit end with an underscore, `get_params`/`set_params`/`clone` work through `BaseEstimator`.

Input: a 2-D numpy array or a DataFrame of numeric features (one row per sample; with a DataFrame
the column names are remembered in `feature_names_in_` and checked at predict time). NaN is
allowed in X and handled by `preprocessing.MedianImputeScaler` (medians of the training rows);
+/-inf is refused. y must be finite (drop unlabelled rows first). Predictions are float64 in the
units of y.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from battery_pipeline.science.ml.preprocessing import MedianImputeScaler


class TabularRegressor(RegressorMixin, BaseEstimator):
    """Base class: `fit` = MedianImputeScaler + the model from `_make_model()`.

    Subclasses define `__init__` (parameters only) and `_make_model()` (or override
    `_fit_model` when they fit more than one model), and set
    `_scale_features = False` when scaling is pointless (trees), `_clip_features = True` to clip
    features to the training range (models that extrapolate linearly; a `clip_margin` parameter
    widens it). Fitted attributes:
    `preprocessor_` (the MedianImputeScaler), `model_` (the fitted scikit-learn model),
    `n_features_in_` and, for DataFrame input, `feature_names_in_`.
    """

    _scale_features = True
    _clip_features = False  # True: clip to the training range at predict time (linear models)

    @property
    def _clip_margin(self) -> float:
        """With _clip_features: widen the range by this fraction of it on each side; the
        estimator's `clip_margin` parameter where it has one, else 0."""
        return float(getattr(self, "clip_margin", 0.0))

    def _make_model(self):
        raise NotImplementedError

    def fit(self, X, y):
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", dtype=np.float64, y_numeric=True)
        self.preprocessor_ = MedianImputeScaler(
            scale=self._scale_features, clip=self._clip_features, clip_margin=self._clip_margin
        ).fit(X)
        self._fit_model(self.preprocessor_.transform(X), y)
        return self

    def _fit_model(self, Z: np.ndarray, y: np.ndarray) -> None:
        """Fit on the imputed/scaled features Z; sets `model_`."""
        self.model_ = self._make_model().fit(Z, y)

    def _transform(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        X = validate_data(self, X, ensure_all_finite="allow-nan", dtype=np.float64, reset=False)
        return self.preprocessor_.transform(X)

    def predict(self, X) -> np.ndarray:
        Z = self._transform(X)  # raises NotFittedError before fit
        return np.asarray(self.model_.predict(Z), dtype=np.float64)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags
