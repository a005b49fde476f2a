"""Small synthetic regression problems for the estimator tests."""

from __future__ import annotations

import numpy as np


def learnable_regression(n: int = 300, n_features: int = 5, nan_share: float = 0.1, seed: int = 0):
    """X (n, n_features + 1) with NaNs and a last column that is entirely NaN; y depends on the
    first two features (linear + mild non-linearity) plus small noise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features))
    y = 2.0 * X[:, 0] - X[:, 1] + 0.3 * np.tanh(X[:, 0]) + rng.normal(0.0, 0.1, n)
    X[rng.random(X.shape) < nan_share] = np.nan
    return np.column_stack([X, np.full(n, np.nan)]), y


def rmse(y_true, y_pred) -> float:
    return float(np.sqrt(np.mean((np.asarray(y_true) - np.asarray(y_pred)) ** 2)))
