"""Per-cycle feature benchmark: `compute_cycle_features` vs a plain pandas groupby, >= 20 M samples.

    python benchmarks/features.py [--samples 20000000] [--cells 20] [--workers 2]
                                  [--passes 5] [--pandas-budget-s 600]

Data: `synth.iter_benchmark_frames(n, n_cells)`, one canonical frame per cell (~2500 samples per
cycle, ~400 cycles per cell), its string columns made Categorical as validation leaves them.
Generating it is not timed; cell by cell keeps the generator's peak to one cell.

What is timed, per cell over all cells, in `--passes` passes (one process, then `--workers`
processes, one per core, forked so the frame is shared; each figure is the median pass, and every
pass is printed: a pass takes about a second, and a shared 2-core VM's speed varies more than that
from one second to the next):
  * ours, summary features only (`FeatureConfig(curve_features=False)`): every column except
    delta_q_* / dqdv_*, and re/rct (no impedance here);
  * ours, all features (summary + Q(V) curves, dQ statistics, dQ/dV peak);
  * the pandas baseline: the same summary features with the same definitions, written as a
    typical analyst would, `df.groupby(['cell_id', 'cycle_number']).apply(per-cycle function)`
    using pandas/numpy/scipy inside each group (shift/where for the intervals, scipy.stats
    skew/kurtosis, np.histogram, np.polyfit, Series.median, cumsum/cummax over the charge and
    over each discharge run for the charge-window and early-discharge features), and the cycle
    classes from `classify_cycles` on its own per-cycle table. If the pandas run would exceed
    `--pandas-budget-s` on all cells (estimated from the first cell), it runs on a subset of
    cells and the figure is extrapolated (printed as such).
The two summary outputs are compared column by column (and the cycle classes row by row) to
show they are the same features. Prints the git commit measured, samples/s for each (wall time, and the CPU time summed
over the cells: on a shared machine wall time also counts waiting for a core), the ratios, and
peak memory (ru_maxrss of the parent and workers).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from battery_pipeline.provenance import short_code_version  # noqa: E402
from battery_pipeline.science import synth  # noqa: E402
from battery_pipeline.science.cycle_classes import CLASS_COLUMNS, classify_cycles  # noqa: E402
from battery_pipeline.science.validation import as_categorical  # noqa: E402
from battery_pipeline.science.features import (  # noqa: E402
    CYCLE_FEATURE_COLUMNS,
    DELTA_Q_COLUMNS,
    DQDV_COLUMNS,
    FeatureConfig,
    compute_cycle_features,
)

SUMMARY_COLUMNS = [
    c for c in CYCLE_FEATURE_COLUMNS if c not in DELTA_Q_COLUMNS + DQDV_COLUMNS + ["re_ohm", "rct_ohm"]
]
NUMERIC_SUMMARY = [c for c in SUMMARY_COLUMNS[2:] if c not in CLASS_COLUMNS]
NOMINAL_AH = {"NMC": synth.NMC.nominal_capacity_ah, "LFP": synth.LFP.nominal_capacity_ah}

_FRAMES: list[pd.DataFrame] = []  # one per cell, shared with forked workers


def nominal_of(cell_id: str) -> float:
    return next(v for k, v in NOMINAL_AH.items() if f"_{k}_" in cell_id)


def peak_mb(who=resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


# ------------------------------------------------------------------------------------------
# Ours
# ------------------------------------------------------------------------------------------


def ours_one(args: tuple[int, bool]) -> tuple[pd.DataFrame, float]:
    index, curves = args
    cell = _FRAMES[index]
    started = time.process_time()
    out = compute_cycle_features(
        cell, nominal_of(str(cell["cell_id"].iat[0])), config=FeatureConfig(curve_features=curves)
    )
    return out, time.process_time() - started


def run_ours(curves: bool, workers: int, passes: int) -> tuple[pd.DataFrame, list[float], list[float]]:
    """(features, wall time of each pass over all cells, CPU time of each pass summed over its
    cells). With workers, the pool is started (forked, the frames shared) before the clock
    starts, as the cell batch's pool is started once per run: forking the 2 GB parent is a cost
    per run, not per sample (printed apart); its passes run one after the other in that pool."""
    jobs = [(k, curves) for k in range(len(_FRAMES))]
    walls, cpus = [], []

    def timed(run):
        started = time.perf_counter()
        results = run()
        walls.append(time.perf_counter() - started)
        cpus.append(sum(r[1] for r in results))
        return results

    if workers == 1:
        for _ in range(passes):
            results = timed(lambda: [ours_one(job) for job in jobs])
    else:
        forked = time.perf_counter()
        with mp.get_context("fork").Pool(workers) as pool:
            pool.map(int, range(workers), chunksize=1)  # every worker up
            started = time.perf_counter()
            for _ in range(passes):
                results = timed(lambda: pool.map(ours_one, jobs, chunksize=1))
        print(f"    (starting the {workers} forked workers took {started - forked:.2f} s, not in the figures below)")
    return pd.concat([r[0] for r in results], ignore_index=True), walls, cpus


# ------------------------------------------------------------------------------------------
# The pandas baseline: same definitions, written straightforwardly per group
# ------------------------------------------------------------------------------------------

CFG = FeatureConfig()


def _entropy(x: pd.Series, bins: int) -> float:
    counts, _ = np.histogram(x, bins=bins, range=(x.min(), x.max()) if x.max() > x.min() else None)
    p = counts[counts > 0] / len(x)
    return float(-(p * np.log(p)).sum())


def _moments(x: pd.Series):
    if len(x) < 2 or x.std(ddof=0) <= 1e-12 * max(abs(x.mean()), 1.0):
        return x.std(ddof=0) if len(x) >= 2 else np.nan, np.nan, np.nan
    return x.std(ddof=0), scipy.stats.skew(x), scipy.stats.kurtosis(x)


def pandas_cycle(g: pd.DataFrame, gap_s: float, nominal: float) -> pd.Series:
    thr = CFG.rest_current_threshold_a
    t, v, i = g["time_s"], g["voltage_v"], g["current_a"]
    nxt = g.shift(-1)
    dt = nxt["time_s"] - t
    change = nxt["step_index"] != g["step_index"]
    w = dt.where(~(change & (dt > gap_s)) & (dt >= 0), 0.0).fillna(0.0)

    def over_interval(x: pd.Series, x_next: pd.Series) -> pd.Series:
        return ((x + x_next) / 2).where(~change, x_next)

    i_int = over_interval(i, nxt["current_a"])
    v_int = over_interval(v, nxt["voltage_v"])
    p_int = over_interval(v * i, nxt["voltage_v"] * nxt["current_a"])
    chg, dis = i_int > thr, i_int < -thr
    t_chg, t_dis = w[chg].sum(), w[dis].sum()
    q_chg = (i_int * w)[chg].sum() / 3600
    q_dis = -(i_int * w)[dis].sum() / 3600
    e_chg = (p_int * w)[chg].sum() / 3600
    e_dis = -(p_int * w)[dis].sum() / 3600
    r = {
        "cycle_start_time_s": t.iloc[0],
        "cycle_duration_s": t.iloc[-1] - t.iloc[0],
        "n_samples": len(g),
        "discharge_capacity_ah": q_dis if t_dis > 0 else np.nan,
        "charge_capacity_ah": q_chg if t_chg > 0 else np.nan,
        "discharge_energy_wh": e_dis if t_dis > 0 else np.nan,
        "charge_energy_wh": e_chg if t_chg > 0 else np.nan,
        "discharge_voltage_mean_v": (v_int * w)[dis].sum() / t_dis if t_dis > 0 else np.nan,
        "charge_voltage_mean_v": (v_int * w)[chg].sum() / t_chg if t_chg > 0 else np.nan,
    }
    r["coulombic_efficiency"] = r["discharge_capacity_ah"] / r["charge_capacity_ah"]
    r["energy_efficiency"] = r["discharge_energy_wh"] / r["charge_energy_wh"]
    r["discharge_current_mean_a"] = q_dis * 3600 / t_dis if t_dis > 0 else np.nan
    charge = g[g["step_type"] == "charge"]
    discharge = g[g["step_type"] == "discharge"]
    r["discharge_end_voltage_v"] = discharge["voltage_v"].iloc[-1] if len(discharge) else np.nan
    r["charge_end_voltage_v"] = charge["voltage_v"].iloc[-1] if len(charge) else np.nan
    temp = g["temperature_c"]
    t_mid = (temp + nxt["temperature_c"]) / 2
    ok = t_mid.notna()
    r["temperature_mean_c"] = (t_mid * w)[ok].sum() / w[ok].sum() if w[ok].sum() > 0 else np.nan
    r["temperature_max_c"] = temp.max()
    first = temp.dropna()
    r["temperature_rise_c"] = temp.max() - first.iloc[0] if len(first) else np.nan
    # CC / CV
    cv = pd.Series(False, index=g.index)
    i_cc = np.nan
    if len(charge):
        band = charge["voltage_v"] >= charge["voltage_v"].max() - CFG.cv_voltage_tolerance_v
        i_cc = charge.loc[band, "current_a"].iloc[0]
        cv[charge.index[band & (charge["current_a"] < CFG.cv_current_fraction * i_cc)]] = True
    cv_int = cv & cv.shift(-1, fill_value=False)
    t_cv = w[chg & cv_int].sum()
    q_cv = (i_int * w)[chg & cv_int].sum() / 3600
    has_chg = t_chg > 0
    r["cc_charge_time_s"] = t_chg - t_cv if has_chg else np.nan
    r["cv_charge_time_s"] = t_cv if has_chg else np.nan
    r["cc_charge_capacity_ah"] = q_chg - q_cv if has_chg else np.nan
    r["cv_charge_capacity_ah"] = q_cv if has_chg else np.nan
    r.update(pandas_charge_shape(charge, cv, (w * chg)[charge.index], i_int[charge.index], i_cc))
    r.update(pandas_early_discharge(g, w, i_int))
    # DCIR: steps into this cycle's samples, from the previous sample of the cell
    step_thr = max(CFG.dcir_min_current_step_a, CFG.dcir_min_current_step_c_rate * nominal)
    di = i - g["prev_current_a"]
    dtp = t - g["prev_time_s"]
    prev_gap = (g["prev_step_index"] != g["step_index"]) & (dtp > gap_s)
    jump = (di.abs() > step_thr) & (dtp <= CFG.dcir_max_interval_s) & ~prev_gap
    res = (v - g["prev_voltage_v"])[jump] / di[jump]
    r["resistance_dcir_ohm"] = res[res > 0].median()
    ir = g["internal_resistance_ohm"]
    reports = ir[ir.notna() & ((ir != ir.shift()) | (np.arange(len(ir)) == 0))]
    r["resistance_cycler_ohm"] = reports.median()
    # charge-curve statistics (Wang et al. style)
    for prefix, col, unit in (("charge_voltage", "voltage_v", "_v"), ("charge_current", "current_a", "_a")):
        x = charge[col]
        if prefix == "charge_current":
            r["charge_current_mean_a"] = x.mean()
        std, skew, kurt = _moments(x) if len(x) else (np.nan, np.nan, np.nan)
        r[f"{prefix}_std{unit}"] = std
        r[f"{prefix}_skewness"] = skew
        r[f"{prefix}_kurtosis"] = kurt
        r[f"{prefix}_slope{unit}_per_s"] = np.polyfit(charge["time_s"] - charge["time_s"].mean(), x, 1)[0] if len(x) >= 2 else np.nan
        r[f"{prefix}_entropy"] = _entropy(x, CFG.entropy_bins) if len(x) else np.nan
    return pd.Series(r)


def _first_crossing(acc: pd.Series, x: pd.Series, level: float, allowed: pd.Series) -> float:
    """x interpolated where the running maximum acc first reaches level (not at the first
    sample, and only at an allowed sample)."""
    reached = np.flatnonzero((acc >= level).to_numpy())
    if not len(reached) or reached[0] == 0 or not allowed.iloc[reached[0]]:
        return np.nan
    b = reached[0]
    frac = (level - acc.iloc[b - 1]) / (acc.iloc[b] - acc.iloc[b - 1])
    return x.iloc[b - 1] + frac * (x.iloc[b] - x.iloc[b - 1])


def pandas_charge_shape(charge: pd.DataFrame, cv: pd.Series, w_chg: pd.Series, i_int: pd.Series, i_cc: float) -> dict:
    """charge_start_voltage_v, cc_window_*, cv_current_decay_s over the cycle's charge samples."""
    names = ("charge_start_voltage_v", "cc_window_time_s", "cc_window_charge_ah", "cv_current_decay_s")
    if not len(charge):
        return dict.fromkeys(names, np.nan)
    out = {"charge_start_voltage_v": charge["voltage_v"].iloc[0]}
    # charge time and Ah integrated before each charge sample
    cum_t = w_chg.cumsum() - w_chg
    dq = i_int * w_chg / 3600
    cum_q = dq.cumsum() - dq
    acc = charge["voltage_v"].cummax()
    cc = ~cv[charge.index]
    lo, hi = sorted(CFG.charge_window_v)
    for name, x in (("cc_window_time_s", cum_t), ("cc_window_charge_ah", cum_q)):
        out[name] = _first_crossing(acc, x, hi, cc) - _first_crossing(acc, x, lo, cc)
    f0, f1 = sorted(CFG.cv_decay_fractions, reverse=True)
    times = []
    for fraction in (f0, f1):
        hit = cv[charge.index] & (charge["current_a"] <= fraction * i_cc)
        times.append(cum_t[hit].iloc[0] if hit.any() else np.nan)
    decay = (times[1] - times[0]) / np.log(f0 / f1)
    out["cv_current_decay_s"] = decay if decay > 0 else np.nan
    return out


