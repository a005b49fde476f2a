"""Early-life cycle life: the Severson models fitted once on a cohort and frozen, their intervals,
their error against the paper and the baseline, and where they may be applied.

`fit_frozen(table, feature_set)` fits `severson.SeversonCycleLife` on every cell of a cycle-life
training table (`datasets.cycle_life_dataset` of the cohort: Severson's 41 training cells by
default) and measures it without ever scoring a cell the model was fitted on:

  * training RMSE (cycles): the figure Severson et al.'s Table 1 gives for their training cells
    (variance 103, discharge 76, full 51 cycles, `PAPER_TRAIN_RMSE_CYCLES`);
  * leave-one-cell-out RMSE: each cell predicted by a model refitted (its penalty chosen again by
    the inner cross-validation) on the other cells;
  * an interval from those held-out errors: on log10(cycle life), the ceil((n+1) q)-th smallest
    absolute residual for coverage q (split-conformal rank with leave-one-out residuals, the
    jackknife; an interval is [p / 10^h, p * 10^h]: errors in cycle life are multiplicative);
  * the dummy baseline: 10^(mean log10 life of the cohort), leave-one-out as well.

`applicability(...)` says whether a cell lies inside what the model saw: the cohort's chemistry
and rated capacity as its registry states them, and every feature within the cohort's range
(widened by `RANGE_MARGIN` of it): "inside", "extrapolated" (a figure, marked: a linear model on
log features extrapolates without warning) or "outside" (another stated chemistry or capacity:
no figure).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

from battery_pipeline.science.ml.datasets import TrainingTable
from battery_pipeline.science.ml.severson import SEVERSON_FEATURE_SETS, SeversonCycleLife

PAPER_TRAIN_RMSE_CYCLES = {"variance": 103.0, "discharge": 76.0, "full": 51.0}
PAPER_REFERENCE = "Severson et al., Nat. Energy 4, 383 (2019), Table 1, training cells"
DEFAULT_COVERAGE = 0.9
RANGE_MARGIN = 0.1  # of the cohort's range of a feature, on each side
MIN_COHORT_CELLS = 5  # leave-one-out with an inner 4-fold cross-validation needs 5


@dataclass
class FrozenFit:
    feature_set: str
    model: SeversonCycleLife
    cells: list[str]
    features: list[str]
    train_rmse_cycles: float
    loo_rmse_cycles: float
    loo_predictions: np.ndarray  # cycles, in `cells` order
    truth: np.ndarray  # cycles
    coverage: float
    log_halfwidth: float  # interval: prediction / 10**h .. prediction * 10**h
    loo_coverage: float  # share of held-out truths inside their own jackknife interval
    dummy_train_rmse_cycles: float
    dummy_loo_rmse_cycles: float
    feature_range: dict[str, tuple[float, float]] = field(default_factory=dict)
    chosen: dict = field(default_factory=dict)  # the penalty the inner cross-validation chose
    convergence_warnings: int = 0  # of the inner cross-validations' penalty paths

    def interval(self, prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return interval(prediction, self.log_halfwidth)

    def summary(self) -> dict:
        """JSON-ready figures (no arrays of cells)."""
        paper = PAPER_TRAIN_RMSE_CYCLES.get(self.feature_set)
        return {
            "feature_set": self.feature_set,
            "features": self.features,
            "cells": len(self.cells),
            "train_rmse_cycles": self.train_rmse_cycles,
            "paper_train_rmse_cycles": paper,
            "train_rmse_vs_paper": self.train_rmse_cycles / paper - 1.0 if paper else None,
            "loo_rmse_cycles": self.loo_rmse_cycles,
            "dummy_train_rmse_cycles": self.dummy_train_rmse_cycles,
            "dummy_loo_rmse_cycles": self.dummy_loo_rmse_cycles,
            "interval_coverage_target": self.coverage,
            "interval_log10_halfwidth": self.log_halfwidth,
            "interval_factor": 10.0**self.log_halfwidth,
            "loo_interval_coverage": self.loo_coverage,
            "chosen_penalty": self.chosen,
            "convergence_warnings": self.convergence_warnings,
        }


def interval(prediction: np.ndarray, log_halfwidth: float) -> tuple[np.ndarray, np.ndarray]:
    """[p / 10^h, p * 10^h]: the interval of predictions p for a half-width h on log10 life."""
    factor = 10.0**log_halfwidth
    prediction = np.asarray(prediction, dtype=np.float64)
    return prediction / factor, prediction * factor


def _rmse(truth: np.ndarray, prediction: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(prediction) - np.asarray(truth)) ** 2)))


def conformal_halfwidth(abs_residuals: np.ndarray, coverage: float) -> float:
    """The ceil((n+1) q)-th smallest absolute residual (inf when n is too small for q)."""
    r = np.sort(np.abs(np.asarray(abs_residuals, dtype=np.float64)))
    k = math.ceil((r.size + 1) * coverage)
    return float(r[k - 1]) if 1 <= k <= r.size else math.inf


def missing_features(table: TrainingTable, feature_set: str) -> list[str]:
    """Features of the set the table has no value of at all (the set cannot be fitted)."""
    wanted = SEVERSON_FEATURE_SETS[feature_set]
    return [c for c in wanted if c not in table.X.columns or table.X[c].isna().all()]


def fit_frozen(table: TrainingTable, feature_set: str, coverage: float = DEFAULT_COVERAGE, estimator=None) -> FrozenFit:
    """Fit on every cell of `table` (one row per cell), measure by leave-one-cell-out (module docstring)."""
    if table.task != "cycle_life":
        raise ValueError(f"a cycle-life table is needed, got {table.task!r}")
    n = len(table.y)
    if n < MIN_COHORT_CELLS:
        raise ValueError(f"{n} cell(s) with a cycle life: fitting and leave-one-out need at least {MIN_COHORT_CELLS}")
    missing = missing_features(table, feature_set)
    if missing:
        raise ValueError(f"the {feature_set!r} model needs {missing}, which no cell of the cohort has")
    estimator = estimator if estimator is not None else SeversonCycleLife(feature_set=feature_set)
    columns = SEVERSON_FEATURE_SETS[feature_set]
    X, y = table.X[columns], table.y.to_numpy(dtype=np.float64)
    # the inner cross-validation's path visits penalties too small to converge on 40 cells:
    # counted (the chosen penalty converges), not printed once per refit
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model = clone(estimator).fit(X, y)
        fitted = model.predict(X)
        held_out = np.empty(n)
        for i in range(n):
            keep = np.arange(n) != i
            held_out[i] = clone(estimator).fit(X.iloc[keep], y[keep]).predict(X.iloc[[i]])[0]
    for other in (w for w in caught if not issubclass(w.category, ConvergenceWarning)):
        warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
    log_residuals = np.log10(held_out) - np.log10(y)
    halfwidth = conformal_halfwidth(log_residuals, coverage)
    log_y = np.log10(y)
    dummy_loo = np.array([10.0 ** np.delete(log_y, i).mean() for i in range(n)])
    return FrozenFit(
        feature_set=feature_set,
        model=model,
        cells=table.cell_id.tolist(),
        features=list(columns),
        train_rmse_cycles=_rmse(y, fitted),
        loo_rmse_cycles=_rmse(y, held_out),
        loo_predictions=held_out,
        truth=y,
        coverage=coverage,
        log_halfwidth=halfwidth,
        loo_coverage=float(np.mean(np.abs(log_residuals) <= halfwidth)),
        dummy_train_rmse_cycles=_rmse(y, np.full(n, 10.0 ** log_y.mean())),
        dummy_loo_rmse_cycles=_rmse(y, dummy_loo),
        feature_range={c: (float(X[c].min()), float(X[c].max())) for c in columns},
        chosen={"alpha": float(model.model_.alpha_), "l1_ratio": float(model.model_.l1_ratio_)},
        convergence_warnings=sum(issubclass(w.category, ConvergenceWarning) for w in caught),
    )


def cohort_domain(cells: pd.DataFrame) -> dict:
    """What the cohort's registry rows state: chemistries and rated capacities (as sets)."""
    return {
        "chemistry": sorted({str(c) for c in cells["chemistry"].dropna()}),
        "nominal_capacity_ah": sorted({float(c) for c in cells["nominal_capacity_ah"].dropna()}),
    }


