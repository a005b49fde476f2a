"""Sampling gaps and outliers: what the data rules do with holes and spikes in a cell's samples.

The seed's data rules, applied by `validation.validate_samples`; none of them is silent:

* **gap**: a run of consecutive samples missing a required measurement (`voltage_v` or
  `current_a`; a sample without `time_s` cannot be placed and is never interpolated).
  - A run of at most `max_gap_points` (4: "under 5 points") with a complete sample of the *same
    cycle and step* on each side is interpolated linearly in time between those two samples.
    The interpolated value goes to `validated_samples`, and every interpolated value gets a row in
    the flag ledger (`sample_flags`, flag `interpolated`); `raw_samples` keeps the missing value.
    If either end sample is itself rejected by a later rule, the run is quarantined instead: an
    interpolation is only as good as its two measured ends.
  - A longer run, one at a step boundary or at the end of the data is quarantined
    (`missing_value`). Sources without step information derive steps from the current, so a
    missing current there splits the step and is not interpolated either.
  - `temperature_c` is nullable: short gaps are interpolated and flagged the same way, longer
    ones stay null (no temperature is not a reason to reject a sample).
* **incomplete cycle**: a cycle with over `max_missing_share` (10 %) of its samples missing a
  required measurement is dropped as a whole: its samples go to quarantine with reason code
  `cycle_incomplete` (or the rule that rejected them first), because its capacity and energy
  would be wrong. "Missing" counts absent values only; rows rejected for other reasons
  (duplicates, out of window) are bad samples, not holes, and do not count.
* **outlier**: per channel (voltage, current, temperature), the residual of each sample against
  the median of the 5 samples centred on it in the same (cycle, step) (neighbours taken in
  symmetric pairs; a pair reaching outside the step, or over a rejected sample, counts as the
  sample itself, so the first and last sample of a step are never outliers); a residual beyond
  `outlier_sigma` (3) standard deviations of the channel's residuals over the cell (at least the
  channel's resolution, `SIGMA_FLOOR`) is flagged `outlier` in the ledger and **kept**.

Pure numpy/pandas, vectorized: no Python loop over samples; the median runs on array views in
cache-sized chunks (about 10 ms per channel per million samples).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

REQUIRED_CHANNELS = ("voltage_v", "current_a")
INTERPOLATED_CHANNELS = ("voltage_v", "current_a", "temperature_c")
OUTLIER_CHANNELS = ("voltage_v", "current_a", "temperature_c")
# A residual below the channel's resolution is never an outlier (a constant-current step has a
# residual spread of ~0, and 3 x 0 would flag rounding noise).
SIGMA_FLOOR = {"voltage_v": 1e-3, "current_a": 1e-3, "temperature_c": 0.1}

FLAG_COLUMNS = [
    "cell_id", "cycle_number", "step_index", "source_file", "source_row",
    "flag", "channel", "value", "reference_value", "detail",
]
_CHUNK = 1 << 14  # samples per chunk of the median kernel: its temporaries stay in L2


@dataclass(frozen=True)
class GapFill:
    """Interpolated values of one channel: `rows` (positions in the frame), their values and the
    two measured rows they were interpolated between."""

    column: str
    rows: np.ndarray
    values: np.ndarray
    left: np.ndarray
    right: np.ndarray
    gap_points: np.ndarray


def segment_breaks(cycle: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Cumulative count of (cycle, step) changes: two rows are in one segment iff equal."""
    changed = np.zeros(len(cycle), dtype=np.int64)
    if len(cycle) > 1:
        changed[1:] = (cycle[1:] != cycle[:-1]) | (step[1:] != step[:-1])
    return np.cumsum(changed)


