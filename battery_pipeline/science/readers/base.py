"""The contract every cycler reader fulfils, and helpers that keep readers short and consistent.

A reader is one module in this package defining one subclass of `CyclerReader`. Subclasses
register themselves (`__init_subclass__`), so adding a format needs no edit anywhere else.

A reader turns the file(s) of one cell's test into the canonical frame of
`science.schema.CellCycleSample`: SI units, current positive = charge, `time_s` continuing across
files, `cycle_number` continuous across files, provenance on every row. It never drops or repairs
a row: judging rows is `validation.py`'s job, so a reader keeps implausible values as they are and
only converts units and signs. It raises `SourceFormatError` (naming the file) when a file cannot
be read as its format at all.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from battery_pipeline.science.schema import IMPEDANCE_COLUMNS as _IMPEDANCE_COLUMNS
from battery_pipeline.science.schema import SAMPLE_COLUMNS

# |I| below this is a rest when a source gives no step type. 1 mA is far above the offset of any
# lab cycler channel and far below the smallest C/50 test current of an 18650.
REST_CURRENT_THRESHOLD_A = 1e-3


class SourceFormatError(ValueError):
    """A source file cannot be read; the message always names the file and what is wrong."""

    def __init__(self, path: Path | str, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path.name}: {problem}")


# Where a metadata value came from; every provenance text starts with one of these kinds.
ORIGIN_KINDS = ("sidecar", "file", "dataset rule", "inferred", "unknown")
ORIGIN_FIELDS = ("chemistry", "nominal_capacity_ah", "voltage_window", "stated_cycle_life", "ambient_temperature")


def from_file(detail: str) -> str:
    """Provenance of a value the file itself states (a header field, a metadata sheet)."""
    return f"file: {detail}"


def folder_temperature_c(path: Path) -> tuple[float | None, str | None]:
    """(set point, folder name) of the nearest enclosing folder named like a chamber temperature
    (`25degC`, `n10degC` or `-10degC` for -10 degC), else (None, None)."""
    for part in reversed(Path(path).parts[:-1]):
        match = re.fullmatch(r"(n|-)?(\d+(?:\.\d+)?)\s*degC", part)
        if match:
            return (-float(match.group(2)) if match.group(1) else float(match.group(2))), part
    return None, None


def from_dataset_rule(dataset: str, evidence: str) -> str:
    """Provenance of a value a known dataset's documentation gives, with the evidence that
    matched the file to that dataset (name pattern, layout, plausible values)."""
    return f"dataset rule: {dataset} ({evidence})"


@dataclass
class CellDefaults:
    """What a reader knows about a cell before a sidecar file overrides it.

    `origin` says where each known value of `ORIGIN_FIELDS` came from (`from_file`,
    `from_dataset_rule`); a value without an origin is refused by `sources.cell_record`, so no
    reader can hand over a number nobody can trace.
    """

    dataset: str | None = None
    chemistry: str | None = None
    nominal_capacity_ah: float | None = None
    voltage_min_v: float | None = None
    voltage_max_v: float | None = None
    max_abs_current_a: float | None = None
    licence: str | None = None
    citation: str | None = None
    description: str | None = None
    # Cycles to end of life as the source states it (a dataset's own label, e.g. Severson's
    # cycles to 0.88 Ah), for cells whose data stop before their end of life
    stated_cycle_life: int | None = None
    # The temperature around the cell (chamber set point or room), degC: what a thermal model
    # loses heat to; a cell's own sensor reads above it whenever current flows
    ambient_temperature_c: float | None = None
    origin: dict[str, str] = field(default_factory=dict)


@dataclass
class ReadResult:
    samples: pd.DataFrame  # canonical columns, in SAMPLE_COLUMNS order
    cell: CellDefaults = field(default_factory=CellDefaults)
    # Cell-level resistance measurements (e.g. NASA impedance operations), not samples:
    # columns cell_id, time_s, cycle_number (the charge/discharge cycle it follows),
    # re_ohm, rct_ohm, source_file.
    impedance: pd.DataFrame | None = None
    # Summary-level sources (one row per cycle, no raw samples, e.g. the XJTU feature tables):
    # columns cell_id, cycle_number and any per-cycle feature columns named as in
    # science/features.py (discharge_capacity_ah, ...), plus source_file and source_row.
    # `samples` is then an empty canonical frame.
    cycle_summary: pd.DataFrame | None = None


# Re-exported for readers; the layout is defined (and validated) by schema.CellImpedance.
IMPEDANCE_COLUMNS = _IMPEDANCE_COLUMNS


class CyclerReader:
    """Base class: subclass it in a module of this package and it is discovered."""

    format_name: ClassVar[str]  # e.g. "arbin_csv"; stored in the `cells` registry
    extensions: ClassVar[tuple[str, ...]] = ()  # lower-case, with dot; a hint, not the test
    registry: ClassVar[dict[str, type[CyclerReader]]] = {}
    # Sniffing order: more specific formats first (lower runs earlier).
    priority: ClassVar[int] = 50
    # The cycler logs a step's last point at the instant the step ends, so an interval crossing
    # a step change belongs to the new step (Arbin/Maccor/Digatron). False where steps are
    # derived from the current and the switch happened somewhere between two samples; the
    # features then integrate that interval with the trapezoid (FeatureConfig.step_end_logging).
    logs_step_end: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if getattr(cls, "format_name", None):
            CyclerReader.registry[cls.format_name] = cls

    # --- detection -------------------------------------------------------------------------
    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        """True if the file's *content* (`head` = its first 64 KiB) is this format."""
        raise NotImplementedError

    # --- grouping of files into one cell's test --------------------------------------------
    @classmethod
    def is_companion(cls, path: Path) -> bool:
        """True for files that only describe another file (e.g. Arbin `*_Metadata.csv`).

        Discovery skips them as cells; the reader opens them itself next to the data file.
        """
        return False

    @classmethod
    def cell_key(cls, path: Path) -> str:
        """Raw cell identifier of a file; files with the same key form one test."""
        return path.stem

    @classmethod
    def file_order(cls, path: Path):
        """Sort key that puts one cell's files in chronological order."""
        return path.name

    # --- reading ---------------------------------------------------------------------------
    @classmethod
    def describe(cls, paths: list[Path]) -> CellDefaults:
        """Cheap metadata for the `cells` registry (must not parse all samples)."""
        return CellDefaults()

    @classmethod
    def read(cls, paths: list[Path], cell_id: str) -> ReadResult:
        raise NotImplementedError


