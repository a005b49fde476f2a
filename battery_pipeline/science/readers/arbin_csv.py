"""Arbin CSV exports (MITS Pro / BEEP fixtures), plus the Arbin logic shared with `arbin_xlsx`.

Source layout: one header line, then one row per logged point::

    Data_Point,Test_Time,DateTime,Step_Time,Step_Index,Cycle_Index,Current,Voltage,
    Charge_Capacity,Discharge_Capacity,Charge_Energy,Discharge_Energy,dV/dt,
    Internal_Resistance,Temperature

Header spellings with units (`Test_Time(s)`, `Current(A)`, `Voltage (V)`, `Charge Capacity (Ah)`,
`Aux_Temperature_1 (C)`, ...) are accepted too; `mA`, `mV`, `mAh`, `mOhm`, `ms`, `min`, `h`
units are converted, an unknown unit is an error rather than a silent factor of 1000. A
`<stem>_Metadata.csv` next to the data file is a companion (test id, channel, schedule file); it
is never a cell of its own and only feeds `describe`.

Conventions (what the canonical columns mean for Arbin data, checked on the real files):

- current: Arbin already logs charge positive, discharge negative (verified: `Charge_Capacity`
  grows while `Current` > 0, `Discharge_Capacity` while `Current` < 0), so it is taken as is.
- time_s: `Test_Time` (s since the Arbin test started). When a cell's test spans several files
  (several Arbin tests, e.g. CALCE's weekly exports) each file is placed on one clock by its
  absolute start, `DateTime - Test_Time` of its first row, relative to the first file's start:
  gaps between files stay real elapsed time, and the sub-second `Test_Time` is kept within a
  file (`DateTime` has only 1 s resolution in CALCE and drifts ~60 s/week against `Test_Time`).
  Files are ordered by that absolute start. Without a date column on every file the files are
  chained in the given order instead (each starts where the previous one ended).
- cycle_number: `Cycle_Index` as logged for the first file; every further Arbin test continues
  after the highest cycle so far (`Cycle_Index` restarts in each export), so numbers are
  continuous with no gaps. Files that are exports of the *same* Arbin test (same absolute start
  within 2 s: a re-export, or a duplicate copy) share one numbering: their rows get the same
  cycle numbers and times as the first copy, so a duplicate file repeats samples (quarantined
  later as duplicate_sample) instead of inventing cycles. Where `Cycle_Index` is empty (e.g.
  the BEEP `*_test-TC-contact_CH33.csv` fixture), a cycle starts at the first charge and at
  every charge that follows a discharge (rests in between do not count): rows before the first
  charge are cycle 0, Arbin-style 1-based counting thereafter.
- step_index: Arbin `Step_Index` (the schedule line); where empty, a new step wherever
  step_type changes (`base.step_index_from_changes`).
- step_type: Arbin exports no step type. With a `Step_Index`, each step segment takes the type
  of its median current, so the few-mA pulses of Arbin's internal-resistance steps and single
  transition samples do not split a rest step; a step in which a new internal-resistance value
  appears and whose median |I| is below 10 mA is Arbin's IR measurement (CALCE logs its
  1-3.5 mA pulse in two samples) and is a rest; a segment that also holds samples beyond 10 mA
  of the other kind (e.g. a drive-cycle step) is typed sample by sample. Without `Step_Index`,
  sample by sample (|I| <= 1 mA is rest).
- capacity_ah: `Charge_Capacity` on charge rows, `Discharge_Capacity` on discharge rows, re-based
  to the start of the sample's cycle; null on rest rows (no direction). Arbin counters either
  reset at every cycle (common schedules) or accumulate over the whole test (CALCE CS2: 53 Ah at
  cycle 50); per cycle the reader subtracts the counter's value at the end of the previous cycle
  when the counter did not drop at the boundary, else nothing, and the first cycle of each file
  starts at 0. Where cycles are derived (no `Cycle_Index`), the counters are used as logged.
  A file that starts inside a cycle keeps what the counter already holds on its first row
  (battdat's arbin_example.csv: 0.88 Ah of cycle 1's charge precede the export): that charge
  belongs to the cycle by Arbin's count, though no logged row carries its current.
- internal_resistance_ohm: Arbin's column is sample-and-hold: 0 until the first measurement,
  then the last measured value repeated on every row (CALCE: measured twice per cycle, in the
  5 s steps after charge and after discharge). 0 means "not measured" -> null, and a value is
  kept only on the row where it first appears (the measurement); the repeats are null, so
  per-cycle statistics are not weighted by how long a value was held. Two consecutive
  measurements with bit-identical values would read as one.
- temperature_c: `Temperature` (or the first `Aux_Temperature`), degC; null where absent.
- source_row: 0-based data row within its file; source_file: the file's name.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from pandas.tseries.api import guess_datetime_format

from battery_pipeline.science.readers.base import (
    CHARGE,
    DISCHARGE,
    REST,
    REST_CURRENT_THRESHOLD_A,
    CellDefaults,
    CyclerReader,
    ReadResult,
    SourceFormatError,
    finalize_samples,
    from_dataset_rule,
    rest_threshold_a,
    step_codes_from_current,
    step_index_from_changes,
    step_type_category,
    tame_overflowing_exponents,
    text_to_float,
)
from battery_pipeline.science.schema import empty_samples

# ------------------------------------------------------------------------------------------
# Column names and units
# ------------------------------------------------------------------------------------------

_UNIT_IN_NAME = re.compile(r"\(([^)]*)\)")

# normalized (lower-case, units removed, spaces -> "_") Arbin name -> role
_ROLES = {
    "test_time": "test_time",
    "datetime": "date_time",
    "date_time": "date_time",
    "step_index": "step_index",
    "cycle_index": "cycle_index",
    "current": "current",
    "voltage": "voltage",
    "charge_capacity": "charge_capacity",
    "discharge_capacity": "discharge_capacity",
    "internal_resistance": "internal_resistance",
}
_TEMPERATURE = re.compile(r"^(aux_)?temperature(_\d+)?$")

REQUIRED_ROLES = ("test_time", "current", "voltage", "charge_capacity", "discharge_capacity")

# Unit (lower-case) -> factor to SI per role; None = no unit in the header.
_UNITS = {
    "test_time": {None: 1.0, "s": 1.0, "sec": 1.0, "ms": 1e-3, "min": 60.0, "h": 3600.0, "hr": 3600.0},
    "current": {None: 1.0, "a": 1.0, "ma": 1e-3},
    "voltage": {None: 1.0, "v": 1.0, "mv": 1e-3},
    "charge_capacity": {None: 1.0, "ah": 1.0, "mah": 1e-3},
    "discharge_capacity": {None: 1.0, "ah": 1.0, "mah": 1e-3},
    "internal_resistance": {None: 1.0, "ohm": 1.0, "mohm": 1e-3, "\u03c9": 1.0, "m\u03c9": 1e-3},
    "temperature": {None: 1.0, "c": 1.0, "degc": 1.0, "deg_c": 1.0, "\u00b0c": 1.0, "\u2103": 1.0},
}

# Arbin's own spellings (case as Arbin writes them), used by the sniffers: a lower-case
# `test_time,current,...` table (e.g. a BEEP structured frame) is *not* an Arbin export.
ARBIN_REQUIRED_SPELLINGS = {"Test_Time", "Current", "Voltage", "Charge_Capacity", "Discharge_Capacity"}
ARBIN_INDEX_SPELLINGS = {"Data_Point", "Cycle_Index", "Step_Index"}


@lru_cache(maxsize=4096)  # a few dozen names per file, asked for by usecols and map_columns
def split_header(name: object) -> tuple[str, str | None]:
    """`"Charge Capacity (Ah)"` -> (`"Charge_Capacity"`, `"ah"`): base keeps Arbin's case."""
    text = str(name).strip()
    units = _UNIT_IN_NAME.findall(text)
    unit = units[0].strip().lower().replace(" ", "") if units else None
    base = re.sub(r"[\s_]+", "_", _UNIT_IN_NAME.sub(" ", text)).strip("_")
    return base, unit or None


