"""Seeded simulator of a series pack's telemetry, with the ground truth the twin models are judged by.

What it makes (`simulate_pack`): N cells in series share one current. Each cell is an equivalent
circuit (Plett, *Battery Management Systems* vol. 1, 2015): ``V = OCV(z) + R0*I + v1`` with one RC
pair ``dv1/dt = -v1/tau + I/C1`` (``R1 = tau/C1``) and ``dz/dt = I/(3600*Q)``, OCV(z) from
`ocv.ocv_table(chemistry, ambient)`. Cells differ in capacity, initial SOC and resistance
(Gaussian spreads, stated per cell in `cells`).

Conventions:
  - Current positive = charge (A). Sampling every `sample_period_s`; the current is piecewise
    constant and changes only at sample instants: `pack_current_a[k]` is the current that flowed
    during (t[k-1], t[k]] (backward hold, as a BMS reports an interval mean), and the voltages are
    those at t[k]. `pack_current_a[0]` = 0: the pack has rested (v1 = 0) when the record starts.
  - With that hold, SOC and charge throughput are exact sums (no integration error):
    ``z[k] = z[0] + dt*cumsum(I)[k]/(3600*Q)``; likewise v1 (exact exponential update) and the
    lumped temperature rise.
  - Equivalent full cycles: ``eq_cycles = cumulative discharge Ah / nominal capacity`` (discharge
    throughput only; charge does not count, which equals half the total throughput when charge
    and discharge balance). Coulombic efficiency is 1 in the model, so charging adds exactly the
    Ah that flowed. `truth.eq_cycles_true` uses the true current; `truth.eq_cycles_measured`
    applies the same definition to the telemetry current (equal unless `current_noise_a` > 0), so
    a model integrating the telemetry can be checked against it to ~1e-12.

Load profile (a loop over segments, never over samples): a rest, then trips of 20-90 min (discharge
pulses 0.1-1.2C for 10-120 s, regen pulses 0.1-0.8C for 10-30 s, stops of 10-240 s), each followed
by parking (half the time >= 30 min, otherwise 2-25 min); when the emptiest cell falls below
`soc_low`, a CC charge at 0.5C (tapered as the fullest cell nears `voltage_max - margin`, like
CV) until the fullest cell reaches `soc_high`, then a rest of 30-90 min. Every current is capped
so that no cell's terminal voltage comes within `LIMIT_MARGIN_V` of the chemistry's limits on its
own: only the injected excursions and spikes cross them, which the simulator checks.

Excursions (`excursions=True`): `n_excursions` windows (alternating over/under voltage) where one
cell's measured voltage is held 10-110 mV beyond the limit for 2.5-8x `min_alert_duration_s`
(modelled as a sensing/connection fault on top of the cell's true voltage; the cell's SOC is
unaffected), listed in `alerts`; and `n_spikes` sensor glitches of 1..5 samples, lasting less
than `min_alert_duration_s`, 50-400 mV beyond a limit, listed in `spikes` (they should not raise
an alert). None of them falls inside a rest of >= 30 min, so rest voltages stay clean for
SOC-from-OCV models. Telemetry is beyond a limit exactly on the samples these two tables name.

Faults (`faults=[...]`, opt-in; none by default, and then not one number of the output changes):
each spec is a `FaultSpec` (or a dict of its fields) naming a cell, a kind, an onset time and a
magnitude; a field left None is drawn from a generator of its own, seeded from (`seed`,
FAULT_STREAM), so that the main random stream, and with it everything before the onset, is the
fault-free pack's. The fault acts on every sample at or after the onset, snapped up to the sample
grid (sample k covers the interval (t[k-1], t[k]]). Kinds (category):
  - `internal_short` (cell): a soft short of `magnitude` ohm across the cell draws
    ``I_leak = V_cell / R_short`` (held backward like the pack current; 50-500 ohm: 8-80 mA on a
    4 V cell) from onset, so the cell carries ``I - I_leak``: its SOC falls by ``int I_leak dt /
    (3600 Q)`` relative to the others, its true voltage (and heat, ``V*I_leak``) with it. The load
    profile sees the drained cell (it charges and caps currents on it as on any other), so after
    the onset the profile differs from the fault-free pack's, and with it the later draws of the
    main stream (sensor noise, excursion placement): only the profile and the truth before the
    onset stay the fault-free pack's. The other kinds leave the profile and every draw alone.
  - `voltage_sensor_offset` (sensor): measured = true + `magnitude` V from onset; true state unchanged.
  - `voltage_sensor_stuck` (sensor): the reading freezes at its value at the onset sample (noise
    included, then flat); true state unchanged; `magnitude` unused (NaN).
  - `loose_connection` (connection): `magnitude` ohm in series with the cell, between the cell and
    its voltage taps' busbar: measured = true + R_c * I (and heat I^2 R_c); the cell's OCV, SOC
    and true voltage are unchanged.
The limit checks (`LIMIT_MARGIN_V`) apply to the cells' true voltages, as the profile controls
those; a sensor offset or a loose connection shifts only the measurement, which may then cross a
limit where `alerts`/`spikes` name nothing (that is what a BMS would read). A stuck reading hides
any excursion or spike drawn for its cell after the onset: those rows are dropped from the
tables (the draws still happen, so the other rows are unchanged). Ground truth: `faults`
(one row per fault: cell, kind, category, onset_time_s, magnitude, magnitude_unit, description);
for a short also `truth.leak_current_a_<cell>`.

Temperature: a few sensors, each on a group of adjacent cells: ambient (+-2 degC daily swing)
plus a lumped rise ``C dT/dt = P - dT/R_th`` with ``P = I^2*(R0 + R1)`` averaged over the group
(R_th 8 K/W, C 45 J/K per cell: ~3 K at 1C for an 18650). Temperature does not feed back on R or
OCV (the OCV table is taken at the ambient temperature).

Sensors: Gaussian noise clipped at 4 sigma (1 mV on voltages, rounded to 0.1 mV; 0.1 degC on
temperatures, rounded to 0.01 degC); current exact by default (`current_noise_a`).

Speed (2-core dev box): 24 h, 12 cells, 10 s -> 0.03 s; 1 s -> 0.09 s; 96 cells at 1 s -> 0.5 s.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from battery_pipeline.science.chemistry import VOLTAGE_WINDOWS_V
from battery_pipeline.science.twin.ocv import ocv_table

DEFAULT_SEED = 20240611
SIMULATOR_VERSION = "1.0"
LIMIT_MARGIN_V = 0.05  # the profile keeps every true cell voltage this far inside the limits
LONG_REST_S = 1800.0  # "long" rest: >= 30 min
VOLTAGE_NOISE_V = 0.001
TEMPERATURE_NOISE_C = 0.1
NOISE_CLIP_SIGMA = 4.0  # bounded noise, so that "inside the limits" is a guarantee, not a likelihood
HEAT_CAPACITY_J_PER_K = 45.0  # per cell (18650 class)
THERMAL_RESISTANCE_K_PER_W = 8.0  # per cell, to ambient
AMBIENT_SWING_C = 2.0

# Per chemistry: cell capacity (Ah), R0, R1 (ohm) at 25 degC and the RC time constant (s).
CELL_DEFAULTS = {
    "NMC": dict(nominal_capacity_ah=3.0, r0_ohm=0.022, r1_ohm=0.015, tau1_s=60.0),  # LG HG2 class
    "NCA": dict(nominal_capacity_ah=2.9, r0_ohm=0.030, r1_ohm=0.018, tau1_s=60.0),  # NCR18650PF class
    "LFP": dict(nominal_capacity_ah=2.5, r0_ohm=0.012, r1_ohm=0.008, tau1_s=60.0),  # A123 26650 class
    "LCO": dict(nominal_capacity_ah=2.0, r0_ohm=0.040, r1_ohm=0.025, tau1_s=60.0),
}
PHASES = ("rest", "drive", "regen", "charge")

# Fault kinds: category, magnitude unit, range a missing magnitude is drawn from.
FAULT_KINDS = {
    "internal_short": ("cell", "ohm", (50.0, 500.0)),  # R_short, drawn log-uniform
    "voltage_sensor_offset": ("sensor", "V", (0.005, 0.05)),  # |offset|, random sign
    "voltage_sensor_stuck": ("sensor", "", None),
    "loose_connection": ("connection", "ohm", (0.005, 0.03)),  # added series resistance
}
FAULT_STREAM = 0xFA17  # second word of the fault generator's seed: (seed, FAULT_STREAM)
FAULT_ONSET_RANGE = (0.2, 0.6)  # a missing onset is drawn in this fraction of the record
FAULT_COLUMNS = ["fault_id", "cell", "kind", "category", "onset_time_s", "magnitude", "magnitude_unit", "description"]
LEAK_FIXED_POINT_ITERATIONS = 6  # I_leak = V/R and V(I_leak): a contraction by ~dOCV/dSOC*t/(3600 Q R) << 1


@dataclass(frozen=True)
class FaultSpec:
    """One injected fault. `cell`: name ("cell_03") or 0-based index; `onset_time_s`: seconds from
    the record start; `magnitude`: ohm (internal_short: R_short; loose_connection: added series
    resistance), V (voltage_sensor_offset), unused (voltage_sensor_stuck). None: drawn."""

    kind: str
    cell: str | int | None = None
    onset_time_s: float | None = None
    magnitude: float | None = None


def _empty_faults() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="float64" if c in ("onset_time_s", "magnitude") else
                                      ("int64" if c == "fault_id" else object)) for c in FAULT_COLUMNS})


@dataclass
class PackSimulation:
    telemetry: pd.DataFrame  # timestamp (UTC), time_s, pack_current_a, cell_XX_voltage_v, temperature_XX_c
    truth: pd.DataFrame  # per sample: time_s, current_a, phase, rest_s, soc_cell_XX, soc_mean, eq_cycles_*, Ah
    cells: pd.DataFrame  # per cell: cell, capacity_ah, initial_soc, soc_offset, r0_ohm, r1_ohm, tau1_s, sensor
    alerts: pd.DataFrame  # injected excursions: cell, kind, start_time_s, end_time_s, n_samples, extreme_v
    spikes: pd.DataFrame  # injected short glitches (same columns); shorter than min_alert_duration_s
    pack: dict  # chemistry, n_series, nominal capacity, limits, seed, conventions, ...
    faults: pd.DataFrame = field(default_factory=_empty_faults)  # injected faults (FAULT_COLUMNS); empty by default


def cell_names(n_cells: int) -> list[str]:
    width = max(2, len(str(n_cells)))
    return [f"cell_{i:0{width}d}" for i in range(1, n_cells + 1)]


def _bounded_noise(rng: np.random.Generator, sigma: float, shape) -> np.ndarray:
    return np.clip(rng.normal(0.0, sigma, shape), -NOISE_CLIP_SIGMA * sigma, NOISE_CLIP_SIGMA * sigma)


class _ProfileBuilder:
    """Appends constant-current segments (in whole samples) while tracking every cell's SOC."""

    def __init__(self, rng, n_samples, dt, capacity_ah, soc0, table, r_total_max, v_min, v_max, c_rate_a):
        self.rng, self.n, self.dt = rng, n_samples, dt
        self.capacity_ah = capacity_ah
        self.soc = soc0.astype("float64").copy()
        self.table = table
        self.r_total_max = r_total_max
        self.v_min, self.v_max = v_min + LIMIT_MARGIN_V, v_max - LIMIT_MARGIN_V
        self.one_c = c_rate_a
        self.lengths: list[int] = [1]  # sample 0: the interval before the record, at rest
        self.currents: list[float] = [0.0]
        self.phases: list[int] = [0]
        self.filled = 1
        self.short_ohm: np.ndarray | None = None  # per cell (inf: none); set by _resolve_faults' caller
        self.short_start = None  # per cell, first sample the short acts on

    @property
    def full(self) -> bool:
        return self.filled >= self.n

    def samples(self, seconds: float) -> int:
        return max(1, int(round(seconds / self.dt)))

    def add(self, n: int, current_a: float, phase: str) -> None:
        n = min(n, self.n - self.filled)
        if n <= 0:
            return
        current_a = round(current_a, 3)  # 1 mA steps: the telemetry holds exactly this value
        before = self.soc
        self.soc = self.soc + current_a * n * self.dt / (3600.0 * self.capacity_ah)
        if self.short_ohm is not None:
            # The profile must see a shorted cell drain (it charges and caps currents on it); the
            # leak is taken at the segment's start voltage (OCV), exact enough for control.
            leaking = np.clip(self.filled + n - np.maximum(self.filled, self.short_start), 0, n)
            leak_a = self.table.ocv(before) / self.short_ohm
            self.soc = self.soc - leak_a * leaking * self.dt / (3600.0 * self.capacity_ah)
        self.lengths.append(n)
        self.currents.append(current_a)
        self.phases.append(PHASES.index(phase) if current_a != 0.0 else 0)
        self.filled += n

    def _headroom_a(self, current_a: float, n: int) -> float:
        """Largest |I| <= |current_a| (same sign) keeping every cell inside the voltage margin."""
        after = self.soc + current_a * n * self.dt / (3600.0 * self.capacity_ah)
        if current_a > 0:  # the fullest cell, at the end of the segment, with worst-case R
            room = self.v_max - self.table.ocv(after.max())
        else:
            room = self.table.ocv(after.min()) - self.v_min
        return max(0.0, min(abs(current_a), room / self.r_total_max))

    def pulse(self, current_a: float, seconds: float, phase: str) -> None:
        n = self.samples(seconds)
        amplitude = self._headroom_a(current_a, n)
        if amplitude < 0.05 * self.one_c:
            self.add(n, 0.0, "rest")
        else:
            self.add(n, math.copysign(amplitude, current_a), phase)