def pandas_early_discharge(g: pd.DataFrame, w: pd.Series, i_int: pd.Series) -> dict:
    """Voltage and temperature rise early_discharge_s into the cycle's main discharge run (the
    run of consecutive discharge samples that moves the most Ah)."""
    out = {"discharge_early_voltage_v": np.nan, "discharge_early_temperature_rise_c": np.nan}
    is_dis = (g["step_type"] == "discharge").to_numpy()
    edges = np.flatnonzero(np.diff(np.concatenate([[False], is_dis, [False]])))
    dq = -i_int * w / 3600
    best, best_q = None, -np.inf
    for start, end in zip(edges[::2], edges[1::2]):  # runs [start, end) of discharge samples
        q = dq.iloc[start : end - 1].sum()  # the run's last interval leaves it
        if q >= best_q:
            best, best_q = slice(start, end), q
    if best is None or best.stop - best.start < max(CFG.min_discharge_samples, 2):
        return out
    run = g.iloc[best]
    w_run = w.iloc[best].copy()
    w_run.iloc[-1] = 0.0
    t_run = w_run.cumsum() - w_run
    reached = np.flatnonzero((t_run >= CFG.early_discharge_s).to_numpy())
    if not len(reached) or reached[0] == 0:
        return out
    b = reached[0]
    frac = (CFG.early_discharge_s - t_run.iloc[b - 1]) / (t_run.iloc[b] - t_run.iloc[b - 1])
    v, temp = run["voltage_v"], run["temperature_c"]
    out["discharge_early_voltage_v"] = v.iloc[b - 1] + frac * (v.iloc[b] - v.iloc[b - 1])
    out["discharge_early_temperature_rise_c"] = temp.iloc[b - 1] + frac * (temp.iloc[b] - temp.iloc[b - 1]) - temp.iloc[0]
    return out