@lru_cache(maxsize=4096)
def role_of(name: object) -> str | None:
    key = split_header(name)[0].lower()
    if key in _ROLES:
        return _ROLES[key]
    if _TEMPERATURE.match(key):
        return "temperature"
    return None


def looks_like_arbin_header(names) -> bool:
    """True if a header line holds Arbin's data columns in Arbin's spelling."""
    bases = {split_header(n)[0] for n in names}
    return ARBIN_REQUIRED_SPELLINGS <= bases and bool(ARBIN_INDEX_SPELLINGS & bases)


def map_columns(path: Path, names: list, where: str = "") -> dict[str, tuple[object, float]]:
    """role -> (column name, factor to SI); SourceFormatError if a required column is missing."""
    mapping: dict[str, tuple[object, float]] = {}
    for name in names:
        role = role_of(name)
        if role is None or role in mapping:  # first column of a role wins (e.g. Aux temps)
            continue
        unit = split_header(name)[1]
        factors = _UNITS.get(role)
        if factors is not None:
            if unit not in factors:
                known = ", ".join(sorted(u for u in factors if u))
                raise SourceFormatError(
                    path, f"{where}column {name!r}: unit {unit!r} not understood (expected {known})"
                )
            mapping[role] = (name, factors[unit])
        else:
            mapping[role] = (name, 1.0)
    missing = [r for r in REQUIRED_ROLES if r not in mapping]
    if missing:
        spelled = {
            "test_time": "Test_Time",
            "current": "Current",
            "voltage": "Voltage",
            "charge_capacity": "Charge_Capacity",
            "discharge_capacity": "Discharge_Capacity",
        }
        shown = ", ".join(str(n) for n in names[:20])
        raise SourceFormatError(
            path,
            f"{where}missing required Arbin column(s) {[spelled[m] for m in missing]} "
            f"(columns found: {shown})",
        )
    return mapping