def _build_profile(builder: _ProfileBuilder, soc_low: float, soc_high: float) -> None:
    rng, one_c = builder.rng, builder.one_c
    builder.add(builder.samples(rng.uniform(40, 60) * 60), 0.0, "rest")
    while not builder.full:
        if builder.soc.min() < soc_low + 0.15:
            # CC charge at 0.5C, in 5-min pieces so that the headroom cap tapers it like CV.
            while not builder.full and builder.soc.max() < soc_high:
                before = builder.filled
                builder.pulse(0.5 * one_c, 300.0, "charge")
                if builder.currents[-1] == 0.0 or builder.filled == before:
                    break  # no more headroom: the fullest cell is at the voltage margin
            builder.add(builder.samples(rng.uniform(30, 90) * 60), 0.0, "rest")
            continue
        trip_end = builder.filled + builder.samples(rng.uniform(20, 90) * 60)
        while not builder.full and builder.filled < trip_end:
            draw = rng.random()
            if draw < 0.15:
                builder.add(builder.samples(rng.uniform(10, 240)), 0.0, "rest")
            elif draw < 0.40:
                builder.pulse(rng.uniform(0.1, 0.8) * one_c, rng.uniform(10, 30), "regen")
            else:
                seconds = rng.uniform(10, 120)
                drop = 1.2 * one_c * seconds / (3600.0 * builder.capacity_ah.min())
                if builder.soc.min() - drop < soc_low:
                    break  # end the trip before the emptiest cell gets below soc_low
                builder.pulse(-rng.uniform(0.1, 1.2) * one_c, seconds, "drive")
        minutes = rng.uniform(30, 150) if rng.random() < 0.5 else rng.uniform(2, 25)
        builder.add(builder.samples(minutes * 60), 0.0, "rest")


