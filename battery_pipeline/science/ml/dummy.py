"""The floor every model must beat: a constant prediction (scikit-learn DummyRegressor semantics).

`DummyBaseline(strategy="mean")` predicts the mean of the training targets for every row
("median": their median); X is validated (same shape rules as the other estimators, NaN allowed)
but otherwise ignored. Its score on a test split is the reference the model cards compare with.
"""

from __future__ import annotations

from sklearn.dummy import DummyRegressor

from battery_pipeline.science.ml.base import TabularRegressor


class DummyBaseline(TabularRegressor):
    """Constant predictor.

    Parameters
    ----------
    strategy : {"mean", "median"}, default "mean"
        Statistic of the training targets that is predicted.
    """

    _scale_features = False

    def __init__(self, strategy: str = "mean"):
        self.strategy = strategy

    def _make_model(self):
        if self.strategy not in ("mean", "median"):
            raise ValueError(f"strategy must be 'mean' or 'median', got {self.strategy!r}")
        return DummyRegressor(strategy=self.strategy)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.regressor_tags.poor_score = True  # by design: it is the floor
        return tags
