"""Cell temperature forecasting 60 s and 300 s ahead: a lumped thermal model fitted per cell, an
ML model on its residual, persistence as the floor; split by file (drive cycle), never by row.

Setting ("planned duty"): at time t the forecaster knows the measured case temperature T and the
ambient T_amb up to t, the current and voltage up to t, and the *current* profile over (t, t+h]
(a drive cycle or test programme is planned ahead). It does not know the future voltage (a
response of the cell, not an input), the future ambient (held at its value at t) nor, of
course, any temperature after t.

Units and conventions: s, A, V, degC (K in the Arrhenius and entropic terms), W, J/K, K/W, ohm.
Current positive = charge (the canonical convention of every reader).

Resampling (`resample_uniform`): each file is put on a uniform step (default 1 s). A step's
value is the mean of the raw samples in its interval (t_k - step, t_k]; I^2 is the mean of the
raw squares, not the square of the mean, so Joule heat of 10 Hz pulses is kept. A step without
samples is filled by holding the previous step's values only when the raw samples on either
side are at most `max_gap_s` apart (default 3 s: the Panasonic tester leaves ~2 s unlogged
between repeats of a profile, current ~0 A on both sides); a longer gap (pauses, the 16.4 h stop
in Panasonic Cycle_1) ends a segment. Segments are never joined: no history window, no filter
state and no forecast window crosses a segment boundary.

Thermal model (per cell), one state (case = bulk temperature T):
    C dT/dt = Q - (T - T_amb) / R_th
or two states (core T_c receives the heat, the measured case/surface T_s loses it to ambient):
    C_c dT_c/dt = Q - (T_c - T_s) / R_cs
    C_s dT_s/dt = (T_c - T_s) / R_cs - (T_s - T_amb) / R_sa
with heat Q = I^2 R(T) + I T_K dU/dT (current positive = charge; with dU/dT > 0 the reversible
term cools on discharge, Bernardi's sign convention rewritten for charge-positive current).
  - R(T) = R_ref exp(B (1/T_K - 1/298.15)) is *taken from the data*, not fitted to temperature
    (temperature alone cannot separate R from C: scaling both leaves T unchanged). Per training
    file and 600 s window, the effective resistance at drive-cycle time scales is the slope of
    voltage on current after subtracting 300 s centred moving averages of both (the slow OCV
    drift); log R vs 1/T_K over the windows, weighted by current variance, gives R_ref and B
    (B bounded to [0, 8000] K, i.e. activation energy 0-66 kJ/mol). R does not depend on SOC.
  - dU/dT is one fitted constant (bounded +-1 mV/K), T_K in the entropic term is the ambient's
    absolute temperature: T - T_amb < 15 K is < 5 % of T_K, and this keeps the model linear in T
    so that its update is exact.
  - Within a forecast, R is evaluated at the measured T(t) and held, the ambient is held at
    T_amb(t); the discrete update is the exact zero-order-hold solution (matrix exponential,
    computed per eigenmode) for inputs piecewise constant over each step.
  - C, R_th (or C_c, C_s, R_cs, R_sa) and dU/dT are fitted per cell on that cell's training
    files only, by bounded least squares (scipy.optimize.least_squares) on the forecast errors
    at the evaluated horizons themselves. Bounds: C in [2, 2000] J/K, R_th in [0.2, 200] K/W.
  - State at t: one state, T(t) measured. Two states: the model is run from the segment's start
    (core = case = first measured T, i.e. equilibrium assumed there) on past inputs and past
    measured T (for R(T)); at t both states are shifted by the measured-minus-modelled case
    temperature, so the modelled core-case difference is kept and the case equals the
    measurement.

Hybrid: per horizon, a gradient-boosted tree model (scikit-learn HistGradientBoostingRegressor)
fitted on the training files' physics residual T(t+h) - physics(t+h), with features computable
at t (`FEATURE_NAMES`): the past of T, I, V, T_amb up to t and the planned current over (t, t+h].
The physics model it corrects is fitted on the same training files (in-sample residuals).

Split: leave one file (drive cycle) out within each cell; physics and ML are both fitted on the
other files of that cell only; every metric is on the held-out file's forecast points (one per
step whose window (t, t+h] lies inside one segment), pooled over the held-out files.

Data sources and what a file cannot tell:
  - Panasonic 18650PF (`panasonic_18650pf/<T>degC/Drive cycles/*.mat`): one cell (per the
    set's description); T = `Battery_Temp_degC` (case thermocouple), ambient =
    `Chamber_Temp_degC` measured (1 degC resolution), read with the project's .mat machinery.
  - LG HG2 (`lg_hg2/<T>degC/*` drive cycle and pause cycle CSVs): the cell is the header's
    `Battery Name` (every drive-cycle file names LG HG2 18650_SN62A4, i.e. one cell at six
    chamber temperatures; the numeric file prefix is the cycler's test number, not a cell).
    The files have no ambient column: the ambient is the chamber set point from the folder
    name (n10degC = -10 degC), not a measurement. When the file's first temperature contradicts
    that set point by more than `AMBIENT_CONTRADICTION_C`, the set point is not used and the
    ambient is the file's first measured cell temperature (labelled so): the 40degC folder's
    test 562 files (Mixed4-8, PausCycl) start at 22.8-23.9 degC and cool towards ~23 degC in
    their closing rests, so that chamber was not at 40 degC.
  - A file without current (|I| < 0.05 A throughout: 25degC/551_HWFET holds only the 10 min rest
    after the drive cycle) is excluded, with the reason in the results.
  - LG temperatures are quantised at 0.105 degC (Panasonic 0.011 degC); AD592 accuracy +-1 degC.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

KELVIN = 273.15
T_REF_K = 298.15
DEFAULT_STEP_S = 1.0
DEFAULT_MAX_GAP_S = 3.0
DEFAULT_HORIZONS_S = (60, 300)
AMBIENT_CONTRADICTION_C = 5.0  # > 3x the AD592's +-1 degC plus a rest's residual heat
MIN_CURRENT_A = 0.05  # a file whose |I| never exceeds this has no duty to forecast from
R_WINDOW_S = 600.0
R_DETREND_S = 300.0
ACTIVATION_BOUNDS_K = (0.0, 8000.0)
ENTROPIC_BOUND_V_PER_K = 1e-3
HEAT_CAPACITY_BOUNDS = (2.0, 2000.0)
THERMAL_RESISTANCE_BOUNDS = (0.2, 200.0)
DRIVE_CYCLE_NAME = re.compile(r"(UDDS|HWFET|HWFT|LA92|US06|Mixed\d*|PausCycl|Cycle_\d+|NN)", re.I)
FEATURE_NAMES = (
    "temperature_c",
    "rise_over_ambient_c",
    "ambient_c",
    "dT_dt_past_60s_c_per_s",
    "mean_i2_past_60s",
    "mean_i2_past_300s",
    "mean_i_past_300s",
    "voltage_v",
    "mean_voltage_past_60s",
    "mean_i2_future",
    "mean_i2_future_first_quarter",
    "mean_i_future",
    "physics_rise_c",
)


# ----------------------------------------------------------------------------------- data


@dataclass
class DriveCycle:
    """One file on a uniform step. Arrays are per step k (interval (t_k - step, t_k])."""

    file_id: str  # dataset/relative path: unique, the unit of the split
    dataset: str
    cell_id: str
    step_s: float
    time_s: np.ndarray
    segment: np.ndarray  # segment number per step; windows never cross a change
    current_a: np.ndarray
    current_sq_a2: np.ndarray
    voltage_v: np.ndarray
    temperature_c: np.ndarray
    ambient_c: np.ndarray
    ambient_source: str
    raw_samples: int = 0
    held_steps: int = 0  # steps filled by holding across a gap <= max_gap_s
    excluded_reason: str | None = None
    notes: list[str] = field(default_factory=list)

    def segments(self) -> list[tuple[int, int]]:
        """(start, stop) index ranges of the segments."""
        if len(self.segment) == 0:
            return []
        change = np.flatnonzero(np.diff(self.segment)) + 1
        starts = np.concatenate([[0], change])
        stops = np.concatenate([change, [len(self.segment)]])
        return list(zip(starts.tolist(), stops.tolist()))


def resample_uniform(time_s, columns: dict[str, np.ndarray], step_s: float = DEFAULT_STEP_S,
                     max_gap_s: float = DEFAULT_MAX_GAP_S):
    """Raw samples -> (step end times, segment ids, step means of every column, held steps).

    `columns` may include "current_sq_a2" (pass I**2 to get the mean of squares). NaN values
    are ignored in the means; a step whose temperature is NaN everywhere ends a segment too.
    """
    time_s = np.asarray(time_s, dtype=float)
    ok = np.isfinite(time_s)
    order = np.argsort(time_s[ok], kind="stable")
    t = time_s[ok][order]
    cols = {k: np.asarray(v, dtype=float)[ok][order] for k, v in columns.items()}
    if len(t) == 0:
        return np.array([]), np.array([], dtype=int), {k: np.array([]) for k in cols}, 0
    t0 = t[0]
    # a step is (t0 + (b - 1) step, t0 + b step]; the first sample opens step 0
    b = np.ceil((t - t0) / step_s - 1e-9).astype(np.int64)
    n_bins = int(b[-1]) + 1
    means = {}
    for name, values in cols.items():
        good = np.isfinite(values)
        total = np.bincount(b[good], weights=values[good], minlength=n_bins)
        count = np.bincount(b[good], minlength=n_bins)
        with np.errstate(invalid="ignore", divide="ignore"):
            means[name] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    occupied = np.bincount(b, minlength=n_bins) > 0
    if "temperature_c" in means:
        occupied &= np.isfinite(means["temperature_c"])
    # raw time between the last sample before an empty run and the first after it
    first_t = np.full(n_bins, np.nan)
    last_t = np.full(n_bins, np.nan)
    np.fmin.at(first_t, b, t)
    np.fmax.at(last_t, b, t)
    occ_idx = np.flatnonzero(occupied)
    keep = np.zeros(n_bins, dtype=bool)
    keep[occ_idx] = True
    segment_start = np.zeros(n_bins, dtype=bool)
    held = 0
    if len(occ_idx):
        segment_start[occ_idx[0]] = True
    for prev, nxt in zip(occ_idx[:-1], occ_idx[1:]):
        if nxt == prev + 1:
            continue
        if first_t[nxt] - last_t[prev] <= max_gap_s:
            keep[prev + 1:nxt] = True
            for name in means:
                means[name][prev + 1:nxt] = means[name][prev]
            held += nxt - prev - 1
        else:
            segment_start[nxt] = True
    segment = np.cumsum(segment_start) - 1
    times = t0 + np.arange(n_bins) * step_s
    return times[keep], segment[keep], {k: v[keep] for k, v in means.items()}, held


def _set_point_from_folder(path: Path) -> float | None:
    for part in reversed(path.parts[:-1]):
        match = re.fullmatch(r"(n|-)?(\d+(?:\.\d+)?)\s*degC", part)
        if match:
            return -float(match.group(2)) if match.group(1) else float(match.group(2))
    return None


def _cycle_from_samples(file_id, dataset, cell_id, samples, ambient, ambient_source, step_s, max_gap_s):
    current = samples["current_a"].to_numpy(float)
    columns = {
        "current_a": current,
        "current_sq_a2": current**2,
        "voltage_v": samples["voltage_v"].to_numpy(float),
        "temperature_c": samples["temperature_c"].to_numpy(float),
        "ambient_c": np.asarray(ambient, dtype=float),
    }
    times, segment, means, held = resample_uniform(samples["time_s"].to_numpy(float), columns, step_s, max_gap_s)
    cycle = DriveCycle(file_id=file_id, dataset=dataset, cell_id=cell_id, step_s=step_s, time_s=times,
                       segment=segment, ambient_source=ambient_source, raw_samples=len(samples),
                       held_steps=held, **means)
    if not np.nanmax(np.abs(current), initial=0.0) > MIN_CURRENT_A:
        cycle.excluded_reason = f"no current (|I| <= {MIN_CURRENT_A} A throughout): nothing drives the temperature"
    elif not np.isfinite(columns["temperature_c"]).any():
        cycle.excluded_reason = "no measured temperature"
    return cycle


def read_panasonic_cycle(path: Path, root: Path, step_s=DEFAULT_STEP_S, max_gap_s=DEFAULT_MAX_GAP_S) -> DriveCycle:
    """A Panasonic 18650PF drive cycle .mat; ambient = its measured `Chamber_Temp_degC`."""
    from battery_pipeline.science.readers._matfile import as_float_vector, load_mat
    from battery_pipeline.science.readers.panasonic_mat import Panasonic18650PFMatReader

    path = Path(path)
    samples = Panasonic18650PFMatReader.read([path], path.stem).samples
    meas = load_mat(path)["meas"].ravel()[0]
    chamber = as_float_vector(meas["Chamber_Temp_degC"])
    if len(chamber) != len(samples):
        raise ValueError(f"{path.name}: Chamber_Temp_degC has {len(chamber)} values for {len(samples)} samples")
    # the reader keeps every row in file order (source_row), so the chamber vector aligns
    chamber = chamber[samples["source_row"].to_numpy()]
    return _cycle_from_samples(_relative(path, root), "panasonic_18650pf",
                               "Panasonic NCR18650PF (the set's one cell)", samples, chamber,
                               "measured: Chamber_Temp_degC (1 degC resolution)", step_s, max_gap_s)


def read_lg_cycle(path: Path, root: Path, step_s=DEFAULT_STEP_S, max_gap_s=DEFAULT_MAX_GAP_S) -> DriveCycle:
    """An LG HG2 Digatron CSV; ambient = chamber set point from the folder name, checked."""
    from battery_pipeline.science.readers.digatron import DigatronCsvReader

    path = Path(path)
    result = DigatronCsvReader.read([path], DigatronCsvReader.cell_key(path))
    samples = result.samples
    match = re.search(r"battery ([^;]+)", DigatronCsvReader.describe([path]).description or "")
    cell_id = f"LG {match.group(1).strip()}" if match else f"LG test {path.stem.split('_')[0]} (cell unknown)"
    set_point = _set_point_from_folder(path)
    temperature = samples["temperature_c"].to_numpy(float)
    finite = temperature[np.isfinite(temperature)]
    first_t = float(np.median(finite[:100])) if len(finite) else math.nan
    notes = []
    if set_point is not None and abs(first_t - set_point) <= AMBIENT_CONTRADICTION_C:
        ambient = set_point
        source = f"chamber set point from the folder name ({set_point:g} degC), not measured"
    else:
        ambient = first_t
        source = (f"file's first measured cell temperature ({first_t:.2f} degC): the folder's set point "
                  f"{set_point} degC is contradicted by more than {AMBIENT_CONTRADICTION_C} degC")
        notes.append(source)
    cycle = _cycle_from_samples(_relative(path, root), "lg_hg2", cell_id, samples,
                                np.full(len(samples), ambient), source, step_s, max_gap_s)
    cycle.notes.extend(notes)
    return cycle


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


def drive_cycle_files(root: Path) -> list[tuple[str, Path]]:
    """(dataset, path) of every drive-cycle file with measured temperature under `root`."""
    root = Path(root)
    files = [("panasonic_18650pf", p) for p in sorted(root.glob("panasonic_18650pf/*degC/Drive cycles/*.mat"))]
    files += [("lg_hg2", p) for p in sorted(root.glob("lg_hg2/*degC/*.csv")) if DRIVE_CYCLE_NAME.search(p.stem)]
    return files


def load_drive_cycles(root: Path, step_s: float = DEFAULT_STEP_S, max_gap_s: float = DEFAULT_MAX_GAP_S,
                      only: list[str] | None = None) -> list[DriveCycle]:
    """Every drive cycle under `root` (datasets folder), resampled; excluded ones flagged.

    `only`: substrings of the relative path; a file is loaded if any of them occurs in it.
    """
    cycles = []
    for dataset, path in drive_cycle_files(root):
        if only is not None and not any(s in _relative(path, root) for s in only):
            continue
        reader = read_panasonic_cycle if dataset == "panasonic_18650pf" else read_lg_cycle
        cycles.append(reader(path, root, step_s, max_gap_s))
    return cycles


# Steps a cell's samples can be put on: each divides both horizons, so a forecast lands on a step.
ALLOWED_STEPS_S = (1.0, 2.0, 5.0, 10.0)
FIRST_READINGS = 100  # the ambient inferred from a file's first readings (an idle cell is at ambient)


def step_for(sample_interval_s: float) -> float | None:
    """The finest allowed step at least as long as the samples' median interval; None when the
    samples are coarser than every allowed step (a 60 s forecast needs several steps)."""
    return next((s for s in ALLOWED_STEPS_S if s >= sample_interval_s - 1e-9), None)


def ambient_for(temperature_c: np.ndarray, stated_c: float | None, stated_source: str) -> tuple[float, str, list[str]]:
    """(ambient, where it came from, notes) for one file: the stated ambient unless the file's first
    readings contradict it by more than AMBIENT_CONTRADICTION_C (then those readings), and the
    first readings, said so, when nothing is stated."""
    finite = temperature_c[np.isfinite(temperature_c)]
    first = float(np.median(finite[:FIRST_READINGS])) if len(finite) else math.nan
    if stated_c is not None and stated_c == stated_c:
        if abs(first - stated_c) <= AMBIENT_CONTRADICTION_C:
            return float(stated_c), f"{stated_source} ({stated_c:g} degC)", []
        why = (f"inferred: the file's first {FIRST_READINGS} readings ({first:.2f} degC), because the stated {stated_c:g} degC "
               f"({stated_source}) is contradicted by more than {AMBIENT_CONTRADICTION_C:g} degC")
        return first, why, [why]
    why = f"inferred: the file's first {FIRST_READINGS} readings ({first:.2f} degC); no ambient stated (sidecar key ambient_temperature_c)"
    return first, why, [why]


def cycle_from_canonical(file_id: str, dataset: str, cell_group: str, samples: pd.DataFrame,
                         ambient_c: float, ambient_source: str, step_s: float) -> DriveCycle:
    """One stored cell's validated samples (canonical columns time_s, current_a, voltage_v,
    temperature_c) as a DriveCycle; `cell_group` is what the thermal model is fitted per."""
    samples = samples.sort_values("time_s", kind="stable")
    return _cycle_from_samples(file_id, dataset, cell_group, samples, np.full(len(samples), float(ambient_c)),
                               ambient_source, step_s, 3.0 * step_s)


def causality_probe(cycle: DriveCycle, params: "ThermalParams", horizon_s: float, at_fraction: float = 0.5) -> dict:
    """Change every temperature after one origin t and recompute: the features and the physics
    forecast at t must not move (nothing measured after t is an input). Returns what moved."""
    n = int(round(horizon_s / cycle.step_s))
    origins = forecast_origins(cycle, n)
    if len(origins) == 0:
        return {"evaluated": False, "why": f"{cycle.file_id}: no forecast origin {horizon_s:g} s from a segment end"}
    t = int(origins[int(len(origins) * at_fraction)])
    probe = np.array([t])
    _, before = physics_forecast(params, cycle, horizon_s, probe)
    features_before = forecast_features(cycle, horizon_s, probe, before)
    changed = DriveCycle(**{**cycle.__dict__, "temperature_c": cycle.temperature_c.copy(), "notes": list(cycle.notes)})
    changed.temperature_c[t + 1:] += 7.0
    _, after = physics_forecast(params, changed, horizon_s, probe)
    features_after = forecast_features(changed, horizon_s, probe, after)
    moved = [name for name, a, b in zip(FEATURE_NAMES, features_before[0], features_after[0]) if not (a == b or (a != a and b != b))]
    return {"evaluated": True, "file_id": cycle.file_id, "origin_time_s": float(cycle.time_s[t]),
            "physics_moved": bool(before[0] != after[0]), "features_moved": moved}


# ------------------------------------------------------------------------ resistance (data)


@dataclass
class ResistanceModel:
    """R(T) = resistance_ohm_at_25c * exp(activation_k * (1/T_K - 1/298.15))."""

    resistance_ohm_at_25c: float
    activation_k: float
    windows: int
    temperature_range_c: tuple[float, float]
    method: str = ("slope of V on I after removing 300 s centred moving averages, per 600 s window "
                   "of the training files; log R vs 1/T_K weighted by current variance")

    def __call__(self, temperature_c):
        t_k = np.asarray(temperature_c, dtype=float) + KELVIN
        return self.resistance_ohm_at_25c * np.exp(self.activation_k * (1.0 / t_k - 1.0 / T_REF_K))


def _moving_mean(x: np.ndarray, width: int) -> np.ndarray:
    if len(x) == 0:
        return x
    width = max(1, min(width, len(x)))
    kernel = np.ones(width)
    num = np.convolve(x, kernel, mode="same")
    den = np.convolve(np.ones_like(x), kernel, mode="same")
    return num / den


def resistance_windows(cycle: DriveCycle) -> list[tuple[float, float, float]]:
    """(R ohm, mean T degC, weight A^2) per R_WINDOW_S window of each segment."""
    out = []
    detrend = int(round(R_DETREND_S / cycle.step_s))
    window = int(round(R_WINDOW_S / cycle.step_s))
    for start, stop in cycle.segments():
        if stop - start < detrend:
            continue
        i = cycle.current_a[start:stop]
        v = cycle.voltage_v[start:stop]
        t = cycle.temperature_c[start:stop]
        i_hp = i - _moving_mean(i, detrend)
        v_hp = v - _moving_mean(v, detrend)
        for w0 in range(0, stop - start - window // 2, window):
            sl = slice(w0, min(w0 + window, stop - start))
            weight = float(np.sum(i_hp[sl] ** 2))
            if weight < 1.0 * (sl.stop - sl.start) * 0.1:  # < ~0.3 A rms of variation: no pulses
                continue
            r = float(np.sum(v_hp[sl] * i_hp[sl]) / weight)
            if r > 0:
                out.append((r, float(np.nanmean(t[sl])), weight))
    return out


def fit_resistance(cycles: list[DriveCycle]) -> ResistanceModel:
    """Arrhenius R(T) from the training files' voltage response (see module docstring)."""
    rows = [w for c in cycles for w in resistance_windows(c)]
    if not rows:
        raise ValueError("no window with current pulses to estimate the resistance from")
    r, t, w = (np.array(x) for x in zip(*rows))
    x = 1.0 / (t + KELVIN) - 1.0 / T_REF_K
    y = np.log(r)
    sw = w / w.sum()
    x_mean, y_mean = np.sum(sw * x), np.sum(sw * y)
    var = np.sum(sw * (x - x_mean) ** 2)
    # a span of < ~1 K carries no temperature information: keep B at its lower bound
    slope = np.sum(sw * (x - x_mean) * (y - y_mean)) / var if var > (1.0 / 298.15**2) ** 2 else 0.0
    slope = float(np.clip(slope, *ACTIVATION_BOUNDS_K))
    intercept = float(y_mean - slope * x_mean)
    return ResistanceModel(math.exp(intercept), slope, len(r), (float(t.min()), float(t.max())))


