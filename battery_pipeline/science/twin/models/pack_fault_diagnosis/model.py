"""Per-cell fault diagnosis: internal short, voltage sensor offset, stuck reading, loose connection.

Conventions: current positive = charge (A), voltages in V, times in s; a cell's "fleet" is the
other cells of the same series string, whose median is the reference (robust to one faulty cell).
Every threshold is a number of standard errors (`detection_z`) together with a practical minimum
magnitude; the standard errors come from the voltage noise (given, or estimated from the data)
and are inflated by the scatter the fault-free model leaves in the data, so that the same rule
holds on packs with other noise levels, sizes and sample periods. The README gives the physics.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from battery_pipeline.science.chemistry import VOLTAGE_WINDOWS_V
from battery_pipeline.science.twin.base import (
    TwinModel,
    held_increments,
    input_columns,
    mean_temperature,
    register_model,
)
from battery_pipeline.science.twin.rests import detect_rests, rest_cell_soc, table_at, true_runs

KINDS = {  # kind -> category
    "internal_short": "cell",
    "voltage_sensor_offset": "sensor",
    "voltage_sensor_stuck": "sensor",
    "loose_connection": "connection",
}
MIN_FLEET = 3  # a median of >= 3 cells is not moved by one faulty cell; with 2 a fault cannot be attributed
MIN_RESTS_BEFORE = 3  # rests before a change: intercept and charge slope of the cell's SOC, plus one check
MIN_BLOCKS_BEFORE = 2
WEIGHTED_MEDIAN_EFFICIENCY = 1.2533  # sqrt(pi/2): standard error of a median over that of a mean
MAD_TO_SIGMA = 1.4826
NULL_LAMBDA_Z = 3.0  # an offset needs a drift estimate this close to zero (else it is a ramp, not a step)
SECONDS_PER_HOUR = 3600.0

ALERT_COLUMNS = ["cell", "kind", "category", "severity", "first_evidence_time_s", "detected_time_s", "end_time_s",
                 "magnitude", "magnitude_unit", "z_score", "evidence", "reason", "active_at_end"]
_ALERT_DTYPES = {"cell": object, "kind": object, "category": object, "severity": object,
                 "first_evidence_time_s": "float64", "detected_time_s": "float64", "end_time_s": "float64",
                 "magnitude": "float64", "magnitude_unit": object, "z_score": "float64", "evidence": object,
                 "reason": object, "active_at_end": bool}
EVALUABILITY_COLUMNS = ["kind", "category", "evaluable", "n_evidence", "reason"]
RESISTANCE_COLUMNS = ["start_time_s", "end_time_s", "cell", "n_steps", "reference_resistance_ohm",
                      "resistance_excess_ohm", "standard_error_ohm"]
REST_COLUMNS = ["end_time_s", "cell", "rest_voltage_v", "soc", "soc_deviation", "soc_sigma", "net_charge_ah"]


def robust_sigma(values: np.ndarray) -> float:
    """1.4826 x median absolute deviation from the median (NaN ignored; NaN if nothing)."""
    values = np.asarray(values, dtype="float64")
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan")
    return float(MAD_TO_SIGMA * np.median(np.abs(values - np.median(values))))


def weighted_median(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Column-wise weighted median of y (rows: samples) with row weights w; NaN entries ignored;
    NaN for a column without any value."""
    weights = np.where(np.isnan(y), 0.0, w[:, None])
    order = np.argsort(np.where(np.isnan(y), np.inf, y), axis=0)
    sorted_y = np.take_along_axis(y, order, axis=0)
    cumulative = np.cumsum(np.take_along_axis(weights, order, axis=0), axis=0)
    total = cumulative[-1]
    pick = np.argmax(cumulative >= total / 2.0, axis=0)
    result = sorted_y[pick, np.arange(y.shape[1])]
    return np.where(total > 0, result, np.nan)


