"""Per-cycle anomaly scores: each comparable cycle against the cell's own trend and against its fleet.

What is scored: only *full* cycles (`cycle_classes`): a partial, diagnostic or formation cycle
differs from its neighbours by design (a C/20 check-up has more capacity, an aborted discharge
less), so comparing it would raise alarms about the protocol, not the cell. Those rows are kept
with `scored = False` and the reason.

Signals (`SIGNALS`), each from the per-cycle feature table (`features.CYCLE_FEATURE_COLUMNS`):

  capacity     discharge_capacity_ah                 a capacity jump (up: recovery after a rest,
                                                     a contact fixed; down: a lost connection,
                                                     lithium plating, a cell opening)
  resistance   the first of resistance_cycler_ohm,   a resistance spike (tab, weld, contact)
               resistance_dcir_ohm, re_ohm the cell
               has
  temperature  temperature_rise_c, else              a temperature excursion (cooling lost,
               temperature_max_c                     internal heating)
  efficiency   coulombic_efficiency                  abnormal efficiency (side reactions, a
                                                     leak, a counting fault)

Against the cell's own trend: for each signal, the residual of the cycle against the median of
the cell's previous `trend_window` scored cycles (a trailing median: a step is flagged at the
cycle where it happens, the median follows it a few cycles later, and one outlier does not move
it), divided by the cell's own robust spread of those residuals (1.4826 x MAD), floored at
`SIGNALS[...].resolution` (a cycler's repeatability: without a floor a perfectly smooth cell
would turn a 0.1 mAh wobble into a 50-sigma event). The spread is measured over the previous
`spread_window` residuals only, so nothing after a cycle changes its score. Fewer than
`min_history` previous cycles for the trend, or `min_spread_cycles` residuals for the spread:
not compared (the reason says so).

Against the fleet: the cells that are comparable by what their registry states (the same
dataset, chemistry, rated capacity and regular discharge current within 15 %; a cell with no
stated rated capacity, or with neither a dataset nor a chemistry, has no fleet, which the reason
says). Within a fleet, each cycle's *normalised* value (capacity and resistance relative to the
cell's own first `trend_window` scored cycles; temperature and efficiency as measured) is compared
with the other cells' median at the same cycle-number bin (`fleet_bin_cycles`), the cell itself
left out: the distance in units of their spread (the larger of the robust and the plain SD,
floored as above, in the normalised unit) is a prediction-interval t with n - 1 degrees of
freedom, reported as the Gaussian z of the same tail probability, so a 5-cell fleet needs a far
larger gap than a 500-cell one for the same z. At least `min_fleet_cells` other cells in the bin,
else not compared.

Score and severity: `anomaly_score` = the largest |z| over the signals and both references;
`warning` from `warning_z`, `critical` from `critical_z` (robust SDs). `reason` names every
signal beyond `warning_z`, with the value, the reference it was compared with and the z, e.g.
"capacity 1.712 Ah is 0.094 Ah above the cell's trend 1.618 Ah (+7.9 robust SD over cycles
40-44)". A cycle with no signal compared at all has a NaN score and says why; a score below the
threshold says "within" per compared reference. Nothing here guesses a missing value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

MAD_TO_SD = 1.4826  # robust SD of a Gaussian from its median absolute deviation
SEVERITIES = ("none", "warning", "critical")
REFERENCES = ("own", "fleet")


@dataclass(frozen=True)
class Signal:
    name: str
    columns: tuple[str, ...]  # the first present (with values) is used
    unit: str
    resolution: float  # floor of the own-trend spread, in the signal's unit
    relative_resolution: float  # floor of the own spread as a fraction of the cell's median (0: none)
    fleet_normalised: bool  # the fleet compares value / the cell's own start, not the value
    fleet_resolution: float  # floor of the fleet spread, in the compared unit
    what: str
    # +1: only a rise is an anomaly (a resistance or temperature *falling* below trend is a warmer
    # or rested cell, not a fault); 0: both directions
    direction: int = 0


SIGNALS = (
    # Capacity repeats to ~0.1 % cycle to cycle on a good cycler (Arbin, Maccor current accuracy
    # 0.02-0.05 % of range): floor at 0.1 % of the cell's median capacity.
    Signal("capacity", ("discharge_capacity_ah",), "Ah", 0.0, 0.001, True, 0.005, "capacity"),
    # DCIR from a current step repeats to ~1 % (0.1 mV resolution over a ~20 mV step); 0.2 mOhm
    # absolute floor for very low-resistance cells.
    Signal("resistance", ("resistance_cycler_ohm", "resistance_dcir_ohm", "re_ohm"), "ohm", 2e-4, 0.01, True, 0.01,
           "resistance", direction=1),
    # Thermocouples resolve ~0.1 degC; 0.3 degC floor for a cycle's maximum or rise.
    Signal("temperature", ("temperature_rise_c", "temperature_max_c"), "degC", 0.3, 0.0, False, 0.5, "temperature", direction=1),
    # Coulombic efficiency of a regular cycle repeats to ~1e-4 on a high-precision cycler, ~1e-3
    # on an ordinary one.
    Signal("efficiency", ("coulombic_efficiency",), "", 1e-3, 0.0, False, 2e-3, "coulombic efficiency"),
)
SIGNAL_NAMES = tuple(s.name for s in SIGNALS)

ANOMALY_COLUMNS = [
    "cell_id", "cycle_number", "cycle_class", "scored", "anomaly_score", "severity", "signal", "reference",
    "reason", "fleet", "fleet_cells",
    *[f"z_{s}_{r}" for s in SIGNAL_NAMES for r in REFERENCES],
    *[f"{s}_value" for s in SIGNAL_NAMES],
    *[f"{s}_column" for s in SIGNAL_NAMES],
]


@dataclass(frozen=True)
class AnomalyConfig:
    trend_window: int = 5  # previous scored cycles the own trend is the median of
    min_history: int = 3  # fewer previous scored cycles: the own trend is not compared
    spread_window: int = 50  # previous residuals the cell's own spread is measured over
    min_spread_cycles: int = 8  # fewer previous residuals: no spread yet, the own trend is not compared
    # 5 robust SDs: a Gaussian residual exceeds it once in ~1.7 million cycles, so what is flagged
    # is a real departure or a heavy tail worth a look; 10: beyond any plausible noise.
    warning_z: float = 5.0
    critical_z: float = 10.0
    fleet_bin_cycles: int = 10
    min_fleet_cells: int = 4  # other cells in the bin, the cell itself left out
    rate_tolerance: float = 0.15  # regular discharge currents this close are one protocol


def _signal_column(frame: pd.DataFrame, signal: Signal) -> str | None:
    for column in signal.columns:
        if column in frame.columns and pd.to_numeric(frame[column], errors="coerce").notna().any():
            return column
    return None


def _own_scores(values: np.ndarray, signal: Signal, config: AnomalyConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z, trend, spread) of one cell's scored cycles (in cycle order) against its trailing trend.

    The trend is the median of the previous `trend_window` cycles carried forward to this cycle
    along the cell's recent slope, the median cycle-to-cycle change over the previous
    4 x `trend_window` cycles: a cell fading 2 mAh a cycle would otherwise sit ~3 cycles' fade
    below a plain trailing median all its life. Both are medians, so one outlier moves neither,
    and a step is one change among twenty, so the slope does not swing after it (a slope from two
    windows' medians would, and flag the cycles after every step). With fewer than
    `trend_window` changes of history the slope is taken as 0.
    """
    w = config.trend_window
    series = pd.Series(values)
    previous = series.shift(1).rolling(w, min_periods=config.min_history).median()
    slope = series.diff().shift(1).rolling(4 * w, min_periods=w).median().fillna(0.0).to_numpy()
    trend = previous.to_numpy() + slope * (w + 1) / 2.0
    residual = values - trend
    # The spread, too, only from the past: the residuals of the previous `spread_window` cycles
    # (robust: their median absolute deviation), floored at the cycler's repeatability of the
    # cell's level so far. A spread over the whole record would let later cycles move earlier
    # scores (the `anomaly_scores_causal` check caught exactly that).
    centre = pd.Series(residual).shift(1).rolling(config.spread_window, min_periods=1).median().to_numpy()
    deviation = pd.Series(np.abs(residual - centre)).shift(1)
    spread = MAD_TO_SD * deviation.rolling(config.spread_window, min_periods=config.min_spread_cycles).median().to_numpy()
    level = series.shift(1).abs().rolling(config.spread_window, min_periods=1).median().to_numpy()
    floor = np.maximum(signal.resolution, signal.relative_resolution * np.nan_to_num(level))
    spread = np.where(np.isfinite(spread), np.maximum(spread, floor), np.nan)
    z = residual / spread
    if signal.direction > 0:
        z = np.where(z < 0, 0.0, z)  # compared, and nothing to report below the trend
    return z, trend, spread