# ------------------------------------------------------------------------------------------
# Helpers shared by readers
# ------------------------------------------------------------------------------------------


_STEP_TYPE_OBJECTS = np.array(["charge", "discharge", "rest"], dtype=object)
CHARGE, DISCHARGE, REST = 0, 1, 2  # step type codes, in the order of _STEP_TYPE_OBJECTS


def step_codes_from_current(current_a: np.ndarray, threshold_a: float = REST_CURRENT_THRESHOLD_A) -> np.ndarray:
    """CHARGE / DISCHARGE / REST (int8) from the sign of the (already signed) current."""
    current_a = np.asarray(current_a, dtype="float64")
    codes = np.full(current_a.shape, REST, dtype="int8")
    codes[current_a > threshold_a] = CHARGE
    codes[current_a < -threshold_a] = DISCHARGE
    return codes


def step_type_from_current(current_a: np.ndarray, threshold_a: float = REST_CURRENT_THRESHOLD_A):
    """charge / discharge / rest from the sign of the (already signed) current (object array;
    built from codes: filling an object array costs 3x more)."""
    return _STEP_TYPE_OBJECTS[step_codes_from_current(current_a, threshold_a)]


def step_type_category(codes: np.ndarray) -> pd.Categorical:
    """Step type codes as the Categorical finalize_samples keeps: the types present, in order of
    first appearance (as pandas' factorize orders them)."""
    codes = np.asarray(codes, dtype="int8")
    counts = np.bincount(codes, minlength=3) if len(codes) else np.zeros(3, dtype=int)
    present = [code for code in range(3) if counts[code]]
    present.sort(key=lambda code: int(np.argmax(codes == code)))
    remap = np.zeros(3, dtype="int8")
    remap[present] = np.arange(len(present), dtype="int8")
    return pd.Categorical.from_codes(remap[codes], dtype=_step_type_dtype(tuple(present)), validate=False)


