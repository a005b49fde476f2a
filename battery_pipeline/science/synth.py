"""The project's own battery simulator: a seeded, reproducible fleet of cycled cells.

It produces the bundled demo data (canonical `CellCycleSample` frames, one Parquet file per cell)
together with the ground truth the pipeline's later stages are judged against: the true capacity,
state of health (SOH) and resistance of every cycle, the knee and end of life of every cell, and
the few faults that were injected on purpose for the validation stage to catch.

Why simulate at all: the real public datasets have no ground truth for capacity or faults, and are
too large to bundle. A small physical model gives data that looks like a cycler export to every
stage (noise, relaxation, heating, fade with a knee) while we know what the right answer is.

Model (per cell; equations vectorised over cycles and samples, never a Python loop per sample):

* Equivalent circuit (Plett, *Battery Management Systems* vol. 1, 2015): terminal voltage
  ``V = OCV(z) + v1 + I*R0(z)`` with one RC pair ``dv1/dt = -v1/tau1 + I/C1`` (``tau1 = R1*C1``)
  and ``dz/dt = I / (3600*Q)``. Current is positive on charge. With constant current the RC state
  and the SOC have closed forms, so every sample is evaluated directly at its time. R0 rises
  towards empty, ``R0(z) = R0*(1 + beta*exp(-z/0.03))`` (beta 1.5 NMC, 3 LFP), as measured
  DCIR-vs-SOC curves do; it gives the end-of-discharge overpotential that the rest then relaxes.
  One RC pair has no solid-diffusion branch, so the rebound after discharge (~0.2-0.4 V) is
  smaller than a real cell's; a second, slow RC pair would fix that at the cost of the closed
  forms below.
* OCV(z): a "combined model" family curve: polynomial + a tanh staging step + exponential end
  terms, ``OCV = p(z) + a*tanh((z-zc)/w) - A0*exp(-z/s0) + A1*exp(-(1-z)/s1)``. A0 and A1 are
  solved so that OCV(0) = Vmin and OCV(1) = Vmax exactly, i.e. SOC 0..1 *is* the cell's voltage
  window and the true capacity Q is the charge between those OCV limits. NMC is sloped
  (3.3 V near empty, 3.7 V mid, 4.1 V near full; shape after NMC/graphite 18650 curves such as the
  LG M50 of Chen et al. 2020); LFP is the flat two-plateau 3.27-3.35 V curve of LFP/graphite with
  steep ends (A123 APR18650M1A, as in Severson et al. 2019).
* Protocol per cycle: CC charge to Vmax, CV at Vmax until the taper current (NMC 50 mA = C/60 as
  the LG HG2 datasheet's standard charge, LFP C/50 as Severson et al.), rest 20 min, CC
  discharge to Vmin, rest 30 min (>= 13 RC time constants, so every step starts relaxed). CC end
  points are found by vectorised bisection. In CV the OCV is replaced by its secant between the
  CC end point and SOC 1 (exact at both ends), which makes the two-state system linear, so
  current, SOC and v1 are sums of two exponentials (2x2 eigen decomposition in closed form) and
  the taper time is again found by bisection. A cycle starts from the previous one's end state;
  since every step lasts many RC time constants, two vectorised passes over all cycles make that
  chaining exact without a loop over cycles.
* Degradation per cycle n (fractional capacity loss):
  ``loss = AF*(a*sqrt(n) + b*n) + c*softplus_w(n - n_knee)**2``: a square-root SEI-growth term
  (Broussely et al. 2001; Schmalstieg et al. 2014), a slow linear term, and an accelerating term
  after a per-cell knee cycle (lithium plating / loss of active material; the shape of the knees in
  Attia et al. 2022, J. Electrochem. Soc. 169, 060517). Temperature acts through an Arrhenius
  factor ``AF = exp(Ea/R*(1/298.15 - 1/T))`` with Ea = 35 kJ/mol (~2x per +10 degC, within the
  31-50 kJ/mol of Wang et al. 2011 for LFP and Schmalstieg 2014 for NMC), and the knee comes
  earlier in hot cells (``n_knee ~ AF**-0.7``). A small AR(1) cycle-to-cycle jitter (0.08 %)
  mimics capacity recovery after rests. Resistance rises with the same loss
  (``R0 = R0_new*f(T)*(1 + g0*loss)``, g0 ~ 2.5: about +50 % at 80 % SOH, as in Severson's IR
  data), and falls with temperature (Arrhenius, 20 kJ/mol). Cell-to-cell spread: lognormal on
  each coefficient, ~0.6 % on initial capacity.
* Thermal: lumped ``C_th dT/dt = P - (T - T_amb)/R_th`` with the irreversible heat of the circuit
  ``P = I^2*R0 + v1^2/R1`` (Bernardi et al. 1985 without the entropic term); R_th = 10 K/W and
  C_th ~ 40-45 J/K for an 18650 in a chamber give a 3-4 degC rise at 1C (NMC). The chamber itself
  drifts +-0.3 degC over a day. Degradation uses the ambient temperature, not the sample-level one.
* Sensors: Gaussian noise of 1 mV, 1-2 mA and 0.1 degC, values rounded to the cycler's resolution
  (0.1 mV, 0.1 mA, 0.01 degC, 0.1 mAh, 1 ms); rest current is exactly 0 (open channel). The
  cycler ends a CC discharge on the first *measured* V <= Vmin and holds CV at Vmax within its
  noise, so clean samples may sit up to ~5 mV (4 sigma) outside [Vmin, Vmax]; validation needs a
  tolerance of that order (real Arbin data does the same).
* `capacity_ah` follows the Arbin convention of the schema: charge moved in the sample's direction
  since the cycle began, NaN on rest samples (as `readers.base.capacity_from_current`).
  `internal_resistance_ohm` is the cycler's per-cycle R0 measurement (1 % noise), held on all
  samples of the cycle as Arbin does.

Protocol magnitudes: NMC 3.0 Ah 2.5-4.2 V (LG HG2 / Samsung 30Q class 18650; CC 0.5C, 1C
discharge, R0 22 mOhm, R1 20 mOhm, tau 90 s), LFP 1.1 Ah 2.0-3.6 V (A123; CC 1C, 2C discharge,
R0 16 mOhm, R1 12 mOhm, tau 60 s). Fade coefficients are tuned so the cells reach 80 % SOH in
~320-600 cycles (an accelerated test), which keeps the demo small. Because the OCV ends are
steep and the taper current small, the measured discharge capacity is 0.2-0.6 % below the true
(thermodynamic) capacity, growing with resistance as the cell ages.

Sampling is variable, as a cycler logging on dV/dt would: ~42 samples per cycle, Chebyshev spaced
(fine at both ends) in CC steps and geometric (fine at the start) in CV and rests. The default fleet
(8 cells, NMC and LFP at 25/35/45 degC, 300-600 cycles each, until the true capacity drops below
78 % of nominal) is ~150k rows and ~2 MB of Parquet (zstd).

Two entry points:

* `generate_fleet` / `write_fleet`: the demo fleet with ground truth and injected faults (a few
  voltage spikes, a duplicated block of rows, a temperature dropout, a timestamp going backwards;
  < 0.1 % of rows; cell 0 is always clean, and in the default fleet cells 0, 1, 6 and 7 are).
* `generate_samples` / `iter_benchmark_frames` / `iter_benchmark_cells`: the benchmark fast path
  (20M+ rows, ~10 s and ~1.7 GB peak for 20M on one core). Same physics and code, but denser
  sampling so that every cell still lives ~400 cycles: 200 samples per cycle and 250 cells for
  20M by default, or, with `n_cells` fixed (e.g. 20), as dense as needed (2500 samples per cycle,
  ~6 s logging, like a raw cycler export). No faults and no ground-truth tables. Trade-offs:
  `generate_samples` returns one in-memory frame built per cell into preallocated column arrays
  (no concat copy) with cell_id, step_type and source_file as pandas Categorical (object
  strings would add ~0.5 GB of pointers at 20M rows and slow every group-by; cast with
  ``.astype(str)`` where a plain str column is required); its peak memory is the frame itself
  (~77 B/row). `iter_benchmark_frames` yields one canonical
  per-cell frame (object strings, validates as is) at a time, for writing per-cell Parquet with
  memory bounded by one cell. Cells run past end of life there; loss saturates smoothly at 60 %.

`science/` never imports dagster; this module depends on numpy, pandas and (for writing) pyarrow.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from battery_pipeline.science.schema import SAMPLE_COLUMNS

DEFAULT_SEED = 20240917
DATASET_NAME = "battery_pipeline_synthetic"
LICENCE = "CC0-1.0"
CITATION = (
    "Synthetic data generated by battery_pipeline.science.synth (equivalent-circuit model with "
    "SEI + knee capacity fade); not measured data"
)

GAS_CONSTANT = 8.314462618  # J/(mol K)
T_REF_K = 298.15
EA_FADE_J_PER_MOL = 35_000.0  # capacity fade acceleration
EA_RESISTANCE_J_PER_MOL = 20_000.0  # R(T): ~0.6x at 45 degC vs 25 degC
KNEE_TEMPERATURE_EXPONENT = 0.7  # n_knee ~ AF**-0.7
EOL_SOH = 0.80  # end of life: true capacity below 80 % of nominal
TEST_END_SOH = 0.78  # the demo test stops once the true capacity is below this
MIN_TEST_CYCLES, MAX_TEST_CYCLES = 300, 600
TRAJECTORY_HORIZON = 1500  # cycles of the degradation trajectory drawn for every cell
MAX_LOSS = 0.6  # capacity loss saturates smoothly here (only the benchmark cycles that far)
CHAMBER_DRIFT_C = 0.3  # daily +- drift of the climate chamber
JITTER_SIGMA, JITTER_PHI = 0.0008, 0.9  # AR(1) cycle-to-cycle capacity jitter
BISECT_ITERATIONS = 60

# Sample plan: samples per step (CC charge, CV charge, rest, CC discharge, rest).
STEP_INDEX = (1, 2, 3, 4, 5)  # cycler program lines, repeated every cycle (Arbin Step_Index)
STEP_TYPE = ("charge", "charge", "rest", "discharge", "rest")
DEMO_PLAN = (10, 8, 6, 12, 6)  # 42 samples per cycle
BENCHMARK_SAMPLES_PER_CYCLE = 200
BENCHMARK_CYCLES_PER_CELL = 400

# Fault schedule of the demo fleet: (kind, cell index). Cell 0 is always clean; in fleets of fewer
# than 6 cells the indices wrap onto cells 1..n-1.
FAULT_PLAN = (
    ("voltage_spike", 2),
    ("temperature_dropout", 2),
    ("duplicated_block", 3),
    ("time_backwards", 4),
    ("voltage_spike", 5),
)
FAULT_COLUMNS = ["cell_id", "kind", "source_file", "source_row", "n_rows", "column", "detail"]


# ------------------------------------------------------------------------------------------
# Chemistries and cells
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chemistry:
    """Nominal parameters of one cell type (see the module docstring for their sources)."""

    name: str
    nominal_capacity_ah: float
    voltage_min_v: float
    voltage_max_v: float
    ocv_poly: tuple[float, ...]  # coefficients of p(z), increasing powers
    ocv_step: tuple[float, float, float]  # staging step: amplitude V, centre SOC, width SOC
    ocv_tail_low: float  # e-folding SOC of the steep end near empty
    ocv_tail_high: float  # e-folding SOC of the steep end near full
    r0_ohm: float  # ohmic resistance of a new cell at 25 degC
    r0_low_soc_rise: float  # R0 rises by this factor (x R0) towards SOC 0 ...
    r0_low_soc_width: float  # ... with this e-folding SOC (depleted electrolyte/particle surface)
    r1_ohm: float  # RC-pair (charge transfer / polarisation) resistance, new, 25 degC
    tau1_s: float  # RC time constant (kept constant as R1 grows)
    charge_c_rate: float
    taper_c_rate: float
    discharge_c_rate: float
    rest_after_charge_s: float
    rest_after_discharge_s: float
    cv_time_limit_s: float
    sei_sqrt: float  # fractional loss per sqrt(cycle) at 25 degC
    linear: float  # fractional loss per cycle at 25 degC
    knee_cycle: float  # knee onset at 25 degC
    knee_curvature: float  # fractional loss per cycle**2 after the knee
    knee_width: float  # cycles over which the knee sets in
    r0_growth: float  # relative R0 rise per unit fractional capacity loss
    r1_growth: float
    initial_capacity_mean: float  # fresh capacity / nominal (cells ship slightly above rating)
    initial_capacity_sd: float
    heat_capacity_j_per_k: float
    thermal_resistance_k_per_w: float
    sigma_v: float
    sigma_i: float
    sigma_t: float
    description: str

    def _tail_amplitudes(self) -> tuple[float, float]:
        """A0, A1 such that OCV(0) = Vmin and OCV(1) = Vmax exactly (2x2 linear solve)."""
        base0 = self._base(np.array(0.0))
        base1 = self._base(np.array(1.0))
        e_high_at_0 = math.exp(-1.0 / self.ocv_tail_high)
        e_low_at_1 = math.exp(-1.0 / self.ocv_tail_low)
        # base0 - A0 + A1*e_high_at_0 = Vmin ; base1 - A0*e_low_at_1 + A1 = Vmax
        matrix = np.array([[-1.0, e_high_at_0], [-e_low_at_1, 1.0]])
        rhs = np.array([self.voltage_min_v - base0, self.voltage_max_v - base1])
        a0, a1 = np.linalg.solve(matrix, rhs)
        return float(a0), float(a1)

    def _base(self, soc):
        amp, centre, width = self.ocv_step
        poly = np.polynomial.polynomial.polyval(soc, self.ocv_poly)
        return poly + amp * np.tanh((soc - centre) / width)

    def ocv(self, soc) -> np.ndarray:
        """Open-circuit voltage at state of charge `soc` (0..1 of the true capacity), V."""
        soc = np.asarray(soc, dtype="float64")
        a0, a1 = self._tail_amplitudes()
        return (
            self._base(soc)
            - a0 * np.exp(-soc / self.ocv_tail_low)
            + a1 * np.exp(-(1.0 - soc) / self.ocv_tail_high)
        )

    def r0_soc_factor(self, soc) -> np.ndarray:
        """R0(z) / R0 at mid SOC: ``1 + beta*exp(-z/s)``, the resistance rise of a nearly empty cell."""
        return 1.0 + self.r0_low_soc_rise * np.exp(-np.asarray(soc, dtype="float64") / self.r0_low_soc_width)

    @property
    def charge_current_a(self) -> float:
        return self.charge_c_rate * self.nominal_capacity_ah

    @property
    def taper_current_a(self) -> float:
        return self.taper_c_rate * self.nominal_capacity_ah

    @property
    def discharge_current_a(self) -> float:
        return self.discharge_c_rate * self.nominal_capacity_ah


NMC = Chemistry(
    name="NMC",
    nominal_capacity_ah=3.0,
    voltage_min_v=2.5,
    voltage_max_v=4.2,
    ocv_poly=(3.32, 1.30, -1.25, 0.76),
    ocv_step=(0.0, 0.5, 0.1),
    ocv_tail_low=0.008,
    ocv_tail_high=0.012,
    r0_ohm=0.022,
    r0_low_soc_rise=1.5,
    r0_low_soc_width=0.03,
    r1_ohm=0.020,
    tau1_s=90.0,
    charge_c_rate=0.5,
    taper_c_rate=0.05 / 3.0,  # 50 mA cut-off, as the LG HG2 standard charge
    discharge_c_rate=1.0,
    rest_after_charge_s=1200.0,
    rest_after_discharge_s=1800.0,
    cv_time_limit_s=7200.0,
    sei_sqrt=0.0016,
    linear=2.0e-5,
    knee_cycle=380.0,
    knee_curvature=1.1e-5,
    knee_width=25.0,
    r0_growth=2.5,
    r1_growth=3.0,
    initial_capacity_mean=1.012,
    initial_capacity_sd=0.006,
    heat_capacity_j_per_k=44.0,
    thermal_resistance_k_per_w=10.0,
    sigma_v=0.001,
    sigma_i=0.002,
    sigma_t=0.1,
    description="NMC/graphite 18650, 3.0 Ah, 2.5-4.2 V",
)

LFP = Chemistry(
    name="LFP",
    nominal_capacity_ah=1.1,
    voltage_min_v=2.0,
    voltage_max_v=3.6,
    ocv_poly=(3.275, 0.06),
    ocv_step=(0.015, 0.6, 0.04),
    ocv_tail_low=0.02,
    ocv_tail_high=0.02,
    r0_ohm=0.016,
    r0_low_soc_rise=3.0,
    r0_low_soc_width=0.03,
    r1_ohm=0.012,
    tau1_s=60.0,
    charge_c_rate=1.0,
    taper_c_rate=0.02,  # C/50, as Severson et al. 2019
    discharge_c_rate=2.0,
    rest_after_charge_s=1200.0,
    rest_after_discharge_s=1800.0,
    cv_time_limit_s=3600.0,
    sei_sqrt=0.0010,
    linear=1.5e-5,
    knee_cycle=430.0,
    knee_curvature=1.0e-5,
    knee_width=30.0,
    r0_growth=2.5,
    r1_growth=3.0,
    initial_capacity_mean=1.010,
    initial_capacity_sd=0.005,
    heat_capacity_j_per_k=38.0,
    thermal_resistance_k_per_w=10.0,
    sigma_v=0.001,
    sigma_i=0.001,
    sigma_t=0.1,
    description="LFP/graphite 18650, 1.1 Ah, 2.0-3.6 V (A123 APR18650M1A class)",
)

CHEMISTRIES = (NMC, LFP)
AMBIENTS_C = (25.0, 25.0, 35.0, 45.0)


def _arrhenius(ea_j_per_mol: float, temperature_c: float) -> float:
    """Rate factor relative to 25 degC (>1 when hotter)."""
    return math.exp(ea_j_per_mol / GAS_CONSTANT * (1.0 / T_REF_K - 1.0 / (temperature_c + 273.15)))


@dataclass(frozen=True)
class CellSpec:
    """Everything that makes one simulated cell different from its siblings."""

    index: int
    cell_id: str
    chemistry: Chemistry
    ambient_c: float
    seed: int  # the cell's own seed: np.random.default_rng(seed) reproduces it alone
    fleet_seed: int
    initial_capacity_ah: float
    r0_ohm: float  # new, at 25 degC
    r1_ohm: float
    sei_sqrt: float  # at 25 degC (multiplied by the ambient's Arrhenius factor)
    linear: float
    knee_cycle: float  # already at this cell's ambient temperature
    knee_curvature: float
    r0_growth: float
    r1_growth: float
    initial_soc: float
    chamber_phase: float

    @property
    def source_file(self) -> str:
        return f"{self.cell_id}.parquet"

    @property
    def fade_factor(self) -> float:
        return _arrhenius(EA_FADE_J_PER_MOL, self.ambient_c)

    @property
    def resistance_factor(self) -> float:
        return 1.0 / _arrhenius(EA_RESISTANCE_J_PER_MOL, self.ambient_c)


def make_cell_spec(index: int, fleet_seed: int) -> CellSpec:
    """Cell `index` of the fleet drawn from `fleet_seed` (independent of the fleet's size).

    Chemistry alternates NMC/LFP; ambient cycles 25, 25, 35, 45 degC per chemistry pair, so a
    fleet of 8 has two NMC and two LFP cells at 25 degC and one of each at 35 and 45 degC.
    """
    chem = CHEMISTRIES[index % len(CHEMISTRIES)]
    ambient = AMBIENTS_C[(index // len(CHEMISTRIES)) % len(AMBIENTS_C)]
    sequence = np.random.SeedSequence(fleet_seed, spawn_key=(index,))
    cell_seed = int(sequence.generate_state(1, dtype=np.uint32)[0])
    rng = np.random.default_rng(cell_seed)
    af = _arrhenius(EA_FADE_J_PER_MOL, ambient)
    lognormal = lambda sd: float(np.exp(sd * rng.standard_normal()))  # noqa: E731
    return CellSpec(
        index=index,
        cell_id=f"SYN{index + 1:03d}_{chem.name}_{ambient:.0f}C",
        chemistry=chem,
        ambient_c=ambient,
        seed=cell_seed,
        fleet_seed=int(fleet_seed),
        initial_capacity_ah=chem.nominal_capacity_ah
        * (chem.initial_capacity_mean + chem.initial_capacity_sd * float(rng.standard_normal())),
        r0_ohm=chem.r0_ohm * lognormal(0.05),
        r1_ohm=chem.r1_ohm * lognormal(0.08),
        sei_sqrt=chem.sei_sqrt * lognormal(0.10),
        linear=chem.linear * lognormal(0.10),
        knee_cycle=chem.knee_cycle * af**-KNEE_TEMPERATURE_EXPONENT * lognormal(0.08),
        knee_curvature=chem.knee_curvature * lognormal(0.15),
        r0_growth=chem.r0_growth * lognormal(0.10),
        r1_growth=chem.r1_growth * lognormal(0.10),
        initial_soc=float(rng.uniform(0.3, 0.5)),
        chamber_phase=float(rng.uniform(0.0, 2.0 * math.pi)),
    )


# ------------------------------------------------------------------------------------------
# Degradation trajectory (per cycle)
# ------------------------------------------------------------------------------------------


@dataclass
class Trajectory:
    """True per-cycle state of one cell over its whole life (cycle 1 .. horizon)."""

    capacity_ah: np.ndarray
    loss: np.ndarray  # smooth fractional capacity loss (no jitter)
    r0_ohm: np.ndarray  # at the cell's ambient temperature
    r1_ohm: np.ndarray

    def eol_cycle(self, nominal_ah: float, soh: float = EOL_SOH) -> int | None:
        below = np.flatnonzero(self.capacity_ah < soh * nominal_ah)
        return int(below[0]) + 1 if below.size else None


def _softplus(x: np.ndarray, width: float) -> np.ndarray:
    return width * np.logaddexp(0.0, x / width)


def degradation_trajectory(spec: CellSpec, horizon: int = TRAJECTORY_HORIZON) -> Trajectory:
    """Capacity and resistance of every cycle 1..horizon (equations in the module docstring).

    Drawn from its own stream of the cell's seed, so the truth of the first k cycles does not
    depend on how many cycles are simulated.
    """
    rng = np.random.default_rng([spec.seed, 1])
    n = np.arange(1, horizon + 1, dtype="float64")
    af = spec.fade_factor
    chem = spec.chemistry
    loss = af * (spec.sei_sqrt * np.sqrt(n) + spec.linear * n) + spec.knee_curvature * _softplus(
        n - spec.knee_cycle, chem.knee_width
    ) ** 2
    loss = loss / (1.0 + (loss / MAX_LOSS) ** 8) ** 0.125  # smooth cap, ~identity below 0.4
    # AR(1) jitter: eps_n = phi*eps_{n-1} + sqrt(1-phi^2)*sigma*xi_n  (stationary sd = sigma)
    xi = rng.standard_normal(horizon) * JITTER_SIGMA * math.sqrt(1.0 - JITTER_PHI**2)
    xi[0] = rng.standard_normal() * JITTER_SIGMA
    jitter = lfilter([1.0], [1.0, -JITTER_PHI], xi)
    capacity = spec.initial_capacity_ah * (1.0 - loss) * (1.0 + jitter)
    rf = spec.resistance_factor
    return Trajectory(
        capacity_ah=capacity,
        loss=loss,
        r0_ohm=spec.r0_ohm * rf * (1.0 + spec.r0_growth * loss),
        r1_ohm=spec.r1_ohm * rf * (1.0 + spec.r1_growth * loss),
    )


def default_test_cycles(spec: CellSpec, trajectory: Trajectory) -> int:
    """Cycles of the demo test: until the true capacity is below 78 % of nominal, 300..600."""
    end = trajectory.eol_cycle(spec.chemistry.nominal_capacity_ah, TEST_END_SOH)
    end = MAX_TEST_CYCLES if end is None else end
    return int(min(max(end, MIN_TEST_CYCLES), MAX_TEST_CYCLES))


# ------------------------------------------------------------------------------------------
# Per-cycle electrical solution (vectorised over cycles)
# ------------------------------------------------------------------------------------------


def _bisect_increasing(func, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Root of an increasing function per element (clamped to [lo, hi] if there is none)."""
    lo = np.array(lo, dtype="float64", copy=True)
    hi = np.array(hi, dtype="float64", copy=True)
    for _ in range(BISECT_ITERATIONS):
        mid = 0.5 * (lo + hi)
        positive = func(mid) > 0.0
        hi = np.where(positive, mid, hi)
        lo = np.where(positive, lo, mid)
    return 0.5 * (lo + hi)


@dataclass
class _CV:
    """Closed-form CV phase: y = 1 - SOC and v1 as sums of two exponentials."""

    k: np.ndarray
    r0: np.ndarray
    l1: np.ndarray
    l2: np.ndarray
    m1: np.ndarray
    m2: np.ndarray
    a1: np.ndarray
    a2: np.ndarray

    @classmethod
    def solve(cls, k, r0, r1, c1, qs, y0, w0) -> _CV:
        # d/dt [y, w] = [[a, b], [c, d]] @ [y, w], with I = (k*y - w)/R0
        a = -k / (r0 * qs)
        b = 1.0 / (r0 * qs)
        c = k / (r0 * c1)
        d = -(1.0 / r1 + 1.0 / r0) / c1
        disc = np.sqrt((a - d) ** 2 + 4.0 * b * c)  # real: b*c > 0
        l1 = 0.5 * (a + d + disc)
        l2 = 0.5 * (a + d - disc)
        m1 = (l1 - a) / b  # eigenvectors (1, m)
        m2 = (l2 - a) / b
        a1 = (w0 - m2 * y0) / (m1 - m2)
        a2 = y0 - a1
        return cls(k, r0, l1, l2, m1, m2, a1, a2)

    def _col(self, x, t):
        return x[:, None] if np.ndim(t) == 2 else x

    def state(self, t):
        col = lambda x: self._col(x, t)  # noqa: E731
        e1 = np.exp(col(self.l1) * t)
        e2 = np.exp(col(self.l2) * t)
        y = col(self.a1) * e1 + col(self.a2) * e2
        w = col(self.a1 * self.m1) * e1 + col(self.a2 * self.m2) * e2
        current = (col(self.k) * y - w) / col(self.r0)
        return y, w, current


@dataclass
class _Cycles:
    """Per-cycle end points and durations of the five steps."""

    q_ah: np.ndarray
    r0: np.ndarray
    r1: np.ndarray
    z0: np.ndarray
    w0: np.ndarray
    z_cc: np.ndarray
    t_cc: np.ndarray
    cv: _CV
    y_cc: np.ndarray
    t_cv: np.ndarray
    y_top: np.ndarray
    w_top: np.ndarray
    w_rest1_end: np.ndarray
    z_bot: np.ndarray
    t_dis: np.ndarray
    w_dis: np.ndarray
    durations: np.ndarray  # (n, 5)


def _solve_cycles(spec: CellSpec, traj: Trajectory, n_cycles: int) -> _Cycles:
    chem = spec.chemistry
    q = traj.capacity_ah[:n_cycles]
    r0 = traj.r0_ohm[:n_cycles]
    r1 = traj.r1_ohm[:n_cycles]
    qs = 3600.0 * q
    tau = chem.tau1_s
    c1 = tau / r1
    ic, it, idis = chem.charge_current_a, chem.taper_current_a, chem.discharge_current_a
    vmin, vmax = chem.voltage_min_v, chem.voltage_max_v
    z0 = np.zeros(n_cycles)
    w0 = np.zeros(n_cycles)
    z0[0] = spec.initial_soc
    # A cycle's start state is the previous cycle's end state. The CC end points depend on the
    # start state only through exp(-t/tau) with t >> tau, so a second pass with the shifted end
    # states of the first pass is exact to machine precision (no loop over cycles needed).
    for _ in range(2):
        z_cc = _bisect_increasing(
            lambda z: chem.ocv(z)
            + ic * (r0 * chem.r0_soc_factor(z) + r1)
            + (w0 - ic * r1) * np.exp(-np.maximum(z - z0, 0.0) * qs / (ic * tau))
            - vmax,
            z0,
            np.ones(n_cycles),
        )
        t_cc = (z_cc - z0) * qs / ic
        w_cc = ic * r1 + (w0 - ic * r1) * np.exp(-t_cc / tau)
        y_cc = np.maximum(1.0 - z_cc, 1e-9)
        r0_cv = r0 * chem.r0_soc_factor(z_cc)  # ~R0: the SOC factor is 1 near full
        k = (w_cc + ic * r0_cv) / y_cc  # secant slope of OCV between z_cc and 1 (V per unit SOC)
        cv = _CV.solve(k, r0_cv, r1, c1, qs, y_cc, w_cc)
        t_cv = _bisect_increasing(
            lambda t: it - cv.state(t)[2], np.zeros(n_cycles), np.full(n_cycles, chem.cv_time_limit_s)
        )
        y_top, w_top, _ = cv.state(t_cv)
        z_top = 1.0 - y_top
        w_r1 = w_top * math.exp(-chem.rest_after_charge_s / tau)
        z_bot = _bisect_increasing(
            lambda z: chem.ocv(z)
            - idis * (r0 * chem.r0_soc_factor(z) + r1)
            + (w_r1 + idis * r1) * np.exp(-np.maximum(z_top - z, 0.0) * qs / (idis * tau))
            - vmin,
            np.zeros(n_cycles),
            z_top,
        )
        t_dis = (z_top - z_bot) * qs / idis
        w_dis = -idis * r1 + (w_r1 + idis * r1) * np.exp(-t_dis / tau)
        w_r2 = w_dis * math.exp(-chem.rest_after_discharge_s / tau)
        z0 = np.concatenate([[spec.initial_soc], z_bot[:-1]])
        w0 = np.concatenate([[0.0], w_r2[:-1]])
    durations = np.column_stack(
        [
            t_cc,
            t_cv,
            np.full(n_cycles, chem.rest_after_charge_s),
            t_dis,
            np.full(n_cycles, chem.rest_after_discharge_s),
        ]
    )
    return _Cycles(
        q, r0, r1, z0, w0, z_cc, t_cc, cv, y_cc, t_cv, y_top, w_top, w_r1, z_bot, t_dis, w_dis, durations
    )


# ------------------------------------------------------------------------------------------
# Samples (vectorised over cycles x samples)
# ------------------------------------------------------------------------------------------


def _plan_for(samples_per_cycle: int) -> tuple[int, ...]:
    """Samples per step for about `samples_per_cycle` per cycle, in the demo's proportions."""
    scale = samples_per_cycle / sum(DEMO_PLAN)
    return tuple(max(3, round(m * scale)) for m in DEMO_PLAN)


_LINEAR_SHARE = 0.1  # CC spacing: 90 % Chebyshev + 10 % uniform, so no gap is vanishingly small
_MIN_GAP_S = 0.002  # two ms-rounded timestamps never collide


def _chebyshev_offsets(duration: np.ndarray, m: int) -> np.ndarray:
    """(n, m) offsets from 1 s to the step's end, denser at both ends (CC steps)."""
    s = np.linspace(0.0, 1.0, m)
    u = (1.0 - _LINEAR_SHARE) * 0.5 * (1.0 - np.cos(np.pi * s)) + _LINEAR_SHARE * s
    return 1.0 + (duration[:, None] - 1.0) * u[None, :]


def _geometric_offsets(duration: np.ndarray, m: int) -> np.ndarray:
    """(n, m) offsets from 1 s to the step's end, denser at the start (CV, relaxation)."""
    return duration[:, None] ** np.linspace(0.0, 1.0, m)[None, :]


def _min_durations(plan: tuple[int, ...]) -> np.ndarray:
    """Shortest step durations for which every gap between samples is >= _MIN_GAP_S."""
    m = np.asarray(plan, dtype="float64") - 1.0
    chebyshev = 1.0 + _MIN_GAP_S * m / _LINEAR_SHARE
    geometric = np.exp(_MIN_GAP_S * m) + 1.0
    return np.maximum(2.0, np.where([True, False, False, True, False], chebyshev, geometric))


@dataclass
class CellArrays:
    """The simulated samples of one cell as plain columns (before faults)."""

    spec: CellSpec
    n_cycles: int
    plan: tuple[int, ...]
    cycle_number: np.ndarray
    step_code: np.ndarray  # 0..4 into STEP_INDEX / STEP_TYPE
    time_s: np.ndarray
    voltage_v: np.ndarray
    current_a: np.ndarray
    temperature_c: np.ndarray
    capacity_ah: np.ndarray
    internal_resistance_ohm: np.ndarray
    cycles: _Cycles = field(repr=False)

    @property
    def n_rows(self) -> int:
        return len(self.time_s)

    def measured_capacities(self) -> tuple[np.ndarray, np.ndarray]:
        """Cycler-reported (charge, discharge) capacity per cycle: capacity_ah at step ends."""
        cap = self.capacity_ah.reshape(self.n_cycles, sum(self.plan))
        step_ends = np.cumsum(self.plan) - 1
        return cap[:, step_ends[1]], cap[:, step_ends[3]]


def simulate_cell(
    spec: CellSpec,
    n_cycles: int,
    plan: tuple[int, ...] = DEMO_PLAN,
    trajectory: Trajectory | None = None,
) -> CellArrays:
    """All samples of `n_cycles` cycles of one cell, vectorised over cycles and samples."""
    chem = spec.chemistry
    traj = trajectory or degradation_trajectory(spec, max(TRAJECTORY_HORIZON, n_cycles))
    cyc = _solve_cycles(spec, traj, n_cycles)
    rng = np.random.default_rng([spec.seed, 2, n_cycles, sum(plan)])
    n = n_cycles
    tau = chem.tau1_s
    ic, idis = chem.charge_current_a, chem.discharge_current_a
    col = lambda x: x[:, None]  # noqa: E731
    m_cc, m_cv, m_r1, m_d, m_r2 = plan
    dur = np.maximum(cyc.durations, _min_durations(plan)[None, :])
    qs = 3600.0 * cyc.q_ah

    # CC charge
    t1 = _chebyshev_offsets(dur[:, 0], m_cc)
    z1 = col(cyc.z0) + ic * t1 / col(qs)
    w1 = ic * col(cyc.r1) + col(cyc.w0 - ic * cyc.r1) * np.exp(-t1 / tau)
    r0_1 = col(cyc.r0) * chem.r0_soc_factor(z1)
    v1 = chem.ocv(z1) + w1 + ic * r0_1
    i1 = np.full_like(t1, ic)
    q1 = ic * t1 / 3600.0
    # CV charge
    t2 = _geometric_offsets(dur[:, 1], m_cv)
    y2, w2, i2 = cyc.cv.state(t2)
    v2 = np.full_like(t2, chem.voltage_max_v)
    q2 = col(ic * cyc.t_cc / 3600.0) + (col(cyc.y_cc) - y2) * col(cyc.q_ah)
    # rest after charge
    t3 = _geometric_offsets(dur[:, 2], m_r1)
    w3 = col(cyc.w_top) * np.exp(-t3 / tau)
    v3 = col(chem.ocv(1.0 - cyc.y_top)) + w3
    # CC discharge
    t4 = _chebyshev_offsets(dur[:, 3], m_d)
    z4 = col(1.0 - cyc.y_top) - idis * t4 / col(qs)
    w4 = -idis * col(cyc.r1) + col(cyc.w_rest1_end + idis * cyc.r1) * np.exp(-t4 / tau)
    r0_4 = col(cyc.r0) * chem.r0_soc_factor(z4)
    v4 = chem.ocv(z4) + w4 - idis * r0_4
    i4 = np.full_like(t4, -idis)
    q4 = idis * t4 / 3600.0
    # rest after discharge
    t5 = _geometric_offsets(dur[:, 4], m_r2)
    w5 = col(cyc.w_dis) * np.exp(-t5 / tau)
    v5 = col(chem.ocv(cyc.z_bot)) + w5

    starts = np.concatenate([np.zeros((n, 1)), np.cumsum(dur, axis=1)], axis=1)
    t_rel = np.hstack(
        [t1, starts[:, [1]] + t2, starts[:, [2]] + t3, starts[:, [3]] + t4, starts[:, [4]] + t5]
    )
    r0_cv = np.broadcast_to(col(cyc.cv.r0), (n, m_cv))
    r0_all = np.hstack([r0_1, r0_cv, np.ones((n, m_r1)), r0_4, np.ones((n, m_r2))])
    del t1, t2, t3, t4, t5, z1, z4, y2, r0_1, r0_4
    zeros3, zeros5 = np.zeros((n, m_r1)), np.zeros((n, m_r2))
    volt = np.hstack([v1, v2, v3, v4, v5])
    curr = np.hstack([i1, i2, zeros3, i4, zeros5])
    wrc = np.hstack([w1, w2, w3, w4, w5])
    nan3, nan5 = np.full((n, m_r1), np.nan), np.full((n, m_r2), np.nan)
    cap = np.hstack([q1, q2, nan3, q4, nan5])
    del v1, v2, v3, v4, v5, i1, i2, i4, w1, w2, w3, w4, w5, q1, q2, q4

    # Lumped thermal model, exact for piecewise-constant heat between samples:
    # dT_k = (dT_0 + sum_j (E_j - E_{j-1}) * R_th * P_j) / E_k  with E = exp(t/tau_th).
    tau_th = chem.heat_capacity_j_per_k * chem.thermal_resistance_k_per_w
    assert float(t_rel[:, -1].max()) / tau_th < 700.0, "cycle too long for the thermal closed form"
    heat = curr**2 * r0_all + wrc**2 / col(cyc.r1)
    heat_mid = heat.copy()
    heat_mid[:, 1:] = 0.5 * (heat[:, 1:] + heat[:, :-1])
    growth = np.exp(t_rel / tau_th)
    increments = np.diff(growth, axis=1, prepend=1.0) * chem.thermal_resistance_k_per_w * heat_mid
    rise = np.cumsum(increments, axis=1) / growth
    carry = np.concatenate([[0.0], rise[:-1, -1]])  # previous cycle's end rise (its own carry ~e^-30)
    rise += col(carry) / growth
    del heat, heat_mid, growth, increments, wrc, r0_all

    cycle_start = np.concatenate([[0.0], np.cumsum(dur.sum(axis=1))[:-1]])
    t_abs = col(cycle_start) + t_rel
    chamber = spec.ambient_c + CHAMBER_DRIFT_C * np.sin(2.0 * np.pi * t_abs / 86400.0 + spec.chamber_phase)
    temp = chamber + rise
    del t_rel, chamber, rise

    m_total = sum(plan)
    rows = n * m_total
    noise = rng.standard_normal((3, rows))
    is_rest = np.tile(np.repeat([False, False, True, False, True], plan), n)
    voltage = np.round(volt.ravel() + chem.sigma_v * noise[0], 4)
    current = np.where(is_rest, 0.0, np.round(curr.ravel() + chem.sigma_i * noise[1], 4))
    temperature = np.round(temp.ravel() + chem.sigma_t * noise[2], 2)
    ir_measured = np.round(cyc.r0 * (1.0 + 0.01 * rng.standard_normal(n)), 6)
    arrays = CellArrays(
        spec=spec,
        n_cycles=n,
        plan=tuple(plan),
        cycle_number=np.repeat(np.arange(1, n + 1, dtype="int64"), m_total),
        step_code=np.tile(np.repeat(np.arange(5, dtype="int8"), plan), n),
        time_s=np.round(t_abs.ravel(), 3),
        voltage_v=voltage,
        current_a=current,
        temperature_c=temperature,
        capacity_ah=np.round(cap.ravel(), 4),
        internal_resistance_ohm=np.repeat(ir_measured, m_total),
        cycles=cyc,
    )
    return arrays


def _cell_frame(arrays: CellArrays) -> pd.DataFrame:
    """Canonical `CellCycleSample` frame (object-dtype strings) of one simulated cell."""
    spec = arrays.spec
    n = arrays.n_rows
    step_index = np.asarray(STEP_INDEX, dtype="int64")[arrays.step_code]
    step_type = np.asarray(STEP_TYPE, dtype=object)[arrays.step_code]
    frame = pd.DataFrame(
        {
            "cell_id": np.full(n, spec.cell_id, dtype=object),
            "cycle_number": arrays.cycle_number,
            "step_index": step_index,
            "step_type": step_type,
            "time_s": arrays.time_s,
            "voltage_v": arrays.voltage_v,
            "current_a": arrays.current_a,
            "temperature_c": arrays.temperature_c,
            "capacity_ah": arrays.capacity_ah,
            "internal_resistance_ohm": arrays.internal_resistance_ohm,
            "source_file": np.full(n, spec.source_file, dtype=object),
            "source_row": np.arange(n, dtype="int64"),
        }
    )
    return frame[SAMPLE_COLUMNS]


# ------------------------------------------------------------------------------------------
# Injected faults
# ------------------------------------------------------------------------------------------


def _pick_rows(
    rng: np.random.Generator, n_rows: int, width: int, taken: list[tuple[int, int]]
) -> int | None:
    """A start row for a `width`-row fault in the middle 10-90 % of the file, apart from others.

    None when the file is too short to hold it (tiny test fleets): that fault is not injected.
    """
    lo, hi = max(1, n_rows // 10), max(2, (9 * n_rows) // 10 - width)
    for _ in range(1000):
        start = int(rng.integers(lo, hi))
        if all(start + width + 5 < a or start > b + 5 for a, b in taken):
            taken.append((start, start + width - 1))
            return start
    return None


def inject_faults(
    frame: pd.DataFrame, kinds: list[str], spec: CellSpec, rng: np.random.Generator
) -> tuple[pd.DataFrame, list[dict]]:
    """Corrupt a clean frame with the given fault kinds; returns the frame and the fault records.

    Kinds: voltage_spike (one sample at 6-9.9 V, outside every window and the 5.5 V envelope),
    temperature_dropout (a run of NaN temperatures), time_backwards (one timestamp 10-60 min
    earlier than its predecessor), duplicated_block (a block of rows logged twice in a row; the
    copy also sends time backwards at its first row). Rows are renumbered afterwards so
    `source_row` stays the row in the written file, and the records give those final rows.
    """
    frame = frame.copy()
    n = len(frame)
    chem = spec.chemistry
    taken: list[tuple[int, int]] = []
    records: list[dict] = []
    duplicate: tuple[int, int] | None = None
    scale = max(1, n // 20)  # keep faults short in tiny test fleets
    for kind in kinds:
        if kind == "voltage_spike":
            row = _pick_rows(rng, n, 1, taken)
            if row is None:
                continue
            value = round(float(rng.uniform(6.0, 9.9)), 4)
            frame.iloc[row, frame.columns.get_loc("voltage_v")] = value
            window = f"{chem.voltage_min_v}-{chem.voltage_max_v} V"
            records.append(dict(kind=kind, source_row=row, n_rows=1, column="voltage_v",
                                detail=f"voltage {value} V outside {window}"))
        elif kind == "temperature_dropout":
            width = min(int(rng.integers(20, 41)), scale)
            row = _pick_rows(rng, n, width, taken)
            if row is None:
                continue
            frame.iloc[row : row + width, frame.columns.get_loc("temperature_c")] = np.nan
            records.append(dict(kind=kind, source_row=row, n_rows=width, column="temperature_c",
                                detail=f"temperature sensor dropout: {width} NaN samples"))
        elif kind == "time_backwards":
            row = _pick_rows(rng, n, 1, taken)
            if row is None:
                continue
            times = frame["time_s"].to_numpy()
            back = min(float(rng.uniform(600.0, 3600.0)), times[row - 1] * 0.5)
            value = round(times[row - 1] - back, 3)
            frame.iloc[row, frame.columns.get_loc("time_s")] = value
            gap = times[row - 1] - value
            records.append(dict(kind=kind, source_row=row, n_rows=1, column="time_s",
                                detail=f"timestamp {value} s is {gap:.3f} s before the previous sample"))
        elif kind == "duplicated_block":
            width = min(int(rng.integers(12, 25)), scale)
            row = _pick_rows(rng, n, 2 * width, taken)
            if row is not None:
                duplicate = (row, width)
        else:
            raise ValueError(f"unknown fault kind {kind!r}")
    if duplicate is not None:
        row, width = duplicate
        block = frame.iloc[row : row + width]
        frame = pd.concat([frame.iloc[: row + width], block, frame.iloc[row + width :]], ignore_index=True)
        for record in records:
            if record["source_row"] >= row + width:
                record["source_row"] += width
        detail = f"rows {row}-{row + width - 1} logged again (time goes back at the first copy)"
        records.append(dict(kind="duplicated_block", source_row=row + width, n_rows=width, column="*",
                            detail=detail))
    frame["source_row"] = np.arange(len(frame), dtype="int64")
    for record in records:
        record.update(cell_id=spec.cell_id, source_file=spec.source_file)
    return frame, records


# ------------------------------------------------------------------------------------------
# The demo fleet
# ------------------------------------------------------------------------------------------


@dataclass
class Fleet:
    """A simulated fleet: canonical sample frames and the ground truth to judge the pipeline by.

    `samples[cell_id]` is the frame written to `<cell_id>.parquet` (with faults); `cells` has one
    row per cell, `cycles` one row per simulated cycle, `faults` one row per injected fault
    (`source_row` = first affected row in the written file, `n_rows` rows long).
    """

    seed: int
    samples: dict[str, pd.DataFrame]
    cells: pd.DataFrame
    cycles: pd.DataFrame
    faults: pd.DataFrame
    metadata: dict[str, dict]

    @property
    def n_rows(self) -> int:
        return sum(len(frame) for frame in self.samples.values())


def _fault_kinds_by_cell(n_cells: int) -> dict[int, list[str]]:
    """Map FAULT_PLAN onto the fleet; cell 0 stays clean whenever there are two or more cells."""
    kinds: dict[int, list[str]] = {}
    if n_cells < 2:
        return kinds
    for kind, index in FAULT_PLAN:
        target = index if index < n_cells else 1 + (index - 1) % (n_cells - 1)
        kinds.setdefault(target, []).append(kind)
    return kinds


def cell_metadata(spec: CellSpec, n_faults: int = 0) -> dict:
    """Sidecar `<cell_id>.cell.json` content (exactly the keys the readers' sidecars know)."""
    chem = spec.chemistry
    faults = (
        f" Contains {n_faults} injected fault(s) listed in injected_faults.csv."
        if n_faults
        else ""
    )
    return {
        "dataset": DATASET_NAME,
        "chemistry": chem.name,
        "nominal_capacity_ah": chem.nominal_capacity_ah,
        "voltage_min_v": chem.voltage_min_v,
        "voltage_max_v": chem.voltage_max_v,
        "licence": LICENCE,
        "citation": CITATION,
        "description": (
            f"Simulated {chem.description} at {spec.ambient_c:.0f} degC ambient: CC-CV charge at "
            f"{chem.charge_c_rate:g}C to {chem.voltage_max_v} V (taper C/{1 / chem.taper_c_rate:.0f}), "
            f"CC discharge at {chem.discharge_c_rate:g}C to {chem.voltage_min_v} V, rests between. "
            f"Fleet seed {spec.fleet_seed}, cell seed {spec.seed}.{faults}"
        ),
    }


def generate_fleet(n_cells: int = 8, seed: int = DEFAULT_SEED, cycles: int | None = None) -> Fleet:
    """Simulate a fleet of `n_cells` cells (alternating NMC/LFP, 25/25/35/45 degC).

    `cycles=None` runs every cell until its true capacity is below 78 % of nominal (300-600
    cycles); an int runs exactly that many cycles per cell (same cell, same truth; for quick
    tests). Same seed -> identical frames and tables.
    """
    if n_cells < 1:
        raise ValueError("n_cells must be >= 1")
    fault_kinds = _fault_kinds_by_cell(n_cells)
    fault_rng = np.random.default_rng([int(seed), 99])
    samples: dict[str, pd.DataFrame] = {}
    cell_rows, cycle_frames, fault_rows, metadata = [], [], [], {}
    for index in range(n_cells):
        spec = make_cell_spec(index, seed)
        traj = degradation_trajectory(spec)
        n_cycles = default_test_cycles(spec, traj) if cycles is None else int(cycles)
        if n_cycles < 1:
            raise ValueError("cycles must be >= 1")
        if n_cycles > len(traj.capacity_ah):
            traj = degradation_trajectory(spec, n_cycles)
        arrays = simulate_cell(spec, n_cycles, DEMO_PLAN, traj)
        frame = _cell_frame(arrays)
        charge_cap, discharge_cap = arrays.measured_capacities()
        frame, records = inject_faults(frame, fault_kinds.get(index, []), spec, fault_rng)
        samples[spec.cell_id] = frame
        fault_rows.extend(records)
        chem = spec.chemistry
        cycle_frames.append(
            pd.DataFrame(
                {
                    "cell_id": spec.cell_id,
                    "cycle_number": np.arange(1, n_cycles + 1, dtype="int64"),
                    "true_capacity_ah": traj.capacity_ah[:n_cycles],
                    "true_soh": traj.capacity_ah[:n_cycles] / chem.nominal_capacity_ah,
                    "true_r0_ohm": traj.r0_ohm[:n_cycles],
                    "true_r1_ohm": traj.r1_ohm[:n_cycles],
                    "measured_charge_capacity_ah": charge_cap,
                    "measured_discharge_capacity_ah": discharge_cap,
                }
            )
        )
        eol = traj.eol_cycle(chem.nominal_capacity_ah)
        cell_rows.append(
            {
                "cell_id": spec.cell_id,
                "chemistry": chem.name,
                "nominal_capacity_ah": chem.nominal_capacity_ah,
                "voltage_min_v": chem.voltage_min_v,
                "voltage_max_v": chem.voltage_max_v,
                "ambient_c": spec.ambient_c,
                "knee_cycle": int(round(spec.knee_cycle)),
                "eol_cycle": eol,
                "seed": spec.seed,
                "fleet_seed": int(seed),
                "n_cycles": n_cycles,
                "n_rows": len(frame),
                "n_faults": len(records),
                "initial_capacity_ah": spec.initial_capacity_ah,
                "initial_r0_ohm": float(traj.r0_ohm[0]),
                "source_file": spec.source_file,
            }
        )
        metadata[spec.cell_id] = cell_metadata(spec, len(records))
    cells = pd.DataFrame(cell_rows)
    cells["eol_cycle"] = cells["eol_cycle"].astype("Int64")
    faults = pd.DataFrame(fault_rows, columns=FAULT_COLUMNS)
    faults = faults.astype({"source_row": "int64", "n_rows": "int64"})
    return Fleet(
        seed=int(seed),
        samples=samples,
        cells=cells,
        cycles=pd.concat(cycle_frames, ignore_index=True),
        faults=faults,
        metadata=metadata,
    )


# Columns whose values are (nearly) all distinct: dictionary encoding only costs space there.
_PLAIN_COLUMNS = ("time_s", "capacity_ah", "source_row")


def write_samples_parquet(frame: pd.DataFrame, path: Path) -> None:
    """One canonical frame as Parquet, zstd.

    Measured on the demo cells: V, I and T recorded at the cycler's resolution repeat a lot, so
    dictionary encoding halves them; time and capacity are nearly unique and compress best plain;
    source_row is delta-encoded. Byte-stream-split was tried and is 2-3x worse on rounded values.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(
        table,
        path,
        compression="zstd",
        compression_level=9,
        use_dictionary=[c for c in frame.columns if c not in _PLAIN_COLUMNS],
        column_encoding={"source_row": "DELTA_BINARY_PACKED"},
    )


def write_fleet(fleet: Fleet, directory: Path | str) -> list[Path]:
    """Write one `<cell_id>.parquet` + `<cell_id>.cell.json` per cell and the ground-truth CSVs."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for cell_id, frame in fleet.samples.items():
        path = directory / f"{cell_id}.parquet"
        write_samples_parquet(frame, path)
        sidecar = directory / f"{cell_id}.cell.json"
        sidecar.write_text(json.dumps(fleet.metadata[cell_id], indent=2) + "\n")
        written += [path, sidecar]
    for name, table in (
        ("ground_truth_cells.csv", fleet.cells),
        ("ground_truth_cycles.csv", fleet.cycles),
        ("injected_faults.csv", fleet.faults),
    ):
        path = directory / name
        table.to_csv(path, index=False, float_format="%.6g" if name != "ground_truth_cycles.csv" else "%.7g")
        written.append(path)
    return written


# ------------------------------------------------------------------------------------------
# Benchmark fast path
# ------------------------------------------------------------------------------------------


def _benchmark_layout(n_samples_target: int, n_cells: int | None, samples_per_cycle: int | None):
    """(plan, n_cells, cycles per cell) for about `n_samples_target` rows.

    Cells live ~400 cycles; the free parameter is the sampling density: with `n_cells` given
    and no `samples_per_cycle`, the samples per cycle grow (up to 4000, i.e. ~4 s logging) so
    that each cell still runs ~400 cycles; with neither given, 200 samples per cycle and as many
    cells as needed.
    """
    if samples_per_cycle is None:
        if n_cells is None:
            samples_per_cycle = BENCHMARK_SAMPLES_PER_CYCLE
        else:
            wanted = n_samples_target / (n_cells * BENCHMARK_CYCLES_PER_CELL)
            samples_per_cycle = int(min(max(round(wanted), sum(DEMO_PLAN)), 4000))
    plan = _plan_for(samples_per_cycle)
    per_cycle = sum(plan)
    if n_cells is None:
        n_cells = max(1, math.ceil(n_samples_target / (per_cycle * BENCHMARK_CYCLES_PER_CELL)))
    cycles = max(1, math.ceil(n_samples_target / (n_cells * per_cycle)))
    return plan, n_cells, cycles


def iter_benchmark_cells(
    n_samples_target: int,
    seed: int = DEFAULT_SEED,
    n_cells: int | None = None,
    samples_per_cycle: int | None = None,
) -> Iterator[CellArrays]:
    """Yield the simulated arrays of each benchmark cell in turn (bounded memory).

    ~`n_samples_target` rows in total, rounded up to whole cycles: every cell runs the same number
    of cycles (~400, i.e. past end of life for hot cells; loss saturates at 60 %); see
    `_benchmark_layout` for how cells and sampling density are chosen.
    """
    plan, n_cells, cycles = _benchmark_layout(n_samples_target, n_cells, samples_per_cycle)
    for index in range(n_cells):
        spec = make_cell_spec(index, seed)
        yield simulate_cell(spec, cycles, plan)


def iter_benchmark_frames(
    n_samples_target: int,
    seed: int = DEFAULT_SEED,
    n_cells: int | None = None,
    samples_per_cycle: int | None = None,
) -> Iterator[pd.DataFrame]:
    """Canonical per-cell frames (object strings, validate as is) of the benchmark dataset."""
    for arrays in iter_benchmark_cells(n_samples_target, seed, n_cells, samples_per_cycle):
        yield _cell_frame(arrays)


def generate_samples(
    n_samples_target: int,
    seed: int = DEFAULT_SEED,
    n_cells: int | None = None,
    samples_per_cycle: int | None = None,
) -> pd.DataFrame:
    """A large canonical dataset in one frame, fast (the benchmark path; see module docstring).

    Columns are `SAMPLE_COLUMNS` with canonical numeric dtypes, but cell_id, step_type and
    source_file are pandas Categorical (20M object strings would cost ~0.5 GB of pointers more
    and slow every pandas operation). Cells are simulated one at a time and copied into
    preallocated columns, so peak memory is the final frame (~75 B/row) plus one cell.
    No faults, no ground truth.
    """
    plan, n_cells, cycles = _benchmark_layout(n_samples_target, n_cells, samples_per_cycle)
    per_cell = cycles * sum(plan)
    total = per_cell * n_cells
    floats = ("time_s", "voltage_v", "current_a", "temperature_c", "capacity_ah", "internal_resistance_ohm")
    ints = ("cycle_number", "step_index", "source_row")
    out = {name: np.empty(total, dtype="float64") for name in floats}
    out.update({name: np.empty(total, dtype="int64") for name in ints})
    code_dtype = np.int16 if n_cells < 2**15 else np.int32
    cell_codes = np.empty(total, dtype=code_dtype)
    step_codes = np.empty(total, dtype=np.int8)
    cell_ids, files = [], []
    step_index_lookup = np.asarray(STEP_INDEX, dtype="int64")
    step_type_codes = np.array([("charge", "discharge", "rest").index(s) for s in STEP_TYPE], dtype=np.int8)
    source_rows = np.arange(per_cell, dtype="int64")
    for index, arrays in enumerate(iter_benchmark_cells(n_samples_target, seed, n_cells, samples_per_cycle)):
        part = slice(index * per_cell, (index + 1) * per_cell)
        for name in floats:
            out[name][part] = getattr(arrays, name)
        out["cycle_number"][part] = arrays.cycle_number
        out["step_index"][part] = step_index_lookup[arrays.step_code]
        out["source_row"][part] = source_rows
        cell_codes[part] = index
        step_codes[part] = step_type_codes[arrays.step_code]
        cell_ids.append(arrays.spec.cell_id)
        files.append(arrays.spec.source_file)
        del arrays
    columns = {
        "cell_id": pd.Categorical.from_codes(cell_codes, categories=cell_ids),
        "step_type": pd.Categorical.from_codes(step_codes, categories=["charge", "discharge", "rest"]),
        "source_file": pd.Categorical.from_codes(cell_codes, categories=files),
        **out,
    }
    return pd.DataFrame({name: columns[name] for name in SAMPLE_COLUMNS}, copy=False)


# ------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------


def _directory_mb(paths: list[Path]) -> float:
    return sum(p.stat().st_size for p in paths if p.suffix == ".parquet") / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m battery_pipeline.science.synth",
        description="Write the synthetic demo fleet (Parquet + sidecars + ground truth) to OUTDIR.",
    )
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--cells", type=int, default=None, help="number of cells (default 8)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"fleet seed (default {DEFAULT_SEED})")
    parser.add_argument("--cycles", type=int, default=None, help="cycles per cell (default: until 78 %% SOH)")
    parser.add_argument(
        "--benchmark-rows",
        type=int,
        default=None,
        help="instead write the benchmark dataset of about this many rows (no faults/truth); "
        "--cells then defaults to one per 80k rows",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.benchmark_rows:
        args.outdir.mkdir(parents=True, exist_ok=True)
        rows, written = 0, []
        for arrays in iter_benchmark_cells(args.benchmark_rows, args.seed, args.cells):
            frame = _cell_frame(arrays)
            path = args.outdir / arrays.spec.source_file
            write_samples_parquet(frame, path)
            sidecar = args.outdir / f"{arrays.spec.cell_id}.cell.json"
            sidecar.write_text(json.dumps(cell_metadata(arrays.spec), indent=2) + "\n")
            rows += len(frame)
            written.append(path)
        print(f"wrote {len(written)} cells, {rows} rows, {_directory_mb(written):.1f} MB to {args.outdir} "
              f"in {time.perf_counter() - started:.1f} s")
        return 0
    fleet = generate_fleet(8 if args.cells is None else args.cells, args.seed, args.cycles)
    generated = time.perf_counter() - started
    written = write_fleet(fleet, args.outdir)
    print(
        f"wrote {len(fleet.samples)} cells, {fleet.n_rows} rows, {_directory_mb(written):.2f} MB Parquet, "
        f"{len(fleet.faults)} injected faults to {args.outdir} "
        f"(generated in {generated:.1f} s, written in {time.perf_counter() - started - generated:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