def regular_discharge_current(cell: pd.DataFrame, tolerance: float) -> float:
    """The discharge current most full cycles share (|A|), NaN where the table has none."""
    if "discharge_current_mean_a" not in cell.columns:
        return np.nan
    values = np.abs(pd.to_numeric(cell["discharge_current_mean_a"], errors="coerce").to_numpy(dtype="float64"))
    values = np.sort(np.log(values[np.isfinite(values) & (values > 0)]))
    if values.size == 0:
        return np.nan
    width = np.log1p(tolerance)
    counts = np.searchsorted(values, values + width, side="right") - np.searchsorted(values, values - width, side="left")
    return float(np.exp(values[int(np.argmax(counts))]))


def fleet_keys(cells: pd.DataFrame, currents: dict[str, float], config: AnomalyConfig) -> dict[str, tuple[str | None, str]]:
    """{cell: (fleet key or None, words)}: which cells are compared with which, from the registry.

    A fleet: the same stated dataset, chemistry and rated capacity, and regular discharge
    currents that chain within `rate_tolerance` of each other (sorted, a gap wider than the
    tolerance starts another fleet: no bin edge splits 0.82C from 0.87C)."""
    out: dict[str, tuple[str | None, str]] = {}
    stated = cells.set_index(cells["cell_id"].astype(str))
    groups: dict[tuple, list[tuple[float, str]]] = {}
    for cell, current in currents.items():
        row = stated.loc[cell] if cell in stated.index else pd.Series(dtype=object)
        dataset = row.get("dataset") if isinstance(row.get("dataset"), str) and row.get("dataset") else None
        chemistry = row.get("chemistry") if isinstance(row.get("chemistry"), str) and row.get("chemistry") else None
        nominal = pd.to_numeric(row.get("nominal_capacity_ah"), errors="coerce")
        if not (nominal == nominal) or (dataset is None and chemistry is None):
            missing = "rated capacity" if not (nominal == nominal) else "dataset and chemistry"
            out[cell] = (None, f"no fleet: the registry states no {missing} for {cell}")
        elif not current == current:
            # Cells aged at 2C and at 0.5C part ways by design; without the current the fleet
            # cannot tell a fast-ageing protocol from a failing cell.
            out[cell] = (None, f"no fleet: the source has no discharge current for {cell}, so its protocol is unknown")
        else:
            groups.setdefault((dataset, chemistry, float(nominal)), []).append((float(np.log(current / nominal)), cell))
    width = np.log1p(config.rate_tolerance)
    for (dataset, chemistry, nominal), members in groups.items():
        members.sort()
        clusters, previous = [[members[0]]], members[0][0]
        for log_rate, cell in members[1:]:
            if log_rate - previous > width:
                clusters.append([])
            clusters[-1].append((log_rate, cell))
            previous = log_rate
        for number, cluster in enumerate(clusters):
            rates = np.exp([r for r, _ in cluster])
            key = f"{dataset or '-'}|{chemistry or '-'}|{nominal:g}|{number}"
            words = (f"{dataset or 'dataset not stated'}, {chemistry or 'chemistry not stated'}, {nominal:g} Ah, "
                     f"discharge {_rate_range(rates)}, {len(cluster)} cell(s)")
            for _, cell in cluster:
                out[cell] = (key, words)
    return out


