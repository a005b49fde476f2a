"""Battery Data Format (BDF) files: `bdf_csv` (`*.bdf.csv`, also gzip-compressed) and `bdf_parquet`.

BDF (Battery Data Alliance, https://github.com/battery-data-alliance/battery-data-format,
ontology 1.3.0 as bundled at commit 1412b98) is one cell per file, one column per quantity, the
column header being the quantity's preferred label `Base / unit` (README "Data structure") or
its machine-readable name (`test_time_second`, ...; README tables, ontology `skos:altLabel`).

Columns used (README "Required/Recommended/Optional quantities"):
  - required: `Test Time / s`, `Voltage / V`, `Current / A`. A file missing one of them is a
    SourceFormatError naming the missing label;
  - `Cycle Count / 1` -> cycle_number as the file numbers it ("converters must not renumber
    cycles"); without it cycles are derived from charge starts (as the Arbin reader does);
  - step: `Step Count / 1` (never repeats), else `Step ID` (program step), else the deprecated
    `Step Index / 1` -> step_index. The ontology redirects the deprecated `step_index` to
    `step_record_index` (a counter within a step; bdf's reader renames it so), but bdf's own
    `spec._VENDOR_SYNONYM_OVERRIDES` reads a vendor column "Step Index" as the program step id,
    and the files that carry it (SINTEF/Neware, BatMo) hold step ids (constant within a step,
    never counting rows). So it is read as a step id unless its values rise by one on most rows
    (a record counter): then, like `Step Record Index`, it is no step index and steps are
    derived from step-type changes, as they are without any step column;
  - `Step Type` text -> charge / discharge / rest where it says so (CHG, DCH, REST, OCV ...);
    otherwise the type comes from the sign of the current;
  - temperature: `Surface Temperature / degC`, else `Temperature T1 / degC`, else
    `Ambient Temperature / degC` (cell temperature first, chamber as the fallback);
  - `Internal Resistance / ohm`, else `DC Internal Resistance / ohm`;
  - capacity counters -> capacity_ah (Ah since the cycle began, in the sample's direction):
    `Cycle (Dis)Charging Capacity / Ah` already reset at each cycle and are taken as they are;
    `(Dis)Charging Capacity / Ah` (cumulative since test start, never reset) and
    `Step (Dis)Charging Capacity / Ah` (reset at each step) are summed increment by increment
    within each cycle, a drop of the counter being a reset to zero. The same applies to the
    non-spec `Charge Capacity / Ah` / `Discharge Capacity / Ah` of BatMo-style files, whose reset
    rule the spec does not define. Without any counter, capacity is integrated from the current.

Units: a label's unit is converted to SI (`Test Time / h` in BatMo files, `Test Time / ms`
and `test_time_millisecond` of legacy files, mA, mAh, K ...); an unknown unit is a
SourceFormatError naming the column.

Sign: BDF defines positive current = charge (ontology `current_ampere`), the canonical convention,
so the current is taken as it is, unless the file's own step types or capacity counters show it
is the other way round (BatMo exports positive = discharge): if at least 90 % of the samples
that carry such evidence contradict the sign, the current is negated and the description says so.

Kept as reported, never repaired (validation judges rows): a test time that jumps back (the
SINTEF `Time_Bug` file restarts it at every step), NaN, text in a numeric column (-> NaN). Only
when integrating current into capacity does a backwards time step count as zero duration, so
that a time reset cannot book a huge fake charge. A CSV line cut short reads with NaN for its
missing fields; a line with more fields than the header violates "All rows must match the
initial header in column count" and is a SourceFormatError.

Not checked: a test time stored in another unit under a seconds label (bdf's `_time_scale`,
its GH issue #65) shows only against a wall-clock column (`Unix Time / s`); none of the zoo
files has one, so it is not reconciled here. (The DLR POCV file's `test_time_second` spans
5.3e8 s = 16.8 years, which suggests exactly that; it is read as stated.)

Parsing: pyarrow's CSV parser on a clean table; a table it rejects (a line cut short, a ragged
row) goes through pandas with every column as text, which reports the bad line.

Metadata: a BDF file states no chemistry or capacity, so none is given (a sidecar supplies them);
the description holds what the file name says by the naming convention
`InstitutionCode__CellName__YYYYMMDD...` (README "File naming conventions").

Files of one cell: names `<Institution>__<Cell>__<YYYYMMDD>_<NNN>` differing only in `_NNN` are
parts of one test, in NNN order; every other file is a test of its own. A later part whose time
or cycle numbering starts again is shifted to continue the previous part.

Detection is by content: a CSV whose header (first non-blank line) holds a BDF test-time label
and a BDF voltage or current label; a Parquet file whose schema does. `canonical_csv` never
claims such a header (its time column is `time_s`, not a BDF label); `canonical_parquet` claims
every Parquet file, so these readers run first (priority 45 < 90).
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from battery_pipeline.science.readers.arbin_csv import cycles_from_charge_starts
from battery_pipeline.science.readers.base import (
    CellDefaults,
    CyclerReader,
    ReadResult,
    SourceFormatError,
    capacity_from_current,
    finalize_samples,
    rest_threshold_a,
    step_index_from_changes,
    step_codes_from_current,
    step_type_category,
    tame_overflowing_exponents,
    text_to_float,
)

GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
BDF_SUFFIXES = (".bdf.csv", ".bdf.csv.gz", ".bdf.gz", ".bdf.parquet", ".bdf")

# Quantity -> (label bases, machine-readable names with the factor to SI). Bases are slugs of the
# part before " / " (lower case, non-alphanumerics -> "-"), as bdf's own normalizer slugs them.
QUANTITIES: dict[str, tuple[tuple[str, ...], dict[str, float]]] = {
    "test_time": (("test-time",), {"test_time_second": 1.0, "test_time_s": 1.0,
                                   "test_time_millisecond": 1e-3, "test_time_ms": 1e-3}),
    "voltage": (("voltage",), {"voltage_volt": 1.0, "voltage_v": 1.0}),
    "current": (("current",), {"current_ampere": 1.0, "current_a": 1.0}),
    "cycle_count": (("cycle-count",), {"cycle_count": 1.0, "cycle_count_1": 1.0, "cycle_dimensionless": 1.0}),
    "step_count": (("step-count",), {"step_count": 1.0, "step_count_1": 1.0, "step_dimensionless": 1.0}),
    "step_id": (("step-id",), {"step_id": 1.0}),
    "step_index_legacy": (("step-index",), {"step_index": 1.0, "step_index_1": 1.0}),
    "step_type": (("step-type",), {"step_type": 1.0}),
    "surface_temperature": (("surface-temperature",), {"surface_temperature_celsius": 1.0, "surface_temperature_degc": 1.0}),
    "temperature_t1": (("temperature-t1", "surface-temperature-t1"),
                       {"temperature_t1_celsius": 1.0, "temperature_t1_degc": 1.0, "surface_temperature_t1_celsius": 1.0}),
    "ambient_temperature": (("ambient-temperature",), {"ambient_temperature_celsius": 1.0, "ambient_temperature_degc": 1.0}),
    "internal_resistance": (("internal-resistance",), {"internal_resistance_ohm": 1.0}),
    "dc_internal_resistance": (("dc-internal-resistance",),
                               {"dc_internal_resistance_ohm": 1.0, "dc_resistance_ohm": 1.0, "dcir": 1.0}),
    "cycle_charging_capacity": (("cycle-charging-capacity",),
                                {"cycle_charging_capacity_ah": 1.0, "cycle_charge_capacity_ah": 1.0,
                                 "cycle_charging_capacity_ampere_hour": 1.0}),
    "cycle_discharging_capacity": (("cycle-discharging-capacity",),
                                   {"cycle_discharging_capacity_ah": 1.0, "cycle_discharge_capacity_ah": 1.0,
                                    "cycle_discharging_capacity_ampere_hour": 1.0}),
    "charging_capacity": (("charging-capacity",), {"charging_capacity_ah": 1.0, "charging_capacity_ampere_hour": 1.0}),
    "discharging_capacity": (("discharging-capacity",),
                             {"discharging_capacity_ah": 1.0, "discharging_capacity_ampere_hour": 1.0}),
    "step_charging_capacity": (("step-charging-capacity",),
                               {"step_charging_capacity_ah": 1.0, "step_charge_capacity_ah": 1.0,
                                "step_charging_capacity_ampere_hour": 1.0}),
    "step_discharging_capacity": (("step-discharging-capacity",),
                                  {"step_discharging_capacity_ah": 1.0, "step_discharge_capacity_ah": 1.0,
                                   "step_discharging_capacity_ampere_hour": 1.0}),
    # Not in the ontology: BatMo-style labels (cellpy's batmo_bdf.csv).
    "charge_capacity_nonspec": (("charge-capacity",), {}),
    "discharge_capacity_nonspec": (("discharge-capacity",), {}),
}
REQUIRED_LABELS = {"test_time": "Test Time / s", "voltage": "Voltage / V", "current": "Current / A"}

# Unit text -> factor to SI per dimension; temperatures also need an offset (K -> degC).
_UNIT_FACTORS: dict[str, dict[str, float]] = {
    "time": {"s": 1.0, "sec": 1.0, "second": 1.0, "ms": 1e-3, "min": 60.0, "h": 3600.0, "hr": 3600.0, "d": 86400.0},
    "voltage": {"v": 1.0, "mv": 1e-3},
    "current": {"a": 1.0, "ma": 1e-3, "ua": 1e-6, "µa": 1e-6, "μa": 1e-6},
    "capacity": {"ah": 1.0, "a.h": 1.0, "mah": 1e-3, "ma.h": 1e-3},
    "temperature": {"degc": 1.0, "°c": 1.0, "℃": 1.0, "cel": 1.0, "c": 1.0, "k": 1.0},
    "resistance": {"ohm": 1.0, "Ω": 1.0, "ω": 1.0, "mohm": 1e-3, "mω": 1e-3},
    "count": {"1": 1.0},
}
_DIMENSION = {
    "test_time": "time", "voltage": "voltage", "current": "current",
    "cycle_count": "count", "step_count": "count", "step_id": "count", "step_index_legacy": "count",
    "step_type": "count",
    "surface_temperature": "temperature", "temperature_t1": "temperature", "ambient_temperature": "temperature",
    "internal_resistance": "resistance", "dc_internal_resistance": "resistance",
}
_KELVIN_OFFSET = -273.15

_SLUG = re.compile(r"[^a-z0-9]+")
_LABEL = re.compile(r"^\s*(.+?)\s*/\s*(.+?)\s*$")
_BY_MACHINE_NAME = {name: (quantity, factor) for quantity, (_, names) in QUANTITIES.items()
                    for name, factor in names.items()}
_BY_BASE = {base: quantity for quantity, (bases, _) in QUANTITIES.items() for base in bases}

# Share of the samples with sign evidence that must contradict the current before it is negated.
SIGN_EVIDENCE_FRACTION = 0.9
MOSTLY_TEXT_FRACTION = 0.5
_NAME_PARTS = re.compile(r"^(?P<institution>[^_]+(?:_[^_]+)*?)__(?P<cell>.+?)__(?P<date>\d{4}-?\d{2}-?\d{2})(?P<rest>.*)$")
_PART_NUMBER = re.compile(r"^(?P<test>.+__\d{4}-?\d{2}-?\d{2})_(?P<part>\d{3})$")


def _slug(text: str) -> str:
    return _SLUG.sub("-", text.lower()).strip("-")


@dataclass(frozen=True)
class BdfColumn:
    """A file column recognised as a BDF quantity: its name in the file and how to make it SI."""

    name: str
    quantity: str
    factor: float
    offset: float = 0.0


def resolve_column(name: str) -> BdfColumn | None | str:
    """The BDF quantity a header names; None if it is not one we use; an error text for a BDF
    label whose unit cannot be converted."""
    clean = str(name).replace("\ufeff", "").strip()
    machine = _BY_MACHINE_NAME.get(clean.lower())
    if machine is not None:
        return BdfColumn(name, machine[0], machine[1])
    match = _LABEL.match(clean)
    base, unit = (match.group(1), match.group(2)) if match else (clean, "")
    quantity = _BY_BASE.get(_slug(base))
    if quantity is None:
        return None
    dimension = "capacity" if quantity.endswith("capacity") or quantity.endswith("capacity_nonspec") else _DIMENSION[quantity]
    if not unit:
        # "Step ID" / "Step Type" carry no unit; a unit-less physical label is not BDF.
        return BdfColumn(name, quantity, 1.0) if dimension == "count" else f"column {name!r} has no unit"
    factors = _UNIT_FACTORS[dimension]
    key = unit.strip().lower()
    if key not in factors:
        return f"column {name!r}: unit {unit!r} is not a {dimension} unit this reader converts ({', '.join(factors)})"
    offset = _KELVIN_OFFSET if dimension == "temperature" and key == "k" else 0.0
    return BdfColumn(name, quantity, factors[key], offset)


def map_columns(names: list[str]) -> tuple[dict[str, BdfColumn], list[str]]:
    """quantity -> first column naming it, and the unit problems found."""
    found: dict[str, BdfColumn] = {}
    problems: list[str] = []
    for name in names:
        resolved = resolve_column(name)
        if isinstance(resolved, str):
            problems.append(resolved)
        elif resolved is not None:
            found.setdefault(resolved.quantity, resolved)
    return found, problems


def looks_like_bdf_header(names: list[str]) -> bool:
    found, _ = map_columns(names)
    return "test_time" in found and ("voltage" in found or "current" in found)


# ------------------------------------------------------------------------------------------
# Raw tables
# ------------------------------------------------------------------------------------------


def _open_text_head(path: Path, head: bytes) -> str:
    if head.startswith(GZIP_MAGIC):
        try:
            with gzip.open(path, "rb") as handle:
                head = handle.read(64 * 1024)
        except (OSError, EOFError):
            return ""
    return head.decode("utf-8-sig", errors="replace")


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line
    return ""


def _split_header(line: str) -> list[str]:
    delimiter = max((",", ";", "\t"), key=line.count)
    return next(csv.reader([line], delimiter=delimiter))


def _as_frame(table: pa.Table) -> pd.DataFrame | dict[str, pd.Series]:
    """Label -> Series, column by column: to_pandas' metadata handling and a frame's block
    consolidation cost more than the conversion of a small file (a 20 k-row one)."""
    names = table.column_names
    if len(set(names)) < len(names):  # a label twice: to_pandas keeps both for convert_table to refuse
        return table.to_pandas()
    return {name: pd.Series(table.column(i).to_numpy(zero_copy_only=False), copy=False) for i, name in enumerate(names)}


def _read_csv_table(path: Path) -> pd.DataFrame:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SourceFormatError(path, f"cannot open file ({exc.strerror})") from exc
    if not raw:
        raise SourceFormatError(path, "file is empty (0 bytes)")
    if raw.startswith(GZIP_MAGIC):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise SourceFormatError(path, f"damaged gzip stream ({exc})") from exc
    header = _first_line(raw[: 64 * 1024].decode("utf-8-sig", errors="replace"))
    if not header:
        raise SourceFormatError(path, "file holds no header row (only blank lines)")
    delimiter = max((",", ";", "\t"), key=header.count)
    try:
        # Fastest path, on the bytes as they are: pyarrow's parser reads any exponent (1E4294967296
        # -> inf) and skips a BOM; a column holding bytes that are not UTF-8 comes back as binary,
        # and then the decoded text below is parsed instead.
        table = pacsv.read_csv(pa.BufferReader(raw), parse_options=pacsv.ParseOptions(delimiter=delimiter))
        if not any(pa.types.is_binary(t) for t in table.schema.types):
            return _as_frame(table)
    except (pa.ArrowInvalid, pa.ArrowException):
        pass
    text = tame_overflowing_exponents(raw).decode("utf-8-sig", errors="replace")
    try:
        # Fast path: pyarrow's multithreaded, correctly rounding parser on a clean table.
        # parsed from the decoded text: raw bytes that are not UTF-8 would reach the numeric
        # conversion as Python bytes (the reader fuzzing found it)
        table = pacsv.read_csv(
            io.BytesIO(text.encode("utf-8")), parse_options=pacsv.ParseOptions(delimiter=delimiter),
            read_options=pacsv.ReadOptions(encoding="utf-8"),
        )
        return _as_frame(table)
    except (pa.ArrowInvalid, pa.ArrowException):
        pass  # ragged, truncated or oddly encoded: the lenient parser below says what is wrong
    try:
        # Every column as text: numbers are converted per quantity below, so one stray word
        # becomes a NaN in its row instead of turning the whole column into text.
        return pd.read_csv(io.StringIO(text), sep=delimiter, dtype=str, skip_blank_lines=True,
                           keep_default_na=True)
    except pd.errors.EmptyDataError as exc:
        raise SourceFormatError(path, "file holds no header row") from exc
    except (ValueError, pd.errors.ParserError) as exc:
        raise SourceFormatError(
            path, f"not a rectangular BDF table (every row must have the header's column count): {exc}"
        ) from exc


def _read_parquet_table(path: Path) -> pd.DataFrame:
    try:
        # one file: ParquetFile skips read_table's dataset discovery (0.5 ms of a 1 ms read)
        with pq.ParquetFile(path) as parquet:
            table = parquet.read()
    except FileNotFoundError as exc:
        raise SourceFormatError(path, "file not found") from exc
    except (OSError, pa.ArrowException) as exc:
        raise SourceFormatError(path, f"truncated or corrupt Parquet file ({exc})") from exc
    return _as_frame(table)


# ------------------------------------------------------------------------------------------
# Conversion of one file
# ------------------------------------------------------------------------------------------


def _numeric(path: Path, table: pd.DataFrame, column: BdfColumn, *, required: bool) -> np.ndarray:
    values = table[column.name]
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = values.to_numpy(dtype="float64", na_value=np.nan)
    else:
        try:
            # Python's float parser is exact (round-trips repr), pandas' to_numeric is not always.
            coerced = pd.Series(values.astype("float64"), index=values.index)
        except (TypeError, ValueError):
            coerced = text_to_float(values)
        given = values.notna() & (values.astype(str).str.strip() != "")
        n_text = int((given & coerced.isna()).sum())
        if required and n_text > MOSTLY_TEXT_FRACTION * max(len(values), 1):
            examples = ", ".join(repr(v) for v in values[given & coerced.isna()].astype(str).unique()[:3])
            raise SourceFormatError(
                path, f"column {column.name!r} is mostly text: {n_text} of {len(values)} values are "
                f"not numbers (e.g. {examples})"
            )
        numbers = coerced.to_numpy(dtype="float64", na_value=np.nan)
    if column.factor != 1.0:
        numbers = numbers * column.factor
    if column.offset:
        numbers = numbers + column.offset
    return numbers


def _index(values: np.ndarray) -> np.ndarray:
    """int64; NaN -> -1, which the schema (ge=0) rejects, so the row is quarantined, not lost."""
    return np.round(np.where(np.isfinite(values), values, -1)).astype("int64")


_DISCHARGE = re.compile(r"(dis|dch)", re.IGNORECASE)
_CHARGE = re.compile(r"(chg|charg|^c$|cc|cv)", re.IGNORECASE)
_REST = re.compile(r"(rest|ocv|pause|relax|wait|idle)", re.IGNORECASE)


def step_types_from_text(text: np.ndarray) -> np.ndarray:
    """charge / discharge / rest where a BDF Step Type says so, else None (type from current)."""
    labels = pd.Series(text, dtype=object)
    unique = labels.dropna().unique()
    mapping: dict[object, object] = {}
    for value in unique:
        word = str(value).strip()
        if _DISCHARGE.search(word):
            mapping[value] = "discharge"
        elif _REST.search(word):
            mapping[value] = "rest"
        elif _CHARGE.search(word):
            mapping[value] = "charge"
        else:
            mapping[value] = None
    return labels.map(mapping).to_numpy(dtype=object)


def _counts_records(values: np.ndarray) -> bool:
    """True if a column rises by one on most rows (a record counter), not constant per step."""
    if len(values) < 3:
        return False
    return float(np.mean(np.diff(values) == 1)) > 0.5


def counter_since_cycle_start(counter: np.ndarray, cycle: np.ndarray) -> np.ndarray:
    """A capacity counter (cumulative or resetting per step) re-based to Ah since the cycle began.

    Each sample adds its increment over the previous one; a drop means the counter was reset to
    zero, so the new value itself is the increment. Nothing is carried across a cycle boundary
    unless the counter was reset there. NaN samples stay NaN and do not break the sum.
    """
    n = len(counter)
    if n == 0:
        return counter.astype("float64")
    filled = pd.Series(counter).ffill().fillna(0.0).to_numpy()
    previous = np.concatenate([[filled[0]], filled[:-1]])
    increment = np.where(filled >= previous, filled - previous, filled)
    new_cycle = np.concatenate([[True], cycle[1:] != cycle[:-1]])
    increment[new_cycle & (filled >= previous)] = 0.0
    increment[0] = 0.0
    running = np.cumsum(increment)
    starts = np.flatnonzero(new_cycle)
    base = np.repeat(running[starts] - increment[starts], np.diff(np.concatenate([starts, [n]])))
    out = running - base
    return np.where(np.isfinite(counter), out, np.nan)


def _integration_time(time_s: np.ndarray) -> np.ndarray:
    """Test time made non-decreasing for integrating current, never for the output `time_s`.

    A single sample that jumps back (the SINTEF/Neware `Time_Bug` logs 0 s on the first row of
    every step, the next row resuming the clock) is bridged: the interval after it is measured
    from the sample before it. A lasting restart of the clock counts as zero duration. Either
    way no backwards jump books charge.
    """
    t = np.asarray(time_s, dtype="float64")
    known = ~np.isnan(t)
    if not known.all():  # forward fill (as pandas' ffill: NaN only), 0 before the first known time
        last = np.maximum.accumulate(np.where(known, np.arange(len(t)), -1))
        t = np.where(last >= 0, t[np.maximum(last, 0)], 0.0)
    if len(t) < 2:
        return t
    reference = np.concatenate([[t[0]], t[:-1]])
    went_back = np.concatenate([[False], t[1:] < t[:-1]])
    before_glitch = np.concatenate([[t[0], t[0]], t[:-2]])
    bridged = np.concatenate([[False], went_back[:-1]]) & (t >= before_glitch)
    reference = np.where(bridged, before_glitch, reference)
    return np.cumsum(np.clip(t - reference, 0.0, None))


def capacity_on_bridged_time(time_s, current, cycle, threshold_a: float) -> np.ndarray:
    """base.capacity_from_current on the bridged test time (`_integration_time`), with the
    file's rest threshold."""
    return capacity_from_current(_integration_time(time_s), current, cycle, threshold_a)


