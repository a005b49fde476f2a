"""Pack fault diagnosis measured against pack_sim's injected faults, beside a naive baseline.

Used by `benchmarks/pack_faults.py` (a grid of chemistries, sample periods and pack sizes) and by
the `pack_fault_report` asset (a self-test at the configurations of the packs the warehouse holds).

`simulated_runs(configs, hours, settings)`: for every configuration (chemistry, sample period,
cells), one pack per fault kind (onset drawn by pack_sim, magnitude by `draw_magnitude` across the
kinds' ranges) and one fault-free pack, each diagnosed by `pack_fault_diagnosis` and by
`deviation_alerts`, the baseline. Matching: a diagnosis is a true positive when it names the
faulted cell and kind and was detected at or after onset. For the kind-blind comparison with the
baseline (`detection_table`), an alert on the faulted cell at or after onset detects the fault,
whatever it calls it; every other alert is a false one.

The baseline is what a BMS threshold does: a cell whose voltage is more than `threshold_v` from
the pack's median for at least `min_duration_s` raises an alert, and that alert has no kind.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from battery_pipeline.science.twin.pack_sim import CELL_DEFAULTS, FAULT_KINDS, simulate_pack
from battery_pipeline.science.twin.rests import true_runs
from battery_pipeline.science.twin.runner import run_model

MAX_SHORT_DRAIN = 0.4  # SOC fraction a short may drain by the end (else the pack would be flat)
SECONDS_PER_DAY = 86400.0
BASELINE_THRESHOLD_V = 0.03
BASELINE_MIN_DURATION_S = 60.0
ALERT_COLUMNS = ["pack", "detector", "cell", "kind", "severity", "detected_time_s", "true_positive", "delay_s",
                 "on_faulted_cell", "after_onset", "evidence"]


def run_diagnosis(frame: pd.DataFrame, settings, source_kind: str, chemistry: str, capacity_ah: float):
    outputs, _ = run_model("pack_fault_diagnosis", frame, settings, source_kind,
                           parameters={"chemistry": chemistry, "nominal_capacity_ah": capacity_ah})
    return outputs


def draw_magnitude(kind: str, rng: np.random.Generator, capacity_ah: float, hours_after: float) -> float | None:
    low, high = FAULT_KINDS[kind][2] or (None, None)
    if kind == "internal_short":  # log-uniform, but never a short that empties the cell within the record
        low = max(low, 4.2 * hours_after / (MAX_SHORT_DRAIN * capacity_ah))
        return float(math.exp(rng.uniform(math.log(low), math.log(max(high, low * 1.01)))))
    if kind == "voltage_sensor_offset":
        return float(rng.uniform(low, high) * rng.choice([-1.0, 1.0]))
    if kind == "loose_connection":
        return float(rng.uniform(low, high))
    return None


def deviation_alerts(telemetry: pd.DataFrame, threshold_v: float = BASELINE_THRESHOLD_V,
                     min_duration_s: float = BASELINE_MIN_DURATION_S) -> pd.DataFrame:
    """The baseline: per cell, each run of samples more than `threshold_v` from the pack median
    lasting `min_duration_s` is an alert (cell, detected_time_s = when it had lasted that long)."""
    cells = [c for c in telemetry.columns if c.startswith("cell_") and c.endswith("_voltage_v")]
    time_s = telemetry["time_s"].to_numpy(dtype="float64")
    volts = telemetry[cells].to_numpy(dtype="float64")
    median = np.nanmedian(volts, axis=1, keepdims=True)
    rows = []
    for j, column in enumerate(cells):
        starts, ends = true_runs(np.abs(volts[:, j] - median[:, 0]) > threshold_v)
        for start, end in zip(starts, ends):
            if time_s[end] - time_s[start] >= min_duration_s:
                at = int(np.searchsorted(time_s, time_s[start] + min_duration_s))
                rows.append({"cell": column[: -len("_voltage_v")], "detected_time_s": float(time_s[min(at, end)])})
    return pd.DataFrame(rows, columns=["cell", "detected_time_s"])


def simulated_runs(configs: list[tuple[str, float, int]], hours: float, settings, first_seed: int = 9000,
                   seeds: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per simulated pack, one row per alert of either detector) over the configurations
    (chemistry, sample period s, cells); see the module docstring."""
    packs, alert_rows = [], []
    count = 0
    for chemistry, dt, n_cells in configs:
        for _ in range(seeds):
            for kind in (None, *FAULT_KINDS):
                seed = first_seed + count
                count += 1
                rng = np.random.default_rng(seed)
                capacity = CELL_DEFAULTS[chemistry]["nominal_capacity_ah"]
                # Onset drawn by pack_sim (20-60 % of the record): at most 80 % of it remains.
                spec = [] if kind is None else [{"kind": kind, "magnitude": draw_magnitude(kind, rng, capacity, 0.8 * hours)}]
                sim = simulate_pack(n_cells=n_cells, chemistry=chemistry, duration_h=hours, sample_period_s=dt,
                                    seed=seed, faults=spec, pack_id=f"pack_{seed}")
                fault = sim.faults.iloc[0] if len(sim.faults) else None
                packs.append({"pack": sim.pack["pack_id"], "chemistry": chemistry, "dt_s": dt, "n_cells": n_cells,
                              "kind": kind or "none", "cell": None if fault is None else fault.cell,
                              "onset_time_s": np.nan if fault is None else fault.onset_time_s,
                              "magnitude": np.nan if fault is None else fault.magnitude, "days": hours / 24.0})
                diagnosed = run_diagnosis(sim.telemetry, settings, "pack_telemetry", chemistry, capacity)["fault_alerts"]
                baseline = deviation_alerts(sim.telemetry).assign(kind=None, severity=None, evidence="")
                for detector, alerts in (("diagnosis", diagnosed), ("baseline", baseline)):
                    for a in alerts.itertuples():
                        on_cell = fault is not None and a.cell == fault.cell
                        after = fault is not None and a.detected_time_s >= fault.onset_time_s
                        match = on_cell and after and a.kind == fault.kind
                        alert_rows.append({"pack": sim.pack["pack_id"], "detector": detector, "cell": a.cell, "kind": a.kind,
                                           "severity": a.severity, "detected_time_s": a.detected_time_s,
                                           "true_positive": bool(match),
                                           "delay_s": a.detected_time_s - fault.onset_time_s if on_cell and after else np.nan,
                                           "on_faulted_cell": on_cell, "after_onset": after, "evidence": a.evidence})
    return pd.DataFrame(packs), pd.DataFrame(alert_rows, columns=ALERT_COLUMNS)