def pandas_features(cell: pd.DataFrame) -> pd.DataFrame:
    """Plain pandas, one cell: the gap threshold and the previous sample, then groupby.apply."""
    parts = []
    for cell_id in [str(cell["cell_id"].iat[0])]:
        cell = cell.copy()
        same_step = cell["step_index"].diff().eq(0) & cell["cycle_number"].diff().eq(0)
        within = cell["time_s"].diff()[same_step]
        gap_s = CFG.gap_factor * within.quantile(CFG.gap_reference_percentile / 100)
        for col in ("current_a", "voltage_v", "time_s", "step_index"):
            cell[f"prev_{col}"] = cell[col].shift(1)
        nominal = nominal_of(str(cell_id))
        out = cell.groupby(["cell_id", "cycle_number"], observed=True, sort=True).apply(
            pandas_cycle, gap_s=gap_s, nominal=nominal, include_groups=False
        )
        parts.append(out.reset_index())
    result = pd.concat(parts, ignore_index=True)
    result["cell_id"] = result["cell_id"].astype(str)
    result["n_samples"] = result["n_samples"].astype("int64")
    return result.join(classify_cycles(result))[SUMMARY_COLUMNS]


def compare(ours: pd.DataFrame, theirs: pd.DataFrame) -> None:
    a = ours.assign(cell_id=ours["cell_id"].astype(str)).set_index(["cell_id", "cycle_number"])
    b = theirs.set_index(["cell_id", "cycle_number"])
    a = a.loc[b.index]
    worst = []
    for col in NUMERIC_SUMMARY:
        x, y = a[col].to_numpy(dtype=float), b[col].to_numpy(dtype=float)
        both_nan = np.isnan(x) & np.isnan(y)
        scale = np.maximum(np.abs(y), 1e-9)
        diff = np.where(both_nan, 0.0, np.abs(x - y) / scale)
        worst.append((np.nanmax(np.where(np.isnan(diff), np.inf, diff)), col))
    worst.sort(reverse=True)
    print("  same features? largest relative differences ours vs pandas:")
    for value, col in worst[:4]:
        print(f"    {col:<32} {value:.2e}")
    print(f"    (all {len(worst)} numeric summary columns within {worst[0][0]:.1e})")
    same_class = (a["cycle_class"].to_numpy() == b["cycle_class"].to_numpy()).mean()
    print(f"    cycle_class equal on {same_class:.1%} of {len(b):,} cycles")