def step_types_from_current(current, step, cycle, threshold_a: float) -> pd.Categorical:
    """charge / discharge / rest: per step segment by its median current where the file has
    steps (a CV tail or a ramp stays one kind), per sample otherwise; a segment holding samples
    of the other kind beyond 10x the threshold (a real mixed step) is typed per sample.
    Worked out on codes, returned as a Categorical: text per row costs more than the reading."""
    return step_type_category(_step_codes(current, step, cycle, threshold_a))


def _step_codes(current, step, cycle, threshold_a: float) -> np.ndarray:
    per_sample = step_codes_from_current(current, threshold_a)
    if step is None or len(current) == 0:
        return per_sample
    boundary = np.concatenate([[True], step[1:] != step[:-1]])
    if cycle is not None:
        boundary[1:] |= cycle[1:] != cycle[:-1]
    segment = np.cumsum(boundary) - 1
    median = np.nan_to_num(pd.Series(current).groupby(segment).median().to_numpy())
    segment_type = step_codes_from_current(median, threshold_a)[segment]
    disagree = (np.abs(np.nan_to_num(current)) > 10 * threshold_a) & (per_sample != segment_type)
    mixed = np.bincount(segment, weights=disagree.astype("float64")) > 0
    return np.where(mixed[segment], per_sample, segment_type)


