"""Gradient boosting: the zoo's boosted point model (its intervals: `intervals.ConformalRegressor`).

It uses scikit-learn's HistGradientBoostingRegressor (histogram trees, fast on a few thousand
rows and two cores) on median-imputed, unscaled features (`preprocessing`). Early stopping is off
by default: scikit-learn's would hold out random *rows*, i.e. cycles of the training cells, which
says little about new cells (see `splits`); pick `max_iter` with a cell-wise validation split.

Threads: one OpenMP thread by default (`n_threads`). On a few thousand rows the threads'
synchronisation costs more than it saves, and with the machine busy it stalls: one demo-fleet
SOH fit (2,734 rows, 31 features, 200 rounds) took 1.1-1.9 s on one thread and 5.8-43 s on two,
with other work running on the 2-core machine.
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits

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
    n_threads : int or None, default 1
        OpenMP threads for fit and predict (module docstring); None: scikit-learn's default (all cores).
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
        n_threads: int | None = 1,
    ):
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.early_stopping = early_stopping
        self.random_state = random_state
        self.n_threads = n_threads

    def _threads(self):
        return nullcontext() if self.n_threads is None else threadpool_limits(int(self.n_threads), user_api="openmp")

    def _make_model(self) -> HistGradientBoostingRegressor:
        return HistGradientBoostingRegressor(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization,
            early_stopping=self.early_stopping,
            random_state=self.random_state,
        )

    def _fit_model(self, Z: np.ndarray, y: np.ndarray) -> None:
        with self._threads():
            super()._fit_model(Z, y)
        self.n_iter_ = self.model_.n_iter_  # boosting rounds done (< max_iter only with early stopping)

    def predict(self, X) -> np.ndarray:
        with self._threads():
            return super().predict(X)