# ------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=20_000_000)
    parser.add_argument("--cells", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pandas-budget-s", type=float, default=600.0)
    parser.add_argument("--passes", type=int, default=5, help="timed passes over all cells per figure (the median is the figure)")
    args = parser.parse_args()
    print(f"measured commit: {short_code_version()}")

    started = time.perf_counter()
    for frame in synth.iter_benchmark_frames(args.samples, n_cells=args.cells):
        _FRAMES.append(as_categorical(frame))
    n = sum(len(f) for f in _FRAMES)
    n_cycles = sum(f["cycle_number"].nunique() for f in _FRAMES)
    frame_mb = sum(f.memory_usage(deep=True).sum() for f in _FRAMES) / 1e6
    print(
        f"data: {n:,} samples, {len(_FRAMES)} cells, {n_cycles:,} cycles "
        f"(~{n // n_cycles} samples/cycle), {frame_mb:.0f} MB in memory; generated in "
        f"{time.perf_counter() - started:.1f} s (not timed); peak RSS so far {peak_mb():.0f} MB"
    )

    print("\nours (compute_cycle_features per cell):")
    figures = {}
    for curves in (False, True):
        label = "all features      " if curves else "summary features  "
        for workers in (1, args.workers) if args.workers > 1 else (1,):
            ours, walls, cpus = run_ours(curves, workers, args.passes)
            rates = sorted(n / w for w in walls)
            figures[(curves, workers)] = statistics.median(rates)
            who = "1 process " if workers == 1 else f"{workers} processes"
            print(
                f"  {label} {who}: {figures[(curves, workers)] / 1e6:6.2f} M samples/s median of {len(walls)} passes "
                f"({', '.join(f'{r / 1e6:.1f}' for r in rates)}; CPU {n / statistics.median(cpus) / 1e6:6.2f} M samples/s per core, median)"
            )
            if curves is False and workers == 1:
                ours_summary = ours
    ours_peak = peak_mb()
    print(f"  peak RSS: parent {ours_peak:.0f} MB, largest worker {peak_mb(resource.RUSAGE_CHILDREN):.0f} MB")

    print("\npandas baseline (groupby(['cell_id','cycle_number']).apply, same summary features, 1 process):")
    started = time.perf_counter()
    parts = [pandas_features(_FRAMES[0])]
    t_first = time.perf_counter() - started
    estimate = t_first * n / len(_FRAMES[0])
    k = len(_FRAMES)
    if estimate > args.pandas_budget_s:
        k = max(1, int(len(_FRAMES) * args.pandas_budget_s / estimate))
    for frame in _FRAMES[1:k]:
        parts.append(pandas_features(frame))
    p_elapsed = time.perf_counter() - started
    p_samples = sum(len(f) for f in _FRAMES[:k])
    theirs = pd.concat(parts, ignore_index=True)
    if k < len(_FRAMES):
        print(
            f"  EXTRAPOLATED: all cells would take ~{estimate:.0f} s (> {args.pandas_budget_s:.0f} s budget); "
            f"ran {k} cells ({p_samples:,} samples) in {p_elapsed:.2f} s"
        )
    else:
        print(f"  all {k} cells: {p_elapsed:6.2f} s")
    pandas_rate = p_samples / p_elapsed
    print(f"  pandas: {pandas_rate / 1e6:6.3f} M samples/s")
    compare(ours_summary, theirs)

    print("\nsummary")
    ours_1 = figures[(False, 1)]
    print(f"  ours summary features, 1 process : {ours_1 / 1e6:6.2f} M samples/s = {ours_1 / pandas_rate:6.1f}x pandas")
    if args.workers > 1:
        ours_w = figures[(False, args.workers)]
        print(
            f"  ours summary features, {args.workers} processes: {ours_w / 1e6:6.2f} M samples/s = "
            f"{ours_w / pandas_rate:6.1f}x pandas (1 process)"
        )
    ours_all = figures[(True, 1)]
    print(
        f"  ours all features (+ curves), 1 process : {ours_all / 1e6:6.2f} M samples/s = "
        f"{ours_all / pandas_rate:6.1f}x pandas summary"
    )
    if args.workers > 1:
        ours_all_w = figures[(True, args.workers)]
        print(
            f"  ours all features (+ curves), {args.workers} processes: {ours_all_w / 1e6:6.2f} M samples/s "
            f"(target >= 20 M samples/s on 2 cores: {'met' if ours_all_w >= 20e6 else 'NOT met'})"
        )
    print(
        f"  targets: >= 10 M samples/s summary: {'met' if ours_1 >= 10e6 else 'NOT met'} (1 process); "
        f">= 10x pandas: {'met' if ours_1 / pandas_rate >= 10 else 'NOT met'}"
    )
    parent, child = peak_mb(), peak_mb(resource.RUSAGE_CHILDREN)
    print(
        f"  peak memory (max RSS): parent {parent:.0f} MB over the whole run (data {frame_mb:.0f} MB; "
        f"{ours_peak:.0f} MB before the pandas run), largest forked worker {child:.0f} MB (its RSS "
        f"counts the parent's frame pages it reads, shared copy-on-write); "
        f"target < 3000 MB: {'met' if parent < 3000 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