def fillable_runs(hole: np.ndarray, blocked: np.ndarray, time_s: np.ndarray, segment: np.ndarray, max_gap: int):
    """Runs of `hole` rows that may be interpolated: (rows, left anchor, right anchor, run length).

    A run qualifies when it has at most `max_gap` rows, none of them `blocked`, a non-hole row on
    each side in the same segment (`segment` from `segment_breaks`), and times that lie between
    the two anchors' (the right one strictly later).
    """
    empty = np.zeros(0, dtype=np.int64)
    n = len(hole)
    if max_gap <= 0 or not hole.any():
        return empty, empty, empty, empty
    hole = hole | blocked
    start = np.flatnonzero(hole & ~np.concatenate([[False], hole[:-1]]))
    end = np.flatnonzero(hole & ~np.concatenate([hole[1:], [False]]))
    length = end - start + 1
    left, right = start - 1, end + 1
    ok = (length <= max_gap) & (left >= 0) & (right < n)
    blocked_count = np.concatenate([[0], np.cumsum(blocked)])
    ok &= (blocked_count[end + 1] - blocked_count[start]) == 0
    left_c, right_c = np.clip(left, 0, n - 1), np.clip(right, 0, n - 1)
    ok &= segment[left_c] == segment[right_c]
    ok &= time_s[right_c] > time_s[left_c]
    start, end, length, left, right = start[ok], end[ok], length[ok], left[ok], right[ok]
    if len(start) == 0:
        return empty, empty, empty, empty
    run_of_row = np.repeat(np.arange(len(start)), length)
    rows = start[run_of_row] + (np.arange(len(run_of_row)) - np.repeat(np.cumsum(length) - length, length))
    t = time_s[rows]
    inside = np.isfinite(t) & (t >= time_s[left[run_of_row]]) & (t <= time_s[right[run_of_row]])
    bad_runs = np.unique(run_of_row[~inside])
    keep = ~np.isin(run_of_row, bad_runs)
    run_of_row = run_of_row[keep]
    return rows[keep], left[run_of_row], right[run_of_row], length[run_of_row]


