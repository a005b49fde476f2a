"""Early-life cycle-life models of Severson et al., Nat. Energy 4, 383 (2019).

From the first ~100 cycles of a cell, predict its cycle life (here: `labels.eol_cycle`, the first
cycle of a sustained run below the end-of-life threshold) with an elastic net on
log10(cycle life), using one of the paper's three feature sets:

  * "variance":  log10 var(dQ_100-10(V))
  * "discharge": log10 |min dQ|, log10 var dQ, log10 |skewness dQ|, log10 kurtosis dQ,
                 discharge capacity at cycle 2, max discharge capacity - capacity at cycle 2
  * "full":      log10 |min dQ|, log10 var dQ, slope and intercept of the linear fit of discharge
                 capacity against cycle number over cycles 2..100, capacity at cycle 2, mean charge
                 time of the first 5 cycles, temperature integral over cycles 2..100, minimum
                 internal resistance over cycles 2..100, resistance at cycle 100 - at cycle 2.

`severson_features(cycle_features)` derives these per cell from the pipeline's per-cycle table
(`features.CYCLE_FEATURE_COLUMNS`, one row per cell and cycle):

  * dQ statistics come from the table's `delta_q_*` columns, which are Q_n(V) - Q_ref(V) against
    the reference discharge of `features.FeatureConfig` (default: the 10th complete discharge,
    Severson's cycle 10). They are taken at `late_cycle` (100) or, when that cycle has no finite
    positive variance (no complete discharge there, or the cell has fewer cycles), at the latest
    earlier cycle that has one (`delta_q_cycle` says which: graceful degradation, not the paper's
    exact feature). Severson used MATLAB's kurtosis (Pearson, normal = 3); the table has excess
    kurtosis, so 3 is added before the log. A log of 0 (e.g. the reference cycle itself) is NaN.
  * capacity features use `discharge_capacity_ah` over cycles `first_cycle` (2)..late_cycle;
    "capacity at cycle 2" is the first finite positive capacity at or after first_cycle.
    The linear fit's intercept is at cycle_number 0 (Ah), its slope in Ah/cycle.
  * charge time (s) = cc_charge_time_s + cv_charge_time_s (CV taken as 0 when NaN), mean over the
    first `charge_time_cycles` (5) cycles from first_cycle that have it.
  * temperature integral (degC*s) = sum over cycles first_cycle..late_cycle of
    temperature_mean_c x cycle_duration_s (the cycle's time-weighted mean times its length).
  * resistance (ohm): the first of resistance_cycler_ohm, resistance_dcir_ohm, re_ohm with a
    finite value in the window (`resistance_source`); min over the window, and change = value at
    the last cycle that has one minus the value at the first.
  A feature that the data cannot give is NaN; the estimator median-imputes it (medians of the
  training cells), so a dataset without temperatures still trains (that feature then carries no
  information).

`SeversonCycleLife(feature_set=...)` fits MedianImputeScaler + scikit-learn's ElasticNetCV
(l1 ratio and penalty chosen by `cv`-fold cross-validation over the training cells, as in the
paper) on log10(y); predictions are 10**(model output), in cycles.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import ElasticNetCV

from battery_pipeline.science.ml.base import TabularRegressor

DQ_FEATURES = [
    "log10_abs_min_delta_q",
    "log10_var_delta_q",
    "log10_abs_skew_delta_q",
    "log10_kurtosis_delta_q",
]
SEVERSON_FEATURE_SETS: dict[str, list[str]] = {
    "variance": ["log10_var_delta_q"],
    "discharge": [*DQ_FEATURES, "capacity_cycle2_ah", "capacity_max_minus_cycle2_ah"],
    "full": [
        "log10_abs_min_delta_q",
        "log10_var_delta_q",
        "capacity_fade_slope_ah_per_cycle",
        "capacity_fade_intercept_ah",
        "capacity_cycle2_ah",
        "charge_time_mean_s",
        "temperature_integral_c_s",
        "resistance_min_ohm",
        "resistance_change_ohm",
    ],
}
SEVERSON_FEATURE_COLUMNS: list[str] = list(
    dict.fromkeys(c for columns in SEVERSON_FEATURE_SETS.values() for c in columns)
)
# Not features: which cycle / column a value came from, for the data card.
SEVERSON_INFO_COLUMNS = ["delta_q_cycle", "n_cycles", "resistance_source"]
RESISTANCE_COLUMNS = ("resistance_cycler_ohm", "resistance_dcir_ohm", "re_ohm")


def _log10_abs(value: float, shift: float = 0.0) -> float:
    magnitude = abs(value + shift)
    return float(np.log10(magnitude)) if np.isfinite(magnitude) and magnitude > 0 else float("nan")


def _column(rows: pd.DataFrame, name: str) -> np.ndarray:
    if name not in rows.columns:
        return np.full(len(rows), np.nan)
    return pd.to_numeric(rows[name], errors="coerce").to_numpy(dtype=np.float64)


def _cell_features(rows: pd.DataFrame, late_cycle: int, first_cycle: int, charge_time_cycles: int) -> dict:
    """Severson features of one cell; `rows` sorted by cycle_number, cycles <= late_cycle."""
    out: dict = {c: np.nan for c in SEVERSON_FEATURE_COLUMNS}
    out.update({"delta_q_cycle": np.nan, "n_cycles": len(rows), "resistance_source": None})
    cycle = rows["cycle_number"].to_numpy(dtype=np.float64)

    variance = _column(rows, "delta_q_variance_ah2")
    usable = np.flatnonzero(np.isfinite(variance) & (variance > 0))
    if usable.size:
        at = usable[-1]  # the latest cycle <= late_cycle with a dQ curve
        out["delta_q_cycle"] = int(cycle[at])
        out["log10_var_delta_q"] = _log10_abs(variance[at])
        out["log10_abs_min_delta_q"] = _log10_abs(_column(rows, "delta_q_min_ah")[at])
        out["log10_abs_skew_delta_q"] = _log10_abs(_column(rows, "delta_q_skewness")[at])
        out["log10_kurtosis_delta_q"] = _log10_abs(_column(rows, "delta_q_kurtosis")[at], shift=3.0)

    window = cycle >= first_cycle
    capacity = _column(rows, "discharge_capacity_ah")
    has_capacity = window & np.isfinite(capacity) & (capacity > 0)
    if has_capacity.any():
        early = capacity[has_capacity][0]
        out["capacity_cycle2_ah"] = float(early)
        out["capacity_max_minus_cycle2_ah"] = float(capacity[has_capacity].max() - early)
    if has_capacity.sum() >= 2 and np.ptp(cycle[has_capacity]) > 0:
        slope, intercept = np.polyfit(cycle[has_capacity], capacity[has_capacity], 1)
        out["capacity_fade_slope_ah_per_cycle"] = float(slope)
        out["capacity_fade_intercept_ah"] = float(intercept)

    cc, cv = _column(rows, "cc_charge_time_s"), _column(rows, "cv_charge_time_s")
    charge_time = np.where(np.isfinite(cc), cc + np.nan_to_num(cv, nan=0.0), np.nan)[window]
    charge_time = charge_time[np.isfinite(charge_time)][:charge_time_cycles]
    if charge_time.size:
        out["charge_time_mean_s"] = float(charge_time.mean())

    heat = (_column(rows, "temperature_mean_c") * _column(rows, "cycle_duration_s"))[window]
    if np.isfinite(heat).any():
        out["temperature_integral_c_s"] = float(np.nansum(heat))

    for name in RESISTANCE_COLUMNS:
        resistance = _column(rows, name)[window]
        finite = resistance[np.isfinite(resistance)]
        if finite.size:
            out["resistance_source"] = name
            out["resistance_min_ohm"] = float(finite.min())
            out["resistance_change_ohm"] = float(finite[-1] - finite[0])
            break
    return out


def severson_features(
    cycle_features: pd.DataFrame,
    late_cycle: int = 100,
    first_cycle: int = 2,
    charge_time_cycles: int = 5,
) -> pd.DataFrame:
    """One row per cell (index `cell_id`, sorted): `SEVERSON_FEATURE_COLUMNS` + `SEVERSON_INFO_COLUMNS`.

    Only rows with cycle_number <= late_cycle are read, so nothing later in a cell's life can
    leak into its early-life prediction (module docstring gives each definition).
    """
    for column in ("cell_id", "cycle_number"):
        if column not in cycle_features.columns:
            raise ValueError(f"cycle_features lacks column {column!r}")
    early = cycle_features[pd.to_numeric(cycle_features["cycle_number"], errors="coerce") <= late_cycle]
    early = early.assign(cell_id=early["cell_id"].astype(str)).sort_values(["cell_id", "cycle_number"], kind="stable")
    records = {
        cell: _cell_features(rows, late_cycle, first_cycle, charge_time_cycles)
        for cell, rows in early.groupby("cell_id", sort=True)
    }
    frame = pd.DataFrame.from_dict(records, orient="index", columns=SEVERSON_FEATURE_COLUMNS + SEVERSON_INFO_COLUMNS)
    frame.index.name = "cell_id"
    return frame.astype({c: "float64" for c in SEVERSON_FEATURE_COLUMNS})


class SeversonCycleLife(TabularRegressor):
    """Elastic net on log10(cycle life) with a Severson feature set.

    Parameters
    ----------
    feature_set : {"variance", "discharge", "full"}, default "variance"
    l1_ratios : sequence of float, default (0.1, 0.5, 0.7, 0.9, 0.95, 0.99, 1.0)
        Candidate elastic-net mixing ratios (1 = lasso).
    alphas : int or sequence of float, default 100
        Candidate penalties: a number of automatically spaced values, or the values.
    cv : int, default 4
        Folds over the training cells (reduced to the number of cells when fewer).

    X: a DataFrame with (at least) the feature set's columns (the output of `severson_features`;
    extra columns are ignored), or an array with exactly those columns in that order. y: cycle
    life in cycles (> 0). `predict` returns cycles. Deterministic (cyclic coordinate descent,
    unshuffled folds).
    """

    def __init__(
        self,
        feature_set: str = "variance",
        l1_ratios=(0.1, 0.5, 0.7, 0.9, 0.95, 0.99, 1.0),
        alphas=100,
        cv: int = 4,
    ):
        self.feature_set = feature_set
        self.l1_ratios = l1_ratios
        self.alphas = alphas
        self.cv = cv

    def _columns(self) -> list[str]:
        if self.feature_set not in SEVERSON_FEATURE_SETS:
            raise ValueError(f"feature_set must be one of {sorted(SEVERSON_FEATURE_SETS)}, got {self.feature_set!r}")
        return SEVERSON_FEATURE_SETS[self.feature_set]

    def _select(self, X):
        columns = self._columns()
        if isinstance(X, pd.DataFrame):
            missing = [c for c in columns if c not in X.columns]
            if missing:
                raise ValueError(f"X lacks the {self.feature_set!r} feature(s) {missing}")
            return X[columns]
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(columns):
            raise ValueError(f"an array X needs exactly the {len(columns)} columns {columns}, got shape {X.shape}")
        return X

    def fit(self, X, y):
        y = np.asarray(y, dtype=np.float64).ravel()
        if not (np.isfinite(y).all() and (y > 0).all()):
            raise ValueError("cycle life y must be finite and > 0 (censored cells have none: drop them)")
        return super().fit(self._select(X), np.log10(y))

    def _fit_model(self, Z: np.ndarray, y: np.ndarray) -> None:
        if len(y) < 2:
            raise ValueError("SeversonCycleLife needs at least 2 cells")
        alphas = self.alphas if isinstance(self.alphas, int) else list(self.alphas)
        self.model_ = ElasticNetCV(
            l1_ratio=list(self.l1_ratios), alphas=alphas, cv=min(int(self.cv), len(y))
        ).fit(Z, y)

    def predict(self, X) -> np.ndarray:
        """Cycle life in cycles."""
        return 10.0 ** super().predict(self._select(X))