def _sign_evidence(kinds_text, counters: dict[str, np.ndarray], current: np.ndarray, threshold_a: float):
    """(samples contradicting the BDF sign, samples with evidence) from the file's own columns."""
    moving = np.abs(np.nan_to_num(current)) > threshold_a
    positive = moving & (current > 0)
    negative = moving & (current < 0)
    if kinds_text is not None:
        charge = kinds_text == "charge"
        discharge = kinds_text == "discharge"
        evidence = (charge | discharge) & moving
        if evidence.sum():
            against = (charge & negative) | (discharge & positive)
            return int(against.sum()), int(evidence.sum())
    rising = {}
    for direction in ("charge", "discharge"):
        counter = counters.get(direction)
        if counter is not None:
            grows = np.diff(pd.Series(counter).ffill().fillna(0.0).to_numpy(), prepend=np.nan) > 0
            rising[direction] = grows & moving
    if not rising:
        return 0, 0
    against = np.zeros(len(current), dtype=bool)
    evidence = np.zeros(len(current), dtype=bool)
    if "charge" in rising:
        against |= rising["charge"] & negative
        evidence |= rising["charge"]
    if "discharge" in rising:
        against |= rising["discharge"] & positive
        evidence |= rising["discharge"]
    return int(against.sum()), int(evidence.sum())


