"""Neware BTSDA CSV exports (the record table BTSDA writes with "Export to CSV").

Source layout: one header line, then one row per logged point::

    DataPoint,Cycle Index,Step Index,Step Type,Time,Cumulative Time,Current(A),Voltage(V),
    Capacity(Ah),Spec. Cap.(mAh/g),Chg. Cap.(Ah),...,DChg. Cap.(Ah),...,Date,...

Detected by that header: a record-number column (`DataPoint`, `Record ID`, `Record Index`),
`Step Type` (or `Status`), a `Current(...)` and a `Voltage(...)` column and a Neware capacity
column (`Capacity(...)`, `Chg. Cap.(...)`, `DChg. Cap.(...)`). Arbin headers have no step type
column and use `Charge_Capacity`; Digatron needs `Prog Time`; canonical CSVs use snake_case
(`step_type`, `current_a`): none of them matches, and this sniffer claims none of theirs.

Conventions:

- units: a unit in parentheses is required to be one of A/mA/uA, V/mV, Ah/mAh; anything else is
  a SourceFormatError naming the column, not a silent factor of 1000.
- current: BTSDA exports charge positive, discharge negative (neware_uio.csv: every `CC Chg`
  row has I > 0, every `CC DChg` row I < 0); taken as is.
- time_s: `Cumulative Time` (the test clock, `H:MM:SS[.fff]` with hours beyond 24, or seconds).
  Without it, the step clock `Time` restarts at every step, so test time is the step time plus
  the durations (last step time) of all earlier steps.
- cycle_number: a new cycle at every charge step following a discharge step (fastnda's and
  NewareNDA's default "charge first" rule, as `neware_nda`), not the exported `Cycle Index`:
  that is Neware's program-loop counter and in neware_uio.csv index 3 holds two
  discharge/charge pairs. step_index: `Step Index`; without it, derived as in `base`.
- step_type: from `Step Type` as in `neware_nda.step_kinds_from_neware_types`.
- capacity_ah: Neware's counters (`Chg. Cap.`, `DChg. Cap.`, else `Capacity`) reset at every
  step; accumulated per cycle and direction as in `neware_nda.cycle_capacity_from_step_counters`.
- temperature_c: a `T1`/`Temperature` column if exported, else null; internal_resistance_ohm:
  null (`Contact resistance` is the fixture's contact check, not the cell's resistance).
- source_row: 0-based data row; source_file: the file's name.
- metadata: nothing about the cell is in the export; no chemistry or capacity is invented.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pandas as pd

from battery_pipeline.science.readers.base import (
    CellDefaults,
    CyclerReader,
    ReadResult,
    SourceFormatError,
    chain_pieces,
    finalize_samples,
    step_index_from_changes,
    tame_overflowing_exponents,
)
from battery_pipeline.science.readers.neware_nda import (
    charge_first_cycles,
    cycle_capacity_from_step_counters,
    neware_typed_rows,
    step_kinds_from_neware_types,
)
from battery_pipeline.science.schema import empty_samples

_UNIT_IN_NAME = re.compile(r"\(([^)]*)\)")

# normalized name (lower case, unit removed, single spaces) -> role
_ROLES = {
    "datapoint": "record",
    "data point": "record",
    "record id": "record",
    "record index": "record",
    "cycle index": "cycle",
    "cycle id": "cycle",
    "step index": "step",
    "step id": "step",
    "step type": "step_type",
    "status": "step_type",
    "time": "step_time",
    "step time": "step_time",
    "relative time": "step_time",
    "cumulative time": "test_time",
    "total time": "test_time",
    "test time": "test_time",
    "current": "current",
    "cur": "current",
    "voltage": "voltage",
    "capacity": "capacity",
    "chg. cap.": "charge_capacity",
    "dchg. cap.": "discharge_capacity",
    "t1": "temperature",
    "temperature": "temperature",
    "aux temperature": "temperature",
}
_FACTORS = {
    "current": {"a": 1.0, "ma": 1e-3, "ua": 1e-6, "\u00b5a": 1e-6},
    "voltage": {"v": 1.0, "mv": 1e-3},
    "capacity": {"ah": 1.0, "mah": 1e-3},
    "charge_capacity": {"ah": 1.0, "mah": 1e-3},
    "discharge_capacity": {"ah": 1.0, "mah": 1e-3},
    "temperature": {None: 1.0, "c": 1.0, "\u2103": 1.0, "\u00b0c": 1.0},
}
_CAPACITY_ROLES = ("capacity", "charge_capacity", "discharge_capacity")
_TEXT_ROLES = ("step_type", "test_time", "step_time")
REQUIRED_ROLES = ("step_type", "current", "voltage")


def split_name(name: object) -> tuple[str, str | None]:
    """`"Chg. Cap.(Ah)"` -> (`"chg. cap."`, `"ah"`)."""
    text = str(name).replace("\ufeff", "").strip()
    units = _UNIT_IN_NAME.findall(text)
    base = re.sub(r"\s+", " ", _UNIT_IN_NAME.sub("", text)).strip().lower()
    unit = units[0].strip().lower().replace(" ", "") if units else None
    return base, unit or None


def roles_of(names: list[str]) -> dict[str, str]:
    """role -> first column name having it."""
    found: dict[str, str] = {}
    for name in names:
        role = _ROLES.get(split_name(name)[0])
        if role and role not in found:
            found[role] = name
    return found


def _header_names(line: str) -> list[str]:
    delimiter = max((",", "\t", ";"), key=line.count)
    return [cell.strip().strip('"') for cell in line.split(delimiter)]


def looks_like_neware_header(names: list[str]) -> bool:
    roles = roles_of(names)
    has_units = all(split_name(roles[r])[1] for r in ("current", "voltage") if r in roles)
    return (
        "record" in roles
        and all(r in roles for r in REQUIRED_ROLES)
        and any(r in roles for r in _CAPACITY_ROLES)
        and ("test_time" in roles or "step_time" in roles)
        and has_units  # Neware always writes `Current(A)`/`Voltage(V)`
    )


_PLAIN_CLOCK = r"\d+:\d{1,2}:\d{1,2}(?:\.\d+)?"


def clock_seconds(values: pd.Series) -> np.ndarray:
    """Seconds from Neware clock text (`H:MM:SS[.fff]`, hours may exceed 24) or plain numbers.

    Text that is neither becomes NaN (kept, judged later by validation).
    """
    text = values.astype(str).str.strip()
    if len(text) and text.str.fullmatch(_PLAIN_CLOCK).all():
        # the usual column, every row `H:MM:SS[.fff]`: pandas' timedelta parser reads it at a
        # fifth of the cost of the regex split below (same sum; exact ns, then seconds)
        clock = pd.to_timedelta(text, errors="coerce")
        if not clock.isna().any():
            return clock.to_numpy(dtype="timedelta64[ns]").astype("int64") / 1e9
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    parts = text.str.extract(r"^(?:(\d+)-)?(\d+):(\d{1,2}):(\d{1,2}(?:\.\d*)?)$")
    as_clock = (
        pd.to_numeric(parts[0], errors="coerce").fillna(0).to_numpy() * 86400.0
        + pd.to_numeric(parts[1], errors="coerce").to_numpy(dtype="float64", na_value=np.nan) * 3600.0
        + pd.to_numeric(parts[2], errors="coerce").to_numpy(dtype="float64", na_value=np.nan) * 60.0
        + pd.to_numeric(parts[3], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    )
    return np.where(np.isfinite(numbers), numbers, as_clock)


def test_time_from_step_time(step_time_s: np.ndarray, step_id: np.ndarray) -> np.ndarray:
    """Test clock from a step clock that restarts at every step: add earlier steps' durations."""
    n = len(step_time_s)
    if n == 0:
        return step_time_s
    boundary = np.empty(n, dtype=bool)
    boundary[0] = True
    boundary[1:] = (step_id[1:] != step_id[:-1]) | (step_time_s[1:] < step_time_s[:-1])
    starts = np.flatnonzero(boundary)
    ends = np.r_[starts[1:], n] - 1
    durations = np.nan_to_num(step_time_s[ends])
    before = np.cumsum(durations) - durations
    return before[np.cumsum(boundary) - 1] + step_time_s