DOMAIN_STATUSES = ("inside", "extrapolated", "outside")


def applicability(features: pd.Series, cell: pd.Series | None, feature_range: dict, domain: dict) -> tuple[str, str]:
    """(status, why) of one cell's early-life features against what the model saw;
    `feature_range` and `domain` as a fit records them (`FrozenFit.feature_range`, `cohort_domain`).

    "outside": its registry states a chemistry or rated capacity other than the cohort's: the
    features (Ah of another cell) mean something else, so no figure is given. "extrapolated":
    the chemistry or capacity is not stated, or a feature lies beyond the cohort's range (+-10 %):
    the figure is the linear model's extrapolation, marked. "inside": neither."""
    hard, soft = [], []
    chemistry = None if cell is None else cell.get("chemistry")
    if chemistry is None or chemistry != chemistry:
        soft.append("chemistry not stated")
    elif domain["chemistry"] and str(chemistry) not in domain["chemistry"]:
        hard.append(f"chemistry {chemistry} (the model saw {', '.join(domain['chemistry'])})")
    capacity = None if cell is None else cell.get("nominal_capacity_ah")
    if capacity is None or capacity != capacity:
        soft.append("rated capacity not stated (delta-Q in Ah scales with it)")
    elif domain["nominal_capacity_ah"] and not any(abs(float(capacity) - c) <= 0.05 * c for c in domain["nominal_capacity_ah"]):
        hard.append(f"rated capacity {float(capacity):g} Ah (the model saw {', '.join(f'{c:g}' for c in domain['nominal_capacity_ah'])} Ah)")
    for name, (low, high) in feature_range.items():
        value = features.get(name)
        margin = RANGE_MARGIN * (high - low)
        if value is None or not np.isfinite(value):
            soft.append(f"{name} missing (imputed with the cohort's median)")
        elif not low - margin <= value <= high + margin:
            soft.append(f"{name} = {value:.3g} outside the cohort's {low:.3g}..{high:.3g}")
    if hard:
        return "outside", "outside the model's domain, no figure given: " + "; ".join(hard + soft)
    if soft:
        return "extrapolated", "extrapolated beyond the training data: " + "; ".join(soft)
    return "inside", f"inside the training domain ({', '.join(domain['chemistry']) or 'any chemistry'}, features within the cohort's range)"