def _place_windows(rng, allowed: np.ndarray, lengths: list[int], taken: np.ndarray, gap: int) -> list[int]:
    """Start indices of windows of the given lengths inside `allowed`, apart from `taken`."""
    starts = []
    for length in lengths:
        for _ in range(2000):
            start = int(rng.integers(1, len(allowed) - length))
            lo, hi = max(0, start - gap), min(len(allowed), start + length + gap)
            if allowed[start : start + length].all() and not taken[lo:hi].any():
                taken[start : start + length] = True
                starts.append(start)
                break
        else:
            raise ValueError("no room for the requested excursions; use a longer duration or fewer excursions")
    return starts


def _resolve_faults(faults, seed: int, names: list[str], n_samples: int, dt: float) -> list[dict]:
    """Fault specs with every missing field drawn from the fault generator (never the main
    stream) and the onset snapped up to the sample grid: dicts with kind, cell (index), start
    (first affected sample), onset_time_s, magnitude."""
    rng = np.random.default_rng([int(seed), FAULT_STREAM])
    resolved = []
    for raw in faults:
        spec = raw if isinstance(raw, FaultSpec) else FaultSpec(**dict(raw))
        if spec.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {spec.kind!r}; known: {', '.join(FAULT_KINDS)}")
        _, _, magnitude_range = FAULT_KINDS[spec.kind]
        # Every field is drawn, given or not, so that one spec's draws do not depend on another's fields.
        drawn_cell = int(rng.integers(len(names)))
        drawn_onset = rng.uniform(*FAULT_ONSET_RANGE) * (n_samples - 1) * dt
        drawn_unit = rng.random()
        drawn_sign = 1.0 if rng.random() < 0.5 else -1.0
        if spec.cell is None:
            cell = drawn_cell
        elif isinstance(spec.cell, str):
            if spec.cell not in names:
                raise ValueError(f"fault on unknown cell {spec.cell!r} (cells: {names[0]}..{names[-1]})")
            cell = names.index(spec.cell)
        else:
            cell = int(spec.cell)
            if not 0 <= cell < len(names):
                raise ValueError(f"fault cell index {cell} outside 0..{len(names) - 1}")
        onset = drawn_onset if spec.onset_time_s is None else float(spec.onset_time_s)
        start = int(math.ceil(onset / dt - 1e-9))
        if not 0 <= start < n_samples:
            raise ValueError(f"fault onset {onset} s is outside the record (0..{(n_samples - 1) * dt} s)")
        if spec.kind == "voltage_sensor_stuck":
            magnitude = float("nan")
        elif spec.magnitude is not None:
            magnitude = float(spec.magnitude)
        elif spec.kind == "internal_short":  # log-uniform: a decade of resistance
            magnitude = float(math.exp(math.log(magnitude_range[0]) + drawn_unit * math.log(magnitude_range[1] / magnitude_range[0])))
        else:
            magnitude = magnitude_range[0] + drawn_unit * (magnitude_range[1] - magnitude_range[0])
            magnitude *= drawn_sign if spec.kind == "voltage_sensor_offset" else 1.0
        if spec.kind in ("internal_short", "loose_connection") and not magnitude > 0:
            raise ValueError(f"{spec.kind}: magnitude (ohm) must be > 0, got {magnitude}")
        resolved.append(dict(kind=spec.kind, cell=cell, start=start, onset_time_s=start * dt, magnitude=magnitude))
    return resolved


