"""The model zoo by name: which estimator, for which tasks, with which default hyperparameters.

`make_estimator(name, task="soh", seed=0, intervals=False, **overrides)` returns an unfitted
estimator: the class's defaults, then the registry's defaults for that task, then `overrides`;
`seed` becomes `random_state` wherever the estimator has randomness. With `intervals=True` an
estimator without its own `predict_interval` is wrapped in `intervals.ConformalRegressor`
(cross-conformal over `CONFORMAL_FOLDS` folds of whole cells when `fit` gets `groups`), so every
entry can give intervals.
Classes are imported when first made (the LSTM's import of torch costs about a second), and so is
scikit-learn (`intervals`, the estimators' modules): the Dagster definitions import this module
for the zoo's names alone.

`fit_on`, `predict_on` and `interval_on` run any of them on a `datasets.TrainingTable`, passing
the table's cells as `groups` to the estimators that take them (LSTM windows, conformal
calibration), so training code need not know which ones do. Predictions and interval bounds
come back clipped to the task's physical range (`bounds`); `scored_on` gives all three with the
number of values clipped, for the record.

Tasks: "soh" and "rul" (per-cycle tables of `datasets`), "cycle_life" (one row per cell,
Severson features).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from battery_pipeline.science.ml.bounds import clip_to_range
from battery_pipeline.science.ml.datasets import TASKS, TrainingTable

PER_CYCLE_TASKS = ("soh", "rul")
# Conformal intervals by cross-conformal with 3 folds of cells (intervals module docstring): the
# point model trains on every cell, every cell calibrates; 3 folds cost 3 extra fits, and each
# fold model still sees two thirds of the cells.
CONFORMAL_FOLDS = 3
# Those 3 fold models and the refit are fitted side by side on every core (worker processes):
# they are independent, and most estimators fit on one thread (the LSTM, the booster, the
# selection's small forests).
CONFORMAL_JOBS = -1


@dataclass(frozen=True)
class EstimatorSpec:
    """One zoo entry: `target` "module:Class" under battery_pipeline.science.ml."""

    name: str
    target: str
    description: str
    tasks: tuple[str, ...] = PER_CYCLE_TASKS
    defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # task -> params
    seeded: bool = True  # takes random_state

    def estimator_class(self):
        return _resolve(self.target)


def _resolve(target: str):
    module, name = target.split(":")
    return getattr(importlib.import_module(f"battery_pipeline.science.ml.{module}"), name)


ESTIMATORS: dict[str, EstimatorSpec] = {
    spec.name: spec
    for spec in (
        EstimatorSpec("dummy", "dummy:DummyBaseline", "mean of the training targets", seeded=False),
        EstimatorSpec("linear", "linear:LinearBaseline", "least squares on standardised features", seeded=False),
        EstimatorSpec("ridge", "linear:RidgeBaseline", "ridge regression, alpha 1", seeded=False),
        EstimatorSpec(
            "random_forest",
            "forest:RandomForestBaseline",
            "random forest, 100 trees",
            # every core: the training job runs its steps one at a time in one process
            defaults={task: {"n_jobs": -1} for task in PER_CYCLE_TASKS},
        ),
        EstimatorSpec(
            "gradient_boosting",
            "boosting:GradientBoostingBaseline",
            # One booster per task: its intervals are cross-conformal on absolute residuals (the
            # zoo's wrapper, `intervals=True`), not a second and third model. Conformalized
            # 5 % / 95 % quantile boosters (CQR) were the alternative: 3 boosters per fit instead
            # of 1, and the raw quantiles under-covered unseen cells (demo fleet: 49 % SOH, 61 %
            # RUL at 90 % nominal), so their adaptive width was mostly the conformal correction.
            "histogram gradient boosting (intervals: cross-conformal on absolute residuals, 3 folds of cells)",
        ),
        EstimatorSpec(
            "selected_forest",
            "selection:CellwiseSelectedRegressor",
            "random forest on at most 4 features chosen by forward selection, scored on held-out "
            "training cells (nested: the test cells are never seen)",
        ),
        EstimatorSpec(
            "lstm",
            "lstm:LSTMRegressor",
            "2-layer LSTM, 32 units, windows of 10 cycles",
            # Early stopping after 5 epochs without a better validation cell, not 10: on the demo
            # fleet the best epoch was the 2nd and the other 10 of 12 were the wait for it. At most
            # 30 epochs, not 100: one RUL fold model crept to its best at epoch 49 of 54 (0.15 s
            # an epoch), while the others stopped within 8.
            defaults={task: {"patience": 5, "max_epochs": 30} for task in PER_CYCLE_TASKS},
        ),
        *(
            EstimatorSpec(
                f"severson_{feature_set}",
                "severson:SeversonCycleLife",
                f"Severson et al. 2019 {feature_set} model",
                tasks=("cycle_life",),
                defaults={"cycle_life": {"feature_set": feature_set}},
                seeded=False,
            )
            for feature_set in ("variance", "discharge", "full")
        ),
    )
}


def estimator_names(task: str | None = None) -> list[str]:
    """Registered names, those usable for `task` when given."""
    return [name for name, spec in ESTIMATORS.items() if task is None or task in spec.tasks]


def make_estimator(name: str, task: str = "soh", seed: int = 0, intervals: bool = False, **overrides):
    """An unfitted estimator for `task` (module docstring); unknown name or task -> ValueError.

    Overrides with "__" set a nested estimator's parameter (scikit-learn's nested-parameter
    syntax, applied with set_params after construction).
    """
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; known: {sorted(ESTIMATORS)}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    spec = ESTIMATORS[name]
    if task not in spec.tasks:
        raise ValueError(f"{name!r} is for tasks {spec.tasks}, not {task!r}")
    params: dict[str, Any] = dict(spec.defaults.get(task, {}))
    if spec.seeded:
        params["random_state"] = int(seed)
    params.update({k: v for k, v in overrides.items() if "__" not in k})
    estimator = spec.estimator_class()(**params)
    estimator.set_params(**{k: v for k, v in overrides.items() if "__" in k})
    if intervals and not hasattr(estimator, "predict_interval"):
        from battery_pipeline.science.ml.intervals import ConformalRegressor

        estimator = ConformalRegressor(estimator, random_state=int(seed), cv_folds=CONFORMAL_FOLDS, n_jobs=CONFORMAL_JOBS)
    return estimator


def _groups(method, table: TrainingTable) -> dict:
    from battery_pipeline.science.ml.intervals import accepts_groups

    return {"groups": table.groups} if accepts_groups(method) else {}


def fit_on(estimator, table: TrainingTable):
    """`estimator.fit(table.X, table.y)` (+ groups where taken); returns the estimator."""
    return estimator.fit(table.X, table.y.to_numpy(), **_groups(estimator.fit, table))


def _raw_prediction(estimator, table: TrainingTable) -> np.ndarray:
    return np.asarray(estimator.predict(table.X, **_groups(estimator.predict, table)), dtype=np.float64)


def _raw_interval(estimator, table: TrainingTable, alpha: float | None) -> tuple[np.ndarray, np.ndarray]:
    kwargs = _groups(estimator.predict_interval, table)
    if alpha is not None:
        kwargs["alpha"] = alpha
    return estimator.predict_interval(table.X, **kwargs)


def predict_on(estimator, table: TrainingTable) -> np.ndarray:
    """Predictions for the table's rows, clipped to the task's physical range."""
    return clip_to_range(table.task, _raw_prediction(estimator, table))[0]


def interval_on(estimator, table: TrainingTable, alpha: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) for the table's rows, clipped to the task's physical range; the estimator
    must have `predict_interval`."""
    lower, upper = _raw_interval(estimator, table, alpha)
    return clip_to_range(table.task, lower)[0], clip_to_range(table.task, upper)[0]


@dataclass(frozen=True)
class Scored:
    """Predictions and interval bounds in the physical range, and how many of each were clipped."""

    prediction: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    clipped: dict[str, int]  # "prediction", "lower", "upper" -> values moved into the range


def scored_on(estimator, table: TrainingTable, alpha: float | None = None) -> Scored:
    """`predict_on` and `interval_on` in one pass, counting what the physical range clipped."""
    values = {"prediction": _raw_prediction(estimator, table)}
    values["lower"], values["upper"] = _raw_interval(estimator, table, alpha)
    clipped = {name: clip_to_range(table.task, v) for name, v in values.items()}
    return Scored(**{name: c[0] for name, c in clipped.items()}, clipped={name: c[1] for name, c in clipped.items()})
