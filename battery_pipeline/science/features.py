"""Per-cycle features of one cell: summary features, charge-curve statistics and Q(V) curves.

`compute_cycle_features(samples, nominal_capacity_ah, impedance, config)` turns one cell's
*validated* canonical samples (`science.schema.CellCycleSample`, rows in time order; time,
voltage and current finite) into one row per (cell_id, cycle_number) with the columns
`CYCLE_FEATURE_COLUMNS`, NaN wherever the cycle's data do not allow a value.
`compute_curves(samples, config, cycles)` returns the underlying Q(V), dQ(V) and dQ/dV curves in
long format for plotting. Every threshold is a field of `FeatureConfig`, documented there.

Speed: everything is vectorized numpy over the cell's sorted arrays. Rows of one cycle are
contiguous, so per-cycle sums are `np.add.reduceat` over the cycle start offsets, a per-cycle
value is spread to its samples with `np.repeat`, subsets (charge samples, discharge runs, current
steps) are compressed with a mask and stay contiguous per cycle. There is no Python loop over
samples or over cycles: the Q(V) curves of all cycles are interpolated in one `np.interp` call on
a monotone composite key (see `_discharge_curves`) and smoothed/differentiated as one 2-D array.
A cell is processed in blocks of whole cycles of ~`block_samples` samples (a loop over ~8 blocks
per million samples): the ~60 temporaries of the summary then stay cache-sized and are reused by
the allocator, where whole-cell temporaries cost more in page faults than in arithmetic
(measured: 1 M samples in ~70 ms instead of ~120 ms). Nothing is integrated across a cycle
boundary, so results do not depend on the block size (a test checks it); the cell-level parts
(gap threshold, DCIR steps that open a cycle, curves and their reference) are done per cell.
Samples whose cycle numbers are not non-decreasing in time order are stably regrouped by cycle
first (O(n log n), only then). Measured: benchmarks/features.py.

Definitions (units: V, A, s, Ah, Wh, ohm, degC; current + = charge):

* Integration intervals. Interval j joins sample j and j+1 *of the same cycle*; it is integrated
  over time (A*s/3600 -> Ah, V*I*s/3600 -> Wh, V*s for time-weighted means) with the trapezoid
  rule inside a step, and with the *later* sample's current, voltage and power when it crosses
  a step_index change: cyclers log a step's last point when the step ends, so the interval up
  to the next step's first point belongs to the next step (`FeatureConfig.step_end_logging`,
  set per reader; where the switching instant is not logged, e.g. NASA, the trapezoid is used
  across the change too: on B0005 the later-sample rule books a whole 19 s rest -> discharge
  interval at 2 A and reads 0.41 % above the file's Capacity, the trapezoid 0.2 %).
  (Measured on CALCE CS2_35: a
  charge -> rest interval is up to 60 s long; the trapezoid there books half of it as charge,
  and the per-cycle discharge capacity then exceeds Arbin's own counter by 0.5 % median, 3.7 %
  worst; with this rule the median difference is 8e-6.) An interval is booked to *charge* if
  its current is > `rest_current_threshold_a` (1 mA; for a cell cycled at small currents 1 % of
  its working |current|, see `_rest_threshold_a`), to *discharge* if < -threshold (so a sparsely
  sampled pulse train counts fully, as in `readers.base`); below the threshold, an interval
  whose two samples the reader typed charge (discharge) still counts as charge (discharge)
  when its current has that sign: a CV tail inside a charge step is charge moved, not noise
  (Novonix holds to 21 uA: 1.7 % of the zoo file's charge was dropped before). Capacities are therefore the charge
  moved, never the source's capacity column (real exports re-base, accumulate over files or
  integrate only to a cut-off). An interval that crosses a
  step_index change and is longer than `gap_factor` x the 99th percentile of the cell's
  within-step intervals is an *unlogged gap* (NASA: minutes to days between operations; CALCE:
  days between files) and is not integrated at all: its trapezoid would invent charge.
  discharge/charge_capacity_ah, *_energy_wh are NaN when the cycle has no interval of that
  direction. coulombic_efficiency = discharge/charge capacity of the same cycle (a cycle is a
  charge followed by its discharge in every reader), energy_efficiency likewise with energies.
* discharge/charge_voltage_mean_v: time-weighted (trapezoid) over the intervals of that
  direction. *_end_voltage_v: voltage of the cycle's last sample with step_type discharge/charge.
* temperature_mean_c: time-weighted over the cycle's integrated intervals (both ends measured);
  temperature_max_c: max of the cycle's samples; temperature_rise_c: max minus the cycle's first
  measured temperature.
* CV phase (`cv_voltage_tolerance_v`, `cv_current_fraction`): a charge sample (step_type charge)
  is CV when its voltage is within the tolerance of the cycle's maximum charge voltage AND its
  current is below `cv_current_fraction` x the CC current, taken as the current of the cycle's
  first charge sample inside that voltage band (tapering). The current condition keeps the last
  CC samples, which also sit near the top voltage but still at full current, out of CV (a
  CC-only charge has no CV phase), and taking the CC current at the band entry rather than the
  maximum keeps a current pulse elsewhere in the charge (CALCE) from moving the threshold. The
  first ~tau*ln(1/0.98) seconds of an exponential taper still count as CC. A charge interval is
  CV when both its samples are CV, else CC, so cc_* + cv_* = the cycle's charge time and
  capacity. Limitation: a voltage spike that survives validation sets the maximum.
* resistance_dcir_ohm: at every sample k where the current jumps, |I_k - I_(k-1)| >
  max(`dcir_min_current_step_a`, `dcir_min_current_step_c_rate` x nominal capacity), with the two
  samples at most `dcir_max_interval_s` apart (and not across a gap), R = (V_k - V_(k-1)) /
  (I_k - I_(k-1)); pairs with a non-physical sign (voltage moving against the current) are
  dropped; the cycle's value is the median over its steps (a step belongs to the cycle of the
  sample after it, so the rest -> charge step that opens a cycle counts for it; NASA: the
  rest -> discharge, charge-opening spike and discharge -> rest steps). It is the DC resistance at the logging interval (ohmic + whatever
  polarisation develops within that interval): with 1-20 s logging it exceeds the pure ohmic
  R0 and Re of impedance spectroscopy.
* resistance_cycler_ohm: median of the cycler's internal_resistance_ohm reports in the cycle; a
  value held over consecutive samples (Arbin sample-and-hold) counts once.
* re_ohm, rct_ohm: each impedance measurement (frame with columns cell_id, time_s, cycle_number,
  re_ohm, rct_ohm) is attached to the cycle nearest in time (distance 0 inside the cycle's
  [start, end], else to the nearer end; optionally at most `impedance_max_distance_s`); several
  on one cycle are averaged; NaN for cycles with none.
* Charge-curve statistics over the cycle's charge samples (step_type charge), sample-based
  like their source: std = population std (ddof 0), skewness = Fisher-Pearson g1, kurtosis =
  excess kurtosis g2 (scipy.stats defaults, bias=True), slope = least-squares slope against time
  (V/s, A/s), entropy = Shannon entropy in nats of the histogram of the values with
  `entropy_bins` equal-width bins spanning the cycle's own min..max (0 = constant, at most
  ln(bins)). Relation to Wang et al., Nat. Commun. 15, 4332 (2024), whose XJTU tables are in
  `datasets/xjtu_features`: they take voltage statistics over a *window* of the CC charge and
  current statistics over the *CV* phase; their magnitudes (2C cell: voltage mean 4.10 V,
  std 0.056 V, CC Q 0.35 Ah in 315 s, voltage slope 6.2e-4 V/s ~ 0.2 V / 315 s, i.e. a
  ~4.0-4.2 V window; CV Q 0.058 Ah in 883 s, current mean 0.235 A) show that. Ours use the
  whole charge for both, so std/skewness/kurtosis/slope are of the same kind but not equal, and
  cc_charge_* / cv_charge_* cover the full phases (not a window). Their entropies (voltage ~5.5,
  current ~6.4) exceed ln(bins) of any reasonable histogram and are close to ln(number of
  samples), which is what the entropy of the raw series treated as a distribution
  (scipy.stats.entropy(values)) gives; that mostly measures the sample count (i.e. the phase
  duration), so our histogram entropy (<= ln 64 = 4.16 by default) is deliberately different
  and not numerically comparable.
* Curve features (Severson et al., Nat. Energy 4, 383 (2019)). The cycle's *main discharge* is
  its longest-in-charge run of consecutive discharge samples (so NASA's one-sample current spike
  at the start of a charge, or a rest inside a pulse train, is not part of it); Q(V) is the Ah
  discharged since that run began as a function of voltage, made single-valued by taking the
  running minimum of the voltage (noise upticks do not go back in Q). It is interpolated on a
  fixed grid of `n_grid_points` voltages between the reference discharge's voltage at
  `grid_capacity_quantiles` of its charge (default: 5 % and 95 % of the discharged Ah, i.e. the
  charge-weighted 5th/95th voltage percentiles), or on `voltage_window_v` if given. Grid points
  above the run's first voltage have Q = 0; below its lowest voltage Q is undefined (NaN).
  Reference = `reference_cycle` if given, else the `reference_complete_rank`-th (default 10th)
  complete discharge cycle, else the first complete one (see `complete_discharge_mask`).
  dQ(V) = Q_n(V) - Q_ref(V); delta_q_* are its min, mean, variance (ddof 0), skewness and
  excess kurtosis over the grid, only for cycles whose Q(V) covers the whole grid. dQ/dV is
  reported as the positive Ah discharged per volt of voltage drop, -dQ/dV, from a
  Savitzky-Golay first derivative of Q(V) on the grid over a window of `dqdv_window_v` (50 mV):
  the local least-squares slope, which is the SG derivative of polyorder 1 and of polyorder 2
  alike at the window centre (windows are cut at the grid ends); this smooths the sample noise
  before differentiating without moving a symmetric peak. dqdv_peak_* are its maximum and the
  grid voltage where it occurs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from battery_pipeline.science.cycle_classes import CLASS_COLUMNS, CLASS_INPUT_COLUMNS, classify_cycles
from battery_pipeline.science.schema import float_values

CYCLE_FEATURE_COLUMNS: list[str] = [
    "cell_id",
    "cycle_number",
    "cycle_start_time_s",
    "cycle_duration_s",
    "n_samples",
    "discharge_capacity_ah",
    "charge_capacity_ah",
    "coulombic_efficiency",
    "discharge_energy_wh",
    "charge_energy_wh",
    "energy_efficiency",
    "discharge_voltage_mean_v",
    "charge_voltage_mean_v",
    "discharge_end_voltage_v",
    "charge_end_voltage_v",
    "discharge_current_mean_a",
    "temperature_mean_c",
    "temperature_max_c",
    "temperature_rise_c",
    "cc_charge_time_s",
    "cv_charge_time_s",
    "cc_charge_capacity_ah",
    "cv_charge_capacity_ah",
    "resistance_dcir_ohm",
    "resistance_cycler_ohm",
    "re_ohm",
    "rct_ohm",
    "charge_voltage_std_v",
    "charge_voltage_skewness",
    "charge_voltage_kurtosis",
    "charge_voltage_slope_v_per_s",
    "charge_voltage_entropy",
    "charge_current_mean_a",
    "charge_current_std_a",
    "charge_current_skewness",
    "charge_current_kurtosis",
    "charge_current_slope_a_per_s",
    "charge_current_entropy",
    "charge_start_voltage_v",
    "cc_window_time_s",
    "cc_window_charge_ah",
    "cv_current_decay_s",
    "discharge_early_voltage_v",
    "discharge_early_temperature_rise_c",
    "delta_q_min_ah",
    "delta_q_mean_ah",
    "delta_q_variance_ah2",
    "delta_q_skewness",
    "delta_q_kurtosis",
    "dqdv_peak_voltage_v",
    "dqdv_peak_height_ah_per_v",
    # what kind of cycle it is (science/cycle_classes.py): text, not a feature
    "cycle_class",
    "cycle_class_reason",
]

DELTA_Q_COLUMNS = [c for c in CYCLE_FEATURE_COLUMNS if c.startswith("delta_q_")]
DQDV_COLUMNS = [c for c in CYCLE_FEATURE_COLUMNS if c.startswith("dqdv_")]

# Columns that must never be a feature when the label is the SOH (discharge capacity) of the
# *same* cycle. The rule: SOH is estimated from what is measured before or independently of that
# discharge reaching its cut-off, so nothing computed from the cycle's *full* discharge (whose end
# is where the capacity is exhausted) may enter:
#   - discharge_capacity_ah IS the label (SOH = it / nominal);
#   - discharge_energy_wh = integral of V*|I| over the same discharge ~ mean voltage x capacity;
#   - coulombic_efficiency and energy_efficiency have the label (or its energy) as numerator;
#   - cycle_duration_s contains the discharge's duration, which under a constant-current
#     discharge is capacity / current; n_samples follows it wherever logging is time-based;
#   - delta_q_* are statistics of Q_n(V) - Q_ref(V), built from the same discharge's
#     Q(V): delta_q_mean/min are close to (capacity - reference capacity) over the window;
#   - dqdv_peak_* come from the derivative of the same discharge Q(V) (the peak height scales
#     with capacity; the curve integrates to the discharged charge);
#   - discharge_voltage_mean_v is a summary of the whole discharge curve down to the cut-off: it
#     needs the full discharge (i.e. a capacity test) and moves with where that discharge ends;
#     discharge_end_voltage_v is the voltage at that end (the cut-off setting: no information
#     but the protocol, which on NASA differs per cell, 2.7/2.5/2.2 V, i.e. a cell label);
#   - temperature_mean_c / _max_c / _rise_c are over the whole cycle: the cell heats through
#     the discharge (NASA: +14 degC, the maximum at its end, not saturated), so they grow with
#     the discharge's duration = capacity / current.
#   - discharge_current_mean_a = discharge capacity / discharge time, over the whole discharge:
#     under a pure CC discharge it is the setpoint, but any taper, pulse or interval booked at the
#     cut-off makes it move with where the discharge ends (it is the cycle classes' protocol
#     signature, not an SOH input).
# Their replacements that are allowed: discharge_early_voltage_v and
# discharge_early_temperature_rise_c (at a fixed `early_discharge_s` into the discharge, long
# before any cut-off: they depend on resistance, OCV near full charge and heating, not on how
# long the discharge will last). Allowed on purpose: every charge-side feature (the charge is
# measured before that discharge; charge_capacity_ah is a strong but legitimate predictor: after a
# full discharge it is about the charge the cell can take, read off the charge, not the
# discharge), resistances, impedance.
SOH_LEAKAGE_COLUMNS: list[str] = [
    "discharge_capacity_ah",
    "discharge_energy_wh",
    "coulombic_efficiency",
    "energy_efficiency",
    "cycle_duration_s",
    "n_samples",
    "discharge_voltage_mean_v",
    "discharge_end_voltage_v",
    "discharge_current_mean_a",
    "temperature_mean_c",
    "temperature_max_c",
    "temperature_rise_c",
    *DELTA_Q_COLUMNS,
    *DQDV_COLUMNS,
]

# Not capacity, but not a property of the cell either: cycle_start_time_s is the time since the
# lab's test started, an age proxy that a field cell (or a cell tested on another schedule) does
# not share. Left out of the default SOH features (`soh_feature_columns`); a caller may still ask
# for it explicitly (`datasets.soh_dataset(feature_columns=...)`).
SOH_CLOCK_COLUMNS: list[str] = ["cycle_start_time_s"]

# Identifiers, never features at all.
_ID_COLUMNS = ("cell_id", "cycle_number")

CURVE_NAMES = ("q_of_v", "delta_q", "dqdv")
CURVE_COLUMNS = ["cell_id", "cycle_number", "curve", "voltage_v", "value"]


def soh_feature_columns(columns) -> list[str]:
    """The given columns that are SOH features of the same cycle by default (order kept).

    Drops `SOH_LEAKAGE_COLUMNS`, `SOH_CLOCK_COLUMNS`, the identifiers cell_id / cycle_number
    and the cycle class columns (which rows are comparable is a filter, not an input).
    """
    banned = set(SOH_LEAKAGE_COLUMNS) | set(SOH_CLOCK_COLUMNS) | set(_ID_COLUMNS) | set(CLASS_COLUMNS)
    return [c for c in columns if c not in banned]


@dataclass(frozen=True)
class FeatureConfig:
    """Every threshold of the feature definitions (module docstring gives the rules)."""

    # |mean current| of an interval above this books it to charge/discharge, A. Same 1 mA as
    # readers.base.REST_CURRENT_THRESHOLD_A: far above a lab channel's offset, far below C/50.
    rest_current_threshold_a: float = 1e-3
    # ... lowered for a cell cycled at small currents (a coin cell at 0.2 mA would be all rest):
    # to this share of its working |current| (the median over the samples its reader typed charge
    # or discharge, so however long the cell rests), never below the floor, A.
    rest_current_share: float = 0.01
    rest_current_floor_a: float = 1e-6
    # True when the source logs a step's last point at the instant the step ends (Arbin, Maccor,
    # Digatron, our simulator): an interval crossing a step change then belongs to the new step.
    # False where the switching instant falls somewhere between two samples (NASA PCoE, step
    # types derived from current): the trapezoid is then the unbiased estimate. The features
    # asset takes it from the cell's reader (`CyclerReader.logs_step_end`).
    step_end_logging: bool = True
    # An interval crossing a step_index change that is longer than gap_factor x the 99th
    # percentile of the cell's within-step intervals is an unlogged gap (not integrated).
    # Measured: NASA B0005 steps change within <= 20 s of logging, its gaps are >= 71 s
    # (within-step p99 ~ 19 s); CALCE step changes <= 60 s, gaps between files >= 18 h.
    gap_factor: float = 2.0
    gap_reference_percentile: float = 99.0
    # CV: voltage within this of the cycle's max charge voltage (10 mV ~ 5-10x cycler voltage
    # noise) and current below this fraction of the CC current (the current of the first charge
    # sample inside that voltage band); 2 % is >= 10x a lab channel's current noise (NASA
    # 1.5 A +-0.2 %, CALCE 0.55 A +-0.05 %), so CC samples near the top voltage are not CV.
    cv_voltage_tolerance_v: float = 0.01
    cv_current_fraction: float = 0.98
    # DCIR from current steps: |dI| above max(abs, c_rate x nominal capacity), samples at most
    # dcir_max_interval_s apart (so the value is the DC resistance at the logging interval).
    dcir_min_current_step_a: float = 0.2
    dcir_min_current_step_c_rate: float = 0.2
    dcir_max_interval_s: float = 30.0
    # Histogram bins of the charge voltage/current entropy.
    entropy_bins: int = 64
    # Fixed voltage window of the CC charge for cc_window_time_s / cc_window_charge_ah, V. Set a
    # priori (not tuned): 3.9-4.1 V sits on the upper, sloped part of a 4.2 V cell's CC charge
    # (graphite/NMC, LCO), below the CV band; a cell whose charge never reaches it gets NaN.
    charge_window_v: tuple[float, float] = (3.9, 4.1)
    # cv_current_decay_s: exponential time constant of the CV current from the times it first
    # falls to these fractions of the CC current (80 % -> 20 %): dt / ln(0.8 / 0.2).
    cv_decay_fractions: tuple[float, float] = (0.8, 0.2)
    # discharge_early_*: this many seconds into the cycle's main discharge run (300 s is 8 % of a
    # 1C discharge, 25 % of a 3C one: far from the cut-off of any cell with SOH > 0.3 at <= 3C).
    early_discharge_s: float = 300.0
    # Impedance attached only within this time distance of a cycle (None: always the nearest).
    impedance_max_distance_s: float | None = None
    # --- curves -----------------------------------------------------------------------------
    curve_features: bool = True  # False: delta_q_* and dqdv_* columns stay NaN (faster)
    n_grid_points: int = 1000  # Severson et al. use 1000 points
    grid_capacity_quantiles: tuple[float, float] = (0.05, 0.95)
    voltage_window_v: tuple[float, float] | None = None  # fixed grid window instead
    reference_cycle: int | None = None  # cycle_number of the reference; None: by rank below
    reference_complete_rank: int = 10  # the 10th complete discharge cycle (Severson: cycle 10)
    # A discharge is complete when its main run has >= min_discharge_samples samples, moves
    # >= complete_min_capacity_fraction x (nominal capacity, or the cell's 90th percentile of
    # main-run capacities when unknown), and reaches within complete_cutoff_tolerance_v of the
    # cell's cut-off (10th percentile of the main runs' lowest voltages).
    min_discharge_samples: int = 10
    complete_min_capacity_fraction: float = 0.5
    complete_cutoff_tolerance_v: float = 0.1
    # dQ/dV: Savitzky-Golay first derivative of Q(V) on the grid over a window of this many
    # volts (local least-squares slope; polyorder 1 and 2 give the same centre slope).
    dqdv_window_v: float = 0.05
    # Cells are processed in blocks of whole cycles of about this many samples (performance
    # only: temporaries stay cache-sized; results do not depend on it).
    block_samples: int = 131_072
    # compute_curves default selection: these cycle numbers, else every k-th cycle
    # (plus the reference cycle).
    curve_cycles: tuple[int, ...] | None = None
    curve_every: int = 50


# ------------------------------------------------------------------------------------------
# Small vectorized group helpers (groups = contiguous segments given by start offsets)
# ------------------------------------------------------------------------------------------


def _seg_sum(values: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Sum of each contiguous segment (empty segments give 0)."""
    out = np.zeros(len(starts))
    if values.size == 0:
        return out
    nonempty = counts > 0
    if nonempty.all():
        return np.add.reduceat(values, starts).astype("float64", copy=False)
    out[nonempty] = np.add.reduceat(values, starts[nonempty])
    return out