@functools.lru_cache(maxsize=None)
def _step_type_dtype(present: tuple[int, ...]) -> pd.CategoricalDtype:
    # one dtype per order of the three types: building one validates its categories, 30 us a call
    return pd.CategoricalDtype([str(_STEP_TYPE_OBJECTS[c]) for c in present])


def rest_threshold_a(current: np.ndarray) -> float:
    """|I| below which a sample is a rest, scaled down for small cells.

    The project's 1 mA (REST_CURRENT_THRESHOLD_A) would make a coin cell cycled at
    0.3 mA (DLR Hydra0b POCV) or 0.16 mA (BDF legacy fixture), or an Arbin half cell at 0.3 mA, all rest; 1 % of the file's
    99.9th-percentile |I| keeps rests apart from those currents. Floor 1 uA: below it a
    reading is offset noise on any cycler channel.
    """
    magnitude = np.abs(current[np.isfinite(current)])
    if len(magnitude) == 0:
        return REST_CURRENT_THRESHOLD_A
    typical = float(np.quantile(magnitude, 0.999))
    return float(np.clip(0.01 * typical, 1e-6, REST_CURRENT_THRESHOLD_A))


def step_index_from_changes(step_type: np.ndarray) -> np.ndarray:
    """A new step wherever step_type changes: the best step index a step-less source allows."""
    # a Categorical compares by its codes, far faster than text
    step_type = step_type.codes if isinstance(step_type, pd.Categorical) else np.asarray(step_type, dtype=object)
    if len(step_type) == 0:
        return np.zeros(0, dtype="int64")
    changed = np.empty(len(step_type), dtype=bool)
    changed[0] = False
    changed[1:] = step_type[1:] != step_type[:-1]
    return np.cumsum(changed).astype("int64")


def capacity_from_current(
    time_s: np.ndarray, current_a: np.ndarray, cycle_number: np.ndarray,
    threshold_a: float = REST_CURRENT_THRESHOLD_A,
) -> np.ndarray:
    """Ah moved in each sample's direction since its cycle began (trapezoidal, vectorized).

    Used where a source records no capacity. Charge and discharge are accumulated separately
    within each cycle, as Arbin does. Each interval is booked to the direction of its *mean*
    current, so a sparsely sampled pulse train (-4 A, 0 A, -4 A, ...) still counts fully;
    a sample reports the running total of its own direction, and rest samples get NaN (|I| not
    above `threshold_a`). The fixed 1 mA default suits a source typed by current alone, where a
    rest-only file's noise must stay rest; a reader whose cycler labels its steps passes
    `rest_threshold_a` of the file, so a coin cell below 1 mA keeps its capacity.
    """
    time_s = np.asarray(time_s, dtype="float64")
    current_a = np.asarray(current_a, dtype="float64")
    cycle_number = np.asarray(cycle_number)
    n = len(time_s)
    out = np.full(n, np.nan)
    if n == 0:
        return out
    dt = np.diff(time_s, prepend=time_s[0])
    i_mid = np.concatenate([[0.0], 0.5 * (current_a[1:] + current_a[:-1])])
    new_cycle = np.concatenate([[True], cycle_number[1:] != cycle_number[:-1]])
    dt[new_cycle] = 0.0  # nothing is counted across a cycle boundary
    dq_ah = np.nan_to_num(i_mid * dt / 3600.0)
    for sample_mask, contribution in (
        (current_a > threshold_a, np.maximum(dq_ah, 0.0)),  # the intervals of each direction
        (current_a < -threshold_a, np.maximum(-dq_ah, 0.0)),
    ):
        out[sample_mask] = running_total(contribution, new_cycle)[sample_mask]
    return out