def _rate_range(rates: np.ndarray) -> str:
    low, high = f"{rates.min():.2g}", f"{rates.max():.2g}"
    return f"{low}C" if low == high else f"{low}-{high}C"


def _fleet_z(frame: pd.DataFrame, column: str, signal: Signal, config: AnomalyConfig) -> tuple[np.ndarray, np.ndarray]:
    """(z, fleet median) of each scored row's value against the other cells of its fleet and cycle bin."""
    from scipy import stats  # here, not at import: the Dagster definitions import this module

    z = np.full(len(frame), np.nan)
    median_out = np.full(len(frame), np.nan)
    usable = frame["fleet"].notna() & frame[column].notna()
    if not usable.any():
        return z, median_out
    data = frame.loc[usable, ["cell_id", "fleet", "bin", column]]
    # One value per cell and bin (its median), so a cell with many cycles in a bin does not outvote the others.
    per_cell = data.groupby(["fleet", "bin", "cell_id"])[column].median()
    positions = {label: i for i, label in enumerate(frame.index)}
    for (fleet, bin_), group in data.groupby(["fleet", "bin"], sort=False):
        cells_here = per_cell.loc[(fleet, bin_)]
        if len(cells_here) < config.min_fleet_cells + 1:
            continue
        names = cells_here.index.to_numpy()
        levels = cells_here.to_numpy()
        for cell, rows in group.groupby("cell_id", sort=False):
            others = levels[names != cell]
            centre = float(np.median(others))
            # Fleets are small: the MAD of 4-10 cells can be a third of their real scatter, so the
            # spread is the larger of it and the plain SD (which one more outlier only widens),
            # and the distance is a prediction-interval t (n - 1 degrees of freedom) turned into the
            # Gaussian z of the same tail probability: 5 "robust SD" then means the same rarity
            # whether the fleet has 5 cells or 500.
            spread = max(MAD_TO_SD * float(np.median(np.abs(others - centre))), float(np.std(others, ddof=1)),
                         signal.fleet_resolution)
            t = (rows[column].to_numpy() - centre) / (spread * np.sqrt(1.0 + 1.0 / len(others)))
            idx = [positions[i] for i in rows.index]
            z[idx] = np.sign(t) * np.minimum(stats.norm.isf(stats.t.sf(np.abs(t), len(others) - 1)), 50.0)
            median_out[idx] = centre
            if signal.direction > 0:
                z[idx] = np.maximum(z[idx], 0.0)
            median_out[idx] = centre
    return z, median_out