# ------------------------------------------------------------------------------------------
# Values
# ------------------------------------------------------------------------------------------


def as_float(values) -> np.ndarray:
    """float64 array; anything non-numeric becomes NaN (judged later by validation)."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiu":
        return values.astype("float64", copy=False)
    return text_to_float(values).to_numpy(dtype="float64", na_value=np.nan)


def datetime_seconds(values) -> np.ndarray:
    """Absolute time in seconds (only differences matter) from datetimes, epoch or Excel serials."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "M":
        ns = values.astype("datetime64[ns]").astype("int64").astype("float64")
        ns[np.isnat(values)] = np.nan
        return ns / 1e9
    dates = _dates_in_one_arbin_format(np.asarray(values))
    if dates is not None:  # (then no row is a number: the number test below costs more than this)
        return datetime_seconds(dates)
    series = pd.Series(values)
    numbers = text_to_float(series).to_numpy(dtype="float64", na_value=np.nan)
    finite = numbers[np.isfinite(numbers)]
    if len(finite) and np.isfinite(numbers).mean() > 0.5:
        if np.nanmedian(finite) < 1e6:  # Excel serial day number (days since 1899-12-30)
            return (numbers - 25569.0) * 86400.0
        return numbers  # Unix epoch seconds (Arbin/BEEP CSV `DateTime`)
    return datetime_seconds(_parse_dates(series))


# Arbin's date spellings (MITS Pro CSV: `09/20/2024 08:32:34.558`), month first as dateutil reads them
_ARBIN_DATE_FORMATS = (
    "%m/%d/%Y %H:%M:%S.%f", "%m/%d/%Y %H:%M:%S", "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S",
)


def _first_text(values) -> str | None:
    values = np.asarray(values)
    if values.dtype != object:
        return None
    return next((v for v in values if isinstance(v, str)), None)


def _arbin_date_format(text: str) -> str | None:
    """Which of Arbin's formats `text` is written in (a strptime check, ~20 us; pandas' guess
    costs ~300 us, as much as reading a small file); a blank in a format matches any blanks."""
    stripped = text.strip()
    for fmt in _ARBIN_DATE_FORMATS:
        try:
            datetime.strptime(stripped, fmt)
        except ValueError:
            continue
        before = " " if text[:1].isspace() else ""
        after = " " if text[-1:].isspace() else ""
        return before + fmt + after
    return None


# Below this many rows Python's strptime per row beats pandas' fixed cost (65 vs 200 us for 13).
_FEW_DATES = 64


def _in_format(values, fmt: str | None) -> np.ndarray | None:
    """Every row parsed with `fmt` (datetime64[ns]), or None if a row is written otherwise."""
    if fmt is None:
        return None
    values = np.asarray(values)
    if len(values) <= _FEW_DATES and all(isinstance(v, str) for v in values):
        try:  # (blanks around the text are what a blank at either end of fmt stands for)
            stamps = [datetime.strptime(v.strip(), fmt.strip()) for v in values]
        except ValueError:
            return None
        return np.array([np.datetime64(t, "ns") for t in stamps], dtype="datetime64[ns]")
    try:
        return pd.to_datetime(values, errors="raise", format=fmt).to_numpy(dtype="datetime64[ns]")
    except (ValueError, TypeError):
        return None