class NewareCsvReader(CyclerReader):
    """Neware BTSDA CSV export; see the module docstring for every convention."""

    format_name = "neware_csv"
    extensions = (".csv",)
    priority = 30  # a specific header, like arbin_csv: before the generic canonical CSV (90)

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        if b"\x00" in head[:4096]:
            return False
        text = head.decode("utf-8-sig", errors="replace")
        for line in text.splitlines():
            if line.strip():
                return looks_like_neware_header(_header_names(line))
        return False

    @classmethod
    def describe(cls, paths: list[Path]) -> CellDefaults:
        return CellDefaults(description=f"Neware BTSDA CSV export {Path(paths[0]).name}")

    @classmethod
    def read_file(cls, path: Path) -> pd.DataFrame:
        path = Path(path)
        try:
            raw = tame_overflowing_exponents(path.read_bytes())
            # the header from its own line: pandas tokenizes a large chunk even for nrows=0
            # (4 ms of a 9,000-row file); the whole file where the header may not be that
            # line (blank first line, skipped by pandas) or may span lines (a quote)
            first_line = raw[: raw.find(b"\n") + 1]
            own_line = first_line.strip(b"\xef\xbb\xbf \t\r\n") and b'"' not in first_line
            header = pd.read_csv(io.BytesIO(first_line if own_line else raw), nrows=0,
                                 encoding="utf-8-sig", dtype=str)
        except FileNotFoundError as exc:
            raise SourceFormatError(path, "file not found") from exc
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise SourceFormatError(path, f"cannot parse as CSV ({exc})") from exc
        names = list(header.columns)
        roles = roles_of(names)
        missing = [r for r in REQUIRED_ROLES if r not in roles]
        if not any(r in roles for r in _CAPACITY_ROLES):
            missing.append("capacity")
        if "test_time" not in roles and "step_time" not in roles:
            missing.append("time")
        if missing:
            spelled = {"step_type": "Step Type", "current": "Current(A)", "voltage": "Voltage(V)",
                       "capacity": "Capacity(Ah) / Chg. Cap.(Ah) / DChg. Cap.(Ah)", "time": "Cumulative Time / Time"}
            raise SourceFormatError(
                path,
                f"missing required Neware column(s) {[spelled[m] for m in missing]} "
                f"(columns found: {', '.join(names[:30])})",
            )
        factors: dict[str, float] = {}
        for role, factor_by_unit in _FACTORS.items():
            if role not in roles:
                continue
            unit = split_name(roles[role])[1]
            if unit not in factor_by_unit:
                known = ", ".join(sorted(u for u in factor_by_unit if u))
                raise SourceFormatError(path, f"column {roles[role]!r}: unit {unit!r} not understood (expected {known})")
            factors[role] = factor_by_unit[unit]
        try:
            # only the columns the samples are built from (the record number and Neware's
            # `Cycle Index` only identify the format; the step clock only stands in for a
            # missing test clock); numbers parsed by the CSV parser itself, text kept as text
            used = {r: n for r, n in roles.items()
                    if r not in ("record", "cycle") and not (r == "step_time" and "test_time" in roles)}
            text = {used[r]: str for r in _TEXT_ROLES if r in used}
            table = pd.read_csv(io.BytesIO(raw), usecols=list(used.values()), encoding="utf-8-sig", dtype=text,
                                keep_default_na=False)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise SourceFormatError(path, f"cannot parse as CSV ({exc})") from exc
        if table.empty:
            raise SourceFormatError(path, "no data rows after the header")
        return cls.samples_from_table(path, table, roles, factors)

    @classmethod
    def samples_from_table(cls, path: Path, table: pd.DataFrame, roles: dict[str, str], factors: dict[str, float]) -> pd.DataFrame:
        def numbers(role: str) -> np.ndarray:
            column = table[roles[role]]
            if column.dtype.kind == "b":  # True/False read as booleans: text, not numbers
                column = column.astype(str)
            if column.dtype.kind not in "fiu":  # text somewhere in the column: NaN there
                column = pd.to_numeric(column, errors="coerce")
            values = column.to_numpy(dtype="float64", na_value=np.nan)
            factor = factors.get(role, 1.0)
            return values * factor if factor != 1.0 else values

        current = numbers("current")
        type_names = table[roles["step_type"]].to_numpy(dtype=object)
        kinds = step_kinds_from_neware_types(type_names, current)
        step = None
        if "step" in roles:
            raw = pd.Series(numbers("step")).ffill().bfill()
            step = np.rint(raw.to_numpy()).astype("int64") if raw.notna().all() else None
        if step is None:
            step = step_index_from_changes(kinds)
        # `Cycle Index` is Neware's program-loop counter, not a charge/discharge cycle
        # (neware_uio.csv: index 3 holds two discharge/charge pairs, steps 2-8 and 11-13), so
        # cycles follow the charge-first rule the binary reader gets from fastnda.
        directed = neware_typed_rows(type_names)
        cycle = charge_first_cycles(kinds, directed)
        if "test_time" in roles:
            time_s = clock_seconds(table[roles["test_time"]])
        else:
            time_s = test_time_from_step_time(clock_seconds(table[roles["step_time"]]), step)
        # one counter per direction where exported, else the unsigned `Capacity`
        fallback = numbers("capacity") if "capacity" in roles else np.full(len(table), np.nan)
        charge = numbers("charge_capacity") if "charge_capacity" in roles else fallback
        discharge = numbers("discharge_capacity") if "discharge_capacity" in roles else fallback
        counter = np.where(kinds == "discharge", discharge, np.where(kinds == "charge", charge, fallback))
        # a step boundary is a change of Step Index or of its kind (Neware counters restart there)
        new_step = np.zeros(len(step), dtype=bool)
        new_step[1:] = (step[1:] != step[:-1]) | (kinds[1:] != kinds[:-1])
        step_id = np.cumsum(new_step)
        capacity = cycle_capacity_from_step_counters(counter, step_id, cycle, kinds, directed)
        return pd.DataFrame(
            {
                "cycle_number": cycle,
                "step_index": step,
                "step_type": kinds,
                "time_s": time_s,
                "voltage_v": numbers("voltage"),
                "current_a": current,
                "temperature_c": numbers("temperature") if "temperature" in roles else np.nan,
                "capacity_ah": capacity,
                "source_file": path.name,
                "source_row": np.arange(len(table), dtype="int64"),
            }
        )

    @classmethod
    def read(cls, paths: list[Path], cell_id: str) -> ReadResult:
        paths = [Path(p) for p in paths]
        pieces = [cls.read_file(p) for p in paths]
        samples, placement = chain_pieces(pieces)
        defaults = cls.describe(paths)
        if placement:
            defaults.description = f"{defaults.description}; {placement}"
        if samples is None:
            return ReadResult(samples=empty_samples(), cell=defaults)
        return ReadResult(samples=finalize_samples(samples, cell_id), cell=defaults)
