"""Inputs for scoring cells with a trained model, and cell-level bootstrap intervals of metrics.

`scoring_table(task, features, labels, feature_columns)` builds the model's input for *every*
cycle of the given cells, where the training tables (`datasets`) keep only rows with a target:
a SOH model is asked about cycles whose capacity was not measured too, and a RUL model about
censored cells (those are exactly the cells whose future we want). The columns are computed the
same way as in training (`datasets` relative columns and RUL history features), then aligned to
the model's `feature_columns`: a column the model knows but the cell lacks becomes NaN, which
the estimators' median imputation fills, as it did for such gaps in training.

It returns the keys with `truth` (soh, or rul_cycles of uncensored cells; NaN where unknown) and
the aligned features.

`bootstrap_interval(...)`: a percentile interval of a metric from resampling whole cells, since
rows of one cell are not independent and the error on a new cell is what the interval is about.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from battery_pipeline.science.ml.datasets import KEYS, RELATIVE_COLUMNS, rul_history_features


def scoring_table(
    task: str, features: pd.DataFrame, labels: pd.DataFrame, feature_columns: Sequence[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cell_id, cycle_number and truth per feature row; X with `feature_columns`), same index.
    Two frames, because a feature may share a key's name (RUL takes cycle_number as input)."""
    if task not in ("soh", "rul"):
        raise ValueError(f"scoring needs a per-cycle task (soh or rul), got {task!r}")
    left = features.assign(cell_id=features["cell_id"].astype(str))
    right = labels.assign(cell_id=labels["cell_id"].astype(str))
    right = right[[c for c in right.columns if c in KEYS or c not in left.columns]]
    rows = left.merge(right, on=KEYS, how="left", validate="one_to_one")
    rows = rows.sort_values(KEYS, kind="stable").reset_index(drop=True)
    reference = rows["soh_reference_ah"].to_numpy(dtype=np.float64, na_value=np.nan)
    for old, new in RELATIVE_COLUMNS.items():
        if old in rows.columns:
            rows[new] = rows[old].to_numpy(dtype=np.float64, na_value=np.nan) / reference
    if task == "soh":
        truth = rows["soh"].to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        history = rul_history_features(rows, window=10)
        rows = pd.concat([rows.drop(columns=["soh"]), history], axis=1)
        censored = rows["censored"].astype("boolean").fillna(True).to_numpy(dtype=bool)
        truth = np.where(censored, np.nan, rows["rul_cycles"].to_numpy(dtype=np.float64, na_value=np.nan))
    X = rows.reindex(columns=list(feature_columns)).astype(np.float64)
    return rows[KEYS].assign(truth=truth), X


def bootstrap_interval(
    truth: np.ndarray,
    prediction: np.ndarray,
    cells: np.ndarray,
    metric: Callable[[np.ndarray, np.ndarray], float],
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """(low, high) percentile interval of `metric(truth, prediction)` over cell resamples.

    NaN bounds with fewer than 2 distinct cells: one cell cannot tell how much the metric varies
    from cell to cell, and pretending otherwise would print a zero-width interval.
    """
    truth, prediction, cells = np.asarray(truth, float), np.asarray(prediction, float), np.asarray(cells)
    distinct = np.unique(cells)
    if len(distinct) < 2:
        return float("nan"), float("nan")
    rows_of = [np.flatnonzero(cells == c) for c in distinct]
    rng = np.random.default_rng(seed)
    values = np.empty(n_resamples)
    for i in range(n_resamples):
        chosen = np.concatenate([rows_of[j] for j in rng.integers(0, len(distinct), len(distinct))])
        values[i] = metric(truth[chosen], prediction[chosen])
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)