def _dates_in_one_arbin_format(values: np.ndarray) -> np.ndarray | None:
    first = _first_text(values)
    return _in_format(values, _arbin_date_format(first)) if first is not None else None


def _parse_dates(series: pd.Series) -> np.ndarray:
    """Date text as datetimes; NaT where unparseable.

    One format, found from the first text and applied to all rows, costs a fraction of per-row
    parsing (`format="mixed"`: dateutil on every row, 1 ms for 13 rows); per-row parsing
    remains the fallback for a column that does not keep to one format.
    """
    first = _first_text(series)
    if first is not None:
        dates = _in_format(series, _arbin_date_format(first) or guess_datetime_format(first))
        if dates is not None:
            return dates
    return pd.to_datetime(series, errors="coerce", format="mixed").to_numpy(dtype="datetime64[ns]")


def _index_column(values: np.ndarray | None) -> np.ndarray | None:
    """Integer Cycle_/Step_Index, or None when the column is absent or empty.

    Sparse gaps are carried forward (then backward): an index is a label of the row's program
    position, not a measurement, and a row cannot be stored without one.
    """
    if values is None:
        return None
    numbers = as_float(values)
    known = ~np.isnan(numbers)
    if not np.isfinite(numbers).any():
        return None
    # last known value at or before each row; rows before the first known one take that one
    last_known = np.maximum.accumulate(np.where(known, np.arange(len(numbers)), -1))
    filled = numbers[np.where(last_known >= 0, last_known, np.argmax(known))]
    return np.rint(filled).astype("int64")


@dataclass
class ArbinFile:
    """One file's Arbin columns, as SI float arrays keyed by role (see `REQUIRED_ROLES`)."""

    path: Path
    columns: dict[str, np.ndarray]
    n_rows: int
    info: dict[str, str] = field(default_factory=dict)  # e.g. Start_DateTime, Schedule_File_Name

    def column(self, role: str) -> np.ndarray | None:
        return self.columns.get(role)

    @property
    def anchor_s(self) -> float | None:
        """Absolute time of Test_Time = 0: `DateTime - Test_Time` at the first row having both."""
        dates = self.columns.get("date_time")
        if dates is None:
            return None
        diff = dates - self.columns["test_time"]
        finite = np.flatnonzero(np.isfinite(diff))
        return float(diff[finite[0]]) if len(finite) else None


def arbin_file_from_columns(path: Path, raw: dict[object, object], mapping) -> ArbinFile:
    """Build an `ArbinFile` from raw columns (name -> values) and `map_columns` output."""
    columns: dict[str, np.ndarray] = {}
    n = None
    for role, (name, factor) in mapping.items():
        values = raw[name]
        if role == "date_time":
            array = datetime_seconds(values)
        else:
            array = as_float(values)
            if factor != 1.0:
                array = array * factor
        columns[role] = array
        n = len(array) if n is None else n
    n = n or 0
    if n == 0:
        raise SourceFormatError(path, "no data rows after the header")
    if not np.isfinite(columns["test_time"]).any():
        raise SourceFormatError(path, f"column {mapping['test_time'][0]!r} holds no numbers")
    return ArbinFile(path=path, columns=columns, n_rows=n)


# ------------------------------------------------------------------------------------------
# Canonical frame from one cell's Arbin files
# ------------------------------------------------------------------------------------------

# Two files whose tests started within this many seconds are exports of the same Arbin test.
SAME_TEST_TOLERANCE_S = 2.0
# A step segment is typed by its median current unless it holds samples beyond this of the
# other kind (10x the rest threshold: far above Arbin's few-mA IR pulses).
MIXED_STEP_CURRENT_A = 10 * REST_CURRENT_THRESHOLD_A
# step type text by base's codes (CHARGE, DISCHARGE, REST)
STEP_TYPE_NAMES = np.array(["charge", "discharge", "rest"], dtype=object)


def _new_resistance_value(ir: np.ndarray) -> np.ndarray:
    """True on rows where Arbin's held internal resistance takes a new, non-zero value."""
    changed = np.empty(len(ir), dtype=bool)
    if len(ir):
        changed[0] = True
        changed[1:] = ir[1:] != ir[:-1]
    return changed & np.isfinite(ir) & (ir != 0.0)