def _seg_reduce(ufunc, values: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """min/max (or fmin/fmax) of each contiguous segment, NaN for empty ones."""
    out = np.full(len(starts), np.nan)
    if values.size == 0:
        return out
    nonempty = counts > 0
    out[nonempty] = ufunc.reduceat(values, starts[nonempty])
    return out


def _all_finite(x: np.ndarray) -> bool:
    # a finite sum means every value is finite (NaN and inf propagate), at the cost of one read;
    # only an overflowing sum needs the elementwise test
    return bool(np.isfinite(np.add.reduce(x))) or bool(np.isfinite(x).all())


def _count_in_segments(idx: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """How many elements of sorted `idx` fall in each segment [start, end); with segments
    covering idx, np.repeat(per_segment_value, counts) spreads a value to them."""
    return np.searchsorted(idx, ends) - np.searchsorted(idx, starts)


def _starts_of(counts: np.ndarray) -> np.ndarray:
    starts = np.zeros(len(counts), dtype=np.int64)
    if len(counts) > 1:
        np.cumsum(counts[:-1], out=starts[1:])
    return starts


def _group_median(codes: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """Median of `values` per integer group code (small arrays; one lexsort)."""
    out = np.full(n_groups, np.nan)
    if values.size == 0:
        return out
    order = np.lexsort((values, codes))
    sorted_values = values[order]
    counts = np.bincount(codes, minlength=n_groups)
    starts = _starts_of(counts)
    has = counts > 0
    lo = starts + (counts - 1) // 2
    hi = starts + counts // 2
    out[has] = 0.5 * (sorted_values[lo[has]] + sorted_values[hi[has]])
    return out


def _last_index_in_segments(idx: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Per segment [start, end): the largest element of sorted `idx` inside it, else -1."""
    out = np.full(len(starts), -1, dtype=np.int64)
    if idx.size == 0:
        return out
    pos = np.searchsorted(idx, ends) - 1
    found = idx[np.maximum(pos, 0)]
    good = (pos >= 0) & (found >= starts)
    out[good] = found[good]
    return out


def _first_index_in_segments(idx: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Per segment [start, end): the smallest element of sorted `idx` inside it, else -1."""
    out = np.full(len(starts), -1, dtype=np.int64)
    if idx.size == 0:
        return out
    pos = np.searchsorted(idx, starts)
    found = idx[np.minimum(pos, idx.size - 1)]
    good = (pos < idx.size) & (found < ends)
    out[good] = found[good]
    return out


def _moments(x: np.ndarray, starts: np.ndarray, counts: np.ndarray):
    """Per segment: mean, population std, skewness g1, excess kurtosis g2 (NaN where undefined),
    and the deviations from the segment mean."""
    n = counts.astype("float64")
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = _seg_sum(x, starts, counts) / n
        d = x - np.repeat(mean, counts)
        d2 = d * d
        m2 = _seg_sum(d2, starts, counts) / n
        m3 = _seg_sum(d2 * d, starts, counts) / n
        m4 = _seg_sum(d2 * d2, starts, counts) / n
        std = np.sqrt(m2)
        # a (numerically) constant series has no shape: NaN rather than 0/0 noise
        flat = ~(m2 > (1e-12 * np.maximum(np.abs(mean), 1.0)) ** 2)
        skew = np.where(flat, np.nan, m3 / m2**1.5)
        kurt = np.where(flat, np.nan, m4 / (m2 * m2) - 3.0)
    std[counts < 2] = np.nan
    return mean, std, skew, kurt, d


def _entropy(x: np.ndarray, starts, counts, bins: int, offset: np.ndarray | None = None,
             hi: np.ndarray | None = None) -> np.ndarray:
    """Shannon entropy (nats) of an equal-width `bins` histogram over each segment's range.
    `offset`: segment index x (bins + 1) per value (computed here if not given); `hi`: the
    segments' maxima, if known."""
    n_groups = len(counts)
    out = np.full(n_groups, np.nan)
    if x.size == 0:
        return out
    lo = _seg_reduce(np.minimum, x, starts, counts)
    if hi is None:
        hi = _seg_reduce(np.maximum, x, starts, counts)
    width = hi - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(width > 0, bins / width, 0.0)
    # bin of each value, offset by its segment's block of bins + 1 counters: the extra one takes
    # the values at the maximum (bin `bins`) and is added to the last bin, as a clip would
    b = np.repeat(lo, counts)
    np.subtract(x, b, out=b)  # in place: the same values as (x - lo) * scale
    b *= np.repeat(scale, counts)
    b = b.astype(np.int64)
    b += np.repeat(np.arange(n_groups, dtype=np.int64) * (bins + 1), counts) if offset is None else offset
    hist = np.bincount(b, minlength=n_groups * (bins + 1)).reshape(n_groups, bins + 1)
    hist[:, bins - 1] += hist[:, bins]
    hist = hist[:, :bins]
    with np.errstate(invalid="ignore", divide="ignore"):
        p = hist / counts[:, None].astype("float64")
        log_p = np.zeros_like(p)  # 0 log 0 = 0
        np.log(p, out=log_p, where=hist > 0)
        plogp = p * log_p
    has = counts > 0
    out[has] = -plogp[has].sum(axis=1)
    return out


# ------------------------------------------------------------------------------------------
# Column access
# ------------------------------------------------------------------------------------------

_CHARGE, _DISCHARGE, _REST = 0, 1, 2


def _step_codes(column: pd.Series) -> np.ndarray:
    """step_type as int8 codes 0 charge, 1 discharge, 2 rest (-1 other); cheap for Categorical."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        lookup = np.array(
            [("charge", "discharge", "rest").index(c) if c in ("charge", "discharge", "rest") else -1
             for c in column.cat.categories] + [-1],
            dtype=np.int8,
        )
        codes = column.cat.codes.to_numpy()
        if codes.dtype == np.int8 and (lookup[:-1] == np.arange(lookup.size - 1)).all():
            return codes  # categories charge, discharge, rest (validation's order): codes as they are
        return lookup[codes]  # code -1 (NaN) -> last entry -1
    values = column.to_numpy()
    out = np.full(len(values), -1, dtype=np.int8)
    out[values == "charge"] = _CHARGE
    out[values == "discharge"] = _DISCHARGE
    out[values == "rest"] = _REST
    return out


@dataclass
class _Arrays:
    """One cell's sample arrays, grouped by cycle (rows of a cycle contiguous, in time order)."""

    cell_id: str
    cycles: np.ndarray  # cycle_number per group
    starts: np.ndarray
    counts: np.ndarray
    t: np.ndarray
    v: np.ndarray
    i: np.ndarray
    temp: np.ndarray
    ir: np.ndarray
    step_type: np.ndarray
    step_index: np.ndarray
    gap_s: float  # a step-changing interval longer than this is an unlogged gap
    step_end_logging: bool  # FeatureConfig.step_end_logging

    @property
    def n_cycles(self) -> int:
        return len(self.cycles)

    @property
    def ends(self) -> np.ndarray:
        return self.starts + self.counts


@dataclass
class _Cell:
    """A block of whole cycles of one cell (views into `_Arrays`) plus its intervals."""

    starts: np.ndarray  # block-relative
    counts: np.ndarray
    t: np.ndarray
    v: np.ndarray
    i: np.ndarray
    temp: np.ndarray
    ir: np.ndarray
    step_type: np.ndarray
    dis_idx: np.ndarray  # positions of the step_type discharge samples (summary and runs use them)
    w: np.ndarray  # effective interval length j -> j+1 (0 if not integrated), padded to n
    i_mid: np.ndarray  # current over interval j -> j+1 (see `_interval_values`)
    step_change: np.ndarray  # interval j -> j+1 crosses a step_index change, padded to n
    boundary: np.ndarray  # positions of the step changes booked to the later sample (`_interval_values`)

    @property
    def n_cycles(self) -> int:
        return len(self.starts)

    @property
    def ends(self) -> np.ndarray:
        return self.starts + self.counts


def _load(frame: pd.DataFrame, config: FeatureConfig) -> _Arrays:
    """Arrays of one cell's frame, regrouped by cycle if needed; cell-level gap threshold."""
    cycle = frame["cycle_number"].to_numpy()
    n = len(cycle)

    def cycle_changes(cycle):
        new_cycle = np.empty(n, dtype=bool)
        new_cycle[:1] = True
        np.not_equal(cycle[1:], cycle[:-1], out=new_cycle[1:])
        return new_cycle, np.flatnonzero(new_cycle).astype(np.int64)

    new_cycle, starts = cycle_changes(cycle)
    order = None
    # non-decreasing everywhere <=> increasing from one change point to the next
    if not (cycle[starts[1:]] > cycle[starts[:-1]]).all():
        order = np.argsort(cycle, kind="stable")  # regroup by cycle, time order kept inside
        cycle = cycle[order]
        new_cycle, starts = cycle_changes(cycle)

    def col(values):
        return values if order is None else values[order]

    t = col(float_values(frame, "time_s"))
    v = col(float_values(frame, "voltage_v"))
    i = col(float_values(frame, "current_a"))
    for name, values in (("time_s", t), ("voltage_v", v), ("current_a", i)):
        if not _all_finite(values):
            raise ValueError(f"{name} has missing values: compute features on validated samples")
    step_index = col(frame["step_index"].to_numpy())
    counts = np.diff(np.append(starts, n)).astype(np.int64)
    # typical logging interval inside a step: the 99th percentile of a strided subsample of
    # within-step intervals (<= 200k of them, so it costs ~2 ms whatever the cell's size)
    gap_s = np.inf
    if n > 1:
        stride = max(1, (n - 1) // 200_000)
        dt_sub = t[1::stride] - t[0:-1:stride][: len(t[1::stride])]
        same = step_index[1::stride] == step_index[0:-1:stride][: len(dt_sub)]
        within = dt_sub[same & ~new_cycle[1::stride]]
        if within.size:
            gap_s = config.gap_factor * float(np.percentile(within, config.gap_reference_percentile))
    cell_values = frame["cell_id"]
    return _Arrays(
        cell_id=str(cell_values.iloc[0]) if len(cell_values) else "",
        cycles=cycle[starts].astype("int64"),
        starts=starts,
        counts=counts,
        t=t,
        v=v,
        i=i,
        temp=col(float_values(frame, "temperature_c")),
        ir=col(float_values(frame, "internal_resistance_ohm")),
        step_type=col(_step_codes(frame["step_type"])),
        step_index=step_index,
        gap_s=gap_s,
        step_end_logging=config.step_end_logging,
    )


def _block(arrays: _Arrays, c0: int, c1: int) -> _Cell:
    """Cycles c0..c1-1 as a `_Cell` with their integration intervals."""
    s0 = int(arrays.starts[c0])
    e0 = int(arrays.starts[c1 - 1] + arrays.counts[c1 - 1])
    sl = slice(s0, e0)
    t, i, step_index = arrays.t[sl], arrays.i[sl], arrays.step_index[sl]
    n = e0 - s0
    counts = arrays.counts[c0:c1]
    starts = arrays.starts[c0:c1] - s0
    # Intervals j -> j+1, stored at j, padded to n (the block's last one never counts).
    dt = np.zeros(n)
    np.subtract(t[1:], t[:-1], out=dt[:-1])
    step_change = np.zeros(n, dtype=bool)
    np.not_equal(step_index[1:], step_index[:-1], out=step_change[:-1])
    is_gap = step_change & (dt > arrays.gap_s)
    valid = dt >= 0
    valid[starts[1:] - 1] = False  # the interval into the next cycle
    valid[-1:] = False  # the pad
    valid &= ~is_gap
    w = dt * valid  # dt is finite: a multiply is ~4x cheaper than np.where
    boundary = np.flatnonzero(step_change) if arrays.step_end_logging else np.zeros(0, dtype=np.int64)
    step_type = arrays.step_type[sl]
    return _Cell(
        starts=starts,
        counts=counts,
        t=t,
        v=arrays.v[sl],
        i=i,
        temp=arrays.temp[sl],
        ir=arrays.ir[sl],
        step_type=step_type,
        dis_idx=np.flatnonzero(step_type == _DISCHARGE),
        w=w,
        i_mid=_interval_values(i, boundary),
        step_change=step_change,
        boundary=boundary,
    )


def _blocks(arrays: _Arrays, block_samples: int):
    """Yield `_Cell` blocks of whole cycles with about `block_samples` samples each.

    Processing a cell in blocks keeps every temporary array small (cache-resident, reused by the
    allocator instead of freshly page-faulted); results do not depend on the block size, since
    nothing is integrated across a cycle boundary.
    """
    n_cyc = arrays.n_cycles
    if n_cyc == 0:
        return
    targets = np.arange(0, int(arrays.starts[-1] + arrays.counts[-1]), max(1, int(block_samples)))
    bounds = np.unique(np.append(np.searchsorted(arrays.starts, targets, side="left"), [0, n_cyc]))
    for c0, c1 in zip(bounds[:-1], bounds[1:]):
        yield _block(arrays, int(c0), int(c1))


def _interval_values(x: np.ndarray, change: np.ndarray, doubled: bool = False) -> np.ndarray:
    """Value of x over each interval j -> j+1 (padded to n): the trapezoid mean inside a step,
    the later sample's value across a step change (a cycler logs a step's last point when the
    step ends, so the interval up to the new step's first point belongs to the new step).
    `change`: positions j whose interval crosses such a step change. `doubled`: twice the values,
    for callers that only sum products of them (halving the sum instead is exact, one pass less)."""
    out = np.empty(len(x))
    out[-1:] = 0.0
    if len(x) < 2:
        return out
    np.add(x[1:], x[:-1], out=out[:-1])
    if doubled:
        out[change] = 2.0 * x[change + 1]
    else:
        out *= 0.5
        out[change] = x[change + 1]
    return out


# ------------------------------------------------------------------------------------------
# Summary features
# ------------------------------------------------------------------------------------------


def _summary(cell: _Cell, nominal_capacity_ah: float | None, config: FeatureConfig) -> dict:
    starts, counts = cell.starts, cell.counts
    ends = cell.ends
    t, v, i, w, i_mid = cell.t, cell.v, cell.i, cell.w, cell.i_mid
    n = len(t)
    out: dict[str, np.ndarray] = {}
    ssum = lambda x: np.add.reduceat(x, starts)  # noqa: E731 (a cycle has >= 1 sample: no empty segment)

    out["cycle_start_time_s"] = t[starts]
    out["cycle_duration_s"] = t[ends - 1] - t[starts]
    out["n_samples"] = counts.astype("int64")

    # --- integration -------------------------------------------------------------------------
    thr = config.rest_current_threshold_a
    # Below the threshold an interval still counts where the reader typed both its samples that
    # direction: a CV tail inside a charge step (Novonix holds to 21 uA) is charge, not rest noise.
    st_code = cell.step_type
    both = np.zeros((2, n), dtype=bool)
    if n > 1:
        both[0, :-1] = (st_code[1:] == _CHARGE) & (st_code[:-1] == _CHARGE)
        both[1, :-1] = (st_code[1:] == _DISCHARGE) & (st_code[:-1] == _DISCHARGE)
    chg = (i_mid > thr) | (both[0] & (i_mid > 0))
    dis = (i_mid < -thr) | (both[1] & (i_mid < 0))
    w_chg = w * chg
    w_dis = w * dis
    v_mid2 = _interval_values(v, cell.boundary, doubled=True)
    p_mid2 = _interval_values(v * i, cell.boundary, doubled=True)
    t_chg, t_dis = ssum(w_chg), ssum(w_dis)
    q_chg = ssum(i_mid * w_chg) / 3600.0
    q_dis = -ssum(i_mid * w_dis) / 3600.0
    e_chg = 0.5 * ssum(p_mid2 * w_chg) / 3600.0
    e_dis = -0.5 * ssum(p_mid2 * w_dis) / 3600.0
    vt_chg = 0.5 * ssum(v_mid2 * w_chg)
    vt_dis = 0.5 * ssum(v_mid2 * w_dis)
    # a direction with no integrated time has no value (not 0 Ah)
    has_chg, has_dis = t_chg > 0, t_dis > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        out["discharge_capacity_ah"] = np.where(has_dis, q_dis, np.nan)
        out["charge_capacity_ah"] = np.where(has_chg, q_chg, np.nan)
        out["coulombic_efficiency"] = out["discharge_capacity_ah"] / out["charge_capacity_ah"]
        out["discharge_energy_wh"] = np.where(has_dis, e_dis, np.nan)
        out["charge_energy_wh"] = np.where(has_chg, e_chg, np.nan)
        out["energy_efficiency"] = out["discharge_energy_wh"] / out["charge_energy_wh"]
        out["discharge_voltage_mean_v"] = np.where(t_dis > 0, vt_dis / t_dis, np.nan)
        out["charge_voltage_mean_v"] = np.where(t_chg > 0, vt_chg / t_chg, np.nan)
        # the protocol's discharge rate, which tells rate tests and check-ups from regular cycles
        out["discharge_current_mean_a"] = np.where(has_dis, q_dis * 3600.0 / np.where(has_dis, t_dis, 1.0), np.nan)

    # --- end voltages --------------------------------------------------------------------------
    st = cell.step_type
    chg_idx = np.flatnonzero(st == _CHARGE)
    dis_idx = cell.dis_idx
    for name, idx in (("discharge_end_voltage_v", dis_idx), ("charge_end_voltage_v", chg_idx)):
        last = _last_index_in_segments(idx, starts, ends)
        out[name] = np.where(last >= 0, v[np.maximum(last, 0)], np.nan)

    # --- temperature ---------------------------------------------------------------------------
    temp = cell.temp
    all_finite_t = _all_finite(temp)  # the usual case: no mask needed
    finite_t = None if all_finite_t else np.isfinite(temp)
    n_cyc = cell.n_cycles
    if not all_finite_t and not finite_t.any():
        for name in ("temperature_mean_c", "temperature_max_c", "temperature_rise_c"):
            out[name] = np.full(n_cyc, np.nan)
    else:
        t_mid = np.zeros(n)
        np.add(temp[1:], temp[:-1], out=t_mid[:-1])
        t_mid *= 0.5
        if all_finite_t:
            w_t = w
        else:
            ok = np.isfinite(t_mid)
            w_t = np.where(ok, w, 0.0)
            t_mid = np.where(ok, t_mid, 0.0)
        wt_sum = ssum(w_t)
        with np.errstate(invalid="ignore", divide="ignore"):
            out["temperature_mean_c"] = np.where(wt_sum > 0, ssum(t_mid * w_t) / wt_sum, np.nan)
        tmax = _seg_reduce(np.fmax, temp, starts, counts)
        out["temperature_max_c"] = tmax
        if all_finite_t:
            first_t = temp[starts]
        else:
            first = _first_index_in_segments(np.flatnonzero(finite_t), starts, ends)
            first_t = np.where(first >= 0, temp[np.maximum(first, 0)], np.nan)
        out["temperature_rise_c"] = tmax - first_t

    # --- CC / CV -------------------------------------------------------------------------------
    # charge samples compressed; they stay contiguous per cycle (segments s_c, n_c)
    n_c = np.searchsorted(chg_idx, ends) - np.searchsorted(chg_idx, starts)
    s_c = _starts_of(n_c)
    v_c = v[chg_idx]
    i_c = i[chg_idx]
    vmax = _seg_reduce(np.maximum, v_c, s_c, n_c)
    in_band = v_c >= np.repeat(vmax - config.cv_voltage_tolerance_v, n_c)
    # the CC current = the current when the voltage first entered the band (robust to pulses
    # elsewhere in the charge, unlike the maximum charge current)
    entry = _first_index_in_segments(np.flatnonzero(in_band), s_c, s_c + n_c)
    i_cc = np.full(len(n_c), np.nan)
    i_cc[entry >= 0] = i_c[entry[entry >= 0]]
    with np.errstate(invalid="ignore"):
        cv_c = in_band & (i_c < np.repeat(config.cv_current_fraction * i_cc, n_c))
    # a CV interval joins two consecutive samples that are both CV (same cycle: both in segment)
    cv_pair = np.zeros(chg_idx.size, dtype=bool)
    if chg_idx.size > 1:
        np.logical_and(cv_c[1:], cv_c[:-1], out=cv_pair[:-1])
        cv_pair[:-1] &= chg_idx[1:] == chg_idx[:-1] + 1
    w_c, imid_c = w_chg[chg_idx], i_mid[chg_idx]  # gathered once, shared with _charge_shape
    w_cv = w_c * cv_pair
    t_cv = _seg_sum(w_cv, s_c, n_c)
    q_cv = _seg_sum(imid_c * w_cv, s_c, n_c) / 3600.0
    out["cc_charge_time_s"] = np.where(has_chg, t_chg - t_cv, np.nan)
    out["cv_charge_time_s"] = np.where(has_chg, t_cv, np.nan)
    out["cc_charge_capacity_ah"] = np.where(has_chg, q_chg - q_cv, np.nan)
    out["cv_charge_capacity_ah"] = np.where(has_chg, q_cv, np.nan)

    out.update(_charge_shape(v_c, i_c, w_c, imid_c, s_c, n_c, cv_c, i_cc, config))

    # --- resistances (resistance_dcir_ohm: cell-level, see `_dcir`) ---------------------------
    ir = cell.ir
    finite_ir = None if _all_finite(ir) else np.isfinite(ir)  # None: all finite, the usual case
    if finite_ir is None or finite_ir.any():
        report = np.empty(n, dtype=bool)
        np.not_equal(ir[1:], ir[:-1], out=report[1:])
        if finite_ir is None:
            report[starts] = True  # a cycle's first report always counts
        else:
            report[1:] &= finite_ir[1:]
            report[starts] = finite_ir[starts]
        idx = np.flatnonzero(report)
        cycle_of_report = np.repeat(np.arange(n_cyc), _count_in_segments(idx, starts, ends))
        out["resistance_cycler_ohm"] = _group_median(cycle_of_report, ir[idx], n_cyc)
    else:
        out["resistance_cycler_ohm"] = np.full(n_cyc, np.nan)

    # --- charge-curve statistics ---------------------------------------------------------------
    bins = config.entropy_bins
    t_c = t[chg_idx]
    with np.errstate(invalid="ignore", divide="ignore"):
        t_d = t_c - np.repeat(_seg_sum(t_c, s_c, n_c) / n_c, n_c)
    t_ss = _seg_sum(t_d * t_d, s_c, n_c)
    # each charge sample's histogram counter block, shared by the voltage and current entropies
    bin_offset = np.repeat(np.arange(len(n_c), dtype=np.int64) * (bins + 1), n_c)
    for prefix, x in (("charge_voltage", v_c), ("charge_current", i_c)):
        mean, std, skew, kurt, d = _moments(x, s_c, n_c)
        unit = "_v" if prefix == "charge_voltage" else "_a"
        if prefix == "charge_current":
            out["charge_current_mean_a"] = mean
        out[f"{prefix}_std{unit}"] = std
        out[f"{prefix}_skewness"] = skew
        out[f"{prefix}_kurtosis"] = kurt
        with np.errstate(invalid="ignore", divide="ignore"):
            slope = np.where(t_ss > 0, _seg_sum(t_d * d, s_c, n_c) / t_ss, np.nan)
        slope[n_c < 2] = np.nan
        out[f"{prefix}_slope{unit}_per_s"] = slope
        out[f"{prefix}_entropy"] = _entropy(x, s_c, n_c, bins, bin_offset, vmax if x is v_c else None)
    return out


def _sums_before(x: np.ndarray, begin: np.ndarray, positions: np.ndarray, ufunc=np.add) -> np.ndarray:
    """sum (or another ufunc's reduction) of x[begin[k]:positions[k]] per k (begin <= positions;
    an empty range gives 0), in one reduceat over the interleaved bounds: a cumsum over all of x
    is several times slower, and only these few prefix sums are ever read."""
    if positions.size == 0:
        return np.zeros(0)
    sums = ufunc.reduceat(x, np.stack([begin, positions], axis=1).ravel())[::2]
    sums[positions == begin] = 0.0  # reduceat gives x[begin] for an empty range
    return sums


def _crossing(level, v, s_c, n_c, allowed):
    """Per segment, where the running maximum of `v` first reaches `level`: (segments found,
    sample a before the crossing, fraction of the way from a to a + 1). Not found when it never
    does, already starts at/above it, or the crossing sample is not `allowed`."""
    # the running maximum first reaches the level at the first sample at or above it, b; there
    # it is v[b], at a = b - 1 the largest voltage before b: no running maximum over all samples
    first = _first_index_in_segments(np.flatnonzero(v >= level), s_c, s_c + n_c)
    ok = first > s_c  # found (>= 0) and not the segment's first sample
    ok &= allowed[np.maximum(first, 0)]
    b = first[ok]
    max_a = _sums_before(v, s_c[ok], b, np.maximum)
    return ok, b - 1, (level - max_a) / (v[b] - max_a)  # max_a < level <= v[b]


def _charge_shape(v_c, i_c, w, imid_c, s_c, n_c, cv_c, i_cc, config: FeatureConfig) -> dict:
    """charge_start_voltage_v, cc_window_*, cv_current_decay_s (module docstring), from the
    charge samples compressed per cycle (segments s_c, n_c): their voltage, current, charge
    interval weight and interval current."""
    n_cyc = len(n_c)
    has = n_c > 0
    out = {name: np.full(n_cyc, np.nan) for name in (
        "charge_start_voltage_v", "cc_window_time_s", "cc_window_charge_ah", "cv_current_decay_s")}
    if v_c.size == 0:
        return out
    out["charge_start_voltage_v"][has] = v_c[s_c[has]]
    # Integrated charge time and Ah since the segment's first charge sample, at a sample = the
    # intervals before it (unlogged gaps have weight 0); read only at the crossings.
    dq = imid_c * w / 3600.0
    lo, hi = sorted(float(x) for x in config.charge_window_v)
    cc = ~cv_c
    window = {}
    for level in (lo, hi):
        ok, a, frac = _crossing(level, v_c, s_c, n_c, cc)
        for name, x in (("time", w), ("charge", dq)):
            value = np.full(n_cyc, np.nan)
            value[ok] = _sums_before(x, s_c[ok], a) + frac * x[a]  # x[a]: the interval a -> a + 1
            window[name, level] = value
    out["cc_window_time_s"] = window["time", hi] - window["time", lo]
    out["cc_window_charge_ah"] = window["charge", hi] - window["charge", lo]
    # CV current decay: first CV sample at or below each fraction of the CC current
    f0, f1 = sorted((float(x) for x in config.cv_decay_fractions), reverse=True)
    cv_idx = np.flatnonzero(cv_c)  # only CV samples can be hits: compare those alone
    i_cv = i_c[cv_idx]
    i_ref = np.repeat(i_cc, _count_in_segments(cv_idx, s_c, s_c + n_c))  # CC current of each one's cycle
    times = []
    for fraction in (f0, f1):
        with np.errstate(invalid="ignore"):
            hit = cv_idx[np.flatnonzero(i_cv <= fraction * i_ref)]
        first = _first_index_in_segments(hit, s_c, s_c + n_c)
        found = first >= 0
        at = np.full(n_cyc, np.nan)
        at[found] = _sums_before(w, s_c[found], first[found])
        times.append(at)
    with np.errstate(invalid="ignore"):
        decay = (times[1] - times[0]) / np.log(f0 / f1)
    out["cv_current_decay_s"] = np.where(decay > 0, decay, np.nan)
    return out


def _dcir(arrays: _Arrays, nominal_capacity_ah: float | None, config: FeatureConfig) -> np.ndarray:
    """resistance_dcir_ohm per cycle (rule in the module docstring).

    Done on the whole cell, in chunks that overlap by one sample, so that a step between two
    cycles (the rest ending one cycle -> the charge opening the next; booked to the later one)
    is found whatever the block boundaries.
    """
    step_thr = config.dcir_min_current_step_a
    if nominal_capacity_ah:
        step_thr = max(step_thr, config.dcir_min_current_step_c_rate * nominal_capacity_ah)
    t, v, i, step_index = arrays.t, arrays.v, arrays.i, arrays.step_index
    n = len(t)
    chunk = max(1, int(config.block_samples))
    later, values = [], []
    for a in range(0, max(n - 1, 0), chunk):
        b = min(a + chunk + 1, n)
        i_part = i[a:b]
        di = i_part[1:] - i_part[:-1]
        k = np.flatnonzero(np.abs(di) > step_thr) + a  # few: the other conditions on them only
        dt = t[k + 1] - t[k]
        gap = (step_index[k + 1] != step_index[k]) & (dt > arrays.gap_s)
        k = k[(dt <= config.dcir_max_interval_s) & ~gap]
        r = (v[k + 1] - v[k]) / (i[k + 1] - i[k])
        physical = r > 0  # the voltage moves with the current
        later.append(k[physical] + 1)
        values.append(r[physical])
    if not later:
        return np.full(arrays.n_cycles, np.nan)
    later = np.concatenate(later)
    cycle = np.searchsorted(arrays.starts, later, side="right") - 1
    return _group_median(cycle, np.concatenate(values), arrays.n_cycles)


def _attach_impedance(cell: _Arrays, impedance: pd.DataFrame | None, config: FeatureConfig):
    n_cyc = cell.n_cycles
    re = np.full(n_cyc, np.nan)
    rct = np.full(n_cyc, np.nan)
    if impedance is None or len(impedance) == 0 or n_cyc == 0:
        return re, rct
    imp = impedance
    if "cell_id" in imp.columns and imp["cell_id"].nunique() > 1:
        imp = imp[imp["cell_id"].astype(str) == cell.cell_id]
    tau = imp["time_s"].to_numpy(dtype="float64", na_value=np.nan)
    values = {
        name: imp[name].to_numpy(dtype="float64", na_value=np.nan) if name in imp else np.full(len(imp), np.nan)
        for name in ("re_ohm", "rct_ohm")
    }
    keep = np.isfinite(tau)
    tau = tau[keep]
    if tau.size == 0:
        return re, rct
    start = cell.t[cell.starts]
    end = cell.t[cell.ends - 1]
    order = np.argsort(start, kind="stable")
    s_sorted, e_sorted = start[order], end[order]
    j = np.clip(np.searchsorted(s_sorted, tau, side="right") - 1, 0, n_cyc - 1)
    d_left = np.where(tau >= s_sorted[j], np.maximum(tau - e_sorted[j], 0.0), s_sorted[j] - tau)
    nxt = np.minimum(j + 1, n_cyc - 1)
    d_right = np.where(nxt != j, np.abs(s_sorted[nxt] - tau), np.inf)
    pick = np.where(d_right < d_left, nxt, j)
    dist = np.minimum(d_left, d_right)
    target = order[pick]
    ok = np.ones(len(tau), dtype=bool)
    if config.impedance_max_distance_s is not None:
        ok = dist <= config.impedance_max_distance_s
    result = []
    for name in ("re_ohm", "rct_ohm"):
        x = values[name][keep]
        good = ok & np.isfinite(x)
        total = np.bincount(target[good], weights=x[good], minlength=n_cyc)
        count = np.bincount(target[good], minlength=n_cyc)
        with np.errstate(invalid="ignore", divide="ignore"):
            result.append(np.where(count > 0, total / np.maximum(count, 1), np.nan))
    return result[0], result[1]


# ------------------------------------------------------------------------------------------
# Q(V) curves
# ------------------------------------------------------------------------------------------


@dataclass
class _Curves:
    grid: np.ndarray  # (m,) ascending voltages
    q: np.ndarray  # (n_cycles, m) Q_n(V), NaN where undefined
    first_defined: np.ndarray  # (n_cycles,) Q(V) is defined from this grid column on (m: nowhere)
    covered: np.ndarray  # (n_cycles,) Q(V) defined on the whole grid
    reference: int  # group index of the reference cycle, -1 if none
    complete: np.ndarray  # (n_cycles,) complete discharge


@dataclass
class _Runs:
    """The main discharge run of every cycle, its samples compressed in cycle order."""

    has: np.ndarray  # (n_cycles,) the cycle has a main run of >= min_discharge_samples
    capacity_ah: np.ndarray  # (n_cycles,) Ah moved in the run (NaN without one)
    lengths: np.ndarray  # (n_cycles,) samples in the run (0 without one)
    v: np.ndarray  # voltage of all runs' samples, run after run
    q_ah: np.ndarray  # Ah discharged since the run's first sample, per run sample
    early_voltage_v: np.ndarray  # (n_cycles,) voltage early_discharge_s into the run
    early_temperature_rise_c: np.ndarray  # (n_cycles,) temperature then minus at the run's start

    @staticmethod
    def concat(parts: list[_Runs]) -> _Runs:
        if len(parts) == 1:
            return parts[0]
        return _Runs(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                       ("has", "capacity_ah", "lengths", "v", "q_ah", "early_voltage_v",
                        "early_temperature_rise_c")))


def _main_discharge_runs(cell: _Cell, config: FeatureConfig) -> _Runs:
    """Per cycle: the run of consecutive discharge samples that moves the most Ah."""
    n_cyc = cell.n_cycles
    dis_idx = cell.dis_idx
    nothing = _Runs(np.zeros(n_cyc, bool), np.full(n_cyc, np.nan), np.zeros(n_cyc, np.int64),
                    np.zeros(0), np.zeros(0), np.full(n_cyc, np.nan), np.full(n_cyc, np.nan))
    if dis_idx.size == 0:
        return nothing
    # a run breaks where the next discharge sample is not the next sample, or the cycle changes
    # (at the first discharge sample at or after each cycle start)
    brk = np.empty(dis_idx.size, dtype=bool)
    brk[0] = True
    np.not_equal(dis_idx[1:], dis_idx[:-1] + 1, out=brk[1:])
    cycle_first = np.searchsorted(dis_idx, cell.starts)
    brk[cycle_first[cycle_first < dis_idx.size]] = True
    rs = np.flatnonzero(brk)  # run starts in compressed coordinates
    run_len = np.diff(np.append(rs, dis_idx.size))
    # Ah of interval j -> j+1 for j a run sample whose successor is in the same run
    w_dis = cell.w[dis_idx]  # interval weights inside the runs (gathered once)
    w_dis[rs[1:] - 1] = 0.0  # the interval that leaves a run
    w_dis[-1] = 0.0
    dq = cell.i_mid[dis_idx] * w_dis * (-1.0 / 3600.0)
    run_q = np.add.reduceat(dq, rs)
    run_code = np.searchsorted(cell.starts, dis_idx[rs], side="right") - 1
    # best run per cycle: sort by (code, Ah) and take the last of each code
    order = np.lexsort((run_q, run_code))
    last_of_code = np.ones(order.size, dtype=bool)
    last_of_code[:-1] = run_code[order][1:] != run_code[order][:-1]
    best = order[last_of_code]
    best = best[run_len[best] >= max(config.min_discharge_samples, 2)]
    if best.size == 0:
        return nothing
    best.sort()  # runs in cycle (array) order
    has = np.zeros(n_cyc, dtype=bool)
    has[run_code[best]] = True
    capacity = np.full(n_cyc, np.nan)
    capacity[run_code[best]] = run_q[best]
    lengths = np.zeros(n_cyc, dtype=np.int64)
    lengths[run_code[best]] = run_len[best]
    # compressed positions of the chosen runs' samples
    sel_len = run_len[best]
    total = int(sel_len.sum())
    sel_starts = _starts_of(sel_len)
    pos = np.arange(total) - np.repeat(sel_starts - rs[best], sel_len)
    q_int = dq[pos]
    # Q at a sample = sum of the run's intervals before it
    csum = np.cumsum(q_int)
    q = np.empty(total)
    q[0] = 0.0
    q[1:] = csum[:-1]
    q -= np.repeat(q[sel_starts], sel_len)
    samples = dis_idx[pos]
    v_run = cell.v[samples]
    # early point: early_discharge_s of integrated discharge time into the run (interpolated
    # between the samples around it; NaN when the run ends before, i.e. never near the cut-off)
    w_run = w_dis[pos]
    t_run = np.cumsum(w_run) - w_run
    t_run -= np.repeat(t_run[sel_starts], sel_len)
    temp_run = cell.temp[samples]
    early_v = np.full(n_cyc, np.nan)
    early_rise = np.full(n_cyc, np.nan)
    first = _first_index_in_segments(np.flatnonzero(t_run >= config.early_discharge_s), sel_starts,
                                     sel_starts + sel_len)
    ok = first > sel_starts
    b = first[ok]
    a = b - 1
    frac = (config.early_discharge_s - t_run[a]) / (t_run[b] - t_run[a])
    rows = run_code[best][ok]
    early_v[rows] = v_run[a] + frac * (v_run[b] - v_run[a])
    with np.errstate(invalid="ignore"):
        early_rise[rows] = temp_run[a] + frac * (temp_run[b] - temp_run[a]) - temp_run[sel_starts[ok]]
    return _Runs(has, capacity, lengths, v_run, q, early_v, early_rise)


def complete_discharge_mask(
    run_capacity_ah: np.ndarray,
    run_min_voltage_v: np.ndarray,
    nominal_capacity_ah: float | None = None,
    config: FeatureConfig = FeatureConfig(),
) -> np.ndarray:
    """Which cycles have a complete discharge (rule in `FeatureConfig`, per cycle arrays).

    `run_capacity_ah` / `run_min_voltage_v`: the main discharge run's Ah and lowest voltage per
    cycle (NaN where the cycle has none). Complete = enough Ah (fraction of the nominal capacity,
    or of the cell's 90th percentile of run capacities when the nominal is unknown) and down to
    within `complete_cutoff_tolerance_v` of the cell's cut-off (10th percentile of the runs'
    lowest voltages).
    """
    q = np.asarray(run_capacity_ah, dtype="float64")
    vmin = np.asarray(run_min_voltage_v, dtype="float64")
    has = np.isfinite(q) & np.isfinite(vmin)
    if not has.any():
        return np.zeros(len(q), dtype=bool)
    q_ref = nominal_capacity_ah if nominal_capacity_ah else float(np.percentile(q[has], 90))
    cutoff = float(np.percentile(vmin[has], 10))
    with np.errstate(invalid="ignore"):
        return (
            has
            & (q >= config.complete_min_capacity_fraction * q_ref)
            & (vmin <= cutoff + config.complete_cutoff_tolerance_v)
        )


def _discharge_curves(
    cycles: np.ndarray, runs: _Runs, nominal_capacity_ah: float | None, config: FeatureConfig
) -> _Curves | None:
    """Q(V) of every cycle's main discharge on the cell's grid (see the module docstring)."""
    n_cyc = len(cycles)
    has_run, lengths = runs.has, runs.lengths
    if not has_run.any():
        return None
    q_s = runs.q_ah
    v_s = runs.v
    run_of_sample = np.repeat(np.arange(n_cyc), lengths)
    # Running minimum of the voltage inside each run, all runs in one accumulate: shifting run r
    # by -r*span puts it below everything before it, so the minimum restarts at each run.
    vlo, vhi = float(v_s.min()), float(v_s.max())
    span = 2.0 * (vhi - vlo) + 1.0
    acc = np.minimum.accumulate(v_s - run_of_sample * span)
    key = -acc  # non-decreasing over all runs: (run, falling voltage)
    rstarts = _starts_of(lengths)
    first_v = np.full(n_cyc, np.nan)
    low_v = np.full(n_cyc, np.nan)
    first_v[has_run] = v_s[rstarts[has_run]]
    last = rstarts[has_run] + lengths[has_run] - 1
    low_v[has_run] = acc[last] + np.flatnonzero(has_run) * span

    complete = complete_discharge_mask(runs.capacity_ah, low_v, nominal_capacity_ah, config)
    reference = -1
    if config.reference_cycle is not None:
        hit = np.flatnonzero((cycles == config.reference_cycle) & has_run)
        if hit.size:
            reference = int(hit[0])
    if reference < 0:
        candidates = np.flatnonzero(complete)
        if candidates.size:
            rank = config.reference_complete_rank
            reference = int(candidates[rank - 1] if candidates.size >= rank else candidates[0])
    none = _Curves(np.zeros(0), np.zeros((n_cyc, 0)), np.zeros(n_cyc, np.int64), np.zeros(n_cyc, bool),
                   reference, complete)
    if config.voltage_window_v is not None:
        g_lo, g_hi = sorted(float(x) for x in config.voltage_window_v)
    elif reference >= 0:
        sl = slice(rstarts[reference], rstarts[reference] + lengths[reference])
        q_ref, v_ref = q_s[sl], acc[sl] + reference * span
        q_tot = q_ref[-1]
        lo_frac, hi_frac = config.grid_capacity_quantiles
        # voltage at a discharged fraction of the reference (Q non-decreasing along the run)
        g_hi = float(np.interp(lo_frac * q_tot, q_ref, v_ref))
        g_lo = float(np.interp(hi_frac * q_tot, q_ref, v_ref))
    else:
        return none
    m = int(config.n_grid_points)
    if not (g_hi > g_lo) or m < 3:
        return none
    grid = np.linspace(g_lo, g_hi, m)
    rows = np.flatnonzero(has_run)
    # queries run after run and close to the previous one (the grid ascends within a run: the
    # key steps back by about a sample) let np.interp's search start from its previous hit
    # instead of bisecting: several times faster
    xq = rows[:, None] * span - grid[None, :]
    q_rows = np.interp(xq.ravel(), key, q_s).reshape(len(rows), m)
    if rows.size == n_cyc:
        q = q_rows
    else:
        q = np.full((n_cyc, m), np.nan)
        q[rows] = q_rows
    # per row, the grid above the run's first voltage is a column suffix (nothing discharged yet:
    # Q = 0), the grid below its lowest voltage a column prefix (the run never got that low: NaN)
    first_above = np.searchsorted(grid, first_v[rows], side="right")
    first_defined = np.full(n_cyc, m, dtype=np.int64)
    first_defined[rows] = np.searchsorted(grid, low_v[rows], side="left")
    _fill_row_ranges(q, rows, first_above, m, 0.0)
    _fill_row_ranges(q, rows, 0, first_defined[rows], np.nan)
    return _Curves(grid, q, first_defined, first_defined == 0, reference, complete)


def _fill_row_ranges(a: np.ndarray, rows: np.ndarray, lo, hi, value) -> None:
    """a[rows[k], lo[k]:hi[k]] = value (or value[k]) for every k, touching only those elements."""
    lengths = np.maximum(np.broadcast_to(hi, rows.shape) - lo, 0)
    total = int(lengths.sum())
    if total == 0:
        return
    cols = np.arange(total) + np.repeat(lo - _starts_of(lengths), lengths)
    a[np.repeat(rows, lengths), cols] = np.repeat(value, lengths) if np.ndim(value) else value


def _local_slope(y: np.ndarray, half: int) -> np.ndarray:
    """Least-squares slope (per grid step) of each row over a window of +-half points.

    At interior points this is the Savitzky-Golay first derivative of polyorder 1 (and 2: for a
    symmetric window the quadratic term does not change the centre slope); near the ends the
    window is cut to the available points. O(m) per row from prefix sums.
    """
    r, m = y.shape
    idx = np.arange(m)
    lo = np.maximum(idx - half, 0)
    hi = np.minimum(idx + half, m - 1) + 1  # exclusive
    cnt = (hi - lo).astype("float64")
    jc = idx - 0.5 * (m - 1)  # centred index keeps the prefix sums small

    inner = slice(half, m - half)  # full windows
    edges = np.r_[0:half, m - half : m]

    def window_sums(values):
        prefix = np.zeros((values.shape[0], m + 1))
        np.cumsum(values, axis=1, out=prefix[:, 1:])
        out = np.empty((values.shape[0], m))
        np.subtract(prefix[:, 2 * half + 1 :], prefix[:, : m - 2 * half], out=out[:, inner])
        out[:, edges] = prefix[:, hi[edges]] - prefix[:, lo[edges]]  # cut windows at the ends
        return out

    s_y = window_sums(y)
    s_jy = window_sums(y * jc)
    c1 = np.concatenate([[0.0], np.cumsum(jc)])
    c2 = np.concatenate([[0.0], np.cumsum(jc * jc)])
    s_j = c1[hi] - c1[lo]
    s_jj = c2[hi] - c2[lo]
    var = s_jj - s_j * s_j / cnt
    # (s_jy - s_j * (s_y / cnt)) / var, in place
    s_y /= cnt
    s_y *= s_j
    s_jy -= s_y
    s_jy /= var
    return s_jy


def _dqdv_rows(curves: _Curves, config: FeatureConfig):
    """(rows, -dQ/dV of those rows on the grid, their first defined column), or None: the rows
    whose Q(V) spans a whole window. Columns before the first defined one hold padding, not
    values (callers mask them)."""
    q = curves.q
    m = q.shape[1]
    if m < 3:
        return None
    spacing = curves.grid[1] - curves.grid[0]
    half = max(1, int(round(0.5 * config.dqdv_window_v / spacing)))
    rows = np.flatnonzero(m - curves.first_defined >= 2 * half + 1)
    if rows.size == 0:
        return None
    sub = q[rows]
    # the defined part of a row runs from the top of the grid down to the run's lowest voltage:
    # pad the undefined low end with the lowest defined value
    first_ok = curves.first_defined[rows]
    local = np.arange(rows.size)
    _fill_row_ranges(sub, local, 0, first_ok, sub[local, first_ok])
    res = _local_slope(sub, half)
    res /= -spacing  # -dQ/dV
    return rows, res, first_ok


def _dqdv(curves: _Curves, config: FeatureConfig) -> np.ndarray:
    """-dQ/dV on the grid (Ah/V, positive on discharge), NaN where Q(V) is undefined."""
    out = np.full(curves.q.shape, np.nan)
    found = _dqdv_rows(curves, config)
    if found is not None:
        rows, res, first_ok = found
        _fill_row_ranges(res, np.arange(rows.size), 0, first_ok, np.nan)
        out[rows] = res
    return out


def _curve_features(curves: _Curves | None, config: FeatureConfig, n_cyc: int) -> dict:
    out = {c: np.full(n_cyc, np.nan) for c in DELTA_Q_COLUMNS + DQDV_COLUMNS}
    if curves is None or curves.q.shape[1] == 0:
        return out
    ref = curves.reference
    if ref >= 0 and curves.covered[ref]:
        rows = np.flatnonzero(curves.covered)
        dq = curves.q[rows]
        dq -= curves.q[ref][None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            out["delta_q_min_ah"][rows] = dq.min(axis=1)
            mean = dq.mean(axis=1)
            d = dq
            d -= mean[:, None]  # in place: dq is not needed any more
            d2 = d * d
            m2 = d2.mean(axis=1)
            m3 = np.multiply(d2, d, out=d).mean(axis=1)
            m4 = np.multiply(d2, d2, out=d).mean(axis=1)
            flat = ~(m2 > 1e-24)  # identical curves: no shape
            out["delta_q_mean_ah"][rows] = mean
            out["delta_q_variance_ah2"][rows] = m2
            out["delta_q_skewness"][rows] = np.where(flat, np.nan, m3 / m2**1.5)
            out["delta_q_kurtosis"][rows] = np.where(flat, np.nan, m4 / (m2 * m2) - 3.0)
    found = _dqdv_rows(curves, config)
    if found is not None:
        rows, ic, first_ok = found
        local = np.arange(rows.size)
        _fill_row_ranges(ic, local, 0, first_ok, -np.inf)  # the peak is on the defined part
        peak = np.argmax(ic, axis=1)
        out["dqdv_peak_voltage_v"][rows] = curves.grid[peak]
        out["dqdv_peak_height_ah_per_v"][rows] = ic[local, peak]
    return out


def grid_curve_features(grid: np.ndarray, q: np.ndarray, reference: int, config: FeatureConfig) -> dict[str, np.ndarray]:
    """The delta_q_* and dqdv_* columns of cycles whose Q(V) is already on a grid, as a
    summary-level source gives it (Severson's Qdlin arrays): `grid` (m,) ascending voltages,
    `q` (n_cycles, m) discharge capacity at each, NaN where undefined (a prefix of low
    voltages the discharge never reached); `reference` = row of Q_ref (-1: no delta-Q).
    The same computation as for curves made from samples."""
    grid = np.asarray(grid, dtype=np.float64)
    q = np.array(q, dtype=np.float64)  # a copy: the statistics work in place
    if grid.ndim != 1 or q.ndim != 2 or q.shape[1] != grid.size or not (np.diff(grid) > 0).all():
        raise ValueError(f"grid must be ascending (m,) and q (n_cycles, m); got {grid.shape} and {q.shape}")
    defined = np.isfinite(q)
    # first column from which the row is defined to the top of the grid
    tail_ok = np.flip(np.logical_and.accumulate(np.flip(defined, axis=1), axis=1), axis=1)
    first_defined = np.where(tail_ok.any(axis=1), np.argmax(tail_ok, axis=1), grid.size).astype(np.int64)
    covered = first_defined == 0
    curves = _Curves(grid, q, first_defined, covered, int(reference), covered.copy())
    return _curve_features(curves, config, q.shape[0])


# ------------------------------------------------------------------------------------------
# Public API
# ------------------------------------------------------------------------------------------


def _split_cells(samples: pd.DataFrame):
    """Yield (cell_id, frame) per cell; one cell (the normal case) costs no copy."""
    col = samples["cell_id"]
    if isinstance(col.dtype, pd.CategoricalDtype):
        codes = col.cat.codes.to_numpy()
        single = codes.size == 0 or (codes == codes[0]).all()
    else:
        values = col.to_numpy()
        single = values.size == 0 or (values == values[0]).all()
    if single:
        yield samples
        return
    for _, frame in samples.groupby(col.astype(str), sort=True, observed=True):
        yield frame


# what classify_cycles reads of the per-cycle table
_CLASS_INPUTS = ("cell_id", "cycle_number", *CLASS_INPUT_COLUMNS)


def _empty_features() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in CYCLE_FEATURE_COLUMNS})
    return frame.astype({"cell_id": object, "cycle_number": "int64", "n_samples": "int64",
                         **{c: object for c in CLASS_COLUMNS}})


def _rest_threshold_a(arrays: _Arrays, config: FeatureConfig) -> float:
    """The cell's rest threshold: the configured one, unless the cell's working |current| (the
    median |current| of the samples its reader typed charge or discharge, from a strided subsample
    of <= 200k samples) is so small that it would call whole steps rest. The reader's step types
    say which samples are active, so a cell that rests most of the time (calendar ageing) is not
    judged by its rest noise; a cell with no active sample, or whose working current reaches
    0.1 A, keeps the configured 1 mA."""
    stride = max(1, len(arrays.i) // 200_000)
    step_type, i = arrays.step_type[::stride], arrays.i[::stride]
    active = np.abs(i[(step_type == _CHARGE) | (step_type == _DISCHARGE)])
    if not active.size:
        return config.rest_current_threshold_a
    scaled = max(config.rest_current_floor_a, config.rest_current_share * float(np.median(active)))
    return min(config.rest_current_threshold_a, scaled)


def _cell_pass(frame, nominal_capacity_ah, config, summary: bool = True, runs: bool = True):
    """Load one cell and run the block-wise passes: (arrays, summary dict or None, runs)."""
    arrays = _load(frame, config)
    threshold = _rest_threshold_a(arrays, config)
    if threshold != config.rest_current_threshold_a:
        config = dataclasses.replace(config, rest_current_threshold_a=threshold)
    parts, run_parts = [], []
    for cell in _blocks(arrays, config.block_samples):
        if summary:
            parts.append(_summary(cell, nominal_capacity_ah, config))
        if runs:
            run_parts.append(_main_discharge_runs(cell, config))
    values = None
    if summary:
        values = parts[0] if len(parts) == 1 else {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        values["resistance_dcir_ohm"] = _dcir(arrays, nominal_capacity_ah, config)
    return arrays, values, (_Runs.concat(run_parts) if run_parts else None)


def _cell_feature_frame(frame, nominal_capacity_ah, impedance, config) -> pd.DataFrame:
    arrays, values, runs = _cell_pass(frame, nominal_capacity_ah, config)
    n_cyc = arrays.n_cycles
    values["re_ohm"], values["rct_ohm"] = _attach_impedance(arrays, impedance, config)
    values["discharge_early_voltage_v"] = runs.early_voltage_v
    values["discharge_early_temperature_rise_c"] = runs.early_temperature_rise_c
    curves = _discharge_curves(arrays.cycles, runs, nominal_capacity_ah, config) if config.curve_features else None
    values.update(_curve_features(curves, config, n_cyc))
    values["cell_id"] = np.full(n_cyc, arrays.cell_id, dtype=object)
    values["cycle_number"] = arrays.cycles
    # the classes need a few columns only; the frame is then built once, in column order
    classes = classify_cycles(pd.DataFrame({c: values[c] for c in _CLASS_INPUTS}))
    values.update({c: classes[c].to_numpy() for c in CLASS_COLUMNS})
    return pd.DataFrame({c: values[c] for c in CYCLE_FEATURE_COLUMNS})


def compute_cycle_features(
    samples: pd.DataFrame,
    nominal_capacity_ah: float | None = None,
    impedance: pd.DataFrame | None = None,
    config: FeatureConfig = FeatureConfig(),
) -> pd.DataFrame:
    """One row per (cell_id, cycle_number) with `CYCLE_FEATURE_COLUMNS` (see module docstring).

    `samples`: validated canonical samples of one cell (several cells are handled one after the
    other), rows in time order. `nominal_capacity_ah` sets the DCIR step threshold's C-rate part
    and the complete-discharge rule. `impedance`: the reader's impedance frame (or None).
    """
    if len(samples) == 0:
        return _empty_features()
    parts = [
        _cell_feature_frame(frame, nominal_capacity_ah, impedance, config) for frame in _split_cells(samples)
    ]
    if len(parts) == 1:
        return parts[0]  # already in cycle order
    return pd.concat(parts, ignore_index=True)


def complete_discharge_cycles(
    samples: pd.DataFrame,
    nominal_capacity_ah: float | None = None,
    config: FeatureConfig = FeatureConfig(),
) -> np.ndarray:
    """cycle_number of one cell's complete discharge cycles (rule in `FeatureConfig`)."""
    if len(samples) == 0:
        return np.zeros(0, dtype="int64")
    arrays, _, runs = _cell_pass(samples, nominal_capacity_ah, config, summary=False)
    curves = _discharge_curves(arrays.cycles, runs, nominal_capacity_ah, config)
    if curves is None:
        return np.zeros(0, dtype="int64")
    return arrays.cycles[curves.complete]


def reference_cycle_number(
    samples: pd.DataFrame,
    nominal_capacity_ah: float | None = None,
    config: FeatureConfig = FeatureConfig(),
) -> int | None:
    """cycle_number of the dQ(V) reference cycle of one cell's samples (None if there is none)."""
    if len(samples) == 0:
        return None
    arrays, _, runs = _cell_pass(samples, nominal_capacity_ah, config, summary=False)
    curves = _discharge_curves(arrays.cycles, runs, nominal_capacity_ah, config)
    if curves is None or curves.reference < 0:
        return None
    return int(arrays.cycles[curves.reference])


def compute_curves(
    samples: pd.DataFrame,
    config: FeatureConfig = FeatureConfig(),
    cycles=None,
    nominal_capacity_ah: float | None = None,
) -> pd.DataFrame:
    """Long-format Q(V), dQ(V) and dQ/dV curves of selected cycles, for plotting.

    Columns `CURVE_COLUMNS`: cell_id, cycle_number, curve (q_of_v | delta_q | dqdv), voltage_v
    (the cell's grid), value (Ah, Ah, Ah/V). Cycles: `cycles` if given, else
    `config.curve_cycles`, else every `config.curve_every`-th cycle (from the first) plus the
    reference cycle. Points where a curve is undefined are left out.
    """
    frames = []
    for frame in _split_cells(samples) if len(samples) else []:
        cell, _, runs = _cell_pass(frame, nominal_capacity_ah, config, summary=False)
        curves = _discharge_curves(cell.cycles, runs, nominal_capacity_ah, config)
        if curves is None or curves.q.shape[1] == 0:
            continue
        wanted = cycles if cycles is not None else config.curve_cycles
        if wanted is not None:
            pick = np.flatnonzero(np.isin(cell.cycles, np.asarray(list(wanted))))
        else:
            every = max(1, int(config.curve_every))
            pick = np.arange(0, cell.n_cycles, every)
            if curves.reference >= 0:
                pick = np.union1d(pick, [curves.reference])
        if pick.size == 0:
            continue
        ic = _dqdv(curves, config)
        m = curves.grid.size
        blocks = {"q_of_v": curves.q[pick]}
        if curves.reference >= 0 and curves.covered[curves.reference]:
            blocks["delta_q"] = curves.q[pick] - curves.q[curves.reference][None, :]
        blocks["dqdv"] = ic[pick]
        for name, block in blocks.items():
            value = block.ravel()
            keep = np.isfinite(value)
            frames.append(
                pd.DataFrame(
                    {
                        "cell_id": cell.cell_id,
                        "cycle_number": np.repeat(cell.cycles[pick], m)[keep],
                        "curve": name,
                        "voltage_v": np.tile(curves.grid, pick.size)[keep],
                        "value": value[keep],
                    }
                )
            )
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(
            CURVE_COLUMNS, (object, "int64", object, "float64", "float64"))})
    return pd.concat(frames, ignore_index=True)[CURVE_COLUMNS]