def _short_circuit(current, soc0, capacity, table, r0, r1, decay, cells, starts, r_short, dt):
    """(SOC, true voltage, leak current) of shorted cells: I_leak[k] = V[k]/R_short for k >= start
    (held backward), the cell carrying I - I_leak; solved by fixed-point iteration."""
    active = np.arange(len(current))[:, None] >= np.asarray(starts)[None, :]
    charge_as = np.cumsum(current) * dt
    leak = np.where(active, table.ocv(soc0[cells][None, :] + charge_as[:, None] / (3600.0 * capacity[cells][None, :])) / r_short, 0.0)
    for _ in range(LEAK_FIXED_POINT_ITERATIONS):
        cell_current = current[:, None] - leak
        soc = soc0[cells][None, :] + np.cumsum(cell_current, axis=0) * dt / (3600.0 * capacity[cells][None, :])
        relaxation = lfilter([1.0 - decay], [1.0, -decay], cell_current, axis=0)
        v_true = table.ocv(soc) + cell_current * r0[cells][None, :] + relaxation * r1[cells][None, :]
        leak = np.where(active, v_true / r_short, 0.0)
    # Final pass with the last leak, so that SOC is exactly the sum of the recorded leak.
    cell_current = current[:, None] - leak
    soc = soc0[cells][None, :] + np.cumsum(cell_current, axis=0) * dt / (3600.0 * capacity[cells][None, :])
    relaxation = lfilter([1.0 - decay], [1.0, -decay], cell_current, axis=0)
    v_true = table.ocv(soc) + cell_current * r0[cells][None, :] + relaxation * r1[cells][None, :]
    return soc, v_true, leak


