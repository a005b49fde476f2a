"""Random forest baseline (the seed's `baseline_rf`): the non-linear reference model.

Defaults are chosen to train in seconds on two cores on a few thousand cycles: 100 trees,
leaves of at least 2 samples and half of the features per split (smoother and faster than
scikit-learn's all-features default for regression), one process (`n_jobs=None`), because
Dagster may already run several steps side by side; raise `n_jobs` when a training step has the
machine to itself (the zoo's `random_forest` does: the training job runs one step at a time).
`n_jobs` parallelises the fit only: the trees are seeded one by one, so the forest is the same,
but scikit-learn's threaded predict sums the trees in the order the threads finish, which moves
the last bits of a prediction from one call to the next; predictions are summed on one thread.
NaNs are median-imputed first (features are not scaled: splits ignore scale).
"""

from __future__ import annotations

from sklearn.ensemble import RandomForestRegressor

from battery_pipeline.science.ml.base import TabularRegressor


class RandomForestBaseline(TabularRegressor):
    """Random forest regressor.

    Parameters
    ----------
    n_estimators : int, default 100
    max_depth : int or None, default None
    min_samples_leaf : int, default 2
    max_features : float, int, "sqrt" or None, default 0.5
        Features considered per split (a float is a fraction of them).
    n_jobs : int or None, default None (one process)
    random_state : int, default 0
        Seeds the bootstrap and the feature sampling; same seed and data -> same forest.
    """

    _scale_features = False

    def __init__(
        self,
        n_estimators: int = 100,
        max_depth: int | None = None,
        min_samples_leaf: int = 2,
        max_features: float | int | str | None = 0.5,
        n_jobs: int | None = None,
        random_state: int = 0,
    ):
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _make_model(self):
        return RandomForestRegressor(
            n_estimators=self.n_estimators,
            max_depth=self.max_depth,
            min_samples_leaf=self.min_samples_leaf,
            max_features=self.max_features,
            n_jobs=self.n_jobs,
            random_state=self.random_state,
        )

    def _fit_model(self, Z, y) -> None:
        super()._fit_model(Z, y)
        self.model_.set_params(n_jobs=None)  # predictions summed in tree order (module docstring)