# ---------------------------------------------------------------------------- thermal model


@dataclass
class ThermalParams:
    """Fitted lumped thermal model of one cell (units in the names)."""

    n_states: int
    heat_capacity_j_per_k: float  # one state: the cell; two states: the core
    thermal_resistance_k_per_w: float  # one state: to ambient; two states: surface to ambient
    entropic_v_per_k: float
    resistance: ResistanceModel
    surface_heat_capacity_j_per_k: float | None = None
    core_surface_resistance_k_per_w: float | None = None

    def matrices(self):
        """Continuous-time A (n x n) and B (n x 2, inputs [Q W, T_amb degC]); output = last state."""
        if self.n_states == 1:
            c, r = self.heat_capacity_j_per_k, self.thermal_resistance_k_per_w
            return np.array([[-1.0 / (c * r)]]), np.array([[1.0 / c, 1.0 / (c * r)]])
        cc, cs = self.heat_capacity_j_per_k, self.surface_heat_capacity_j_per_k
        rcs, rsa = self.core_surface_resistance_k_per_w, self.thermal_resistance_k_per_w
        a = np.array([[-1 / (cc * rcs), 1 / (cc * rcs)], [1 / (cs * rcs), -1 / (cs * rcs) - 1 / (cs * rsa)]])
        b = np.array([[1 / cc, 0.0], [0.0, 1 / (cs * rsa)]])
        return a, b

    def time_constants_s(self) -> list[float]:
        a, _ = self.matrices()
        return sorted(float(-1.0 / ev) for ev in np.linalg.eigvals(a).real)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["resistance"] = {k: v for k, v in asdict(self.resistance).items()}
        d["resistance"]["temperature_range_c"] = list(self.resistance.temperature_range_c)
        d["time_constants_s"] = self.time_constants_s()
        return d