@dataclass
class BdfFile:
    path: Path
    frame: dict[str, np.ndarray]  # canonical columns of this file, before offsets between files
    notes: list[str]


def convert_table(path: Path, table: pd.DataFrame | dict[str, pd.Series]) -> BdfFile:
    """One file's table (BDF columns: a frame, or label -> Series) -> canonical columns; see the
    module docstring."""
    names = [str(c) for c in table.columns] if isinstance(table, pd.DataFrame) else list(table)
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:  # which copy holds the quantity cannot be known from the file
        raise SourceFormatError(path, f"column label(s) {repeated} appear more than once")
    if isinstance(table, pd.DataFrame):
        table = {name: table[column] for name, column in zip(names, table.columns)}
    rows = len(next(iter(table.values()))) if table else 0
    columns, problems = map_columns(names)
    missing = [label for quantity, label in REQUIRED_LABELS.items() if quantity not in columns]
    if missing:
        shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
        unit_note = f"; {'; '.join(problems)}" if problems else ""
        raise SourceFormatError(
            path, f"missing required BDF column(s) {missing} (found: {shown or 'no columns'}){unit_note}"
        )
    if rows == 0:
        raise SourceFormatError(path, "no data rows after the header")
    notes: list[str] = []
    time_s = _numeric(path, table, columns["test_time"], required=True)
    voltage = _numeric(path, table, columns["voltage"], required=True)
    current = _numeric(path, table, columns["current"], required=True)
    if not np.isfinite(time_s).any():
        raise SourceFormatError(path, f"column {columns['test_time'].name!r} holds no numbers")
    backwards = int((np.diff(time_s) < 0).sum())
    if backwards:
        notes.append(f"{path.name}: test time jumps back {backwards} times (kept as reported)")

    kinds_text = None
    if "step_type" in columns:
        kinds_text = step_types_from_text(table[columns["step_type"].name].to_numpy(dtype=object))

    counters: dict[str, np.ndarray] = {}
    counter_kind: dict[str, str] = {}
    for direction, candidates in (
        ("charge", ("cycle_charging_capacity", "charging_capacity", "step_charging_capacity", "charge_capacity_nonspec")),
        ("discharge", ("cycle_discharging_capacity", "discharging_capacity", "step_discharging_capacity",
                       "discharge_capacity_nonspec")),
    ):
        for quantity in candidates:
            if quantity in columns:
                counters[direction] = np.abs(_numeric(path, table, columns[quantity], required=False))
                counter_kind[direction] = quantity
                break

    threshold_a = rest_threshold_a(current)
    against, evidence = _sign_evidence(kinds_text, counters, current, threshold_a)
    if evidence and against >= SIGN_EVIDENCE_FRACTION * evidence:
        current = -current
        notes.append(
            f"{path.name}: current negated: {against} of {evidence} samples whose step type or "
            "capacity counter tells the direction have positive current on discharge "
            "(BDF defines positive = charge)"
        )

    step_source = next((q for q in ("step_count", "step_id", "step_index_legacy") if q in columns), None)
    raw_step = _index(_numeric(path, table, columns[step_source], required=False)) if step_source else None
    if step_source == "step_index_legacy" and raw_step is not None and _counts_records(raw_step):
        # The deprecated label meant a within-step record counter where the ontology's
        # redirect (step_record_index) is right: not a step number, so steps are derived.
        notes.append(f"{path.name}: {columns[step_source].name!r} counts records within steps; steps derived")
        raw_step = None
    raw_cycle = (
        _index(_numeric(path, table, columns["cycle_count"], required=False)) if "cycle_count" in columns else None
    )

    kinds = step_types_from_current(current, raw_step, raw_cycle, threshold_a)
    if kinds_text is not None:
        kinds = np.where(pd.isna(kinds_text), np.asarray(kinds, dtype=object), kinds_text).astype(object)
    if raw_cycle is None:
        cycle = cycles_from_charge_starts(kinds)
        notes.append(f"{path.name}: no Cycle Count column, cycles derived from charge starts")
    else:
        cycle = raw_cycle
    step = raw_step if raw_step is not None else step_index_from_changes(kinds)

    if counters:
        capacity = np.full(rows, np.nan)
        for direction, counter in counters.items():
            since_start = counter if counter_kind[direction].startswith("cycle_") else counter_since_cycle_start(counter, cycle)
            capacity = np.where(np.asarray(kinds == direction), since_start, capacity)
        if len(counters) == 1:
            # One direction's counter only: the other direction comes from the current.
            other = "discharge" if "charge" in counters else "charge"
            derived = capacity_on_bridged_time(time_s, current, cycle, threshold_a)
            capacity = np.where(np.asarray(kinds == other), derived, capacity)
    else:
        capacity = capacity_on_bridged_time(time_s, current, cycle, threshold_a)
        capacity = np.where(np.asarray(kinds == "rest"), np.nan, capacity)

    temperature = next(
        (_numeric(path, table, columns[q], required=False)
         for q in ("surface_temperature", "temperature_t1", "ambient_temperature") if q in columns),
        np.full(rows, np.nan),
    )
    resistance = next(
        (_numeric(path, table, columns[q], required=False)
         for q in ("internal_resistance", "dc_internal_resistance") if q in columns),
        np.full(rows, np.nan),
    )
    frame = {
        "cycle_number": np.asarray(cycle),
        "step_index": np.asarray(step),
        "step_type": kinds if isinstance(kinds, pd.Categorical) else np.asarray(kinds, dtype=object),
        "time_s": time_s,
        "voltage_v": voltage,
        "current_a": current,
        "temperature_c": temperature,
        "capacity_ah": capacity,
        "internal_resistance_ohm": resistance,
        "source_file": pd.Categorical.from_codes(np.zeros(rows, dtype="int8"), categories=[path.name]),
        "source_row": np.arange(rows, dtype="int64"),
    }
    return BdfFile(path=path, frame=frame, notes=notes)