def simulate_pack(
    n_cells: int = 12,
    chemistry: str = "NMC",
    duration_h: float = 24.0,
    sample_period_s: float = 10.0,
    seed: int = DEFAULT_SEED,
    soc_spread: float = 0.03,
    capacity_spread: float = 0.02,
    resistance_spread: float = 0.10,
    initial_soc: float = 0.7,
    soc_low: float = 0.15,
    soc_high: float = 0.9,
    ambient_c: float = 25.0,
    nominal_capacity_ah: float | None = None,
    n_temperature_sensors: int = 3,
    excursions: bool = True,
    n_excursions: int = 4,
    n_spikes: int = 6,
    min_alert_duration_s: float | None = None,
    current_noise_a: float = 0.0,
    pack_id: str = "pack_01",
    start: str = "2024-01-01T00:00:00Z",
    faults: Sequence[FaultSpec | Mapping[str, Any]] | None = None,
) -> PackSimulation:
    """Simulate one pack (see the module docstring for the model, the faults and every convention)."""
    chemistry = str(chemistry).strip().upper()
    if chemistry not in CELL_DEFAULTS:
        raise ValueError(f"unknown chemistry {chemistry!r}; known: {', '.join(CELL_DEFAULTS)}")
    if n_cells < 1 or duration_h <= 0 or sample_period_s <= 0:
        raise ValueError("n_cells >= 1, duration_h > 0 and sample_period_s > 0 are required")
    if not 0.0 < soc_low < soc_high < 1.0:
        raise ValueError("0 < soc_low < soc_high < 1 is required")
    dt = float(sample_period_s)
    min_alert_s = max(30.0, 3.0 * dt) if min_alert_duration_s is None else float(min_alert_duration_s)
    if excursions and min_alert_s < 2.0 * dt:
        raise ValueError("min_alert_duration_s must be >= 2 sample periods, else a one-sample spike is not shorter")
    defaults = CELL_DEFAULTS[chemistry]
    nominal = float(nominal_capacity_ah or defaults["nominal_capacity_ah"])
    v_min, v_max = VOLTAGE_WINDOWS_V[chemistry]
    table = ocv_table(chemistry, ambient_c)
    rng = np.random.default_rng(seed)
    names = cell_names(n_cells)

    # Cells: the spreads are relative (capacity, resistance) or absolute (SOC), truncated at 3 sigma.
    capacity = nominal * (1.0 + np.clip(rng.normal(0, capacity_spread, n_cells), -3 * capacity_spread, 3 * capacity_spread))
    soc0 = np.clip(initial_soc + np.clip(rng.normal(0, soc_spread, n_cells), -3 * soc_spread, 3 * soc_spread), soc_low + 0.02, soc_high)
    r_factor = np.exp(np.clip(rng.normal(0, resistance_spread, n_cells), -3 * resistance_spread, 3 * resistance_spread))
    r0 = defaults["r0_ohm"] * r_factor
    r1 = defaults["r1_ohm"] * r_factor
    tau = defaults["tau1_s"]
    sensor_of_cell = (np.arange(n_cells) * n_temperature_sensors) // n_cells

    # Current profile (loop over segments), then everything per sample, vectorised.
    n_samples = int(round(duration_h * 3600.0 / dt)) + 1
    injected = _resolve_faults(faults or (), seed, names, n_samples, dt)
    shorts = [f for f in injected if f["kind"] == "internal_short"]
    builder = _ProfileBuilder(rng, n_samples, dt, capacity, soc0, table, float((r0 + r1).max()), v_min, v_max, nominal)
    if shorts:
        builder.short_ohm = np.full(n_cells, np.inf)
        builder.short_start = np.full(n_cells, n_samples)
        for f in shorts:
            builder.short_ohm[f["cell"]] = f["magnitude"]
            builder.short_start[f["cell"]] = f["start"]
    _build_profile(builder, soc_low, soc_high)
    builder.add(n_samples - builder.filled, 0.0, "rest")
    lengths = np.asarray(builder.lengths)
    current = np.repeat(np.asarray(builder.currents), lengths)
    phase = np.repeat(np.asarray(builder.phases), lengths)
    time_s = np.arange(n_samples) * dt

    charge_as = np.cumsum(current) * dt  # A*s moved into every cell up to t[k] (exact)
    soc = soc0[None, :] + charge_as[:, None] / (3600.0 * capacity[None, :])
    decay = math.exp(-dt / tau)
    relaxation = lfilter([1.0 - decay], [1.0, -decay], current)  # v1 / R1, exact for the hold
    v_true = table.ocv(soc) + current[:, None] * r0[None, :] + relaxation[:, None] * r1[None, :]
    leak_current = {}
    if shorts:
        short_cells = [f["cell"] for f in shorts]
        short_soc, short_v, leak = _short_circuit(current, soc0, capacity, table, r0, r1, decay, short_cells,
                                                  [f["start"] for f in shorts],
                                                  np.array([f["magnitude"] for f in shorts]), dt)
        soc[:, short_cells], v_true[:, short_cells] = short_soc, short_v
        leak_current = {names[c]: leak[:, i] for i, c in enumerate(short_cells)}
    if soc.min() < 0.0 or soc.max() > 1.0:
        hint = "; an internal short drained a cell: use a larger R_short or a shorter record" if shorts else ""
        raise RuntimeError(f"seed {seed}: SOC left [0, 1] ({soc.min():.4f}..{soc.max():.4f}){hint}")
    if v_true.max() > v_max - LIMIT_MARGIN_V / 2 or v_true.min() < v_min + LIMIT_MARGIN_V / 2:
        raise RuntimeError(f"seed {seed}: profile brought a cell within {LIMIT_MARGIN_V / 2} V of a limit")

    voltage = v_true + _bounded_noise(rng, VOLTAGE_NOISE_V, v_true.shape)
    for f in injected:  # measurement faults that add to the reading (excursions overwrite them, below)
        after = slice(f["start"], None)
        if f["kind"] == "voltage_sensor_offset":
            voltage[after, f["cell"]] += f["magnitude"]
        elif f["kind"] == "loose_connection":
            voltage[after, f["cell"]] += f["magnitude"] * current[after]
    stuck_values = {f["cell"]: voltage[f["start"], f["cell"]] for f in injected if f["kind"] == "voltage_sensor_stuck"}
    rest_run_start = np.maximum.accumulate(np.where(current != 0.0, np.arange(n_samples), 0))
    rest_s = np.where(current == 0.0, (np.arange(n_samples) - rest_run_start) * dt, 0.0)
    # A sample is in a long rest if its whole rest run (not just its elapsed part) is >= 30 min.
    run_id = np.cumsum(np.r_[True, (current[1:] == 0.0) != (current[:-1] == 0.0)])
    run_rest_s = pd.Series(rest_s).groupby(run_id).transform("max").to_numpy()
    in_long_rest = (current == 0.0) & (run_rest_s >= LONG_REST_S)

    alert_rows, spike_rows = [], []
    if excursions:
        taken = np.zeros(n_samples, dtype=bool)
        gap = max(2, int(math.ceil(min_alert_s / dt)))
        allowed = ~in_long_rest
        allowed[: gap + 1] = False
        lengths_exc = [int(math.ceil(rng.uniform(2.5, 8.0) * min_alert_s / dt)) for _ in range(n_excursions)]
        max_spike = int(min(5, max(1, math.floor((min_alert_s - 1e-9) / dt / 2))))
        lengths_spk = [int(rng.integers(1, max_spike + 1)) for _ in range(n_spikes)]
        exc_starts = _place_windows(rng, allowed, lengths_exc, taken, gap)
        spk_starts = _place_windows(rng, allowed, lengths_spk, taken, gap)
        for i, (start_k, length) in enumerate(zip(exc_starts, lengths_exc)):
            over = i % 2 == 0
            cell = int(rng.integers(n_cells))
            bump = 0.01 + rng.uniform(0.02, 0.1) * np.sin(np.pi * (np.arange(length) + 0.5) / length)
            window = slice(start_k, start_k + length)
            values = (v_max + bump if over else v_min - bump) + _bounded_noise(rng, VOLTAGE_NOISE_V, length)
            voltage[window, cell] = values
            alert_rows.append((names[cell], "over_voltage" if over else "under_voltage", time_s[start_k],
                               time_s[start_k + length - 1], length, values.max() if over else values.min()))
        for start_k, length in zip(spk_starts, lengths_spk):
            over = rng.random() < 0.5
            cell = int(rng.integers(n_cells))
            excess = rng.uniform(0.05, 0.4, length)
            values = v_max + excess if over else v_min - excess
            voltage[start_k : start_k + length, cell] = values
            spike_rows.append((names[cell], "over_voltage" if over else "under_voltage", time_s[start_k],
                               time_s[start_k + length - 1], length, values.max() if over else values.min()))
    for f in injected:
        if f["kind"] == "voltage_sensor_stuck":
            voltage[f["start"]:, f["cell"]] = stuck_values[f["cell"]]
            # A frozen reading shows no excursion: the rows drawn for it after the onset go.
            hidden = lambda row: row[0] == names[f["cell"]] and row[3] >= f["onset_time_s"]  # noqa: E731
            alert_rows = [r for r in alert_rows if not hidden(r)]
            spike_rows = [r for r in spike_rows if not hidden(r)]
    voltage = np.round(voltage, 4)

    # Temperatures: lumped rise per sensor group (exact update for the hold), on a daily ambient swing.
    heat_w = current[:, None] ** 2 * (r0 + r1)[None, :]
    for f in injected:
        if f["kind"] == "internal_short":  # the short dissipates V * I_leak inside the cell
            heat_w[:, f["cell"]] += v_true[:, f["cell"]] * leak_current[names[f["cell"]]]
        elif f["kind"] == "loose_connection":
            heat_w[f["start"]:, f["cell"]] += current[f["start"]:] ** 2 * f["magnitude"]
    thermal_decay = math.exp(-dt / (HEAT_CAPACITY_J_PER_K * THERMAL_RESISTANCE_K_PER_W))
    ambient = ambient_c + AMBIENT_SWING_C * np.sin(2 * np.pi * (time_s / 86400.0 - 0.375))
    temperatures = {}
    for sensor in range(n_temperature_sensors):
        group_heat = heat_w[:, sensor_of_cell == sensor].mean(axis=1)
        rise = lfilter([(1.0 - thermal_decay) * THERMAL_RESISTANCE_K_PER_W], [1.0, -thermal_decay], group_heat)
        noisy = ambient + rise + _bounded_noise(rng, TEMPERATURE_NOISE_C, n_samples)
        temperatures[f"temperature_{sensor + 1:02d}_c"] = np.round(noisy, 2)

    measured_current = current + (_bounded_noise(rng, current_noise_a, n_samples) if current_noise_a > 0 else 0.0)
    measured_current[0] = 0.0
    start_ts = pd.Timestamp(start)
    start_ts = start_ts.tz_localize("UTC") if start_ts.tzinfo is None else start_ts.tz_convert("UTC")
    telemetry = pd.DataFrame({"timestamp": start_ts + pd.to_timedelta(time_s, unit="s"), "time_s": time_s,
                              "pack_current_a": measured_current})
    telemetry = pd.concat([telemetry, pd.DataFrame(voltage, columns=[f"{n}_voltage_v" for n in names]),
                           pd.DataFrame(temperatures)], axis=1)

    discharge_ah = np.cumsum(np.maximum(-current, 0.0)) * dt / 3600.0
    charge_ah = np.cumsum(np.maximum(current, 0.0)) * dt / 3600.0
    measured_discharge_ah = np.cumsum(np.maximum(-measured_current, 0.0)) * dt / 3600.0
    truth = pd.concat(
        [
            pd.DataFrame({"time_s": time_s, "current_a": current,
                          "phase": pd.Categorical.from_codes(phase, categories=list(PHASES)),
                          "rest_s": rest_s, "in_long_rest": in_long_rest}),
            pd.DataFrame(soc, columns=[f"soc_{n}" for n in names]),
            pd.DataFrame({f"leak_current_a_{n}": leak for n, leak in leak_current.items()}, index=range(n_samples)),
            pd.DataFrame({"soc_mean": soc.mean(axis=1), "discharge_ah": discharge_ah, "charge_ah": charge_ah,
                          "eq_cycles_true": discharge_ah / nominal,
                          "eq_cycles_measured": measured_discharge_ah / nominal, "ambient_c": ambient}),
        ],
        axis=1,
    )
    cells = pd.DataFrame({"cell": names, "capacity_ah": capacity, "initial_soc": soc0,
                          "soc_offset": soc0 - soc0.mean(), "r0_ohm": r0, "r1_ohm": r1, "tau1_s": tau,
                          "temperature_sensor": [f"temperature_{s + 1:02d}_c" for s in sensor_of_cell]})
    columns = ["cell", "kind", "start_time_s", "end_time_s", "n_samples", "extreme_v"]
    alerts = pd.DataFrame(alert_rows, columns=columns).sort_values("start_time_s", ignore_index=True)
    spikes = pd.DataFrame(spike_rows, columns=columns).sort_values("start_time_s", ignore_index=True)
    pack = {
        "pack_id": pack_id,
        "chemistry": chemistry,
        "n_series": n_cells,
        "nominal_capacity_ah": nominal,
        "voltage_min_v": v_min,
        "voltage_max_v": v_max,
        "seed": seed,
        "sample_period_s": dt,
        "duration_h": duration_h,
        "start": start_ts.isoformat(),
        "ambient_c": ambient_c,
        "ocv_temperature_c": table.temperature_c,
        "ocv_source": table.source,
        "soc_spread": soc_spread,
        "capacity_spread": capacity_spread,
        "resistance_spread": resistance_spread,
        "min_alert_duration_s": min_alert_s,
        "voltage_noise_v": VOLTAGE_NOISE_V,
        "current_noise_a": current_noise_a,
        "temperature_sensors": list(temperatures),
        "current_convention": "positive = charge (A)",
        "current_hold": "pack_current_a[k] flowed during (time_s[k-1], time_s[k]]; pack_current_a[0] = 0",
        "eq_cycles_definition": "cumulative discharge Ah / nominal_capacity_ah; coulombic efficiency 1",
        "excursion_window": "alerts/spikes cover the samples with start_time_s <= time_s <= end_time_s",
        "simulator": f"battery_pipeline.science.twin.pack_sim {SIMULATOR_VERSION}",
    }
    fault_table = _empty_faults()
    if faults is not None:
        rows = []
        for i, f in enumerate(injected):
            category, unit, _ = FAULT_KINDS[f["kind"]]
            name = names[f["cell"]]
            if f["kind"] == "internal_short":
                leak = leak_current[name][f["start"]:]
                lost = leak.sum() * dt / (3600.0 * capacity[f["cell"]])
                text = (f"R_short {f['magnitude']:.1f} ohm: leak {1000 * leak.mean():.1f} mA mean, "
                        f"{100 * lost:.2f} % SOC lost by the end")
            elif f["kind"] == "voltage_sensor_offset":
                text = f"reading offset {1000 * f['magnitude']:+.1f} mV"
            elif f["kind"] == "loose_connection":
                text = f"+{1000 * f['magnitude']:.1f} mOhm in series (cell R0 {1000 * r0[f['cell']]:.1f} mOhm)"
            else:
                text = f"reading frozen at {round(stuck_values[f['cell']], 4):.4f} V"
            rows.append((i, name, f["kind"], category, f["onset_time_s"], f["magnitude"], unit, text))
        if rows:
            fault_table = pd.DataFrame(rows, columns=FAULT_COLUMNS).astype(fault_table.dtypes.to_dict())
        pack["faults"] = len(rows)
        pack["fault_onset_convention"] = "a fault acts on every sample with time_s >= onset_time_s"
    return PackSimulation(telemetry, truth, cells, alerts, spikes, pack, fault_table)