def running_total(values: np.ndarray, new_block: np.ndarray) -> np.ndarray:
    """Cumulative sum of `values` restarting where `new_block` is True: pandas' groupby-cumsum
    (a NaN skipped, and NaN in its own row) at a tenth of its cost. Each block's sum is taken
    off the file's running total, so it carries a rounding of about 1e-16 of that total."""
    values = np.asarray(values, dtype="float64")
    missing = np.isnan(values)
    counted = np.where(missing, 0.0, values)
    total = np.cumsum(counted)
    block_start = np.maximum.accumulate(np.where(new_block, np.arange(len(values)), 0))
    return np.where(missing, np.nan, total - (total - counted)[block_start])


def place_files(starts_abs: list[float | None], durations: list[float]) -> tuple[list[int], list[float], str]:
    """(order, time offset per file, note): absolute starts where usable, else end to end."""
    n = len(durations)
    if all(s is not None and np.isfinite(s) for s in starts_abs):
        order = sorted(range(n), key=lambda i: starts_abs[i])
        t0 = starts_abs[order[0]]
        offsets = [0.0] * n
        ok = True
        end = -np.inf
        for i in order:
            offsets[i] = starts_abs[i] - t0
            if offsets[i] < end:  # overlapping files: the wall clock cannot place them
                ok = False
                break
            end = offsets[i] + durations[i]
        if ok:
            return order, offsets, "files placed by their absolute start"
    order = list(range(n))
    offsets, end = [0.0] * n, 0.0
    for i in order:
        offsets[i] = end
        end += durations[i]
    return order, offsets, "files chained end to end in name order (no usable absolute start)"



def chain_pieces(pieces: list[pd.DataFrame], starts: list[float | None] | None = None) -> tuple[pd.DataFrame | None, str | None]:
    """The files of one test as one frame: each piece (one file, its `time_s` from that file's own
    start, its own cycle count) placed in test order by `place_files` (`starts`: absolute start
    per file, None where unknown), time shifted to continue, and a piece whose cycle count
    restarts (first cycle not after the last one so far) renumbered to continue after it.
    Returns (frame, how the files were placed); (None, ...) when no piece has a row; the note is
    None for a single file."""
    if len(pieces) == 1:
        return (pieces[0] if len(pieces[0]) else None), None
    durations = []
    for piece in pieces:
        t = piece["time_s"].to_numpy(dtype="float64")
        finite = np.isfinite(t)
        durations.append(float(t[finite].max()) if finite.any() else 0.0)
    order, offsets, placement = place_files(list(starts) if starts is not None else [None] * len(pieces), durations)
    placed, last_cycle = [], None
    for i in order:
        if not len(pieces[i]):
            continue
        piece = pieces[i].copy()
        piece["time_s"] = piece["time_s"] + offsets[i]
        first = int(piece["cycle_number"].min())
        if last_cycle is not None and first <= last_cycle:
            piece["cycle_number"] += last_cycle + 1 - first
        last_cycle = int(piece["cycle_number"].max())
        placed.append(piece)
    return (pd.concat(placed, ignore_index=True) if placed else None), placement


_FLOAT_COLUMNS = ("time_s", "voltage_v", "current_a", "temperature_c", "capacity_ah", "internal_resistance_ohm")


def _as_float64(values) -> np.ndarray:
    if values.dtype == np.float64:
        return np.asarray(values)
    return text_to_float(pd.Series(values)).to_numpy(dtype="float64", na_value=np.nan)


def _as_int64(values) -> np.ndarray:
    if isinstance(values, np.ndarray) and values.dtype.kind in "iu":
        return values.astype("int64", copy=False)
    # pandas' cast, not numpy's: a NaN must raise, not become -9223372036854775808
    return pd.Series(values).astype("int64").to_numpy()