def _severity(score: float, config: AnomalyConfig) -> str:
    if not score == score or score < config.warning_z:
        return "none"
    return "critical" if score >= config.critical_z else "warning"


def _fmt(value: float, unit: str) -> str:
    text = f"{value:.4g}"
    return f"{text} {unit}" if unit else text


def score_cycles(features: pd.DataFrame, cells: pd.DataFrame, config: AnomalyConfig = AnomalyConfig()) -> pd.DataFrame:
    """One row per cycle of `features` (every cell), ordered by cell and cycle: `ANOMALY_COLUMNS`
    (module docstring)."""
    if "cell_id" not in features.columns or "cycle_number" not in features.columns:
        raise ValueError(f"features needs cell_id and cycle_number (has {list(features.columns)})")
    frame = features.sort_values(["cell_id", "cycle_number"], kind="stable").reset_index(drop=True)
    frame["cell_id"] = frame["cell_id"].astype(str)
    klass = frame["cycle_class"].astype(object) if "cycle_class" in frame.columns else pd.Series("full", index=frame.index)
    scored = (klass == "full").to_numpy()

    out = pd.DataFrame({"cell_id": frame["cell_id"], "cycle_number": frame["cycle_number"].astype("int64"),
                        "cycle_class": klass.fillna("unknown"), "scored": scored})
    currents = {cell: regular_discharge_current(group.loc[scored[group.index]], config.rate_tolerance)
                for cell, group in frame.groupby("cell_id", sort=False)}
    keys = fleet_keys(cells, currents, config)
    out["fleet"] = out["cell_id"].map(lambda c: keys[c][1])
    frame["fleet"] = frame["cell_id"].map(lambda c: keys[c][0])
    frame["bin"] = frame["cycle_number"] // config.fleet_bin_cycles
    fleet_sizes = frame.loc[scored].groupby("fleet")["cell_id"].nunique()
    out["fleet_cells"] = frame["fleet"].map(fleet_sizes).fillna(0).astype("int64")

    notes: list[list[str]] = [[] for _ in range(len(frame))]
    compared = np.zeros(len(frame), dtype=bool)
    for signal in SIGNALS:
        column = None
        z_own = np.full(len(frame), np.nan)
        z_fleet = np.full(len(frame), np.nan)
        value = pd.to_numeric(frame[signal.columns[0]], errors="coerce").to_numpy(dtype="float64") if signal.columns[0] in frame else np.full(len(frame), np.nan)
        used = np.full(len(frame), None, dtype=object)
        normalised = pd.Series(np.nan, index=frame.index)
        trend_all = np.full(len(frame), np.nan)
        span_lo = np.full(len(frame), np.nan)
        span_hi = np.full(len(frame), np.nan)
        for cell, group in frame.groupby("cell_id", sort=False):
            column = _signal_column(group, signal)
            if column is None:
                continue
            idx = group.index.to_numpy()
            rows = idx[scored[idx]]
            values = pd.to_numeric(frame.loc[rows, column], errors="coerce").to_numpy(dtype="float64")
            value[idx] = pd.to_numeric(frame.loc[idx, column], errors="coerce").to_numpy(dtype="float64")
            used[idx] = column
            present = np.isfinite(values)
            if present.sum() == 0:
                continue
            z, trend = np.full(len(rows), np.nan), np.full(len(rows), np.nan)
            z[present], trend[present], _ = _own_scores(values[present], signal, config)
            z_own[rows], trend_all[rows] = z, trend
            # the cycles each trend was the median of, for the reason's words
            history = pd.Series(frame.loc[rows[present], "cycle_number"].to_numpy(dtype="float64")).shift(1)
            span_lo[rows[present]] = history.rolling(config.trend_window, min_periods=1).min().to_numpy()
            span_hi[rows[present]] = history.rolling(config.trend_window, min_periods=1).max().to_numpy()
            if signal.fleet_normalised:
                start = np.median(values[present][: config.trend_window])
                normalised.loc[rows] = values / start if start else np.nan
            else:
                normalised.loc[rows] = values
        frame["_compared"] = normalised.where(scored)
        fleet_z, fleet_centre = _fleet_z(frame, "_compared", signal, config)
        z_fleet[:] = fleet_z
        out[f"z_{signal.name}_own"] = z_own
        out[f"z_{signal.name}_fleet"] = z_fleet
        out[f"{signal.name}_value"] = value
        out[f"{signal.name}_column"] = used
        compared |= np.isfinite(z_own) | np.isfinite(z_fleet)
        for i in np.flatnonzero(np.abs(np.nan_to_num(z_own)) >= config.warning_z):
            span = f"cycles {span_lo[i]:.0f}-{span_hi[i]:.0f}"
            delta = value[i] - trend_all[i]
            notes[i].append(
                f"{signal.what} {_fmt(value[i], signal.unit)} is {_fmt(abs(delta), signal.unit)} "
                f"{'above' if delta > 0 else 'below'} the cell's trend {_fmt(trend_all[i], signal.unit)} "
                f"({z_own[i]:+.1f} robust SD over {span}; `{used[i]}`)"
            )
        for i in np.flatnonzero(np.abs(np.nan_to_num(z_fleet)) >= config.warning_z):
            what = f"{signal.what} relative to the cell's start" if signal.fleet_normalised else signal.what
            notes[i].append(
                f"{what} {frame.at[i, '_compared']:.4g} against the fleet's {fleet_centre[i]:.4g} at cycles "
                f"{frame.at[i, 'bin'] * config.fleet_bin_cycles}-{(frame.at[i, 'bin'] + 1) * config.fleet_bin_cycles - 1} "
                f"({z_fleet[i]:+.1f} robust SD; fleet: {out.at[i, 'fleet']})"
            )

    z_columns = [f"z_{s}_{r}" for s in SIGNAL_NAMES for r in REFERENCES]
    magnitudes = out[z_columns].abs()
    out["anomaly_score"] = magnitudes.max(axis=1, skipna=True)
    top = magnitudes.fillna(-1.0).to_numpy().argmax(axis=1)
    out["signal"] = [z_columns[k].split("_")[1] if compared[i] else None for i, k in enumerate(top)]
    out["reference"] = [z_columns[k].split("_")[2] if compared[i] else None for i, k in enumerate(top)]
    out["severity"] = [_severity(s, config) for s in out["anomaly_score"]]
    own_z = out[[f"z_{n}_own" for n in SIGNAL_NAMES]].notna().to_numpy()
    fleet_z = out[[f"z_{n}_fleet" for n in SIGNAL_NAMES]].notna().to_numpy()
    reasons = []
    for i in range(len(out)):
        if not scored[i]:
            reasons.append(f"not scored: a {out.at[i, 'cycle_class']} cycle is not comparable with the cell's full cycles")
            continue
        own = [n for n, ok in zip(SIGNAL_NAMES, own_z[i]) if ok]
        fleet = [n for n, ok in zip(SIGNAL_NAMES, fleet_z[i]) if ok]
        if frame.at[i, "fleet"] is None:
            fleet_words = out.at[i, "fleet"]
        elif fleet:
            fleet_words = f"fleet ({', '.join(fleet)})"
        else:
            fleet_words = f"fleet not compared: fewer than {config.min_fleet_cells} other cells at these cycles"
        own_words = (f"own trend ({', '.join(own)})" if own
                     else f"own trend not compared: fewer than {config.min_history + 1 + config.min_spread_cycles} earlier full cycles")
        if not compared[i]:
            reasons.append(f"not scored: {own_words}; {fleet_words}")
        elif notes[i]:
            reasons.append("; ".join(notes[i]))
        else:
            reasons.append(f"within {config.warning_z:g} robust SD: {own_words}; {fleet_words}")
    out["reason"] = reasons
    out.loc[~out["scored"], "anomaly_score"] = np.nan
    return out[ANOMALY_COLUMNS]