def _run_medians(values: np.ndarray, run: np.ndarray) -> np.ndarray:
    """Median of `values` per run (`run`: 0, 0, 1, 1, 1, 2, ... consecutive labels), NaN
    skipped, NaN for a run without numbers: pandas' groupby-median without its fixed cost."""
    n_runs = int(run[-1]) + 1
    order = np.lexsort((values, run))  # by run, then value; NaN sorts last within its run
    ordered = values[order]
    counted = np.bincount(run, weights=~np.isnan(values), minlength=n_runs).astype("int64")
    start = np.concatenate([[0], np.cumsum(np.bincount(run, minlength=n_runs))[:-1]])
    low = start + np.maximum(counted - 1, 0) // 2
    high = start + counted // 2
    with np.errstate(invalid="ignore"):
        medians = 0.5 * (ordered[low] + ordered[high])
    return np.where(counted > 0, medians, np.nan)


def step_type_codes(
    current: np.ndarray,
    step: np.ndarray | None,
    cycle: np.ndarray | None,
    resistance: np.ndarray | None = None,
    threshold_a: float | None = None,
) -> np.ndarray:
    """base.CHARGE / DISCHARGE / REST (int8) per sample, by the step rules of the module docstring."""
    # scaled to the file's currents (a half cell at 0.3 mA is not all rest); 1 mA for >= 0.1 A
    threshold_a = rest_threshold_a(current) if threshold_a is None else threshold_a
    mixed_step_a = MIXED_STEP_CURRENT_A * threshold_a / REST_CURRENT_THRESHOLD_A
    per_sample = step_codes_from_current(current, threshold_a)
    if step is None or len(current) == 0:
        return per_sample
    boundary = np.empty(len(step), dtype=bool)
    boundary[0] = True
    boundary[1:] = step[1:] != step[:-1]
    if cycle is not None:
        boundary[1:] |= cycle[1:] != cycle[:-1]
    segment = np.cumsum(boundary) - 1
    median = np.nan_to_num(_run_medians(np.asarray(current, dtype="float64"), segment))
    segment_kind = step_codes_from_current(median, threshold_a)
    if resistance is not None:
        # Arbin's IR-measurement steps log the few-mA measurement pulse (CALCE: up to 3.5 mA,
        # two samples): a step in which a new IR value appears and whose median current is
        # below 10 mA is a rest with a measurement, not a tiny charge or discharge.
        measures = np.bincount(segment, weights=_new_resistance_value(resistance)) > 0
        segment_kind = np.where(measures & (np.abs(median) < mixed_step_a), REST, segment_kind).astype("int8")
    segment_type = segment_kind[segment]
    disagree = (np.abs(np.nan_to_num(current)) > mixed_step_a) & (per_sample != segment_type)
    mixed = np.bincount(segment, weights=disagree.astype("float64")) > 0
    return np.where(mixed[segment], per_sample, segment_type)


def cycles_from_charge_starts(step_type: np.ndarray) -> np.ndarray:
    """Cycle k starts at the k-th charge that is the first one or follows a discharge."""
    if len(step_type) == 0:
        return np.zeros(0, dtype="int64")
    if not isinstance(step_type, pd.Categorical):  # (a Categorical compares by codes: fast)
        step_type = np.asarray(step_type, dtype=object)
    charge = np.asarray(step_type == "charge")
    directed = charge | np.asarray(step_type == "discharge")
    # index of the last charge/discharge sample before each sample (-1: none yet); rests skipped
    last_directed = np.maximum.accumulate(np.where(directed, np.arange(len(step_type)), -1))
    before = np.concatenate([[-1], last_directed[:-1]])
    follows_charge = (before >= 0) & charge[np.maximum(before, 0)]
    return np.cumsum(charge & ~follows_charge).astype("int64")


def capacity_since_cycle_start(counter: np.ndarray, cycle: np.ndarray) -> np.ndarray:
    """Arbin capacity counter re-based to each cycle's start (see module docstring)."""
    n = len(counter)
    if n == 0:
        return counter
    known = ~np.isnan(counter)
    last_known = np.maximum.accumulate(np.where(known, np.arange(n), -1))
    filled = np.where(last_known >= 0, counter[np.maximum(last_known, 0)], 0.0)  # ffill, then 0
    starts = np.flatnonzero(np.concatenate([[True], cycle[1:] != cycle[:-1]]))
    previous_end = np.concatenate([[np.nan], filled[starts[1:] - 1]])
    first = filled[starts]
    with np.errstate(invalid="ignore"):
        baseline = np.where(first >= previous_end, previous_end, 0.0)
    return counter - np.repeat(baseline, np.diff(np.concatenate([starts, [n]])))


