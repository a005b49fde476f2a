"""The physical range of every prediction and interval bound, applied in one place.

A regressor knows nothing of physics: a linear RUL model crosses zero near end of life, a
conformal band around a point close to zero reaches below it, and a SOH trend can run past any
capacity a cell can deliver. `registry.predict_on`, `interval_on` and `scored_on` (the only way
the pipeline asks an estimator for numbers) clip to `PHYSICAL_RANGE` here, and `scored_on` says
how many values it clipped, so the correction is counted and never silent.

  * SOH (capacity over the reference: nominal, or the cell's own initial capacity): [0, 1.2].
    0 is an empty cell; a fresh cell delivers at most a few per cent above its rating (rating
    tolerances and early capacity rise are 1-5 %), so 1.2 leaves room for any honest cell while
    a model's "1.3" can only be extrapolation.
  * RUL and cycle life, in cycles: [0, +inf). A cell past end of life has 0 cycles left.

NaN passes through unchanged and is not counted (no prediction is not a clipped prediction).
"""

from __future__ import annotations

import math

import numpy as np

PHYSICAL_RANGE: dict[str, tuple[float, float]] = {
    "soh": (0.0, 1.2),
    "rul": (0.0, math.inf),
    "cycle_life": (0.0, math.inf),
}


def physical_range(task: str) -> tuple[float, float]:
    if task not in PHYSICAL_RANGE:
        raise ValueError(f"no physical range for task {task!r}; known: {sorted(PHYSICAL_RANGE)}")
    return PHYSICAL_RANGE[task]


def clip_to_range(task: str, values) -> tuple[np.ndarray, int]:
    """(values clipped to the task's physical range as float64, how many were outside it)."""
    low, high = physical_range(task)
    values = np.asarray(values, dtype=np.float64)
    outside = int(np.count_nonzero((values < low) | (values > high)))  # NaN compares False
    return np.clip(values, low, high), outside


def describe_range(task: str) -> str:
    """'[0, 1.2]' / '[0, inf)' for cards and reports."""
    low, high = physical_range(task)
    return f"[{low:g}, {high:g}]" if math.isfinite(high) else f"[{low:g}, inf)"