def anomaly_summary(scores: pd.DataFrame) -> dict:
    """Counts for metadata and reports: scored cycles, flagged by severity and by signal."""
    flagged = scores.loc[scores["severity"] != "none"]
    return {
        "cycles": int(len(scores)),
        "cells": int(scores["cell_id"].nunique()),
        "scored": int(scores["scored"].sum()),
        "compared": int(scores["anomaly_score"].notna().sum()),
        "by_severity": {s: int((scores["severity"] == s).sum()) for s in SEVERITIES},
        "by_signal": {k: int(v) for k, v in flagged["signal"].value_counts().items()},
        "cells_flagged": int(flagged["cell_id"].nunique()),
    }


# Injected anomaly sizes of the self-test (`injection_test`): what a fault of each kind does to a
# cycle, in the signal's own terms (module docstring of each signal's meaning).
INJECTED = {
    "capacity": ("relative", 0.03),  # a 3 % capacity jump (either sign)
    "resistance": ("relative", 0.15),  # a 15 % resistance spike
    "temperature": ("absolute", 3.0),  # a 3 degC hotter cycle
    "efficiency": ("absolute", -0.015),  # 1.5 % of the charge not coming back
}


def baseline_flags(features: pd.DataFrame, column: str, z: float = 3.0) -> pd.Series:
    """The textbook detector the score must beat: |x - the cell's median| > z x its robust SD,
    over the cell's full cycles, blind to trends."""
    values = pd.to_numeric(features[column], errors="coerce")
    grouped = values.groupby(features["cell_id"].astype(str))
    centre = grouped.transform("median")
    spread = (values - centre).abs().groupby(features["cell_id"].astype(str)).transform("median") * MAD_TO_SD
    return ((values - centre).abs() > z * spread.replace(0.0, np.nan)).fillna(False)