def measured_resistance(ir: np.ndarray) -> np.ndarray:
    """Keep IR only where a new (non-zero) value first appears: Arbin holds the last value."""
    return np.where(_new_resistance_value(ir), ir, np.nan)


@dataclass
class Assembled:
    samples: pd.DataFrame
    notes: list[str]


def assemble_cell(files: list[ArbinFile], cell_id: str) -> Assembled:
    """Stitch the files of one cell's test into the canonical frame (module docstring rules)."""
    notes: list[str] = []
    anchors = [f.anchor_s for f in files]
    absolute = all(a is not None for a in anchors)
    order = list(range(len(files)))
    if absolute:
        order.sort(key=lambda i: anchors[i])  # stable: copies keep the given order
        t0 = anchors[order[0]]
    else:
        notes.append("no DateTime in every file: files chained in name order by Test_Time")

    pieces: list[dict[str, np.ndarray]] = []
    file_names: dict[str, int] = {}  # source_file category code per file name
    tests: list[tuple[float, int, ArbinFile]] = []  # (anchor, cycle offset, first file)
    max_cycle: int | None = None
    chained_end = 0.0
    for i in order:
        f = files[i]
        test_time = f.columns["test_time"]
        if absolute:
            time_s = (anchors[i] - t0) + test_time
        else:
            time_s = chained_end + test_time
        finite_t = time_s[np.isfinite(time_s)]
        if len(finite_t):
            chained_end = max(chained_end, float(finite_t.max()))

        current = f.columns["current"]
        raw_step = _index_column(f.column("step_index"))
        raw_cycle = _index_column(f.column("cycle_index"))
        ir = f.column("internal_resistance")
        kinds = step_type_codes(current, raw_step, raw_cycle, ir)
        if raw_cycle is None:
            raw_cycle = cycles_from_charge_starts(STEP_TYPE_NAMES[kinds])
            notes.append(f"{f.path.name}: Cycle_Index empty, cycles derived from charge starts")
        if raw_step is None:
            step = step_index_from_changes(kinds)
            notes.append(f"{f.path.name}: Step_Index empty, steps derived from step-type changes")
        else:
            step = raw_step

        same = None
        if absolute:
            same = next(
                (t for t in tests if abs(t[0] - anchors[i]) <= SAME_TEST_TOLERANCE_S), None
            )
        if same is not None:
            offset = same[1]
            original = same[2]
            identical = (
                original.n_rows == f.n_rows
                and np.array_equal(original.columns["test_time"], test_time, equal_nan=True)
                and np.array_equal(original.columns["voltage"], f.columns["voltage"], equal_nan=True)
                and np.array_equal(original.columns["current"], current, equal_nan=True)
            )
            what = "an identical copy" if identical else "another export"
            notes.append(
                f"{f.path.name} is {what} of the Arbin test in {original.path.name} (same start): "
                "its rows keep that test's cycle numbers and times, so they repeat samples "
                "instead of adding cycles"
            )
        else:
            offset = 0 if max_cycle is None else max_cycle + 1 - int(raw_cycle.min())
            if absolute:
                tests.append((anchors[i], offset, f))
        cycle = raw_cycle + offset
        max_cycle = int(cycle.max()) if max_cycle is None else max(max_cycle, int(cycle.max()))

        charge = capacity_since_cycle_start(f.columns["charge_capacity"], raw_cycle)
        discharge = capacity_since_cycle_start(f.columns["discharge_capacity"], raw_cycle)
        capacity = np.where(kinds == CHARGE, charge, np.where(kinds == DISCHARGE, discharge, np.nan))

        temperature = f.column("temperature")
        missing = np.full(f.n_rows, np.nan)
        pieces.append(
            {
                "cycle_number": cycle,
                "step_index": step,
                "step_type": kinds,
                "time_s": time_s,
                "voltage_v": f.columns["voltage"],
                "current_a": current,
                "temperature_c": temperature if temperature is not None else missing,
                "capacity_ah": capacity,
                "internal_resistance_ohm": measured_resistance(ir) if ir is not None else missing,
                "source_file": np.full(f.n_rows, file_names.setdefault(f.path.name, len(file_names)),
                                       dtype="int32"),
                "source_row": np.arange(f.n_rows, dtype="int64"),
            }
        )
    if not pieces:
        return Assembled(empty_samples(), notes)
    # arrays joined once and handed to finalize_samples as a dict: on a small file the frame
    # building and concatenating of pandas costs more than the reading
    columns = (pieces[0] if len(pieces) == 1
               else {key: np.concatenate([p[key] for p in pieces]) for key in pieces[0]})
    columns["step_type"] = step_type_category(columns["step_type"])
    columns["source_file"] = pd.Categorical.from_codes(columns["source_file"], categories=list(file_names))
    return Assembled(finalize_samples(columns, cell_id), notes)