def wls(X: np.ndarray, y: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted least squares: (coefficients, their standard errors, standardised residuals)."""
    A = X / sigma[:, None]
    b = y / sigma
    coef, *_ = np.linalg.lstsq(A, b, rcond=None)
    cov = np.linalg.pinv(A.T @ A)
    se = np.sqrt(np.maximum(np.diag(cov), 0.0))
    return coef, se, b - A @ coef


def estimate_noise(volts: np.ndarray, current: np.ndarray) -> tuple[float, str]:
    """1-sigma noise of one reading from sample-to-sample changes where the current did not change.

    With a fleet, of each cell minus the median (the common response cancels), corrected for the
    median's own noise; one cell: of the cell's voltage (relaxation then adds a little)."""
    steady = np.r_[False, current[1:] == current[:-1]]
    n_cells = volts.shape[1]
    if n_cells >= MIN_FLEET:
        deviation = volts - np.nanmedian(volts, axis=1, keepdims=True)
        changes = np.diff(deviation, axis=0)[steady[1:]]
        scale = robust_sigma(changes.ravel()) / np.sqrt(2.0) / np.sqrt(1.0 + np.pi / (2.0 * n_cells))
        how = "estimated: robust scale of sample-to-sample changes of cell minus fleet median at unchanged current"
    else:
        changes = np.diff(volts, axis=0)[steady[1:]]
        scale = robust_sigma(changes.ravel()) / np.sqrt(2.0)
        how = "estimated: robust scale of sample-to-sample voltage changes at unchanged current (one cell)"
    steps = np.abs(np.diff(volts, axis=0))
    quantum = np.nanmin(np.where(steps > 0, steps, np.nan)) if np.any(steps > 0) else np.nan
    floor = quantum / np.sqrt(12.0) if np.isfinite(quantum) else 1e-5  # rounding noise at least
    if not np.isfinite(scale) or scale < floor:
        scale = floor
    return float(max(scale, 1e-6)), how


class RestCurves:
    """OCV and dOCV/dSOC of each rest's table (its mean temperature), evaluated row-wise and
    vectorised: `ocv(rows, soc)` gives the OCV of rest rows[k] at soc[k]."""

    def __init__(self, chemistry: str, temperatures_c: np.ndarray):
        tables = [table_at(chemistry, t) for t in temperatures_c]
        self.grid = tables[0].soc if tables else np.linspace(0.0, 1.0, 2)
        self.ocv_v = np.array([t.ocv(self.grid) for t in tables]).reshape(len(tables), len(self.grid))
        self.slope_v = np.array([t.slope(self.grid) for t in tables]).reshape(len(tables), len(self.grid))

    def _interp(self, matrix, rows, soc):
        position = np.clip(np.asarray(soc, dtype="float64"), 0.0, 1.0) * (len(self.grid) - 1)
        low = np.minimum(np.floor(position).astype(int), len(self.grid) - 2)
        frac = position - low
        return matrix[rows, low] * (1.0 - frac) + matrix[rows, low + 1] * frac

    def ocv(self, rows, soc):
        return self._interp(self.ocv_v, rows, soc)

    def slope(self, rows, soc):
        return self._interp(self.slope_v, rows, soc)


GAUSS_NEWTON_ITERATIONS = 4  # the model is nearly linear in its coefficients (OCV over a few % SOC)


def fit_rest_voltages(curves: RestCurves, rows, volts, sigma_v, common, soc_columns, step, soc_init):
    """Fit rest voltages V_r = OCV_r(common_r + soc_columns @ theta) + eps * step_r (Gauss-Newton).

    `soc_columns` (n x k) carry the cell's SOC model (intercept, net Ah, ramp), `step` the voltage
    step (None: no step). Returns (coefficients [theta..., eps], standard errors, standardised
    residuals)."""
    theta = np.zeros(soc_columns.shape[1] + (step is not None))
    theta[:2] = soc_init
    design = soc_columns if step is None else np.column_stack([soc_columns, step])
    for _ in range(GAUSS_NEWTON_ITERATIONS):
        soc = common + soc_columns @ theta[:soc_columns.shape[1]]
        predicted = curves.ocv(rows, soc) + (theta[-1] * step if step is not None else 0.0)
        slope = np.maximum(curves.slope(rows, soc), 1e-6)
        jacobian = design * np.r_[np.ones(soc_columns.shape[1]), [] if step is None else [1.0]][None, :]
        jacobian[:, :soc_columns.shape[1]] *= slope[:, None]
        delta, *_ = np.linalg.lstsq(jacobian / sigma_v[:, None], (volts - predicted) / sigma_v, rcond=None)
        theta = theta + delta
    soc = common + soc_columns @ theta[:soc_columns.shape[1]]
    predicted = curves.ocv(rows, soc) + (theta[-1] * step if step is not None else 0.0)
    jacobian = design.astype("float64").copy()
    jacobian[:, :soc_columns.shape[1]] *= np.maximum(curves.slope(rows, soc), 1e-6)[:, None]
    weighted = jacobian / sigma_v[:, None]
    se = np.sqrt(np.maximum(np.diag(np.linalg.pinv(weighted.T @ weighted)), 0.0))
    return theta, se, (volts - predicted) / sigma_v


@register_model("pack_fault_diagnosis")
class FaultDiagnosis(TwinModel):
    def process(self, data, state=None):
        p = self.params
        time_s = data["time"].to_numpy(dtype="float64")
        current = data["current"].to_numpy(dtype="float64")
        cells = input_columns(data, "cell_voltages").astype("float64")
        names = [str(c) for c in cells.columns]
        volts = cells.to_numpy()
        if p["voltage_noise_v"] is not None:
            noise, noise_how = float(p["voltage_noise_v"]), "given (voltage_noise_v)"
        else:
            noise, noise_how = estimate_noise(volts, np.nan_to_num(current))
        self.noise_v = noise
        alerts: list[dict] = []
        evaluability: list[dict] = []

        # Readings beyond the chemistry's window are no OCV and no step response (excursions and
        # spikes: voltage_monitor's business): they stay out of every reference and estimate.
        low, high = VOLTAGE_WINDOWS_V[p["chemistry"]]
        in_window = np.where((volts < low) | (volts > high), np.nan, volts)
        stuck_mask, stuck_rows, stuck_eval = self._stuck(time_s, current, volts, in_window, names, noise)
        alerts += stuck_rows
        evaluability.append(stuck_eval)
        clean = np.where(stuck_mask, np.nan, in_window)  # frozen readings carry no information

        rest_rows, rest_table, rest_eval = self._rests(data, time_s, current, clean, names, noise)
        alerts += rest_rows
        evaluability += rest_eval
        res_rows, res_table, res_eval = self._resistance(time_s, current, clean, names, noise)
        alerts += res_rows
        evaluability.append(res_eval)

        frame = pd.DataFrame(alerts, columns=ALERT_COLUMNS) if alerts else pd.DataFrame(columns=ALERT_COLUMNS)
        frame = frame.astype(_ALERT_DTYPES).sort_values(["detected_time_s", "cell", "kind"], ignore_index=True)
        order = {k: i for i, k in enumerate(KINDS)}
        evaluation = pd.DataFrame(evaluability, columns=EVALUABILITY_COLUMNS)
        evaluation["reason"] = evaluation["reason"] + f"; voltage noise {1000 * noise:.2f} mV ({noise_how})"
        evaluation = evaluation.sort_values("kind", key=lambda k: k.map(order), ignore_index=True)
        return {"fault_alerts": frame, "evaluability": evaluation, "cell_resistance": res_table,
                "rest_deviation": rest_table}

    # -- stuck reading -------------------------------------------------------------------------
    def _stuck(self, time_s, current, volts, in_window, names, noise):
        """Runs of identical readings during which a live cell would have moved.

        Evidence that a live cell moves: with a fleet (>= 2 others), the range of the fleet's
        median (other cell) over the run; with one cell, its own step resistance (dV/dI over the
        record's current steps outside frozen runs) times the largest abrupt current step in
        the run (a CV charge holds the voltage while the current tapers: gradual, so no evidence).
        Threshold: `stuck_motion_sigmas` noise sigmas, and 3 reading quanta, reached on two samples
        of the run (one glitch of a neighbour moving the median of a small pack is no evidence)."""
        p = self.params
        n, n_cells = volts.shape
        mask = np.zeros_like(volts, dtype=bool)
        rows = []
        if n_cells >= MIN_FLEET:
            reference = np.nanmedian(in_window, axis=1)
            evidence_kind = "fleet median"
        elif n_cells == 2:
            reference = None
            evidence_kind = "other cell"
        else:
            reference = None
            evidence_kind = "own step response"
        d_current = np.r_[0.0, np.abs(np.diff(np.nan_to_num(current)))]
        abrupt = np.where(d_current >= p["min_current_step_a"], d_current, 0.0)
        for i, name in enumerate(names):
            v = volts[:, i]
            same = (v[1:] == v[:-1]) & np.isfinite(v[1:])
            first, last = true_runs(same)
            lengths = last - first + 2  # samples in the run of identical values
            keep = (lengths >= p["stuck_min_samples"]) & (time_s[last + 1] - time_s[first] >= p["stuck_min_duration_s"])
            if not keep.any():
                continue
            steps = np.abs(np.diff(v))
            quantum = np.nanmin(np.where(steps > 0, steps, np.nan)) if np.any(steps > 0) else 0.0
            threshold = max(p["stuck_motion_sigmas"] * noise, 3.0 * quantum)
            if n_cells >= 2:
                ref = reference if reference is not None else in_window[:, 1 - i]
            else:
                resistance = self._own_step_resistance(v, current, same)
                if not np.isfinite(resistance) or resistance <= 0:
                    continue
            for a, b in zip(first[keep], last[keep]):
                s0, e = a, b + 1
                if n_cells >= 2:
                    seg = ref[s0:e + 1]
                    motion = np.fmax.accumulate(seg) - np.fmin.accumulate(seg)
                else:
                    motion = resistance * np.maximum.accumulate(abrupt[s0:e + 1] * (np.arange(s0, e + 1) > s0))
                long_enough = (np.arange(e + 1 - s0) + 1 >= p["stuck_min_samples"]) & (
                    time_s[s0:e + 1] - time_s[s0] >= p["stuck_min_duration_s"])
                hit = np.flatnonzero((motion >= threshold) & long_enough)
                if len(hit) < 2:
                    continue
                k_detect = s0 + int(hit[1])
                mask[s0:e + 1, i] = True
                open_ = e == n - 1
                moved = float(np.nanmax(motion))
                rows.append({
                    "cell": name, "kind": "voltage_sensor_stuck", "category": "sensor",
                    # A closed run is a past event (the sensor reads again): info; an open one leaves the
                    # cell unmonitored, its protection blind: critical.
                    "severity": "critical" if open_ else "info",
                    "first_evidence_time_s": time_s[s0], "detected_time_s": time_s[k_detect], "end_time_s": time_s[e],
                    "magnitude": float(v[s0]), "magnitude_unit": "V",
                    "z_score": moved / noise,
                    "evidence": (f"reading {v[s0]:.4f} V identical over {e - s0 + 1} samples "
                                 f"({time_s[e] - time_s[s0]:.0f} s) while the {evidence_kind} moved {1000 * moved:.1f} mV "
                                 f"(threshold {1000 * threshold:.1f} mV = max({p['stuck_motion_sigmas']:g} x noise, 3 quanta))"),
                    "reason": "a live cell follows the string's current and its neighbours; a frozen value does not: "
                              "a sensor fault, the cell's state is unknown",
                    "active_at_end": bool(open_),
                })
        evaluation = {"kind": "voltage_sensor_stuck", "category": "sensor", "evaluable": True, "n_evidence": n,
                      "reason": f"identical readings against the {evidence_kind}"}
        return mask, rows, evaluation

    @staticmethod
    def _own_step_resistance(v, current, frozen_pair):
        dv, di = np.diff(v), np.diff(np.nan_to_num(current))
        use = (np.abs(di) > 0) & ~frozen_pair & np.isfinite(dv)
        if use.sum() < 3:
            return float("nan")
        return float(np.sum(di[use] * dv[use]) / np.sum(di[use] ** 2))

    # -- rests: internal short and sensor offset -----------------------------------------------
    def _rests(self, data, time_s, current, volts, names, noise):
        p = self.params
        n_cells = len(names)
        empty = pd.DataFrame(columns=REST_COLUMNS)
        rests = detect_rests(time_s, np.nan_to_num(current, nan=np.inf), p["rest_current_a"],
                             p["fault_rest_min_duration_s"], p["current_hold"])
        need = MIN_RESTS_BEFORE + p["min_rests_after"]

        def not_evaluable(reason):
            return [], empty, [{"kind": k, "category": KINDS[k], "evaluable": False, "n_evidence": len(rests),
                                "reason": reason} for k in ("internal_short", "voltage_sensor_offset")]

        if n_cells < MIN_FLEET:
            return not_evaluable(f"needs >= {MIN_FLEET} cells: a drift or step of one cell's rest voltage is told "
                                 "from temperature, OCV-table and current-sensor errors only against a fleet "
                                 f"(this source has {n_cells})")
        if len(rests) < need:
            return not_evaluable(f"needs >= {need} rests of >= {p['fault_rest_min_duration_s']:g} s "
                                 f"(found {len(rests)})")
        temperature = mean_temperature(data, p["default_temperature_c"])
        frame = pd.DataFrame(volts, columns=names)
        ocv, soc, rest_temp = rest_cell_soc(rests, frame, temperature, p["chemistry"], time_s, p["rest_average_s"])
        z, v_rest = soc.to_numpy(), ocv.to_numpy()
        slope = np.array([table_at(p["chemistry"], t).slope(row) for t, row in zip(rest_temp, z)]).reshape(z.shape)
        charge_ah = np.cumsum(held_increments(time_s, np.nan_to_num(current), p["current_hold"], None)) / SECONDS_PER_HOUR
        net_ah = charge_ah[rests["end"].to_numpy()]
        hours = (rests["end_time_s"].to_numpy() - rests["end_time_s"].iloc[0]) / SECONDS_PER_HOUR
        dt = float(np.median(np.diff(time_s))) if len(time_s) > 1 else 1.0
        averaged = np.maximum(1.0, np.minimum(p["rest_average_s"], rests["duration_s"].to_numpy() / 6.0) / dt)
        sigma_v = np.sqrt(noise ** 2 / averaged + p["rest_voltage_floor_v"] ** 2)
        sigma_z = sigma_v[:, None] / np.maximum(slope, 1e-6)

        # Fault-free model of each cell: SOC = a + b * net Ah (b = 1/capacity), plus a common-mode
        # part shared by all cells (OCV-table error, temperature, current-sensor bias), the median
        # of the cells' residuals; two passes, each refitting the cells on SOC minus it.
        X0 = np.column_stack([np.ones_like(net_ah), net_ah])
        common = np.zeros(len(rests))
        soc_fit = np.zeros((n_cells, 2))
        for _ in range(2):
            residual = np.full_like(z, np.nan)
            for i in range(n_cells):
                ok = np.isfinite(z[:, i])
                if ok.sum() >= 3:
                    soc_fit[i], _, _ = wls(X0[ok], z[ok, i] - common[ok], sigma_z[ok, i])
                    residual[ok, i] = z[ok, i] - common[ok] - X0[ok] @ soc_fit[i]
            common = common + np.nanmedian(residual, axis=1)
        deviation = z - common[:, None]
        # The tests run in voltage (an offset is constant there, whatever the OCV slope); the
        # scatter the fault-free model leaves, pooled over cells (one faulty cell barely moves
        # it), inflates the stated errors where it is larger.
        curves = RestCurves(p["chemistry"], rest_temp)
        context = dict(curves=curves, sigma_v=sigma_v, common=common, net_ah=net_ah, hours=hours)
        scatter = []
        for i in range(n_cells):
            ok = np.isfinite(v_rest[:, i])
            if ok.sum() >= 3:
                rows_ok = np.flatnonzero(ok)
                scatter.append(fit_rest_voltages(curves, rows_ok, v_rest[ok, i], sigma_v[ok], common[ok], X0[ok], None,
                                                 soc_fit[i])[2])
        inflation = max(1.0, robust_sigma(np.concatenate(scatter))) if scatter else 1.0
        context["sigma_v"] = sigma_v * inflation
        sigma_z = sigma_z * inflation

        table = pd.DataFrame({
            "end_time_s": np.repeat(rests["end_time_s"].to_numpy(), n_cells),
            "cell": np.tile(np.asarray(names, dtype=object), len(rests)),
            "rest_voltage_v": v_rest.ravel(), "soc": z.ravel(), "soc_deviation": deviation.ravel(),
            "soc_sigma": sigma_z.ravel(), "net_charge_ah": np.repeat(net_ah, n_cells),
        }, columns=REST_COLUMNS)

        rows = []
        end_times = rests["end_time_s"].to_numpy()
        for i, name in enumerate(names):
            ok = np.isfinite(v_rest[:, i])
            found = self._rest_change(v_rest[:, i], soc_fit[i], ok, **context)
            if found is None:
                continue
            # When was it first detectable? The same test on the rests up to each later one.
            detected_at = len(rests) - 1
            for last in range(max(found["j"], 0) + p["min_rests_after"], len(rests)):
                prefix = ok & (np.arange(len(rests)) <= last)
                early = self._rest_change(v_rest[:, i], soc_fit[i], prefix, **context)
                if early is not None and early["kind"] == found["kind"]:
                    detected_at = last
                    break
            rows.append(self._rest_alert(name, found, end_times, detected_at, inflation))
        n_used = int(np.isfinite(v_rest).all(axis=1).sum())
        reason = (f"cell rest voltages at {len(rests)} rests of >= {p['fault_rest_min_duration_s']:g} s against "
                  f"coulomb counting through the OCV table and the fleet; model scatter x{inflation:.2f} of the stated noise")
        evaluation = [{"kind": k, "category": KINDS[k], "evaluable": True, "n_evidence": n_used, "reason": reason}
                      for k in ("internal_short", "voltage_sensor_offset")]
        return rows, table, evaluation

    def _rest_change(self, volts, soc_init, ok, curves, sigma_v, common, net_ah, hours):
        """Best change in one cell's rest voltages, or None.

        Candidate changes after rest j: V = OCV(common + a + b*Ah + lam*(hours - hours_j)+) + eps*step,
        a ramp in SOC (a leak: charge the current does not account for; b = 1/capacity) and a step
        in voltage (an offset); j = -1: a ramp from the first rest (a short present from the start),
        no step. The change point is the candidate that fits best (chi-square plus ln(n) per
        coefficient, BIC). There: a short if lam <= -z*se and large enough; else an offset if
        |eps| >= z*se, large enough, and the ramp is not significant (a step, not a ramp)."""
        p = self.params
        idx = np.flatnonzero(ok)
        n = len(idx)
        if n < MIN_RESTS_BEFORE + p["min_rests_after"]:
            return None
        v, sig, c, ah, h = volts[idx], sigma_v[idx], common[idx], net_ah[idx], hours[idx]
        z_min = p["detection_z"]
        fits = []
        for j in [-1] + list(range(MIN_RESTS_BEFORE - 1, n - p["min_rests_after"])):
            ramp = h - h[0] if j < 0 else np.maximum(h - h[j], 0.0)
            step = None if j < 0 else (np.arange(n) > j).astype(float)
            coef, se, residual = fit_rest_voltages(curves, idx, v, sig, c, np.column_stack([np.ones(n), ah, ramp]),
                                                   step, soc_init)
            fits.append((float(residual @ residual) + len(coef) * np.log(n), j, ramp, coef, se))
        _, j, ramp, coef, se = min(fits, key=lambda f: f[0])
        lam, lam_se = coef[2], se[2]
        z_lam = lam / lam_se if lam_se > 0 else 0.0
        soc_now = c + coef[0] + coef[1] * ah
        post = slice(j + 1, None) if j >= 0 else slice(None)
        post_slope = float(np.median(curves.slope(idx[post], soc_now[post])))
        span_h = float(ramp.max())
        found = None
        if z_lam <= -z_min and -lam >= p["min_self_discharge_per_h"] and -lam * span_h * post_slope >= p["min_offset_v"]:
            found = dict(kind="internal_short", z=z_lam, rate=-lam, rate_se=lam_se, span_h=span_h, post_slope=post_slope)
        elif j >= 0 and abs(z_lam) < NULL_LAMBDA_Z:
            eps, eps_se = coef[3], se[3]
            z_eps = eps / eps_se if eps_se > 0 else 0.0
            if abs(z_eps) >= z_min and abs(eps) >= p["min_offset_v"]:
                found = dict(kind="voltage_sensor_offset", z=z_eps, offset=eps, offset_se=eps_se, rate=lam, rate_se=lam_se)
        if found is None:
            return None
        found.update(j=j, j_rest=int(idx[j]) if j >= 0 else -1, first_rest=int(idx[j + 1]) if j >= 0 else int(idx[0]),
                     last_rest=int(idx[-1]))
        return found

    def _rest_alert(self, name, found, end_times, detected_at, inflation):
        p = self.params
        kind = found["kind"]
        onset_text = (f"after the rest ending at {end_times[found['j_rest']]:.0f} s"
                      if found["j_rest"] >= 0 else "from the first rest on")
        if kind == "internal_short":
            per_day = found["rate"] * 24.0
            leak = (f", a leak of {1000 * found['rate'] * p['nominal_capacity_ah']:.1f} mA on "
                    f"{p['nominal_capacity_ah']:g} Ah" if p["nominal_capacity_ah"] else "")
            evidence = (f"SOC falls {100 * found['rate']:.3f} +- {100 * found['rate_se']:.3f} %/h against coulomb "
                        f"counting and the fleet {onset_text} ({100 * per_day:.2f} %/day{leak}; "
                        f"{1000 * found['rate'] * found['span_h'] * found['post_slope']:.1f} mV of OCV over "
                        f"{found['span_h']:.1f} h)")
            severity = "critical" if per_day >= p["critical_self_discharge_per_day"] else "warning"
            magnitude, unit = found["rate"], "1/h"
            reason = ("a ramp, not a step: the cell's charge drains while it rests, which no sensor offset does; "
                      "its step resistance is a separate test")
        else:
            evidence = (f"rest voltage steps {1000 * found['offset']:+.1f} +- {1000 * found['offset_se']:.1f} mV "
                        f"{onset_text} and stays (drift after it {100 * found['rate']:+.3f} +- "
                        f"{100 * found['rate_se']:.3f} %/h, i.e. none)")
            severity = "critical" if abs(found["offset"]) >= p["critical_offset_v"] else "warning"
            magnitude, unit = found["offset"], "V"
            reason = ("a constant shift in voltage across rests at different SOC, with no drift: the reading, not "
                      "the cell's charge (a short would keep drifting)")
        return {"cell": name, "kind": kind, "category": KINDS[kind], "severity": severity,
                "first_evidence_time_s": end_times[found["first_rest"]], "detected_time_s": end_times[detected_at],
                "end_time_s": end_times[found["last_rest"]], "magnitude": float(magnitude), "magnitude_unit": unit,
                "z_score": float(found["z"]), "evidence": evidence + f"; errors x{inflation:.2f} model scatter",
                "reason": reason, "active_at_end": True}

    # -- step resistance: loose connection -----------------------------------------------------
    def _resistance(self, time_s, current, volts, names, noise):
        p = self.params
        n_cells = len(names)
        empty = pd.DataFrame(columns=RESISTANCE_COLUMNS)
        evaluation = {"kind": "loose_connection", "category": "connection", "evaluable": False, "n_evidence": 0}
        if n_cells < MIN_FLEET:
            evaluation["reason"] = (f"needs >= {MIN_FLEET} cells: a cell's own resistance moves with temperature and "
                                    f"SOC, only a rise against the fleet's median is a connection (this source has {n_cells})")
            return [], empty, evaluation
        d_current = np.diff(np.nan_to_num(current))
        dv = np.diff(volts, axis=0)
        steps = np.flatnonzero(np.abs(d_current) >= p["min_current_step_a"])
        dv_ref = np.nanmedian(dv[steps], axis=1) if len(steps) else np.empty(0)
        di = d_current[steps]
        reference_r = float(np.sum(di * dv_ref) / np.sum(di ** 2)) if len(steps) else float("nan")
        if not len(steps) or not np.isfinite(reference_r) or reference_r <= 0:
            evaluation["reason"] = f"needs current steps >= {p['min_current_step_a']:g} A (found {len(steps)})"
            return [], empty, evaluation
        min_step = p["min_resistance_step_fraction"] * reference_r
        sigma_x = noise * np.sqrt(2.0 * (1.0 + np.pi / (2.0 * n_cells)))
        # A block closes with enough steps and enough current for a standard error of a third of the
        # smallest step reported.
        target_weight = (3.0 * WEIGHTED_MEDIAN_EFFICIENCY * sigma_x / min_step) ** 2
        ratio = (dv[steps] - dv_ref[:, None]) / di[:, None]
        weight = di ** 2
        bounds, start, acc = [], 0, 0.0
        for k in range(len(steps)):
            acc += weight[k]
            if k + 1 - start >= p["resistance_block_steps"] and acc >= target_weight:
                bounds.append((start, k + 1))
                start, acc = k + 1, 0.0
        need = MIN_BLOCKS_BEFORE + p["min_blocks_after"]
        evaluation["n_evidence"] = len(bounds)
        if len(bounds) < need:
            evaluation["reason"] = f"needs >= {need} blocks of current steps (found {len(bounds)})"
            return [], empty, evaluation
        excess = np.array([weighted_median(ratio[a:b], weight[a:b]) for a, b in bounds])
        ref_block = np.array([np.sum(di[a:b] * dv_ref[a:b]) / np.sum(weight[a:b]) for a, b in bounds])
        se = np.array([WEIGHTED_MEDIAN_EFFICIENCY * sigma_x / np.sqrt(np.sum(weight[a:b])) for a, b in bounds])
        step_time = time_s[steps + 1]
        starts = np.array([step_time[a] for a, _ in bounds])
        ends = np.array([step_time[b - 1] for _, b in bounds])

        # Fault-free model of a cell's excess: constant plus a share of the reference's own changes
        # (cell-to-cell differences scale with temperature and SOC like the resistance itself).
        centred = ref_block - ref_block.mean()
        X0 = np.column_stack([np.ones(len(bounds)), centred]) if np.ptp(centred) > 1e-9 else np.ones((len(bounds), 1))
        residuals = []
        for i in range(n_cells):
            ok = np.isfinite(excess[:, i])
            if ok.sum() >= X0.shape[1] + 1:
                residuals.append(wls(X0[ok], excess[ok, i], se[ok])[2])
        inflation = max(1.0, robust_sigma(np.concatenate(residuals))) if residuals else 1.0
        se_used = se * inflation

        table = pd.DataFrame({
            "start_time_s": np.repeat(starts, n_cells), "end_time_s": np.repeat(ends, n_cells),
            "cell": np.tile(np.asarray(names, dtype=object), len(bounds)),
            "n_steps": np.repeat([b - a for a, b in bounds], n_cells),
            "reference_resistance_ohm": np.repeat(ref_block, n_cells),
            "resistance_excess_ohm": excess.ravel(), "standard_error_ohm": np.repeat(se_used, n_cells),
        }, columns=RESISTANCE_COLUMNS)

        rows = []
        for i, name in enumerate(names):
            ok = np.isfinite(excess[:, i])
            found = self._resistance_step(excess[:, i], se_used, X0, ok, min_step)
            if found is None:
                continue
            detected_at = len(bounds) - 1
            for last in range(found["c"] + p["min_blocks_after"] - 1, len(bounds)):
                early = self._resistance_step(excess[:, i], se_used, X0, ok & (np.arange(len(bounds)) <= last), min_step)
                if early is not None:
                    detected_at = last
                    break
            rise = found["rise"]
            rows.append({
                "cell": name, "kind": "loose_connection", "category": "connection",
                "severity": "critical" if rise >= p["critical_resistance_fraction"] * reference_r else "warning",
                "first_evidence_time_s": starts[found["c"]], "detected_time_s": ends[detected_at],
                "end_time_s": ends[found["last"]], "magnitude": rise, "magnitude_unit": "ohm", "z_score": found["z"],
                "evidence": (f"step resistance against the fleet median rises {1000 * rise:+.2f} +- {1000 * found['se']:.2f} "
                             f"mOhm from the block starting at {starts[found['c']]:.0f} s and stays (fleet median "
                             f"{1000 * reference_r:.2f} mOhm; {found['n_after']} blocks after; errors x{inflation:.2f} "
                             "model scatter)"),
                "reason": ("the voltage response to current steps grows while the rest voltage does not move: series "
                           "resistance outside the cell's chemistry, not an offset (which cancels in dV) nor a short"),
                "active_at_end": True,
            })
        evaluation["evaluable"] = True
        evaluation["reason"] = (f"cell dV/dI minus the fleet median's over {len(steps)} current steps in "
                                f"{len(bounds)} blocks; model scatter x{inflation:.2f}")
        return rows, table, evaluation

    def _resistance_step(self, excess, se, X0, ok, min_step):
        p = self.params
        idx = np.flatnonzero(ok)
        if len(idx) < MIN_BLOCKS_BEFORE + p["min_blocks_after"]:
            return None
        best = None
        for c in range(MIN_BLOCKS_BEFORE, len(idx) - p["min_blocks_after"] + 1):
            step = (np.arange(len(idx)) >= c).astype(float)
            coef, err, _ = wls(np.column_stack([X0[idx], step]), excess[idx], se[idx])
            rise, rise_se = coef[-1], err[-1]
            z = rise / rise_se if rise_se > 0 else 0.0
            # The rise must stay: the last block alone is above half of it.
            if z >= p["detection_z"] and rise >= min_step and excess[idx[-1]] - coef[0] >= rise / 2.0:
                if best is None or z > best["z"]:
                    best = dict(c=int(idx[c]), z=float(z), rise=float(rise), se=float(rise_se), last=int(idx[-1]),
                                n_after=len(idx) - c)
        return best