class _Modes:
    """Exact ZOH discretisation of the model, per eigenmode (A has real negative eigenvalues)."""

    def __init__(self, params: ThermalParams, step_s: float):
        a, b = params.matrices()
        mu, vecs = np.linalg.eig(a)
        mu, vecs = mu.real, vecs.real
        inv = np.linalg.inv(vecs)
        self.lam = np.exp(mu * step_s)
        bm = inv @ b  # modal input matrix
        self.bd = ((self.lam - 1.0) / mu)[:, None] * bm  # (modes, inputs)
        self.out = vecs[-1, :]  # measured state = last state
        self.vecs, self.inv = vecs, inv


def _lfilter_modes(modes: _Modes, u: np.ndarray, input_index: int, z0=None) -> np.ndarray:
    """z_j = lam z_{j-1} + bd u_j per mode, z_{-1} = z0 (default 0). Returns (modes, len(u))."""
    from scipy.signal import lfilter

    out = np.empty((len(modes.lam), len(u)))
    for m, lam in enumerate(modes.lam):
        zi = None if z0 is None else [lam * z0[m]]
        y = lfilter([modes.bd[m, input_index]], [1.0, -lam], u, zi=zi)
        out[m] = y[0] if zi is not None else y
    return out


def _window(z: np.ndarray, lam: np.ndarray, origins: np.ndarray, n: int) -> np.ndarray:
    """Zero-state response over steps origins+1 .. origins+n, per mode: z[k+n] - lam^n z[k]."""
    return z[:, origins + n] - (lam**n)[:, None] * z[:, origins]