def with_notes(defaults: CellDefaults, notes: list[str]) -> CellDefaults:
    if not notes:
        return defaults
    text = "; ".join(notes)
    defaults.description = f"{defaults.description}. {text}" if defaults.description else text
    return defaults


# ------------------------------------------------------------------------------------------
# The CSV reader
# ------------------------------------------------------------------------------------------

METADATA_SUFFIX = "_metadata.csv"

SEVERSON_CITATION = (
    "Severson K.A., Attia P.M., Jin N., Perkins N., Jiang B., Yang Z., Chen M.H., Aykol M., "
    "Herring P.K., Fraggedakis D., Bazant M.Z., Harris S.J., Chueh W.C., Braatz R.D., "
    "'Data-driven prediction of battery cycle life before capacity degradation', "
    "Nature Energy 4, 383-391 (2019), doi:10.1038/s41560-019-0356-8; file from Toyota Research "
    "Institute's BEEP test fixtures (Herring P. et al., SoftwareX 11 (2020) 100506)"
)
# Severson et al. fast-charge policies are named like `4_4C-80PER_4_4C` (C-rate, then % SOC).
_SEVERSON_SCHEDULE = re.compile(r"\d+(_\d+)?C-\d+PER", re.IGNORECASE)


def _split_line(line: str) -> list[str]:
    delimiter = max((",", "\t", ";"), key=line.count)
    return [cell.strip().strip('"') for cell in line.split(delimiter)]


def metadata_path(path: Path) -> Path:
    return path.with_name(path.stem + "_Metadata" + path.suffix)


def read_metadata(path: Path) -> dict[str, str]:
    """The companion `<stem>_Metadata.csv` as {lower-case key: value}; {} if absent/unreadable."""
    meta = metadata_path(path)
    if not meta.is_file():
        return {}
    try:
        table = pd.read_csv(meta, dtype=str, nrows=1)
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    if table.empty:
        return {}
    row = table.iloc[0]
    return {str(k).strip().lower(): str(v) for k, v in row.items() if isinstance(v, str)}


def _clean_table(raw: bytes) -> tuple[dict[str, np.ndarray], list[str]] | None:
    """The columns with a role, by pyarrow's parser (exact rounding, any exponent, a third of
    pandas' fixed cost on a small file), or None where the table is not clean (ragged rows, a
    label twice, bytes that are not UTF-8, a missing role): the pandas path then reads it and
    says what is wrong."""
    lines = raw[: 64 * 1024].decode("utf-8-sig", errors="replace").splitlines()  # \n, \r\n or \r
    try:
        names = next(csv.reader(lines[:1]), [])
    except csv.Error:
        return None
    wanted = [n for n in names if role_of(n) is not None]
    if not wanted or len(set(names)) < len(names):
        return None
    # dates stay text: pyarrow would turn ISO stamps into timestamps the date parser does not take
    text = {n: pa.string() for n in wanted if role_of(n) == "date_time"}
    try:
        table = pacsv.read_csv(
            pa.BufferReader(raw), convert_options=pacsv.ConvertOptions(include_columns=wanted, column_types=text)
        )
    except (pa.ArrowInvalid, pa.ArrowException):
        return None
    if any(pa.types.is_binary(t) or pa.types.is_null(t) for t in table.schema.types):
        return None
    columns = {}
    for name in wanted:
        values = table.column(name).to_numpy(zero_copy_only=False)
        if values.dtype == object:  # text as pandas reads it: NaN, not None, where empty
            values = np.where(pd.isna(values), np.nan, values).astype(object)
        columns[name] = values
    return columns, wanted