def write_pack(sim: PackSimulation, directory) -> Path:
    """Telemetry as `<pack_id>.parquet` (the file a pipeline ingests), ground truth beside it
    (`.truth.parquet`, `.cells.csv`, `.alerts.csv`, `.spikes.csv`, and `.faults.csv` when faults
    were requested, even none) and a `<pack_id>.json` sidecar naming them. Refuses to overwrite
    any existing file; returns the telemetry path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = sim.pack["pack_id"]
    files = {
        "telemetry": f"{stem}.parquet",
        "truth": f"{stem}.truth.parquet",
        "cells": f"{stem}.cells.csv",
        "alerts": f"{stem}.alerts.csv",
        "spikes": f"{stem}.spikes.csv",
        "sidecar": f"{stem}.json",
    }
    if "faults" in sim.pack:  # only packs simulated with `faults=`: default packs write what they always did
        files["faults"] = f"{stem}.faults.csv"
    existing = [name for name in files.values() if (directory / name).exists()]
    if existing:
        raise FileExistsError(f"{directory}: would overwrite {', '.join(existing)}")
    sim.telemetry.to_parquet(directory / files["telemetry"], index=False)
    sim.truth.to_parquet(directory / files["truth"], index=False)
    sim.cells.to_csv(directory / files["cells"], index=False)
    sim.alerts.to_csv(directory / files["alerts"], index=False)
    sim.spikes.to_csv(directory / files["spikes"], index=False)
    if "faults" in files:
        sim.faults.to_csv(directory / files["faults"], index=False)
    sidecar = {**sim.pack, "files": {k: v for k, v in files.items() if k != "sidecar"},
               "telemetry_columns": list(sim.telemetry.columns)}
    with open(directory / files["sidecar"], "x") as handle:
        json.dump(sidecar, handle, indent=1)
        handle.write("\n")
    return directory / files["telemetry"]
