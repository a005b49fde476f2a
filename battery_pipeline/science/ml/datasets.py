"""Training tables for the SOH, RUL and cycle-life tasks, and a stable hash of a table.

Inputs are the pipeline's per-cycle tables: `features` (`features.CYCLE_FEATURE_COLUMNS`, one row
per cell_id and cycle_number) and `labels` (`labels.LABEL_COLUMNS`, same keys). They are joined
one-to-one on (cell_id, cycle_number); cell_id is compared as text. Every table is sorted by
(cell_id, cycle_number) with a fresh 0..n-1 index, so equal inputs give equal tables and hashes.

Only `labels.trainable` rows enter either task: comparable full cycles of cells whose label
status is "labelled" (partial, diagnostic and formation cycles, cells without a reference and
cells whose initial SOH is out of band never train).

SOH task (`soh_dataset`): y = soh (fraction of the reference capacity), rows with a finite soh.
X = `features.soh_feature_columns` of the numeric feature columns: never a column derived from
the same cycle's measured capacity (`SOH_LEAKAGE_COLUMNS`) nor an identifier, plus (with
`relative=True`, the default) the charge-side capacities and energy divided by the cell's
soh_reference_ah (`RELATIVE_COLUMNS`; the same in the RUL table). With the default "nominal"
reference that is datasheet knowledge; with `LabelConfig(soh_reference="initial")` it is the mean
capacity of the cell's first 5 cycles, so for those first cycles it carries a little of their own
discharge capacity: use relative=False there if that matters. Columns that are
NaN on every row of the training cells (`train_cells`, default all cells) are dropped (e.g. NASA
Re/Rct for a cycler without impedance) and listed in `dropped_columns`; the remaining NaNs are
left for the estimators' median imputation.

RUL task (`rul_dataset`): y = rul_cycles (cycles until end of life) for trainable rows of *uncensored*
cells with rul_cycles >= 0 (censored cells only give a lower bound; cycles past end of life have
negative RUL). X = observed history up to and including the current cycle:
  * every numeric feature column, capacity-derived ones included (the capacity of the current
    and past cycles is observed when the forecast is made);
  * cycle_number and `soh` of the current cycle;
  * `RUL_HISTORY_COLUMNS`, computed per cell over its cycles in order, looking back only:
    soh_rolling_mean (mean soh of the last `window` cycles of the table), soh_slope_per_cycle and
    capacity_slope_ah_per_cycle (least-squares slope against cycle_number over the same trailing
    window, NaN with fewer than 2 points), soh_change_from_first (soh - the cell's first soh).
  History features are computed on all of a cell's rows before rows are filtered, so the cycles
  past end of life never feed them (they come later) and cycles before never go missing.
  eol_cycle, rul_cycles and censored are never inputs (`RUL_FORBIDDEN_INPUTS`, checked).
  Caveat: with `LabelConfig(soh_reference="initial")` the soh of a cell's first few cycles is
  relative to the mean of its first 5 cycles, i.e. of up to 4 cycles later.

Cycle-life task (`cycle_life_dataset`): one row per cell with a cycle life, X =
`severson.severson_features` of its first `late_cycle` cycles, y = the life its source states
(`cells.stated_cycle_life`) or else the labels' eol_cycle (uncensored cells), `cycle_life_source`
saying which.

`frame_hash` / `TrainingTable.data_hash()`: sha256 over canonical bytes: a format tag, the shape,
then per column its name, a dtype tag and its values (integers and booleans as little-endian
int64, other numbers as little-endian float64 with every NaN written as the same NaN and -0.0 as
0.0, everything else as UTF-8 text, length-prefixed, NA as a marker). Row order and column order
matter (they are part of the data for a sequence model); pandas index and memory layout do not.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_integer_dtype, is_numeric_dtype

from battery_pipeline.science.features import SOH_LEAKAGE_COLUMNS, soh_feature_columns
from battery_pipeline.science.labels import LABEL_COLUMNS, trainable

KEYS = ["cell_id", "cycle_number"]
TASKS = ("soh", "rul", "cycle_life")
RUL_FORBIDDEN_INPUTS = ("eol_cycle", "rul_cycles", "censored")
# Charge-side capacities and energy over the cell's reference capacity (labels.soh_reference_ah):
# cells of different sizes (1.1 Ah LFP, 3 Ah NMC in the demo fleet) then share one scale, which
# trees need (they cannot extrapolate an Ah value to a cell size they never saw). Measured on the
# demo fleet, two unseen cells: random forest SOH RMSE 0.026 -> 0.006, ridge 0.007 -> 0.004.
RELATIVE_COLUMNS = {
    "charge_capacity_ah": "charge_capacity_fraction",
    "cc_charge_capacity_ah": "cc_charge_capacity_fraction",
    "cv_charge_capacity_ah": "cv_charge_capacity_fraction",
    "charge_energy_wh": "charge_energy_wh_per_reference_ah",
}
RUL_HISTORY_COLUMNS = [
    "soh",
    "soh_rolling_mean",
    "soh_slope_per_cycle",
    "capacity_slope_ah_per_cycle",
    "soh_change_from_first",
]
_HASH_FORMAT = b"battery_pipeline.science.ml.frame_hash/1"


@dataclass(frozen=True)
class TrainingTable:
    """A task's rows: X (features only, float64), y, and per row its cell and cycle.

    All four share the same 0..n-1 index. `feature_columns` is X's column list, `dropped_columns`
    the candidate features left out because they had no value in the training cells.
    """

    task: str
    target: str
    X: pd.DataFrame
    y: pd.Series
    cell_id: pd.Series
    cycle_number: pd.Series
    feature_columns: tuple[str, ...]
    dropped_columns: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.y)

    @property
    def groups(self) -> np.ndarray:
        """cell_id per row, for cell-wise splits, conformal calibration and LSTM windows."""
        return self.cell_id.to_numpy(dtype=object)

    @property
    def cells(self) -> list[str]:
        return sorted(set(self.cell_id))

    def subset(self, cells: Iterable) -> "TrainingTable":
        """The rows of the given cells (same columns; index renumbered)."""
        keep = self.cell_id.isin({str(c) for c in cells}).to_numpy()

        def take(part):
            return part.loc[keep].reset_index(drop=True)

        return TrainingTable(
            task=self.task,
            target=self.target,
            X=take(self.X),
            y=take(self.y),
            cell_id=take(self.cell_id),
            cycle_number=take(self.cycle_number),
            feature_columns=self.feature_columns,
            dropped_columns=self.dropped_columns,
        )

    def frame(self) -> pd.DataFrame:
        """cell_id, cycle_number, the features and the target in one frame."""
        return pd.concat([self.cell_id, self.cycle_number, self.X, self.y.rename(self.target)], axis=1)

    def data_hash(self) -> str:
        """sha256 hex digest of task, target and `frame()` (module docstring)."""
        return frame_hash(self.frame(), salt=f"{self.task}:{self.target}")


def frame_hash(frame: pd.DataFrame, salt: str = "") -> str:
    """Stable sha256 hex digest of a frame's columns and values (module docstring)."""
    digest = hashlib.sha256()

    def chunk(data: bytes) -> None:  # length-prefixed, so adjacent fields cannot run together
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)

    chunk(_HASH_FORMAT)
    chunk(salt.encode())
    chunk(f"{frame.shape[0]}x{frame.shape[1]}".encode())
    for position, name in enumerate(frame.columns):
        column = frame.iloc[:, position]  # by position: a RUL table has cycle_number as key and feature
        chunk(str(name).encode())
        if (is_integer_dtype(column.dtype) or is_bool_dtype(column.dtype)) and not column.isna().any():
            chunk(b"i8")
            chunk(column.to_numpy(dtype="<i8").tobytes())
        elif is_numeric_dtype(column.dtype) and not is_bool_dtype(column.dtype):
            values = column.to_numpy(dtype=np.float64, na_value=np.nan)
            values = np.where(np.isnan(values), np.nan, values) + 0.0  # one NaN; -0.0 -> 0.0
            chunk(b"f8")
            chunk(values.astype("<f8").tobytes())
        else:
            chunk(b"str")
            for value in column.to_numpy(dtype=object):
                chunk(b"\x00NA" if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))
                      else str(value).encode())
    return digest.hexdigest()