def injection_test(features: pd.DataFrame, cells: pd.DataFrame, config: AnomalyConfig = AnomalyConfig(),
                   seed: int = 0, rounds: int = 3, min_cycles: int = 30) -> dict:
    """Recall and precision of `score_cycles` and of `baseline_flags` on this fleet's own cycles
    with known anomalies added (`INJECTED`: one per signal per cell per round, at a random full
    cycle past the first 20), so a fleet can see what the detector would find in *its* data.

    Precision counts only new flags, for both detectors: a cycle already flagged without the
    injection (a real event, a heavy tail of this data, or for the baseline a faded cell's later
    cycles) is neither a hit nor a false alarm; those are counted apart (`clean_flags`: full
    cycles each detector flags in the data as it is). Returns per signal and overall: injected, found, recall, new false flags, precision,
    F1, and the same for the baseline.
    """
    frame = features.sort_values(["cell_id", "cycle_number"], kind="stable").reset_index(drop=True)
    full = (frame["cycle_class"] == "full").to_numpy() if "cycle_class" in frame else np.ones(len(frame), bool)
    clean = score_cycles(frame, cells, config)
    rng = np.random.default_rng(seed)
    totals = {s: {"injected": 0, "found": 0, "false": 0, "baseline_found": 0, "baseline_false": 0,
                  "clean_flags": 0, "baseline_clean_flags": 0} for s in SIGNAL_NAMES}
    for _ in range(rounds):
        injected = frame.copy()
        hits: dict[str, list[int]] = {s: [] for s in SIGNAL_NAMES}
        for cell, group in frame.groupby("cell_id", sort=False):
            rows = group.index.to_numpy()[full[group.index.to_numpy()]]
            if len(rows) < min_cycles:
                continue
            for signal in SIGNALS:
                column = clean.loc[rows[0], f"{signal.name}_column"]
                if column is None or pd.isna(frame.loc[rows, column]).all():
                    continue
                target = int(rng.choice(rows[20:]))
                if not np.isfinite(float(frame.at[target, column])):
                    continue
                kind, size = INJECTED[signal.name]
                sign = rng.choice([-1.0, 1.0]) if signal.name == "capacity" else 1.0
                old = float(frame.at[target, column])
                injected.at[target, column] = old * (1 + sign * size) if kind == "relative" else old + size
                hits[signal.name].append(target)
        scores = score_cycles(injected, cells, config)
        for signal in SIGNAL_NAMES:
            targets = np.asarray(hits[signal], dtype=int)
            if targets.size == 0:
                continue
            z = scores[[f"z_{signal}_own", f"z_{signal}_fleet"]].abs().max(axis=1).fillna(0).to_numpy()
            z_clean = clean[[f"z_{signal}_own", f"z_{signal}_fleet"]].abs().max(axis=1).fillna(0).to_numpy()
            flagged = z >= config.warning_z
            new = flagged & (z_clean < config.warning_z)
            is_target = np.zeros(len(frame), bool)
            is_target[targets] = True
            column = clean.loc[targets[0], f"{signal}_column"]
            base = baseline_flags(injected.loc[full], column).reindex(frame.index, fill_value=False).to_numpy()
            base_clean = baseline_flags(frame.loc[full], column).reindex(frame.index, fill_value=False).to_numpy()
            t = totals[signal]
            t["injected"] += int(targets.size)
            t["found"] += int((flagged & is_target).sum())
            t["false"] += int((new & ~is_target).sum())
            t["baseline_found"] += int((base & is_target).sum())
            t["baseline_false"] += int((base & ~base_clean & ~is_target).sum())
            t["clean_flags"] = int((z_clean >= config.warning_z)[full].sum())
            t["baseline_clean_flags"] = int(base_clean.sum())
    out = {}
    for signal, t in list(totals.items()) + [("all", {k: sum(v[k] for v in totals.values()) for k in totals["capacity"]})]:
        if not t["injected"]:
            continue
        found, base_found = t["found"], t["baseline_found"]
        out[signal] = {
            **t,
            "recall": found / t["injected"],
            "precision": found / (found + t["false"]) if found + t["false"] else None,
            "baseline_recall": base_found / t["injected"],
            "baseline_precision": base_found / (base_found + t["baseline_false"]) if base_found + t["baseline_false"] else None,
        }
        p, r = out[signal]["precision"] or 0.0, out[signal]["recall"]
        bp, br = out[signal]["baseline_precision"] or 0.0, out[signal]["baseline_recall"]
        out[signal]["f1"] = 2 * p * r / (p + r) if p + r else 0.0
        out[signal]["baseline_f1"] = 2 * bp * br / (bp + br) if bp + br else 0.0
    out["injected_sizes"] = {
        name: (f"x (1 {'+-' if name == 'capacity' else '+' if size > 0 else '-'} {abs(size):g})" if kind == "relative"
               else f"{'+' if size > 0 else '-'}{abs(size):g}")
        for name, (kind, size) in INJECTED.items()
    }
    out["rounds"], out["seed"], out["warning_z"] = rounds, seed, config.warning_z
    return out