def _stem(path: Path) -> str:
    name = path.name
    lower = name.lower()
    for suffix in sorted(BDF_SUFFIXES + (".csv.gz", ".csv", ".parquet", ".gz"), key=len, reverse=True):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def describe_name(path: Path) -> str:
    """What a name following the BDF naming convention says (institution, cell, date, rest)."""
    stem = _stem(path)
    match = _NAME_PARTS.match(stem)
    if not match:
        return f"BDF file {path.name}"
    rest = [part for part in match.group("rest").strip("_").split("__") if part]
    text = (
        f"BDF file {path.name}: institution {match.group('institution')}, cell {match.group('cell')}, "
        f"date {match.group('date')}"
    )
    return text + (f", {', '.join(rest)}" if rest else "")


class _BdfReader(CyclerReader):
    priority = 45  # a BDF header is specific; canonical_* (90) would claim the Parquet files too
    # Steps are mostly derived from the current or from converted exports, so the switch
    # happened somewhere between two samples: integrate boundary intervals with the trapezoid.
    logs_step_end = False

    @classmethod
    def _table(cls, path: Path) -> pd.DataFrame:
        raise NotImplementedError

    @classmethod
    def cell_key(cls, path: Path) -> str:
        stem = _stem(path)
        match = _PART_NUMBER.match(stem)
        return match.group("test") if match else stem

    @classmethod
    def file_order(cls, path: Path):
        match = _PART_NUMBER.match(_stem(path))
        return (int(match.group("part")) if match else 0, path.name)

    @classmethod
    def describe(cls, paths: list[Path]) -> CellDefaults:
        # Chemistry and capacity are never in a BDF time-series file: left unknown.
        return CellDefaults(description="; ".join(describe_name(Path(p)) for p in paths))

    @classmethod
    def read(cls, paths: list[Path], cell_id: str) -> ReadResult:
        files = [convert_table(Path(p), cls._table(Path(p))) for p in sorted(map(Path, paths), key=cls.file_order)]
        notes = [note for f in files for note in f.notes]
        pieces = []
        last_time = None
        last_cycle = None
        for f in files:
            frame = dict(f.frame)
            time_s = frame["time_s"]
            finite = time_s[np.isfinite(time_s)]
            if last_time is not None and len(finite) and finite[0] < last_time:
                frame["time_s"] = time_s + last_time
                notes.append(f"{f.path.name}: test time restarts, shifted by {last_time:g} s to continue")
            cycle = frame["cycle_number"]
            valid = cycle[cycle >= 0]
            clock_restarted = last_time is not None and len(finite) and finite[0] < last_time
            # A part continuing the clock may continue the last cycle; a restarted clock is a
            # restarted test, whose cycle count starts again too.
            if last_cycle is not None and len(valid) and (
                valid[0] < last_cycle or (clock_restarted and valid[0] <= last_cycle)
            ):
                offset = last_cycle + 1 - int(valid[0])
                frame["cycle_number"] = np.where(cycle >= 0, cycle + offset, cycle)
                notes.append(f"{f.path.name}: cycle numbering restarts, shifted by {offset} to continue")
            shifted_time = frame["time_s"]
            if np.isfinite(shifted_time).any():
                last_time = float(np.nanmax(shifted_time))
            shifted_cycle = frame["cycle_number"]
            if (shifted_cycle >= 0).any():
                last_cycle = int(shifted_cycle[shifted_cycle >= 0].max())
            pieces.append(frame)
        joined = pieces[0] if len(pieces) == 1 else {c: np.concatenate([np.asarray(p[c]) for p in pieces]) for c in pieces[0]}
        samples = finalize_samples(joined, cell_id)
        defaults = cls.describe(paths)
        if notes:
            defaults.description = f"{defaults.description}. {'; '.join(notes)}"
        return ReadResult(samples=samples, cell=defaults)