def interpolate(values: np.ndarray, time_s: np.ndarray, rows: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Linear in time between the measured values at `left` and `right`."""
    t0, t1 = time_s[left], time_s[right]
    weight = (time_s[rows] - t0) / (t1 - t0)
    return values[left] + (values[right] - values[left]) * weight


def missing_share_by_cycle(cycle: np.ndarray, incomplete: np.ndarray) -> pd.DataFrame:
    """Per cycle with any missing sample: its rows, missing rows and their share (every row
    counts, as in the `incomplete_cycles_quarantined` check on the stored tables)."""
    columns = ["cycle_number", "rows", "missing_rows", "missing_share"]
    if not incomplete.any():
        return pd.DataFrame({c: np.zeros(0, dtype="float64" if c == "missing_share" else "int64") for c in columns})
    rows = pd.Series(cycle).value_counts()
    missing = pd.Series(cycle[incomplete]).value_counts()
    table = pd.DataFrame({"missing_rows": missing}).join(rows.rename("rows"))
    table.index.name = "cycle_number"
    table = table.reset_index()
    table["missing_share"] = table["missing_rows"] / table["rows"]
    return table[columns].astype({"cycle_number": "int64", "rows": "int64", "missing_rows": "int64"}).sort_values("cycle_number", ignore_index=True)


def _median4(a, b, c, d):
    """Elementwise median of four arrays: the mean of the two middle values (no sort)."""
    return (np.maximum(np.minimum(a, b), np.minimum(c, d)) + np.minimum(np.maximum(a, b), np.maximum(c, d))) / 2


def _median5(a, b, c, d, e):
    """Elementwise median of five arrays with a min/max network (no sort)."""
    lo1, hi1 = np.minimum(a, b), np.maximum(a, b)
    lo2, hi2 = np.minimum(c, d), np.maximum(c, d)
    swap = lo1 > lo2  # the smaller of the two pair minima is below three others: never the median
    hi1, lo2, hi2 = np.where(swap, hi2, hi1), np.where(swap, lo1, lo2), np.where(swap, hi1, hi2)
    lo3, hi3 = np.minimum(hi1, e), np.maximum(hi1, e)
    # the median is the second smallest of {lo3, hi3, lo2, hi2}
    return np.where(lo3 < lo2, np.minimum(hi3, lo2), np.minimum(lo3, hi2))


def _medians_at(values: np.ndarray, segment: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`local_medians` at the positions `at` only, by the full rule (pairs outside the array or
    the segment, or not finite, count as the sample itself)."""
    n = len(values)
    centre_v, centre_s = values[at], segment[at]
    neighbours = []
    for distance in (1, 2):
        pair = []
        for offset in (-distance, distance):
            j = at + offset
            inside = (j >= 0) & (j < n)
            j = np.clip(j, 0, max(n - 1, 0))
            v = values[j]
            pair.append((v, inside & (segment[j] == centre_s) & np.isfinite(v)))
        both = pair[0][1] & pair[1][1]
        neighbours += [np.where(both, v, centre_v) for v, _ in pair]
    a, b, d, e = neighbours
    return _median5(a, b, centre_v, d, e), _median4(a, b, d, e)


def _special_positions(values: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Positions whose 5-sample window is not four plain in-segment finite neighbours: the
    array's ends, 2 samples either side of a segment change, and around non-finite values."""
    n = len(values)
    change = np.flatnonzero(segment[1:] != segment[:-1])  # between change and change + 1
    holes = np.flatnonzero(~np.isfinite(values))
    parts = [np.arange(min(2, n)), np.arange(max(n - 2, 0), n)]
    parts += [change + k for k in (-1, 0, 1, 2)] + [holes + k for k in (-2, -1, 0, 1, 2)]
    at = np.unique(np.concatenate(parts))
    return at[(at >= 0) & (at < n)]


def _median_residuals(values: np.ndarray, segment: np.ndarray, medians: bool = False, out=None):
    """(values - 5-sample median, values - 4-neighbour median), or the medians themselves.

    Where all four neighbours are plain (almost every sample), the 4-neighbour median is the
    mean of their middle two, x2 <= x3, and the 5-sample median is the sample clipped to
    [x2, x3]: both pick the same elements as `_median5` / `_median4`, so the values are
    identical. The few other positions (`_special_positions`) take the full rule. Done on views
    in cache-sized chunks, with no shifted copies of the arrays; `out`: two arrays of len(values)
    to write into (fresh memory costs page faults that dwarf the arithmetic on a small VM).
    """
    n = len(values)
    first, second = (np.empty(n), np.empty(n)) if out is None else out
    size = _CHUNK
    lo, hi, tmp = np.empty(size), np.empty(size), np.empty(size)
    for begin in range(2, n - 2, size):
        stop = min(n - 2, begin + size)
        m = stop - begin
        lo_, hi_, tmp_ = lo[:m], hi[:m], tmp[:m]
        a, b = values[begin - 1 : stop - 1], values[begin + 1 : stop + 1]
        d, e = values[begin - 2 : stop - 2], values[begin + 2 : stop + 2]
        centre = values[begin:stop]
        # x2/x3 as a set: max of the pair minima and min of the pair maxima (as _median4)
        np.minimum(a, b, out=lo_)
        np.minimum(d, e, out=tmp_)
        np.maximum(lo_, tmp_, out=lo_)
        np.maximum(a, b, out=hi_)
        np.maximum(d, e, out=tmp_)
        np.minimum(hi_, tmp_, out=hi_)
        out4, out5 = second[begin:stop], first[begin:stop]
        np.add(lo_, hi_, out=out4)
        np.divide(out4, 2, out=out4)
        # clip the sample to [min(lo, hi), max(lo, hi)]
        np.minimum(lo_, hi_, out=tmp_)
        np.maximum(lo_, hi_, out=hi_)
        np.minimum(centre, hi_, out=out5)
        np.maximum(out5, tmp_, out=out5)
        if not medians:
            np.subtract(centre, out5, out=out5)
            np.subtract(centre, out4, out=out4)
    at = _special_positions(values, segment)
    if at.size:
        with_sample, without_sample = _medians_at(values, segment, at)
        if medians:
            first[at], second[at] = with_sample, without_sample
        else:
            first[at], second[at] = values[at] - with_sample, values[at] - without_sample
    return first, second


def local_medians(values: np.ndarray, segment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(median of the 5 samples centred on each sample, median of its 4 neighbours alone), within
    each segment. Neighbours are taken in symmetric pairs: where one of a pair is outside the
    segment (or missing), both count as the sample itself, so a linear ramp has residual 0 up to
    the step edge and the first and last sample of a step are never outliers."""
    values = np.asarray(values, dtype="float64")
    return _median_residuals(values, np.asarray(segment), medians=True)


def _std_in_place(x: np.ndarray) -> float:
    """np.std(x) (ddof 0) by numpy's own sequence of operations (`numpy._core._methods._var`),
    overwriting x instead of allocating its temporary."""
    n = x.size
    mean = np.add.reduce(x, keepdims=True)
    mean = np.true_divide(mean, n, out=mean)
    np.subtract(x, mean, out=x)
    np.square(x, out=x)
    return float(np.sqrt(np.add.reduce(x) / n))


def outliers(values: np.ndarray, segment: np.ndarray, sigma: float, floor: float, exclude: np.ndarray | None = None,
             work: tuple[np.ndarray, np.ndarray] | None = None):
    """(rows, local median, residual in sigmas, sigma) of the samples more than `sigma` standard
    deviations from the median of the 5 samples around them; `exclude` rows (interpolated) are
    never flagged.

    The residual is against the 5-sample median (a spike does not move its neighbours'
    reference); the standard deviation is that of the samples against their 4 neighbours'
    median, whose residuals are near-Gaussian on pure noise (the 5-sample residual is 0 for a
    fifth of the samples, which would understate it). On Gaussian noise ~0.15 % are flagged.
    `work`: two float64 scratch arrays of len(values) that may be overwritten (reused across
    channels by validation instead of fresh memory each time).
    """
    values, segment = np.asarray(values, dtype="float64"), np.asarray(segment)
    residual, neighbour_residual = _median_residuals(values, segment, out=work)
    finite = np.isfinite(residual)
    if exclude is not None:
        finite &= ~exclude
    everywhere = bool(finite.all())
    if everywhere:
        if len(values) < 3:
            return np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0), float("nan")
        # no mask: np.std's own steps on the same values (so the same result), in place
        spread = max(float(_std_in_place(neighbour_residual)), floor)
        score = np.divide(residual, spread, out=residual)
    else:
        if finite.sum() < 3:
            return np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0), float("nan")
        spread = max(float(np.std(neighbour_residual[finite])), floor)
        score = np.zeros(len(values))
        score[finite] = residual[finite] / spread
    magnitude = np.abs(score, out=neighbour_residual) if everywhere else np.abs(score)
    rows = np.flatnonzero(magnitude > sigma)
    reference = _medians_at(values, segment, rows)[0]  # exact (values - residual may round)
    return rows, reference, score[rows], spread


def flag_frame(samples: pd.DataFrame, rows: np.ndarray, flag: str, channel: str, values: np.ndarray,
               reference: np.ndarray, detail) -> pd.DataFrame:
    """Ledger rows for `rows` (positions in `samples`)."""
    picked = {name: samples[name].iloc[rows] for name in ("cell_id", "cycle_number", "step_index", "source_file", "source_row")}
    return pd.DataFrame(
        {
            "cell_id": picked["cell_id"].astype(str).to_numpy(),
            "cycle_number": picked["cycle_number"].to_numpy(dtype=np.int64),
            "step_index": picked["step_index"].to_numpy(dtype=np.int64),
            "source_file": picked["source_file"].astype(str).to_numpy(),
            "source_row": picked["source_row"].to_numpy(dtype=np.int64),
            "flag": flag,
            "channel": channel,
            "value": np.asarray(values, dtype=np.float64),
            "reference_value": np.asarray(reference, dtype=np.float64),
            "detail": detail,
        },
        columns=FLAG_COLUMNS,
    )


def empty_flags() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "cell_id": pd.Series(dtype=str), "cycle_number": pd.Series(dtype="int64"),
            "step_index": pd.Series(dtype="int64"), "source_file": pd.Series(dtype=str),
            "source_row": pd.Series(dtype="int64"), "flag": pd.Series(dtype=str),
            "channel": pd.Series(dtype=str), "value": pd.Series(dtype="float64"),
            "reference_value": pd.Series(dtype="float64"), "detail": pd.Series(dtype=str),
        }
    )[FLAG_COLUMNS]
