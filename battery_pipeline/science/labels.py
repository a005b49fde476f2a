"""Health labels per cycle: state of health (SOH), end of life (EOL), remaining useful life (RUL).

Input: a per-cycle table with `cell_id`, `cycle_number`, `discharge_capacity_ah` (one cell or
many; the features table, a reader's `cycle_summary`, ...). A cycle *has a capacity* when its
discharge_capacity_ah is finite and > 0; NaN (no complete discharge in that cycle), 0 and
negative values count as "no capacity measured" everywhere below.

Definitions (`LabelConfig`; defaults in brackets):
  - Reference capacity, `soh_reference_ah`, one value per cell:
      * "nominal" [default]: the rated capacity passed to `compute_labels` (a number for all
        cells, or a mapping cell_id -> Ah). A datasheet value, so it does not move with the
        noise, formation rise or artefacts of a cell's first cycles; it is also what the
        public sets' own end criteria use (NASA: 1.4 Ah = 70 % of 2 Ah; XJTU tests stop near
        1.6 Ah = 80 % of 2.0 Ah). Unknown nominal (None / missing cell) -> ValueError.
      * "initial": the mean capacity of the cell's first `initial_cycles` [5] cycles that have
        a capacity (fewer if the cell has fewer; NaN if it has none). Five rather than one to
        three averages per-cycle noise and one full period of protocols whose capacity repeats
        every few cycles (XJTU R2.5: 5 cycles). It follows each cell's own start, so it is
        lower than nominal for cells that rise during their first cycles (XJTU) or start low
        (NASA B0005: 1.84 Ah) and is only as good as those cycles (XJTU RW_battery-1's first
        cycles are an extrapolation artefact).
  - soh = discharge_capacity_ah / soh_reference_ah where the cycle has a capacity, else NaN.
  - EOL threshold, Ah: `eol_capacity_ah` if given (an absolute criterion, e.g. NASA's 1.4 Ah;
    it overrides the fraction), else `eol_threshold` [0.8] x soh_reference_ah.
  - eol_cycle: the cycle_number of the first cycle whose capacity is below the threshold
    (strictly) and stays below for `eol_consecutive` [3] consecutive cycles *that have a
    capacity* (cycles without one neither break nor extend the run). A run that lasts to the
    cell's last cycle with a capacity counts even if it is shorter
    (`trailing_run_counts` [True]): tests are usually stopped because the cell reached its end
    criterion, so a short final run is the end of life, not noise. So a single dip below the
    threshold followed by recovery (noise, capacity regeneration after a rest) is not EOL,
    while the cycle reported is still the first of the sustained run (not a smoothed or
    interpolated crossing). eol_cycle is the same on every row of a cell; pandas nullable
    Int64, <NA> when the cell is censored.
  - censored: True when no run qualifies (the cell never reached EOL in the data, or has no
    capacities at all).
  - rul_cycles (int64): eol_cycle - cycle_number for uncensored cells: 0 at the EOL cycle and
    *negative* after it (cycles past end of life; filter rul_cycles >= 0 for training data).
    For censored cells it is a lower bound: last_cycle - cycle_number, where last_cycle is the
    cell's largest cycle_number in the input (the cell was still cycled then and had not
    reached EOL). Either way RUL falls by exactly one per cycle within a cell.
Output: one row per input row, same index and order as the input, columns `LABEL_COLUMNS`
exactly. Vectorized (sorting and NumPy bincount/cumsum over all cells at once; no per-row or
per-cell Python loop).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

LABEL_COLUMNS: list[str] = [
    "cell_id",
    "cycle_number",
    "soh",
    "soh_reference_ah",
    "eol_cycle",
    "rul_cycles",
    "censored",
]
SOH_REFERENCES = ("nominal", "initial")
CAPACITY_SOURCES = ("integrated", "source")
INPUT_COLUMNS = ("cell_id", "cycle_number", "discharge_capacity_ah")
_MAX_EXAMPLES = 3


@dataclass(frozen=True)
class LabelConfig:
    """How SOH, EOL and RUL are defined (see the module docstring)."""

    soh_reference: str = "nominal"  # "nominal" | "initial"
    initial_cycles: int = 5  # k: cycles with a capacity averaged for the "initial" reference
    eol_threshold: float = 0.8  # EOL below this fraction of the reference capacity
    eol_capacity_ah: float | None = None  # absolute EOL capacity, Ah; overrides eol_threshold
    eol_consecutive: int = 3  # m: cycles (with a capacity) the capacity must stay below
    trailing_run_counts: bool = True  # a below-threshold run reaching the last cycle counts
    # Which per-cycle capacity the labels use: "integrated" (our cycle_features, from current)
    # or "source" (the source's own per-cycle capacity where it reports one, e.g. NASA's
    # Capacity field, on which NASA's 1.4 Ah end-of-life criterion and the published SOH
    # benchmarks are defined). The features asset resolves it; compute_labels just takes a column.
    capacity_source: str = "integrated"

    def __post_init__(self):
        if self.soh_reference not in SOH_REFERENCES:
            raise ValueError(f"soh_reference must be one of {SOH_REFERENCES}, got {self.soh_reference!r}")
        if self.capacity_source not in CAPACITY_SOURCES:
            raise ValueError(f"capacity_source must be one of {CAPACITY_SOURCES}, got {self.capacity_source!r}")
        if int(self.initial_cycles) != self.initial_cycles or self.initial_cycles < 1:
            raise ValueError(f"initial_cycles must be an integer >= 1, got {self.initial_cycles!r}")
        if int(self.eol_consecutive) != self.eol_consecutive or self.eol_consecutive < 1:
            raise ValueError(f"eol_consecutive must be an integer >= 1, got {self.eol_consecutive!r}")
        if not (np.isfinite(self.eol_threshold) and self.eol_threshold > 0):
            raise ValueError(f"eol_threshold must be a positive fraction, got {self.eol_threshold!r}")
        if self.eol_capacity_ah is not None and not (
            np.isfinite(self.eol_capacity_ah) and self.eol_capacity_ah > 0
        ):
            raise ValueError(f"eol_capacity_ah must be a positive number of Ah, got {self.eol_capacity_ah!r}")


def label_config_for(dataset: str | None, settings_path: Path | str) -> LabelConfig:
    """Settings file (e.g. data/label_settings.json): "default", overridden per dataset name."""
    settings = json.loads(Path(settings_path).read_text())
    values = dict(settings.get("default", {}))
    values.update(settings.get("datasets", {}).get(dataset or "", {}))
    return LabelConfig(**values)


def with_source_capacity(cycles: pd.DataFrame, summary: pd.DataFrame | None) -> pd.DataFrame:
    """`cycles` (cell_id, cycle_number) with discharge_capacity_ah taken from the source's own
    per-cycle summary (`capacity_source = "source"`); NaN on cycles the source reports nothing for.
    ValueError when the source reports no capacity at all."""
    if summary is None or summary.empty or summary["discharge_capacity_ah"].isna().all():
        raise ValueError("capacity_source = source, but the source reports no per-cycle capacity")
    source = summary.groupby("cycle_number")["discharge_capacity_ah"].max()
    return cycles[["cell_id", "cycle_number"]].assign(
        discharge_capacity_ah=cycles["cycle_number"].map(source).astype("float64")
    )


def _nominal_per_cell(
    nominal_capacity_ah: float | Mapping[str, float] | pd.Series | None, cells: pd.Index
) -> np.ndarray:
    hint = ' (or use LabelConfig(soh_reference="initial"))'
    if nominal_capacity_ah is None:
        raise ValueError("soh_reference='nominal' needs nominal_capacity_ah, got None" + hint)
    if isinstance(nominal_capacity_ah, (Mapping, pd.Series)):
        values = pd.Series(nominal_capacity_ah, dtype="float64")
        per_cell = values.reindex(cells).to_numpy(dtype="float64")
    else:
        per_cell = np.full(len(cells), float(nominal_capacity_ah))
    bad = ~(np.isfinite(per_cell) & (per_cell > 0))
    if bad.any():
        shown = ", ".join(str(c) for c in cells[bad][:_MAX_EXAMPLES])
        raise ValueError(f"no positive nominal capacity for {int(bad.sum())} cell(s) ({shown})" + hint)
    return per_cell


def _first_in_group(groups: np.ndarray) -> np.ndarray:
    """True at the first element of each run of equal values (groups must be sorted)."""
    out = np.ones(len(groups), dtype=bool)
    out[1:] = groups[1:] != groups[:-1]
    return out


def compute_labels(
    cycles: pd.DataFrame,
    nominal_capacity_ah: float | Mapping[str, float] | pd.Series | None,
    config: LabelConfig = LabelConfig(),
) -> pd.DataFrame:
    """SOH / EOL / RUL labels for every row of `cycles` (see the module docstring)."""
    missing = [c for c in INPUT_COLUMNS if c not in cycles.columns]
    if missing:
        raise ValueError(f"cycles lacks columns {missing} (has {list(cycles.columns)})")
    if cycles["cell_id"].isna().any():
        raise ValueError(f"{int(cycles['cell_id'].isna().sum())} row(s) have no cell_id")
    cycle_values = pd.to_numeric(cycles["cycle_number"], errors="coerce").to_numpy(dtype="float64")
    if not np.isfinite(cycle_values).all() or (cycle_values != np.round(cycle_values)).any():
        raise ValueError("cycle_number must be whole numbers (no NaN, no fractions)")
    cycle_numbers = cycle_values.astype("int64")
    if cycles.duplicated(["cell_id", "cycle_number"]).any():
        dups = cycles.loc[cycles.duplicated(["cell_id", "cycle_number"], keep=False), ["cell_id", "cycle_number"]]
        shown = ", ".join(f"{c}/{n}" for c, n in dups.drop_duplicates().head(_MAX_EXAMPLES).itertuples(index=False))
        raise ValueError(f"duplicate (cell_id, cycle_number) rows: {shown}")

    codes, cells = pd.factorize(cycles["cell_id"], sort=False)
    cells = pd.Index(cells)
    n_cells = len(cells)
    capacity = pd.to_numeric(cycles["discharge_capacity_ah"], errors="coerce").to_numpy(dtype="float64")

    # Work in (cell, cycle) order; `order` maps back to the input rows at the end.
    order = np.lexsort((cycle_numbers, codes))
    cell = codes[order]
    cycle = cycle_numbers[order]
    cap = capacity[order]
    has_capacity = np.isfinite(cap) & (cap > 0)

    # --- reference capacity per cell -------------------------------------------------------
    if config.soh_reference == "initial":
        obs_cell, obs_cap = cell[has_capacity], cap[has_capacity]
        position = np.arange(len(obs_cell))
        first = np.maximum.accumulate(np.where(_first_in_group(obs_cell), position, 0))
        early = (position - first) < config.initial_cycles
        sums = np.bincount(obs_cell[early], weights=obs_cap[early], minlength=n_cells)
        counts = np.bincount(obs_cell[early], minlength=n_cells)
        with np.errstate(invalid="ignore", divide="ignore"):
            reference_per_cell = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    else:
        reference_per_cell = _nominal_per_cell(nominal_capacity_ah, cells)
    reference = reference_per_cell[cell]
    soh = np.where(has_capacity, cap / reference, np.nan)

    # --- end of life: first cycle of a sustained run below the threshold -------------------
    threshold = (
        np.full(len(cap), float(config.eol_capacity_ah))
        if config.eol_capacity_ah is not None
        else config.eol_threshold * reference
    )
    with np.errstate(invalid="ignore"):
        below = has_capacity & (cap < threshold)
    obs_cell, obs_cycle, obs_below = cell[has_capacity], cycle[has_capacity], below[has_capacity]
    eol_per_cell = np.full(n_cells, -1, dtype="int64")
    if len(obs_cell):
        new_run = _first_in_group(obs_cell)
        new_run[1:] |= obs_below[1:] != obs_below[:-1]
        run_id = np.cumsum(new_run) - 1
        run_length = np.bincount(run_id)[run_id]
        last_of_cell = np.append(obs_cell[1:] != obs_cell[:-1], True)
        run_reaches_end = np.bincount(run_id, weights=last_of_cell)[run_id] > 0
        qualifies = obs_below & (
            (run_length >= config.eol_consecutive) | (config.trailing_run_counts & run_reaches_end)
        )
        eol_cells, first_index = np.unique(obs_cell[qualifies], return_index=True)
        eol_per_cell[eol_cells] = obs_cycle[qualifies][first_index]

    last_cycle_per_cell = np.full(n_cells, np.iinfo("int64").min, dtype="int64")
    np.maximum.at(last_cycle_per_cell, cell, cycle)
    eol = eol_per_cell[cell]
    censored = eol < 0
    rul = np.where(censored, last_cycle_per_cell[cell] - cycle, eol - cycle)

    # --- back to input order ----------------------------------------------------------------
    def unsort(values: np.ndarray) -> np.ndarray:
        out = np.empty_like(values)
        out[order] = values
        return out

    eol_input = unsort(eol)
    return pd.DataFrame(
        {
            "cell_id": cycles["cell_id"].array,
            "cycle_number": cycle_numbers,
            "soh": unsort(soh),
            "soh_reference_ah": unsort(reference.astype("float64")),
            "eol_cycle": pd.array(np.where(eol_input < 0, None, eol_input), dtype="Int64"),
            "rul_cycles": unsort(rul).astype("int64"),
            "censored": unsort(censored).astype(bool),
        },
        index=cycles.index,
    )[LABEL_COLUMNS]


def check_label_consistency(labels: pd.DataFrame, cycles: pd.DataFrame | None = None) -> list[str]:
    """Problems with a labels frame (empty list = consistent); used by the labels asset check.

    Rules: the columns are `LABEL_COLUMNS`; one row per (cell, cycle); eol_cycle, censored and
    soh_reference_ah constant per cell; censored exactly where eol_cycle is missing; RUL falls
    by exactly one per cycle within a cell (rul_cycles + cycle_number constant), equals
    eol_cycle - cycle_number when not censored and ends at 0 when censored. With the
    capacities (`cycles`, or a `discharge_capacity_ah` column in `labels`, matched on
    cell_id/cycle_number): soh finite and > 0 exactly where the cycle has a capacity.
    """
    missing = [c for c in LABEL_COLUMNS if c not in labels.columns]
    if missing:
        return [f"labels lack columns {missing}"]
    problems: list[str] = []
    frame = labels.reset_index(drop=True)
    cell_key = frame["cell_id"].astype(str)
    cycle = pd.to_numeric(frame["cycle_number"], errors="coerce")
    if cycle.isna().any():
        problems.append(f"{int(cycle.isna().sum())} row(s) without a cycle_number")
        return problems
    duplicated = frame.assign(cell_id=cell_key).duplicated(["cell_id", "cycle_number"])
    if duplicated.any():
        problems.append(f"{int(duplicated.sum())} duplicate (cell_id, cycle_number) row(s)")

    def examples(mask: pd.Series) -> str:
        rows = frame.loc[mask, ["cell_id", "cycle_number"]].head(_MAX_EXAMPLES)
        return ", ".join(f"{c} cycle {n}" for c, n in rows.itertuples(index=False))

    eol = frame["eol_cycle"].astype("Float64")
    grouped = pd.DataFrame(
        {
            "cell": cell_key,
            "eol": eol.fillna(-1.0),
            "censored": frame["censored"].astype(bool),
            "reference": frame["soh_reference_ah"].astype("float64").fillna(-1.0),
        }
    ).groupby("cell", sort=False)
    for column, what in (("eol", "eol_cycle"), ("censored", "censored"), ("reference", "soh_reference_ah")):
        varying = grouped[column].nunique() > 1
        if varying.any():
            shown = ", ".join(varying.index[varying][:_MAX_EXAMPLES])
            problems.append(f"{what} differs between cycles of {int(varying.sum())} cell(s): {shown}")

    mismatch = frame["censored"].astype(bool) != eol.isna().to_numpy()
    if mismatch.any():
        problems.append(
            f"censored is not exactly 'eol_cycle missing' at {int(mismatch.sum())} row(s): {examples(mismatch)}"
        )

    rul = pd.to_numeric(frame["rul_cycles"], errors="coerce")
    if rul.isna().any():
        problems.append(f"rul_cycles missing at {int(rul.isna().sum())} row(s): {examples(rul.isna())}")
    else:
        ordered = pd.DataFrame({"cell": cell_key, "cycle": cycle, "rul": rul}).sort_values(["cell", "cycle"])
        same_cell = ordered["cell"].eq(ordered["cell"].shift())
        step = ordered["rul"].diff() + ordered["cycle"].diff()
        broken = same_cell & (step != 0)
        if broken.any():
            mask = pd.Series(False, index=frame.index)
            mask[ordered.index[broken]] = True
            problems.append(
                f"rul_cycles does not fall by exactly one per cycle at {int(broken.sum())} row(s): {examples(mask)}"
            )
        uncensored = ~frame["censored"].astype(bool) & eol.notna().to_numpy()
        wrong = uncensored & (rul != eol.to_numpy(dtype="float64", na_value=np.nan) - cycle)
        if wrong.any():
            problems.append(f"rul_cycles != eol_cycle - cycle_number at {int(wrong.sum())} row(s): {examples(wrong)}")
        censored_rul = rul[frame["censored"].astype(bool)].groupby(cell_key[frame["censored"].astype(bool)]).min()
        not_zero = censored_rul != 0
        if not_zero.any():
            shown = ", ".join(censored_rul.index[not_zero][:_MAX_EXAMPLES])
            problems.append(f"censored cell(s) whose RUL lower bound does not end at 0 on the last cycle: {shown}")

    capacity = None
    if "discharge_capacity_ah" in frame.columns:
        capacity = pd.to_numeric(frame["discharge_capacity_ah"], errors="coerce")
    elif cycles is not None:
        source = pd.DataFrame(
            {
                "cell": cycles["cell_id"].astype(str).to_numpy(),
                "cycle_number": pd.to_numeric(cycles["cycle_number"], errors="coerce").to_numpy(),
                "capacity": pd.to_numeric(cycles["discharge_capacity_ah"], errors="coerce").to_numpy(),
            }
        ).drop_duplicates(["cell", "cycle_number"])
        joined = pd.DataFrame({"cell": cell_key, "cycle_number": cycle}).merge(
            source, on=["cell", "cycle_number"], how="left"
        )
        capacity = joined["capacity"]
    if capacity is not None:
        has_capacity = (np.isfinite(capacity) & (capacity > 0)).to_numpy()
        soh = pd.to_numeric(frame["soh"], errors="coerce").to_numpy(dtype="float64")
        soh_ok = np.isfinite(soh) & (soh > 0)
        lacking = pd.Series(has_capacity & ~soh_ok, index=frame.index)
        if lacking.any():
            problems.append(
                "soh not finite/positive although the cycle has a capacity at "
                f"{int(lacking.sum())} row(s): {examples(lacking)}"
            )
        extra = pd.Series(~has_capacity & np.isfinite(soh), index=frame.index)
        if extra.any():
            problems.append(
                f"soh given for a cycle without a capacity at {int(extra.sum())} row(s): {examples(extra)}"
            )
    return problems