def per_kind_table(packs: pd.DataFrame, alerts: pd.DataFrame) -> pd.DataFrame:
    """The diagnosis per fault kind: precision, recall, misclassified, detection delay."""
    alerts = alerts[alerts.detector == "diagnosis"]
    rows = []
    for kind in FAULT_KINDS:
        faulted = packs[packs.kind == kind]
        raised = alerts[alerts.kind == kind]
        tp = raised[raised.true_positive]
        found = set(tp.pack)
        other = alerts[alerts.pack.isin(faulted.pack) & alerts.on_faulted_cell & (alerts.kind != kind)]
        delays = tp.delay_s.to_numpy()
        rows.append({"kind": kind, "faults": len(faulted), "alerts": len(raised), "true_pos": len(found),
                     "precision": len(tp) / len(raised) if len(raised) else float("nan"),
                     "recall": len(found) / len(faulted) if len(faulted) else float("nan"),
                     "misclassified": len(set(other.pack) - found),
                     "delay_median_h": float(np.median(delays)) / 3600.0 if len(delays) else float("nan"),
                     "delay_p90_h": float(np.percentile(delays, 90)) / 3600.0 if len(delays) else float("nan")})
    return pd.DataFrame(rows)


def detection_table(packs: pd.DataFrame, alerts: pd.DataFrame) -> pd.DataFrame:
    """Kind-blind, both detectors: recall (faults with an alert on their cell after onset),
    precision (such alerts over all alerts), F1, false alerts per fault-free pack-day."""
    faulted = packs[packs.kind != "none"]
    clean_days = float(packs.loc[packs.kind == "none", "days"].sum())
    rows = []
    for detector in ("diagnosis", "baseline"):
        mine = alerts[alerts.detector == detector]
        hits = mine[mine.on_faulted_cell & mine.after_onset]
        recall = hits.pack.nunique() / len(faulted) if len(faulted) else float("nan")
        precision = len(hits) / len(mine) if len(mine) else float("nan")
        f1 = 2 * precision * recall / (precision + recall) if precision == precision and precision + recall > 0 else 0.0
        clean_alerts = mine[mine.pack.isin(packs.loc[packs.kind == "none", "pack"])]
        rows.append({"detector": detector, "faults": len(faulted), "alerts": len(mine), "recall": recall,
                     "precision": precision, "f1": f1,
                     "false_alerts_per_clean_pack_day": len(clean_alerts) / clean_days if clean_days else float("nan"),
                     "kind_named": detector == "diagnosis"})
    return pd.DataFrame(rows)


def recall_by(packs: pd.DataFrame, alerts: pd.DataFrame, column: str) -> pd.DataFrame:
    found = set(alerts[(alerts.detector == "diagnosis") & alerts.true_positive].pack)
    faulted = packs[packs.kind != "none"].assign(found=lambda f: f.pack.isin(found))
    return faulted.groupby(["kind", column]).found.mean().unstack(column)


def truncation_probe(packs: pd.DataFrame, alerts: pd.DataFrame, settings, hours: float, limit: int = 4) -> list[dict]:
    """Does a diagnosis need data after its `detected_time_s`? For up to `limit` true positives
    (one per kind first), the same pack is simulated again, its telemetry cut at the detection
    time, and diagnosed: the fault must be found again (same cell and kind), at or before that time."""
    hits = alerts[(alerts.detector == "diagnosis") & alerts.true_positive].drop_duplicates("kind")
    out = []
    for hit in hits.head(limit).itertuples():
        pack = packs.set_index("pack").loc[hit.pack]
        seed = int(str(hit.pack).rsplit("_", 1)[1])
        magnitude = None if not pack.magnitude == pack.magnitude else float(pack.magnitude)
        sim = simulate_pack(n_cells=int(pack.n_cells), chemistry=pack.chemistry, duration_h=hours, sample_period_s=float(pack.dt_s),
                            seed=seed, faults=[{"kind": pack.kind, "magnitude": magnitude}], pack_id=hit.pack)
        cut = sim.telemetry[sim.telemetry["time_s"] <= hit.detected_time_s].reset_index(drop=True)
        capacity = CELL_DEFAULTS[pack.chemistry]["nominal_capacity_ah"]
        again = run_diagnosis(cut, settings, "pack_telemetry", pack.chemistry, capacity)["fault_alerts"]
        same = again[(again.cell == hit.cell) & (again.kind == hit.kind)]
        out.append({"pack": hit.pack, "kind": hit.kind, "cell": hit.cell, "detected_time_s": float(hit.detected_time_s),
                    "found_again": bool(len(same)),
                    "detected_again_s": float(same.detected_time_s.min()) if len(same) else None})
    return out