class BdfCsvReader(_BdfReader):
    """BDF CSV (`*.bdf.csv`, `*.bdf`, gzip-compressed `*.bdf.gz` / `*.bdf.csv.gz`)."""

    format_name = "bdf_csv"
    extensions = (".csv", ".bdf", ".gz")

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        if head.startswith(PARQUET_MAGIC):
            return False
        text = _open_text_head(path, head)
        if "\x00" in text[:4096]:
            return False
        line = _first_line(text)
        return bool(line) and looks_like_bdf_header(_split_header(line))

    @classmethod
    def _table(cls, path: Path) -> pd.DataFrame:
        return _read_csv_table(path)


class BdfParquetReader(_BdfReader):
    """BDF Parquet (`*.bdf.parquet`): columns named by BDF labels or machine-readable names."""

    format_name = "bdf_parquet"
    extensions = (".parquet",)

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        if not head.startswith(PARQUET_MAGIC):
            return False
        try:
            names = pq.read_schema(path).names
        except (OSError, pa.ArrowException):
            # Unreadable footer: the name is the only hint left; claim it so the error says BDF.
            return path.name.lower().endswith(".bdf.parquet")
        return looks_like_bdf_header(list(names))

    @classmethod
    def _table(cls, path: Path) -> pd.DataFrame:
        return _read_parquet_table(path)
