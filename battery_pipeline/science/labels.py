"""Health labels per cycle: state of health (SOH), end of life (EOL), remaining useful life (RUL).

Input: a per-cycle table with `cell_id`, `cycle_number`, `discharge_capacity_ah` (one cell or
many; the features table, a reader's `cycle_summary`, ...). A cycle *has a capacity* when its
discharge_capacity_ah is finite and > 0; NaN (no complete discharge in that cycle), 0 and
negative values count as "no capacity measured" everywhere below.

Cycle classes (`science.cycle_classes`, the `cycle_class` column when the input has one): only
*comparable full cycles* (class "full") carry an SOH, count for the initial capacity and for the
end-of-life run; partial, diagnostic, formation and rest-only cycles get no SOH, so a truncated
last cycle or a check-up can never be an end of life. Without a cycle_class column every cycle
with a capacity counts as comparable.

Definitions (`LabelConfig`; defaults in brackets):
  - Initial capacity, per cell: the mean capacity of its first `initial_cycles` [5] comparable
    full cycles. With fewer than `min_reference_cycles` [3] of them the cell has no reference:
    no SOH, no end of life, no RUL (label_status "unlabelled", and label_note says how many
    comparable cycles there were and which).
  - Reference capacity, `soh_reference_ah` (kind in `soh_reference`):
      * "nominal" [default]: the rated capacity passed to `compute_labels` (a number for all
        cells, or a mapping cell_id -> Ah). A datasheet value, so it does not move with the
        noise, formation rise or artefacts of a cell's first cycles; it is also what the
        public sets' own end criteria use (NASA: 1.4 Ah = 70 % of 2 Ah; XJTU tests stop near
        1.6 Ah = 80 % of 2.0 Ah). Only a *trustworthy* rated capacity belongs here (a sidecar,
        the file, a dataset rule matched on evidence); the features asset otherwise asks for
        "initial". Unknown nominal (None / missing cell) -> ValueError.
      * "initial": the initial capacity. SOH is then relative to the cell's own start (initial
        SOH 1 by definition) and says so in label_note and soh_reference.
  - initial_soh = initial capacity / reference. Outside `initial_soh_band` [0.85-1.10] the stated
    reference does not fit the cell (a wrong rated capacity, another cell than the dataset rule
    assumed): label_status "out_of_band"; the labels are kept for inspection, `trainable` is
    False for the cell, and the blocking check initial_soh_in_band fails.
  - soh = discharge_capacity_ah / soh_reference_ah on comparable full cycles, else NaN.
  - EOL threshold, Ah: `eol_capacity_ah` if given (an absolute criterion, e.g. NASA's 1.4 Ah;
    it overrides the fraction), else `eol_threshold` [0.8] x soh_reference_ah.
  - eol_cycle: the cycle_number of the first comparable cycle whose capacity is below the
    threshold (strictly) and stays below for `eol_consecutive` [3] consecutive comparable
    cycles (other cycles neither break nor extend the run). A run that lasts to the cell's last
    comparable cycle counts even if it is shorter (`trailing_run_counts` [True]): tests are
    usually stopped because the cell reached its end criterion, so a short final run is the end
    of life, not noise. So a single dip below the threshold followed by recovery (noise,
    capacity regeneration after a rest) is not EOL, while the cycle reported is still the first
    of the sustained run (not a smoothed or interpolated crossing). eol_cycle is the same on
    every row of a cell; pandas nullable Int64, <NA> when the cell is censored.
  - censored: True when no run qualifies (the cell never reached EOL in the data, or has no
    reference).
  - rul_cycles (nullable Int64): eol_cycle - cycle_number for uncensored cells: 0 at the EOL
    cycle and *negative* after it (cycles past end of life; filter rul_cycles >= 0 for training
    data). For censored cells it is a lower bound: last_cycle - cycle_number, where last_cycle is
    the cell's largest cycle_number in the input (the cell was still cycled then and had not
    reached EOL). Either way RUL falls by exactly one per cycle within a cell. <NA> for
    unlabelled cells (without a reference nothing bounds it).
Output: one row per input row, same index and order as the input, columns `LABEL_COLUMNS`
exactly. Vectorized (sorting and NumPy bincount/cumsum over all cells at once; no per-row or
per-cell Python loop).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from battery_pipeline.science.sources import trusted_nominal

LABEL_COLUMNS: list[str] = [
    "cell_id",
    "cycle_number",
    "cycle_class",
    "soh",
    "soh_reference_ah",
    "soh_reference",
    "initial_soh",
    "eol_cycle",
    "rul_cycles",
    "censored",
    "label_status",
    "label_note",
]
SOH_REFERENCES = ("nominal", "initial")
CAPACITY_SOURCES = ("integrated", "source")
INPUT_COLUMNS = ("cell_id", "cycle_number", "discharge_capacity_ah")
# Per cell: labelled (trainable), out_of_band (labels shown, kept out of training: the stated
# reference does not fit the cell), unlabelled (too few comparable full cycles for a reference).
LABEL_STATUSES = ("labelled", "out_of_band", "unlabelled")
COMPARABLE_CLASS = "full"
_MAX_EXAMPLES = 3


@dataclass(frozen=True)
class LabelConfig:
    """How SOH, EOL and RUL are defined (see the module docstring)."""

    soh_reference: str = "nominal"  # "nominal" | "initial"
    initial_cycles: int = 5  # k: comparable full cycles averaged for the initial capacity
    # Fewer comparable full cycles than this: no reference, so no SOH and no end of life.
    min_reference_cycles: int = 3
    # The initial SOH (initial capacity / reference) a cell must have for its labels to train:
    # a new cell holds 0.9-1.05 of its rated capacity; outside, the rated capacity is wrong for it.
    initial_soh_band: tuple[float, float] = (0.85, 1.10)
    eol_threshold: float = 0.8  # EOL below this fraction of the reference capacity
    eol_capacity_ah: float | None = None  # absolute EOL capacity, Ah; overrides eol_threshold
    eol_consecutive: int = 3  # m: comparable cycles the capacity must stay below
    trailing_run_counts: bool = True  # a below-threshold run reaching the last comparable cycle counts
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
        for name in ("initial_cycles", "eol_consecutive", "min_reference_cycles"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        low, high = self.initial_soh_band
        if not (0 < low < high):
            raise ValueError(f"initial_soh_band must be (low, high) with 0 < low < high, got {self.initial_soh_band!r}")
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
    if "initial_soh_band" in values:
        values["initial_soh_band"] = tuple(values["initial_soh_band"])
    return LabelConfig(**values)


def with_source_capacity(cycles: pd.DataFrame, summary: pd.DataFrame | None) -> pd.DataFrame:
    """`cycles` (cell_id, cycle_number) with discharge_capacity_ah taken from the source's own
    per-cycle summary (`capacity_source = "source"`); NaN on cycles the source reports nothing for.
    ValueError when the source reports no capacity at all."""
    if summary is None or summary.empty or summary["discharge_capacity_ah"].isna().all():
        raise ValueError("capacity_source = source, but the source reports no per-cycle capacity")
    source = summary.groupby("cycle_number")["discharge_capacity_ah"].max()
    return cycles.assign(discharge_capacity_ah=cycles["cycle_number"].map(source).astype("float64"))


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


def _cycle_list(cycles: np.ndarray) -> str:
    shown = ", ".join(str(int(c)) for c in cycles[:8])
    return shown + (f", ... ({len(cycles)} in all)" if len(cycles) > 8 else "")


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
    # Without classes (a bare capacity table) every cycle with a capacity counts as comparable.
    classes = (
        cycles["cycle_class"].astype(object).to_numpy()
        if "cycle_class" in cycles.columns
        else np.full(len(cycles), COMPARABLE_CLASS, dtype=object)
    )

    # Work in (cell, cycle) order; `order` maps back to the input rows at the end.
    order = np.lexsort((cycle_numbers, codes))
    cell = codes[order]
    cycle = cycle_numbers[order]
    cap = capacity[order]
    comparable = np.isfinite(cap) & (cap > 0) & (classes[order] == COMPARABLE_CLASS)

    # --- initial capacity: the first k comparable full cycles of each cell ------------------
    obs_cell, obs_cap, obs_cycle = cell[comparable], cap[comparable], cycle[comparable]
    position = np.arange(len(obs_cell))
    first = np.maximum.accumulate(np.where(_first_in_group(obs_cell), position, 0)) if len(obs_cell) else position
    early = (position - first) < config.initial_cycles
    sums = np.bincount(obs_cell[early], weights=obs_cap[early], minlength=n_cells)
    counts = np.bincount(obs_cell[early], minlength=n_cells)
    with np.errstate(invalid="ignore", divide="ignore"):
        initial_per_cell = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    has_reference = counts >= config.min_reference_cycles
    if config.soh_reference == "initial":
        reference_per_cell = np.where(has_reference, initial_per_cell, np.nan)
    else:
        reference_per_cell = np.where(has_reference, _nominal_per_cell(nominal_capacity_ah, cells), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        initial_soh_per_cell = initial_per_cell / reference_per_cell
    low, high = config.initial_soh_band
    in_band = (initial_soh_per_cell >= low) & (initial_soh_per_cell <= high)
    status_per_cell = np.where(~has_reference, "unlabelled", np.where(in_band, "labelled", "out_of_band"))
    early_cycles = [obs_cycle[early & (obs_cell == c)] for c in range(n_cells)]
    n_comparable = np.bincount(obs_cell, minlength=n_cells)
    notes = []
    for c in range(n_cells):
        if not has_reference[c]:
            notes.append(
                f"no SOH or end of life: {n_comparable[c]} comparable full cycle(s)"
                + (f" ({_cycle_list(early_cycles[c])})" if n_comparable[c] else "")
                + f", {config.min_reference_cycles} needed for an initial capacity"
            )
            continue
        basis = (
            f"SOH relative to the cell's initial capacity {reference_per_cell[c]:.4g} Ah"
            if config.soh_reference == "initial"
            else f"SOH against the rated capacity {reference_per_cell[c]:.4g} Ah"
        )
        note = (f"{basis}; initial capacity = mean of the first {counts[c]} comparable full cycles "
                f"({_cycle_list(early_cycles[c])}) = {initial_per_cell[c]:.4g} Ah, initial SOH {initial_soh_per_cell[c]:.3f}")
        if status_per_cell[c] == "out_of_band":
            note += (f"; outside {low}-{high}: the rated capacity does not fit this cell, so its labels stay out of "
                     "training until a sidecar states the right one")
        notes.append(note)
    reference = reference_per_cell[cell]
    soh = np.where(comparable, cap / reference, np.nan)

    # --- end of life: first comparable cycle of a sustained run below the threshold ---------
    threshold = (
        np.full(len(cap), float(config.eol_capacity_ah))
        if config.eol_capacity_ah is not None
        else config.eol_threshold * reference
    )
    labelled_row = has_reference[cell]
    counted = comparable & labelled_row
    with np.errstate(invalid="ignore"):
        below = counted & (cap < threshold)
    obs_cell, obs_cycle, obs_below = cell[counted], cycle[counted], below[counted]
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
    labelled_input = unsort(labelled_row)
    kind = "initial" if config.soh_reference == "initial" else "nominal"
    return pd.DataFrame(
        {
            "cell_id": cycles["cell_id"].array,
            "cycle_number": cycle_numbers,
            "cycle_class": classes,
            "soh": unsort(soh),
            "soh_reference_ah": unsort(reference.astype("float64")),
            "soh_reference": np.where(has_reference[codes], kind, "none"),
            "initial_soh": np.where(has_reference[codes], initial_soh_per_cell[codes], np.nan),
            "eol_cycle": pd.array(np.where(eol_input < 0, None, eol_input), dtype="Int64"),
            "rul_cycles": pd.array(np.where(labelled_input, unsort(rul), None), dtype="Int64"),
            "censored": unsort(censored).astype(bool),
            "label_status": status_per_cell[codes],
            "label_note": np.asarray(notes, dtype=object)[codes] if n_cells else np.array([], dtype=object),
        },
        index=cycles.index,
    )[LABEL_COLUMNS]


def trainable(labels: pd.DataFrame) -> pd.Series:
    """Rows that may enter training: comparable full cycles of cells whose labels are in band."""
    return (labels["label_status"] == "labelled") & (labels["cycle_class"] == COMPARABLE_CLASS)


def check_label_consistency(labels: pd.DataFrame, cycles: pd.DataFrame | None = None) -> list[str]:
    """Problems with a labels frame (empty list = consistent); used by the labels asset check.

    Rules: the columns are `LABEL_COLUMNS`; one row per (cell, cycle); eol_cycle, censored and
    soh_reference_ah constant per cell; censored exactly where eol_cycle is missing; RUL falls
    by exactly one per cycle within a cell (rul_cycles + cycle_number constant), equals
    eol_cycle - cycle_number when not censored and ends at 0 when censored; rul_cycles missing
    exactly for cells without labels ("unlabelled"). SOH only on comparable full cycles, and end
    of life only at one. With the capacities (`cycles`, or a `discharge_capacity_ah` column in
    `labels`, matched on cell_id/cycle_number): soh finite and > 0 exactly where a comparable
    full cycle of a cell with a reference has a capacity.
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

    unlabelled = (frame["label_status"] == "unlabelled").to_numpy()
    rul = pd.to_numeric(frame["rul_cycles"], errors="coerce").astype("float64")
    missing_rul = rul.isna() & ~unlabelled
    unexplained = rul.notna() & unlabelled
    if missing_rul.any():
        problems.append(f"rul_cycles missing at {int(missing_rul.sum())} labelled row(s): {examples(missing_rul)}")
    elif unexplained.any():
        problems.append(f"rul_cycles given for a cell without labels at {int(unexplained.sum())} row(s): {examples(unexplained)}")
    else:
        known = rul.notna()
        ordered = pd.DataFrame({"cell": cell_key, "cycle": cycle, "rul": rul})[known].sort_values(["cell", "cycle"])
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
        bound = frame["censored"].astype(bool) & known
        censored_rul = rul[bound].groupby(cell_key[bound]).min()
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
        capacity = capacity.reset_index(drop=True)
        has_capacity = (
            np.isfinite(capacity).to_numpy()
            & (capacity > 0).to_numpy()
            & (frame["cycle_class"] == COMPARABLE_CLASS).to_numpy()
            & (frame["label_status"] != "unlabelled").to_numpy()
        )
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
                "soh given for a cycle without a capacity, a non-comparable cycle or a cell without a "
                f"reference at {int(extra.sum())} row(s): {examples(extra)}"
            )
    on_other = frame["soh"].notna() & (frame["cycle_class"] != COMPARABLE_CLASS)
    if on_other.any():
        problems.append(f"SOH label on {int(on_other.sum())} cycle(s) that are not comparable full cycles: {examples(on_other)}")
    eol_rows = frame[frame["eol_cycle"].notna()]
    if len(eol_rows):
        classes = frame.set_index([frame["cell_id"].astype(str), "cycle_number"])["cycle_class"]
        at_eol = pd.Series(list(zip(eol_rows["cell_id"].astype(str), eol_rows["eol_cycle"].astype("int64"))))
        eol_class = classes.reindex(pd.MultiIndex.from_tuples(at_eol.drop_duplicates()))
        wrong_eol = eol_class[eol_class != COMPARABLE_CLASS]
        if len(wrong_eol):
            shown = ", ".join(f"{c} cycle {n} ({k})" for (c, n), k in wrong_eol.head(_MAX_EXAMPLES).items())
            problems.append(f"end of life on a cycle that is not a comparable full cycle: {shown}")
    return problems


def labels_for_cell(
    features: pd.DataFrame, record, config: LabelConfig, source_summary: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, LabelConfig, pd.DataFrame]:
    """(labels, the config used, the per-cycle capacities labelled) of one cell, as the pipeline
    labels it: against the rated capacity only when a sidecar, the file or a dataset rule states
    it (`sources.trusted_nominal`), else relative to the cell's initial capacity; on the source's
    own per-cycle capacity when `config.capacity_source` says so."""
    nominal = trusted_nominal(record)
    if nominal is None and config.soh_reference == "nominal":
        config = replace(config, soh_reference="initial")
    columns = ["cell_id", "cycle_number", "discharge_capacity_ah"] + (["cycle_class"] if "cycle_class" in features.columns else [])
    cycles = features[columns]
    if config.capacity_source == "source":
        cycles = with_source_capacity(cycles, source_summary)
    return compute_labels(cycles, nominal, config), config, cycles