def _joined(features: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    for name, frame, needed in (("features", features, KEYS), ("labels", labels, LABEL_COLUMNS)):
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise ValueError(f"{name} lacks columns {missing}")
    left = features.assign(cell_id=features["cell_id"].astype(str))
    right = labels[LABEL_COLUMNS].assign(cell_id=labels["cell_id"].astype(str))
    # label columns win over same-named feature columns (none today): labels are the truth here
    left = left.drop(columns=[c for c in LABEL_COLUMNS if c in left.columns and c not in KEYS])
    joined = left.merge(right, on=KEYS, how="inner", validate="one_to_one")
    return joined.sort_values(KEYS, kind="stable").reset_index(drop=True)


def _with_relative_columns(joined: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    reference = joined["soh_reference_ah"].to_numpy(dtype=np.float64, na_value=np.nan)
    added = {
        new: joined[old].to_numpy(dtype=np.float64, na_value=np.nan) / reference
        for old, new in RELATIVE_COLUMNS.items()
        if old in joined.columns
    }
    return joined.assign(**added), list(added)


def _numeric_features(columns: Iterable[str], frame: pd.DataFrame) -> list[str]:
    return [c for c in columns if is_numeric_dtype(frame[c].dtype) and not is_bool_dtype(frame[c].dtype)]


def _table(
    task: str,
    target: str,
    rows: pd.DataFrame,
    candidates: list[str],
    train_cells: Iterable | None,
) -> TrainingTable:
    X = rows[candidates].astype(np.float64)
    reference = X if train_cells is None else X[rows["cell_id"].isin({str(c) for c in train_cells})]
    if train_cells is not None and reference.empty:
        raise ValueError("none of train_cells has a row in this table")
    empty = [c for c in candidates if reference[c].isna().all()]
    kept = [c for c in candidates if c not in empty]
    return TrainingTable(
        task=task,
        target=target,
        X=X[kept].reset_index(drop=True),
        y=rows[target].astype(np.float64).reset_index(drop=True),
        cell_id=rows["cell_id"].astype(str).reset_index(drop=True),
        cycle_number=rows["cycle_number"].astype(np.int64).reset_index(drop=True),
        feature_columns=tuple(kept),
        dropped_columns=tuple(empty),
    )


def soh_dataset(
    features: pd.DataFrame,
    labels: pd.DataFrame,
    train_cells: Iterable | None = None,
    feature_columns: Iterable[str] | None = None,
    relative: bool = True,
) -> TrainingTable:
    """SOH task table (module docstring). `feature_columns` overrides the candidate list but may
    not contain a capacity-derived column or a label."""
    joined = _joined(features, labels)
    joined, relative_columns = _with_relative_columns(joined)
    if feature_columns is None:
        allowed = [c for c in soh_feature_columns(features.columns) if c not in LABEL_COLUMNS]
        candidates = _numeric_features(allowed, joined) + (relative_columns if relative else [])
    else:
        candidates = list(feature_columns)
        banned = (set(SOH_LEAKAGE_COLUMNS) | set(LABEL_COLUMNS)) & set(candidates)
        if banned:
            raise ValueError(f"not allowed as SOH features (same-cycle capacity or labels): {sorted(banned)}")
    rows = joined[np.isfinite(joined["soh"].to_numpy(dtype=np.float64, na_value=np.nan)) & trainable(joined)]
    return _table("soh", "soh", rows, candidates, train_cells)


def trailing_slope(cell_id: pd.Series, x: np.ndarray, y: np.ndarray, window: int) -> np.ndarray:
    """Least-squares slope dy/dx over each row's last `window` rows of its cell (rows in order).

    Pairs with a NaN are skipped; NaN with fewer than 2 usable pairs or no spread in x. x is
    centred on the current row, so large cycle numbers lose no precision.
    """
    frame = pd.DataFrame({"x": np.asarray(x, dtype=np.float64), "y": np.asarray(y, dtype=np.float64)})
    grouped = frame.groupby(cell_id.to_numpy(), sort=False)
    lagged = [grouped.shift(lag) for lag in range(1, window)]
    dx = np.column_stack([np.zeros(len(frame))] + [part["x"].to_numpy() - frame["x"].to_numpy() for part in lagged])
    ys = np.column_stack([frame["y"].to_numpy()] + [part["y"].to_numpy() for part in lagged])
    usable = np.isfinite(dx) & np.isfinite(ys)
    count = usable.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_x = np.where(usable, dx, 0.0).sum(axis=1) / count
        mean_y = np.where(usable, ys, 0.0).sum(axis=1) / count
        cx = np.where(usable, dx - mean_x[:, None], 0.0)
        cy = np.where(usable, ys - mean_y[:, None], 0.0)
        sxx = (cx * cx).sum(axis=1)
        slope = (cx * cy).sum(axis=1) / sxx
    return np.where((count >= 2) & (sxx > 0), slope, np.nan)


def rul_history_features(joined: pd.DataFrame, window: int = 10) -> pd.DataFrame:
    """`RUL_HISTORY_COLUMNS` for rows sorted by (cell_id, cycle_number) (module docstring)."""
    if window < 2:
        raise ValueError(f"window must be >= 2 cycles, got {window!r}")
    cells = joined["cell_id"].astype(str)
    cycle = joined["cycle_number"].to_numpy(dtype=np.float64)
    soh = joined["soh"].to_numpy(dtype=np.float64, na_value=np.nan)
    capacity = (
        joined["discharge_capacity_ah"].to_numpy(dtype=np.float64, na_value=np.nan)
        if "discharge_capacity_ah" in joined.columns
        else np.full(len(joined), np.nan)
    )
    # only comparable full cycles (those with an SOH) measure the capacity the same way: a partial
    # discharge's 0.1 Ah would be read as a collapse
    capacity = np.where(np.isfinite(soh), capacity, np.nan)
    soh_series = pd.Series(soh, index=joined.index)
    first_soh = soh_series.groupby(cells).transform("first")  # first non-NaN soh of the cell
    rolling_mean = (
        soh_series.groupby(cells, sort=False).rolling(window, min_periods=1).mean().reset_index(level=0, drop=True)
    )
    return pd.DataFrame(
        {
            "soh": soh,
            "soh_rolling_mean": rolling_mean.reindex(joined.index).to_numpy(),
            "soh_slope_per_cycle": trailing_slope(cells, cycle, soh, window),
            "capacity_slope_ah_per_cycle": trailing_slope(cells, cycle, capacity, window),
            "soh_change_from_first": soh - first_soh.to_numpy(),
        },
        index=joined.index,
    )


def rul_dataset(
    features: pd.DataFrame,
    labels: pd.DataFrame,
    train_cells: Iterable | None = None,
    window: int = 10,
    relative: bool = True,
) -> TrainingTable:
    """RUL task table (module docstring)."""
    joined, relative_columns = _with_relative_columns(_joined(features, labels))
    history = rul_history_features(joined, window)
    base = [c for c in features.columns if c not in KEYS and c not in LABEL_COLUMNS]
    candidates = ["cycle_number", *_numeric_features(base, joined), *RUL_HISTORY_COLUMNS]
    candidates += relative_columns if relative else []
    forbidden = set(RUL_FORBIDDEN_INPUTS) & set(candidates)
    if forbidden:  # cannot happen with the lists above; a guard for whoever edits them
        raise AssertionError(f"label columns among RUL inputs: {sorted(forbidden)}")
    rows = pd.concat([joined.drop(columns=["soh"]), history], axis=1)
    rul = rows["rul_cycles"].astype("Float64")
    rows = rows[(trainable(rows) & ~rows["censored"].astype(bool) & (rul >= 0).fillna(False)).to_numpy(dtype=bool)]
    return _table("rul", "rul_cycles", rows, candidates, train_cells)


MEASURED_LIFE_SOURCE = "labels: eol_cycle (first comparable cycle below the end-of-life threshold for 3 cycles)"


def cycle_lives(labels: pd.DataFrame, cells: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each cell's cycle life and where it came from (index cell_id; columns cycle_life,
    cycle_life_source). The life its source states (`cells.stated_cycle_life`, e.g. Severson's
    cycles to 0.88 Ah for arrays that stop at cycle 100) comes first: it is the dataset's own
    definition; else the end of life the labels found (uncensored, labelled cells only)."""
    missing = [c for c in LABEL_COLUMNS if c not in labels.columns]
    if missing:
        raise ValueError(f"labels lacks columns {missing}")
    measured = (
        labels.assign(cell_id=labels["cell_id"].astype(str))
        .loc[~labels["censored"].astype(bool) & (labels["label_status"] == "labelled")]
        .groupby("cell_id")["eol_cycle"]
        .first()
        .astype("float64")
    )
    lives = pd.DataFrame({"cycle_life": measured, "cycle_life_source": MEASURED_LIFE_SOURCE})
    if cells is not None and "stated_cycle_life" in cells.columns:
        stated = cells.loc[cells["stated_cycle_life"].notna()]
        stated = pd.DataFrame(
            {
                "cycle_life": pd.to_numeric(stated["stated_cycle_life"]).astype("float64").to_numpy(),
                "cycle_life_source": ("stated: " + stated["stated_cycle_life_source"].astype(str)).to_numpy(),
            },
            index=stated["cell_id"].astype(str).to_numpy(),
        )
        lives = pd.concat([stated, lives.drop(index=stated.index, errors="ignore")])
    lives.index.name = "cell_id"
    return lives.sort_index()


def cycle_life_dataset(
    features: pd.DataFrame,
    labels: pd.DataFrame,
    late_cycle: int = 100,
    train_cells: Iterable | None = None,
    cells: pd.DataFrame | None = None,
) -> TrainingTable:
    """One row per cell with a cycle life (`cycle_lives`): Severson early-life features, y = its
    cycle life (cycles), `cycle_life_source` saying where each came from.

    `cycle_number` holds the cycle the dQ features were taken at (-1 when the cell has none).
    """
    # here, not at the top: severson imports scikit-learn, which the per-cycle tables (and the
    # Dagster definitions that import this module) do not need
    from battery_pipeline.science.ml.severson import SEVERSON_FEATURE_COLUMNS, severson_features

    per_cell = severson_features(features, late_cycle=late_cycle)
    rows = per_cell.join(cycle_lives(labels, cells), how="inner").reset_index()
    rows["cycle_number"] = rows["delta_q_cycle"].fillna(-1)
    return _table("cycle_life", "cycle_life", rows, list(SEVERSON_FEATURE_COLUMNS), train_cells)