def _as_step_type_category(values: np.ndarray) -> pd.Categorical | None:
    """The step_type column by three comparisons instead of hashing every row (3x faster); its
    categories in order of first appearance, as factorize gives them. None for other values."""
    codes = np.full(len(values), -1, dtype="int8")
    for code, name in enumerate(_STEP_TYPE_OBJECTS):
        codes[values == name] = code
    if len(values) == 0 or (codes < 0).any():
        return None
    return step_type_category(codes)


def _as_category(values) -> pd.Categorical:
    """Text as a Categorical; a column of a few distinct values is converted once per value."""
    if isinstance(getattr(values, "dtype", None), pd.CategoricalDtype):
        values = pd.Series(values)
        if all(isinstance(c, str) for c in values.cat.categories):
            return values.array
        return values.cat.rename_categories(str).array
    values = np.asarray(values, dtype=object)
    known = _as_step_type_category(values)
    if known is not None:
        return known
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    names = [u if isinstance(u, str) else str(u) for u in uniques]
    if len(set(names)) < len(names):  # e.g. 1 and "1": let the text decide what is one category
        return pd.Categorical(pd.Series(values, dtype=object).astype(str))
    return pd.Categorical.from_codes(codes, categories=names)


def finalize_samples(
    frame: pd.DataFrame | dict[str, np.ndarray],
    cell_id: str,
    *,
    derive_step_type: bool = False,
    derive_step_index: bool = False,
    derive_capacity: bool = False,
) -> pd.DataFrame:
    """Fill derivable columns, add missing optional ones, fix dtypes and column order.

    `frame` (a DataFrame, or a dict of equally long arrays) must already hold time_s,
    voltage_v, current_a (SI, signed), cycle_number, source_file and source_row; everything else
    is optional. The result is built once from the converted arrays: on a file of a few hundred
    rows the per-column copies and inserts of a pandas frame cost more than the reading.
    """
    n = len(frame["time_s"])
    out: dict[str, object] = {}
    for col in _FLOAT_COLUMNS:
        out[col] = _as_float64(frame[col]) if col in frame else np.full(n, np.nan)
    step_type = (
        step_type_from_current(out["current_a"])
        if derive_step_type or "step_type" not in frame
        else frame["step_type"]
    )
    if derive_step_index or "step_index" not in frame:
        out["step_index"] = step_index_from_changes(step_type)  # a Categorical stays codes there
    else:
        out["step_index"] = _as_int64(frame["step_index"])
    if derive_capacity:
        out["capacity_ah"] = capacity_from_current(out["time_s"], out["current_a"], np.asarray(frame["cycle_number"]))
    out["cycle_number"] = _as_int64(frame["cycle_number"])
    out["source_row"] = _as_int64(frame["source_row"])
    out["step_type"] = _as_category(step_type)
    out["source_file"] = _as_category(frame["source_file"])
    out["cell_id"] = pd.Categorical.from_codes(np.zeros(n, dtype="int8"), categories=[str(cell_id)])
    missing = [c for c in SAMPLE_COLUMNS if c not in out]
    if missing:
        raise KeyError(f"finalize_samples: no rule for column(s) {missing}")
    return pd.DataFrame({c: out[c] for c in SAMPLE_COLUMNS})


_DATE_IN_NAME = re.compile(r"_(\d{1,2})_(\d{1,2})_(\d{2,4})$")


def month_day_year_from_stem(stem: str):
    """(year, month, day) from a name ending in _month_day_year (CALCE style), else None."""
    match = _DATE_IN_NAME.search(stem)
    if not match:
        return None
    month, day, year = (int(g) for g in match.groups())
    if year < 100:
        year += 2000
    return (year, month, day)


# ------------------------------------------------------------------------------------------
# Numbers in text
# ------------------------------------------------------------------------------------------