class ArbinCsvReader(CyclerReader):
    """Arbin CSV export; see the module docstring for every convention."""

    format_name = "arbin_csv"
    extensions = (".csv",)
    priority = 30  # Arbin's header is specific: ask before generic CSV readers

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        if cls.is_companion(path):
            return False
        text = head.decode("utf-8-sig", errors="replace")
        for line in text.splitlines():
            if line.strip():
                return looks_like_arbin_header(_split_line(line))
        return False

    @classmethod
    def is_companion(cls, path: Path) -> bool:
        return path.name.lower().endswith(METADATA_SUFFIX)

    @classmethod
    def describe(cls, paths: list[Path]) -> CellDefaults:
        path = Path(paths[0])
        meta = read_metadata(path)
        schedule = meta.get("schedule_file_name")
        parts = [f"Arbin CSV export {path.name}"]
        if schedule:
            parts.append(f"schedule {schedule}")
        if meta.get("iv_ch_id"):
            parts.append(f"Arbin IV_Ch_ID {meta['iv_ch_id']}")
        if meta.get("first_start_datetime"):
            try:
                start = pd.Timestamp(int(float(meta["first_start_datetime"])), unit="s")
                parts.append(f"started {start:%Y-%m-%d %H:%M:%S} UTC")
            except (ValueError, OverflowError):
                pass
        description = "; ".join(parts)
        if path.stem.startswith("FastCharge_") or (schedule and _SEVERSON_SCHEDULE.search(schedule)):
            evidence = (
                (f"name {path.stem}" if path.stem.startswith("FastCharge_") else f"schedule {schedule}")
                + " + Arbin CSV layout; capacities checked at labelling by initial_soh_in_band"
            )
            rule = "Severson et al. 2019: A123 APR18650M1A (LFP, 1.1 Ah, 2.0-3.6 V)"
            return CellDefaults(
                dataset="Severson et al. 2019 fast-charging (A123 APR18650M1A)",
                chemistry="LFP",
                nominal_capacity_ah=1.1,
                voltage_min_v=2.0,
                voltage_max_v=3.6,
                licence="Apache-2.0",
                citation=SEVERSON_CITATION,
                description="A123 APR18650M1A LFP/graphite 18650, 1.1 Ah, 2.0-3.6 V; " + description,
                origin={field: from_dataset_rule(rule, evidence)
                        for field in ("chemistry", "nominal_capacity_ah", "voltage_window")},
            )
        # Unknown Arbin cell: limits come from a sidecar or the chemistry table.
        return CellDefaults(description=description)

    @classmethod
    def read_file(cls, path: Path) -> ArbinFile:
        path = Path(path)
        try:
            untouched = path.read_bytes()
            fast = _clean_table(untouched)
            if fast is not None:
                columns, names = fast
                try:
                    mapping = map_columns(path, names)
                except SourceFormatError:
                    mapping = None  # the pandas path below names every column in the error
                if mapping is not None:
                    return arbin_file_from_columns(path, columns, mapping)
            raw = tame_overflowing_exponents(untouched)
            # one pass over the file, only the columns with a role (a header-only read first
            # cost as much as reading a small file); every column is named only in an error
            table = pd.read_csv(io.BytesIO(raw), usecols=lambda name: role_of(name) is not None,
                                encoding="utf-8-sig", low_memory=False)
            try:
                mapping = map_columns(path, list(table.columns))
            except SourceFormatError:
                header = pd.read_csv(io.BytesIO(raw), nrows=0, encoding="utf-8-sig")
                map_columns(path, list(header.columns))
                raise
        except SourceFormatError:
            raise
        except FileNotFoundError as exc:
            raise SourceFormatError(path, "file not found") from exc
        except (OSError, UnicodeDecodeError, ValueError) as exc:  # pandas ParserError is a ValueError
            raise SourceFormatError(path, f"cannot parse as CSV ({exc})") from exc
        return arbin_file_from_columns(path, {c: table[c].to_numpy() for c in table.columns}, mapping)

    @classmethod
    def read(cls, paths: list[Path], cell_id: str) -> ReadResult:
        files = [cls.read_file(Path(p)) for p in paths]
        assembled = assemble_cell(files, cell_id)
        return ReadResult(
            samples=assembled.samples,
            cell=with_notes(cls.describe([Path(p) for p in paths]), assembled.notes),
        )
