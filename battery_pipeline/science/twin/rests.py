"""Run-length helpers and rest detection shared by the twin models.

A rest is a run of consecutive samples with |I| below a threshold. It begins where the current
stopped, which depends on the hold convention (see base.held_increments): "backward", the first
rest sample's current covers the interval before it, so the rest began at the previous sample;
"forward", the previous sample's current held until the first rest sample. Its duration runs to
the last rest sample: how long the cell had relaxed when its last voltage was measured. Only rests
of at least a minimum duration are long enough for that voltage to be taken as the OCV.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from battery_pipeline.science.twin.ocv import OcvTable, ocv_table

REST_COLUMNS = ["start", "end", "start_time_s", "end_time_s", "duration_s"]
REST_AVERAGE_FRACTION = 1.0 / 6.0  # an averaged rest voltage comes from the rest's last sixth at most


def true_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, last) positions, inclusive, of every run of True in a boolean array."""
    padded = np.concatenate(([False], np.asarray(mask, dtype=bool), [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return edges[0::2], edges[1::2] - 1


def detect_rests(time_s: np.ndarray, current_a: np.ndarray, threshold_a: float, min_duration_s: float,
                 hold: str = "backward") -> pd.DataFrame:
    """Rests lasting at least `min_duration_s`: positions of their first/last samples, their
    start time (when the current stopped) and end time (last sample)."""
    current = np.asarray(current_a, dtype="float64")
    time_s = np.asarray(time_s, dtype="float64")
    # A missing current is not evidence of rest.
    starts, ends = true_runs(np.abs(np.nan_to_num(current, nan=np.inf)) < threshold_a)
    began = time_s[np.maximum(starts - 1, 0)] if hold == "backward" else time_s[starts]
    duration = time_s[ends] - began
    keep = duration >= min_duration_s
    return pd.DataFrame(
        {
            "start": starts[keep],
            "end": ends[keep],
            "start_time_s": began[keep],
            "end_time_s": time_s[ends[keep]],
            "duration_s": duration[keep],
        },
        columns=REST_COLUMNS,
    )


@lru_cache(maxsize=256)
def _table(chemistry: str, temperature_c: float) -> OcvTable:
    return ocv_table(chemistry, temperature_c=temperature_c)


def table_at(chemistry: str, temperature_c: float) -> OcvTable:
    """OCV table of the chemistry at a temperature rounded to 0.1 degC (so tables can be reused)."""
    return _table(chemistry, round(float(temperature_c), 1))


def rest_cell_soc(rests: pd.DataFrame, cell_voltages: pd.DataFrame, temperature_c: np.ndarray,
                  chemistry: str, time_s: np.ndarray | None = None,
                  average_s: float = 0.0) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """At each rest: the relaxed voltage of every cell and the SOC it implies.

    The relaxed voltage is the cell's last reading in the rest (a missing last reading falls back
    to the last one the cell has in the rest; none at all gives NaN). With `average_s` > 0 (and
    `time_s`, the sample times) it is instead the mean of the cell's readings over the rest's
    last `average_s` seconds, at most its last REST_AVERAGE_FRACTION of the rest's duration (so
    the window stays where the cell has nearly relaxed): sensor noise shrinks by the square root
    of the number of readings. The OCV table is taken at the rest's mean temperature. Returns
    (ocv_v, soc, temperature): frames with one row per rest (in `rests` order) and one column per
    cell, and the rest temperatures.
    """
    volts = cell_voltages.to_numpy(dtype="float64")
    starts, ends = rests["start"].to_numpy(), rests["end"].to_numpy()
    # Row of each cell's latest reading at or before every sample (-1: none yet).
    rows = np.arange(len(volts))[:, None]
    latest = np.maximum.accumulate(np.where(np.isnan(volts), -1, rows), axis=0)
    ocv = np.full((len(rests), volts.shape[1]), np.nan)
    if len(rests):
        pick = latest[ends]
        inside = pick >= starts[:, None]
        ocv[inside] = volts[pick[inside], np.nonzero(inside)[1]]
        if average_s > 0:
            if time_s is None:
                raise ValueError("averaging the rest voltage needs the sample times")
            time_s = np.asarray(time_s, dtype="float64")
            window = np.minimum(float(average_s), REST_AVERAGE_FRACTION * rests["duration_s"].to_numpy())
            first = np.maximum(np.searchsorted(time_s, time_s[ends] - window, side="left"), starts)
            for i, (lo, end) in enumerate(zip(first, ends)):
                tail = volts[lo:end + 1]
                seen = ~np.isnan(tail).all(axis=0)  # cells without a reading in the window keep the last one
                if seen.any():
                    ocv[i, seen] = np.nanmean(tail[:, seen], axis=0)
    temps = np.empty(len(rests))
    soc = np.empty_like(ocv)
    # Mean temperature over each rest from a cumulative sum (one pass, no slicing per rest).
    csum = np.concatenate(([0.0], np.cumsum(temperature_c)))
    for i, (start, end) in enumerate(zip(starts, ends)):
        temps[i] = (csum[end + 1] - csum[start]) / (end + 1 - start)
        soc[i] = table_at(chemistry, temps[i]).soc_from_ocv(ocv[i])
    columns = cell_voltages.columns
    return pd.DataFrame(ocv, columns=columns), pd.DataFrame(soc, columns=columns), temps