# An exponent of 4+ significant digits; the number it belongs to is found by looking back from it.
_HUGE_EXPONENT = re.compile(rb"[eE]([-+]?)0*[1-9][0-9]{3,}")
_MANTISSA_BYTES = frozenset(b"0123456789.")  # not ",": a separator as often as a decimal comma
_WORD_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_E_LOWER, _PLUS, _MINUS, _ZERO, _NINE = (ord(c) for c in "e+-09")


def _may_hold_overflowing_exponent(raw: bytes) -> bool:
    """Cheap vectorised test for an 'e'/'E' followed by an optional sign and 4 digits.

    A superset of what `tame_overflowing_exponents` rewrites (e+0005 passes it too), about 4x
    faster than a regex on a file dense with exponents, so the normal file costs one scan, no copy.
    """
    a = np.frombuffer(raw, dtype=np.uint8)
    e = np.flatnonzero((a[:-4] | 0x20) == _E_LOWER) if len(a) > 4 else np.zeros(0, dtype=np.int64)
    if not len(e):
        return False
    after = a[e + 1]
    start = e + 1 + ((after == _PLUS) | (after == _MINUS))
    start = start[start + 3 < len(a)]
    digits = np.ones(len(start), dtype=bool)
    for k in range(4):
        c = a[start + k]
        digits &= (c >= _ZERO) & (c <= _NINE)
    return bool(digits.any())


def _tamed_exponent(match: re.Match) -> bytes:
    raw, at = match.string, match.start()
    begin = at
    while begin > 0 and raw[begin - 1] in _MANTISSA_BYTES:
        begin -= 1
    if begin == at or not any(48 <= c <= 57 for c in raw[begin:at]):
        return match.group(0)  # no digits before the 'e': not a number
    if begin > 0 and raw[begin - 1] in b"+-":
        begin -= 1
    if begin > 0 and raw[begin - 1] in _WORD_BYTES:
        return match.group(0)  # the tail of a word ("Cycle1E2000"), which no parser reads as a number
    return b"e" + match.group(1) + b"999"


def tame_overflowing_exponents(raw: bytes) -> bytes:
    """Rewrite every exponent of 4+ significant digits to 999 (same sign): the value is unchanged.

    pandas 2.3's float parser (read_csv, its Python engine and to_numeric alike) holds the exponent
    in a C int: `1E4294967296` comes back as 1.0 and `1e2147483648` or `3.E255631284671` (a
    flipped byte in a zoo file, found by fuzzing) kill the process with SIGSEGV. Any such exponent
    is out of float64's range (a mantissa of hundreds of digits aside, which no cycler writes), so
    `e999` keeps its meaning: overflow (NaN from pandas, inf from pyarrow; validation quarantines
    the row) or, for `e-999`, underflow to 0.0. Every text reader passes its bytes through here
    before pandas parses a number.
    """
    if not _may_hold_overflowing_exponent(raw):
        return raw
    return _HUGE_EXPONENT.sub(_tamed_exponent, raw)


def tame_overflowing_exponents_text(text: str) -> str:
    """`tame_overflowing_exponents` for text already decoded."""
    raw = text.encode("utf-8", errors="surrogatepass")
    tamed = tame_overflowing_exponents(raw)
    return text if tamed is raw else tamed.decode("utf-8", errors="surrogatepass")


def text_to_float(values) -> pd.Series:
    """pd.to_numeric(errors="coerce") that a huge exponent cannot crash: NaN where unreadable."""
    series = values if isinstance(values, pd.Series) else pd.Series(values)
    if series.dtype == object:
        texts = [v for v in series.to_numpy() if isinstance(v, (str, bytes))]
        if texts:
            joined = b"\n".join(t if isinstance(t, bytes) else t.encode("utf-8", "surrogatepass") for t in texts)
            if _may_hold_overflowing_exponent(joined):
                series = series.map(
                    lambda v: tame_overflowing_exponents_text(v) if isinstance(v, str) else v
                )
    return pd.to_numeric(series, errors="coerce")