def causality_probe(features: pd.DataFrame, cells: pd.DataFrame, config: AnomalyConfig = AnomalyConfig(),
                    n_cells: int = 3) -> dict:
    """Change every later cycle of a cell (halve its capacity, double its resistance, add 20 degC,
    take 0.2 off its efficiency) and rescore: the own-trend scores of the cycles up to the change
    must not move, since a cycle is judged by the cycles before it only. Returns what moved.

    (The fleet reference compares cycles of the same 10-cycle bin across cells, later ones of
    that bin included: it is a comparison with peers, not a forecast, and is not probed.)"""
    frame = features.sort_values(["cell_id", "cycle_number"], kind="stable").reset_index(drop=True)
    full = frame["cycle_class"] == "full" if "cycle_class" in frame else pd.Series(True, index=frame.index)
    probed, moved = [], []
    base = score_cycles(frame, cells, config)
    for cell, group in frame[full].groupby(frame["cell_id"].astype(str), sort=True):
        if len(group) < 4 * config.trend_window or len(probed) >= n_cells:
            continue
        cut = int(group["cycle_number"].iloc[len(group) // 2])
        changed = frame.copy()
        later = (changed["cell_id"].astype(str) == cell) & (changed["cycle_number"] > cut)
        for column, change in (("discharge_capacity_ah", lambda v: v * 0.5), ("resistance_cycler_ohm", lambda v: v * 2.0),
                               ("resistance_dcir_ohm", lambda v: v * 2.0), ("re_ohm", lambda v: v * 2.0),
                               ("temperature_rise_c", lambda v: v + 20.0), ("temperature_max_c", lambda v: v + 20.0),
                               ("coulombic_efficiency", lambda v: v - 0.2)):
            if column in changed:
                changed.loc[later, column] = change(pd.to_numeric(changed.loc[later, column], errors="coerce"))
        after = score_cycles(changed, cells, config)
        upto = ((base["cell_id"] == cell) & (base["cycle_number"] <= cut)).to_numpy()
        columns = [f"z_{s}_own" for s in SIGNAL_NAMES]
        a, b = base.loc[upto, columns].to_numpy(), after.loc[upto, columns].to_numpy()
        same = (a == b) | (np.isnan(a) & np.isnan(b))
        probed.append({"cell_id": cell, "changed_after_cycle": cut, "cycles_compared": int(upto.sum())})
        if not same.all():
            moved.append({"cell_id": cell, "cycles_moved": int((~same.all(axis=1)).sum())})
    return {"probed": probed, "moved": moved}