def forecast_origins(cycle: DriveCycle, n_steps: int, stride: int = 1) -> np.ndarray:
    """Indices k whose window (t_k, t_k + n step] lies inside one segment."""
    parts = [np.arange(s, e - n_steps, stride) for s, e in cycle.segments() if e - s > n_steps]
    return np.concatenate(parts) if parts else np.array([], dtype=int)


def physics_forecast(params: ThermalParams, cycle: DriveCycle, horizon_s: float,
                     origins: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(origins, forecast of the case temperature at origin + horizon), see the module docstring."""
    n = int(round(horizon_s / cycle.step_s))
    if origins is None:
        origins = forecast_origins(cycle, n)
    modes = _Modes(params, cycle.step_s)
    forecast = np.full(len(origins), np.nan)
    for start, stop in cycle.segments():
        sel = np.flatnonzero((origins >= start) & (origins + n < stop))
        if len(sel) == 0:
            continue
        k = origins[sel] - start
        seg = slice(start, stop)
        i2, i, temp, amb = (cycle.current_sq_a2[seg], cycle.current_a[seg], cycle.temperature_c[seg], cycle.ambient_c[seg])
        # state at the origins, modal coordinates
        if params.n_states == 1:
            z_hat = modes.inv @ temp[k][None, :]
        else:
            # past run: R at the previous step's measured T, entropic at the ambient (all <= t)
            temp_prev = np.concatenate([[temp[0]], temp[:-1]])
            heat = i2 * params.resistance(temp_prev) + params.entropic_v_per_k * (amb + KELVIN) * i
            x0 = np.full(params.n_states, temp[0])
            z0 = modes.inv @ x0
            heat[0] = 0.0  # step 0 is the initial state x0; inputs act from step 1 on
            amb_in = amb.copy()
            amb_in[0] = 0.0
            z_sim = _lfilter_modes(modes, heat, 0) + _lfilter_modes(modes, amb_in, 1)
            decay = modes.lam[:, None] ** np.arange(len(temp))[None, :]
            z_sim = z_sim + decay * z0[:, None]
            y_sim = modes.out @ z_sim
            z_hat = z_sim[:, k] + (modes.inv @ np.ones(params.n_states))[:, None] * (temp[k] - y_sim[k])[None, :]
        w_i2 = _window(_lfilter_modes(modes, i2, 0), modes.lam, k, n)
        w_i = _window(_lfilter_modes(modes, i, 0), modes.lam, k, n)
        w_one = _window(_lfilter_modes(modes, np.ones(len(i)), 1), modes.lam, k, n)
        z = ((modes.lam**n)[:, None] * z_hat + params.resistance(temp[k])[None, :] * w_i2
             + (params.entropic_v_per_k * (amb[k] + KELVIN))[None, :] * w_i + amb[k][None, :] * w_one)
        forecast[sel] = modes.out @ z
    return origins, forecast


def _params_from_vector(theta, n_states, resistance):
    if n_states == 1:
        return ThermalParams(1, math.exp(theta[0]), math.exp(theta[1]), float(theta[2]), resistance)
    return ThermalParams(2, math.exp(theta[0]), math.exp(theta[3]), float(theta[4]), resistance,
                         surface_heat_capacity_j_per_k=math.exp(theta[1]),
                         core_surface_resistance_k_per_w=math.exp(theta[2]))


def fit_thermal(cycles: list[DriveCycle], n_states: int = 2, horizons_s=DEFAULT_HORIZONS_S,
                fit_stride_s: float = 10.0, resistance: ResistanceModel | None = None) -> ThermalParams:
    """Fit one cell's model on its training files: bounded least squares on forecast errors."""
    from scipy.optimize import least_squares

    if resistance is None:
        resistance = fit_resistance(cycles)
    step = cycles[0].step_s
    stride = max(1, int(round(fit_stride_s / step)))
    plans = []
    for c in cycles:
        for h in horizons_s:
            n = int(round(h / c.step_s))
            origins = forecast_origins(c, n, stride)
            if len(origins):
                plans.append((c, h, origins, c.temperature_c[origins + n]))
    if not plans:
        raise ValueError("no forecast window in the training files")
    lc, hc = (math.log(b) for b in HEAT_CAPACITY_BOUNDS)
    lr, hr = (math.log(b) for b in THERMAL_RESISTANCE_BOUNDS)
    e = ENTROPIC_BOUND_V_PER_K
    if n_states == 1:
        x0 = [math.log(50.0), math.log(10.0), 0.0]
        lower, upper = [lc, lr, -e], [hc, hr, e]
    else:
        x0 = [math.log(40.0), math.log(10.0), math.log(1.0), math.log(10.0), 0.0]
        lower, upper = [lc, lc, lr, lr, -e], [hc, hc, hr, hr, e]
    total = sum(len(p[2]) for p in plans)

    def residuals(theta):
        params = _params_from_vector(theta, n_states, resistance)
        parts = []
        for c, h, origins, target in plans:
            _, f = physics_forecast(params, c, h, origins)
            parts.append((f - target) / math.sqrt(total))
        return np.concatenate(parts)

    fit = least_squares(residuals, x0, bounds=(lower, upper), x_scale=[1.0] * (len(x0) - 1) + [1e-4],
                        diff_step=1e-3, max_nfev=200)
    return _params_from_vector(fit.x, n_states, resistance)


# ------------------------------------------------------------------------------- features


def _past_mean(cum: np.ndarray, k: np.ndarray, width: int, seg_start: int) -> np.ndarray:
    """Mean of x over steps (k - width, k] clipped at the segment start; cum = cumsum with 0."""
    lo = np.maximum(k - width + 1, seg_start)
    return (cum[k + 1] - cum[lo]) / (k + 1 - lo)


def forecast_features(cycle: DriveCycle, horizon_s: float, origins: np.ndarray,
                      physics: np.ndarray) -> np.ndarray:
    """Feature matrix (len(origins), len(FEATURE_NAMES)); uses T, V, T_amb up to t only and the
    current over (t, t+h]."""
    n = int(round(horizon_s / cycle.step_s))
    w60 = int(round(60 / cycle.step_s))
    w300 = int(round(300 / cycle.step_s))
    out = np.full((len(origins), len(FEATURE_NAMES)), np.nan)

    def cumsum0(x):
        return np.concatenate([[0.0], np.cumsum(x)])

    ci2, ci, cv = cumsum0(cycle.current_sq_a2), cumsum0(cycle.current_a), cumsum0(cycle.voltage_v)
    for start, stop in cycle.segments():
        sel = np.flatnonzero((origins >= start) & (origins + n < stop))
        if len(sel) == 0:
            continue
        k = origins[sel]
        temp = cycle.temperature_c[k]
        amb = cycle.ambient_c[k]
        back = np.maximum(k - w60, start)
        elapsed = (k - back) * cycle.step_s
        with np.errstate(invalid="ignore", divide="ignore"):
            slope = np.where(elapsed >= 10 * cycle.step_s, (temp - cycle.temperature_c[back]) / elapsed, np.nan)
        q = max(1, n // 4)
        out[sel] = np.column_stack([
            temp,
            temp - amb,
            amb,
            slope,
            _past_mean(ci2, k, w60, start),
            _past_mean(ci2, k, w300, start),
            _past_mean(ci, k, w300, start),
            cycle.voltage_v[k],
            _past_mean(cv, k, w60, start),
            (ci2[k + n + 1] - ci2[k + 1]) / n,
            (ci2[k + q + 1] - ci2[k + 1]) / q,
            (ci[k + n + 1] - ci[k + 1]) / n,
            physics[sel] - temp,
        ])
    return out


# ------------------------------------------------------------------------------ evaluation


def _make_regressor(seed: int = 0):
    from sklearn.ensemble import HistGradientBoostingRegressor

    # shallow, shrunk, early-stopped on a random 20 % of rows; rows of one file are correlated
    # so this is an optimistic stop, which is why the model is kept small
    return HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05, max_leaf_nodes=15,
                                         min_samples_leaf=200, l2_regularization=1.0,
                                         early_stopping=True, validation_fraction=0.2,
                                         n_iter_no_change=20, random_state=seed)


@dataclass
class ResidualModel:
    """One fitted residual regressor per horizon."""

    models: dict[int, object]

    def predict(self, features: np.ndarray, horizon_s: int) -> np.ndarray:
        return self.models[horizon_s].predict(features)


def fit_residual_model(params: ThermalParams, cycles: list[DriveCycle], horizons_s=DEFAULT_HORIZONS_S,
                       train_stride_s: float = 5.0, seed: int = 0) -> ResidualModel:
    models = {}
    for h in horizons_s:
        xs, ys = [], []
        for c in cycles:
            n = int(round(h / c.step_s))
            origins = forecast_origins(c, n, max(1, int(round(train_stride_s / c.step_s))))
            if not len(origins):
                continue
            _, phys = physics_forecast(params, c, h, origins)
            xs.append(forecast_features(c, h, origins, phys))
            ys.append(c.temperature_c[origins + n] - phys)
        model = _make_regressor(seed)
        model.fit(np.concatenate(xs), np.concatenate(ys))
        models[h] = model
    return ResidualModel(models)


def _errors_summary(err: np.ndarray) -> dict:
    if len(err) == 0:
        return {"rmse_c": None, "max_abs_error_c": None, "mean_error_c": None}
    return {"rmse_c": float(np.sqrt(np.mean(err**2))), "max_abs_error_c": float(np.max(np.abs(err))),
            "mean_error_c": float(np.mean(err))}


def leave_one_file_out(cycles: list[DriveCycle]) -> list[tuple[list[str], str]]:
    """Per cell: (training file ids, held-out file id) for every file of a cell with >= 2 files."""
    by_cell: dict[str, list[str]] = {}
    for c in cycles:
        by_cell.setdefault(c.cell_id, []).append(c.file_id)
    splits = []
    for files in by_cell.values():
        if len(files) < 2:
            continue
        for held in files:
            train = [f for f in files if f != held]
            assert held not in train and len(set(files)) == len(files), "file ids must be unique"
            splits.append((train, held))
    return splits


def predict_file(test: DriveCycle, physics: dict[str, ThermalParams], residual: ResidualModel | None,
                 hybrid_base: str, horizons_s) -> dict[int, dict[str, np.ndarray]]:
    """Per horizon: origins, target, persistence, each physics model, hybrid forecasts."""
    out = {}
    for h in horizons_s:
        n = int(round(h / test.step_s))
        origins = forecast_origins(test, n)
        rows = {"origins": origins, "target": test.temperature_c[origins + n],
                "persistence": test.temperature_c[origins]}
        for name, params in physics.items():
            rows[name] = physics_forecast(params, test, h, origins)[1]
        if residual is not None:
            feats = forecast_features(test, h, origins, rows[hybrid_base])
            rows["hybrid"] = rows[hybrid_base] + (residual.predict(feats, h) if len(origins) else 0.0)
        out[h] = rows
    return out


def evaluate(cycles: list[DriveCycle], horizons_s=DEFAULT_HORIZONS_S, hybrid_base: str = "physics_two_state",
             fit_stride_s: float = 10.0, train_stride_s: float = 5.0, seed: int = 0,
             fit_full_cells: bool = True) -> dict:
    """Leave-one-file-out evaluation per cell; a JSON-serialisable dict of everything."""
    horizons_s = tuple(int(h) for h in horizons_s)
    used = [c for c in cycles if c.excluded_reason is None]
    excluded = [{"file_id": c.file_id, "reason": c.excluded_reason} for c in cycles if c.excluded_reason]
    by_id = {c.file_id: c for c in used}
    model_names = ("persistence", "physics_one_state", "physics_two_state", "hybrid")
    splits = leave_one_file_out(used)
    folds = []
    pooled: dict[tuple[str, int], dict[str, list]] = {}
    for train_ids, test_id in splits:
        train = [by_id[f] for f in train_ids]
        test = by_id[test_id]
        resistance = fit_resistance(train)
        physics = {
            "physics_one_state": fit_thermal(train, 1, horizons_s, fit_stride_s, resistance),
            "physics_two_state": fit_thermal(train, 2, horizons_s, fit_stride_s, resistance),
        }
        residual = fit_residual_model(physics[hybrid_base], train, horizons_s, train_stride_s, seed)
        preds = predict_file(test, physics, residual, hybrid_base, horizons_s)
        fold = {"cell_id": test.cell_id, "dataset": test.dataset, "test_file": test_id, "train_files": train_ids,
                "parameters": {k: p.as_dict() for k, p in physics.items()}, "metrics": {}}
        for h, rows in preds.items():
            fold["metrics"][str(h)] = {"n": int(len(rows["origins"]))}
            key = (test.dataset, h)
            acc = pooled.setdefault(key, {m: [] for m in model_names})
            for m in model_names:
                err = rows[m] - rows["target"]
                fold["metrics"][str(h)][m] = _errors_summary(err)
                acc[m].append(err)
        folds.append(fold)
    metrics = []
    for (dataset, h), acc in sorted(pooled.items()):
        row = {"dataset": dataset, "horizon_s": h, "n": int(sum(len(e) for e in acc["persistence"])),
               "files": sum(1 for f in folds if f["dataset"] == dataset)}
        for m in model_names:
            row[m] = _errors_summary(np.concatenate(acc[m]))
        metrics.append(row)
    cells = {}
    if fit_full_cells:
        for cell in sorted({c.cell_id for c in used}):
            mine = [c for c in used if c.cell_id == cell]
            resistance = fit_resistance(mine)
            cells[cell] = {
                "files": [c.file_id for c in mine],
                "physics_one_state": fit_thermal(mine, 1, horizons_s, fit_stride_s, resistance).as_dict(),
                "physics_two_state": fit_thermal(mine, 2, horizons_s, fit_stride_s, resistance).as_dict(),
            }
    return {
        "task": "cell (case) temperature forecast h s ahead from current, voltage, ambient",
        "horizons_s": list(horizons_s),
        "step_s": float(used[0].step_s) if used else None,
        "split": "leave one file (drive cycle) out within each cell; physics and ML fitted on the training files only",
        "hybrid_base": hybrid_base,
        "metrics": metrics,
        "folds": folds,
        "cells_fitted_on_all_files": cells,
        "files": [{"file_id": c.file_id, "dataset": c.dataset, "cell_id": c.cell_id,
                   "ambient_source": c.ambient_source, "raw_samples": c.raw_samples, "steps": int(len(c.time_s)),
                   "segments": len(c.segments()), "held_steps": int(c.held_steps),
                   "temperature_range_c": [float(np.nanmin(c.temperature_c)), float(np.nanmax(c.temperature_c))]
                   if len(c.time_s) else None, "notes": c.notes} for c in used],
        "excluded_files": excluded,
        "features": list(FEATURE_NAMES),
        "assumptions": [
            "planned duty: the current over (t, t+h] is known; future voltage, ambient and temperature are not",
            "ambient held at its value at t over the horizon",
            "R(T) from the training files' voltage response (Arrhenius in T, no SOC dependence), evaluated at T(t) over the horizon",
            "entropic heat with T_K = ambient + 273.15 (keeps the model linear)",
            "two-state model: core = case at each segment start; at t both states shifted to the measured case",
            "LG HG2 ambient = chamber set point from the folder name (not measured) unless contradicted by the file's first temperature",
            "hybrid residual model fitted on in-sample physics residuals of the training files",
        ],
    }
