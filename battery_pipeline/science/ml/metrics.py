"""Evaluation metrics for SOH estimation and RUL prediction: pure functions, dicts of floats.

Inputs are array-likes of equal length (NaN or inf in y_true / y_pred is refused: drop unlabelled
rows before scoring, a model must not predict NaN). An empty input gives n = 0 and NaN elsewhere.

SOH (`soh_metrics`; SOH as a fraction, 1.0 = reference capacity):
  * mae, rmse, max_error: in SOH fraction units (0.01 = one percentage point of SOH);
  * r2: coefficient of determination, 1 - SS_res / SS_tot (NaN when y_true is constant);
  * mape_percent: mean |pred - true| / |true| x 100 over rows with true != 0;
  * within_3_points / within_5_points: share of rows with |pred - true| <= 0.03 / 0.05, i.e.
    within +-3 / +-5 percentage points of SOH. Absolute, not relative: the seed's "accuracy within
    +-3 % and +-5 %" bounds read as SOH points, which is how SOH error is reported in the
    literature and keeps the meaning constant near end of life (3 % of 0.8 would be 2.4 points).
    A tolerance of 1e-12 keeps a difference of exactly 0.03 in decimal from failing on binary
    rounding (0.93 - 0.90 = 0.030000000000000027).
  * with `lower`/`upper`: coverage (share of true values inside [lower, upper], bounds included)
    and mean_interval_width (y units).

RUL (`rul_metrics`; cycles):
  * rmse_cycles, mae_cycles;
  * mape_percent and within_15_percent (share with |pred - true| <= 0.15 x true) over rows with
    true RUL > 0 only (a relative error is undefined at RUL 0, the end-of-life cycle itself);
    n_relative says how many rows that was;
  * early_rate: share of rows with pred < true (predicting end of life too soon: the safe side,
    the cell is retired or serviced early); late_rate: pred > true (unsafe: the cell is trusted
    past its end of life); exact hits count as neither.
"""

from __future__ import annotations

import numpy as np

_TOLERANCE = 1e-12
SOH_POINT_BOUNDS = (0.03, 0.05)
RUL_RELATIVE_BOUND = 0.15


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} values, y_pred {p.size}")
    if not (np.isfinite(t).all() and np.isfinite(p).all()):
        raise ValueError("y_true and y_pred must be finite (drop unlabelled rows; a model must not predict NaN)")
    return t, p


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


def regression_metrics(y_true, y_pred) -> dict[str, float]:
    """n, mae, rmse, r2, max_error (units of y)."""
    t, p = _pair(y_true, y_pred)
    error = p - t
    if t.size:
        ss_tot = float(((t - t.mean()) ** 2).sum())
        r2 = 1.0 - float((error**2).sum()) / ss_tot if ss_tot > 0 else float("nan")
        max_error = float(np.abs(error).max())
    else:
        r2 = max_error = float("nan")
    return {
        "n": float(t.size),
        "mae": _mean(np.abs(error)),
        "rmse": float(np.sqrt(_mean(error**2))),
        "r2": r2,
        "max_error": max_error,
    }


def _mape_percent(t: np.ndarray, p: np.ndarray) -> float:
    return _mean(np.abs(p - t) / np.abs(t)) * 100.0


def interval_metrics(y_true, lower, upper) -> dict[str, float]:
    """coverage (share of y_true in [lower, upper]) and mean_interval_width (units of y)."""
    t, lo = _pair(y_true, lower)
    _, hi = _pair(y_true, upper)
    if (lo > hi).any():
        raise ValueError("an interval has lower > upper")
    return {
        "coverage": _mean(((t >= lo) & (t <= hi)).astype(np.float64)),
        "mean_interval_width": _mean(hi - lo),
    }


def soh_metrics(y_true, y_pred, lower=None, upper=None) -> dict[str, float]:
    """SOH metrics (module docstring); interval metrics too when lower and upper are given."""
    t, p = _pair(y_true, y_pred)
    out = regression_metrics(t, p)
    nonzero = t != 0
    out["mape_percent"] = _mape_percent(t[nonzero], p[nonzero])
    for bound in SOH_POINT_BOUNDS:
        out[f"within_{round(bound * 100)}_points"] = _mean((np.abs(p - t) <= bound + _TOLERANCE).astype(np.float64))
    if (lower is None) != (upper is None):
        raise ValueError("give both lower and upper, or neither")
    if lower is not None:
        out.update(interval_metrics(t, lower, upper))
    return out


def rul_metrics(y_true, y_pred) -> dict[str, float]:
    """RUL metrics in cycles (module docstring)."""
    t, p = _pair(y_true, y_pred)
    base = regression_metrics(t, p)
    positive = t > 0
    tp, pp = t[positive], p[positive]
    return {
        "n": base["n"],
        "rmse_cycles": base["rmse"],
        "mae_cycles": base["mae"],
        "r2": base["r2"],
        "n_relative": float(positive.sum()),
        "mape_percent": _mape_percent(tp, pp),
        "within_15_percent": _mean(
            (np.abs(pp - tp) <= RUL_RELATIVE_BOUND * tp * (1 + _TOLERANCE)).astype(np.float64)
        ),
        "early_rate": _mean((p < t).astype(np.float64)),
        "late_rate": _mean((p > t).astype(np.float64)),
    }
