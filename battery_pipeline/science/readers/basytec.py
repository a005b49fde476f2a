"""Basytec BTS result file, text export (.txt), checked on the zoo's PyProBE sample.

Layout (sample_data_basytec.txt, and PyProBE's `pyprobe/cyclers/basytec.py`, which reads it):
`~`-prefixed header lines (`~Resultfile from Basytec Battery Test System`, `~Name of Test: ...`,
`~Battery: ...`, `~Testchannel: ...`, `~Start of Test: 19.06.2023 17:56:53`, lone `~`), then a
`~`-prefixed column row (`~Time[s]  DataSet  t-Step[s]  ...  Line  Command  U[V]  I[A]  Ah[Ah]
Ah-Cyc-Charge  Ah-Cyc-Discharge  Ah-Cyc-Charge-0  Ah-Cyc-Discharge-0  Ah-Step  ...  T1[°C]  ...
Cyc-Count  Count  State`), then one sample per line. Tab separated (comma or semicolon accepted
from the column row), decimal point (a decimal comma is detected on the first data row when the
separator is not a comma). Times are in the unit the column states: `[s]`, `[min]` or `[h]`
(Basytec's default export is hours, this sample is seconds). UTF-8 if it decodes, else latin-1
(Basytec on Windows writes the degree sign as 0xB0); in the sample the degree sign was already
replaced by U+FFFD upstream, so a non-ASCII character before `C` is read as degC.

Detection is by content: a first line `~Resultfile from Basytec...`, or a run of `~` lines ending
in a `~Time[...]` column row that also names `U[...]` and `I[...]`. No other reader's format has
`~`-prefixed lines (BDF, Arbin, Neware, Maccor, PEC, Novonix, BioLogic headers do not), and the
sniffer of every other file in the datasets folder is checked to be False by the test.

Conversion to the canonical frame (`science.schema`):
  - current_a: `I[A]` (`I[mA]` scaled), sign kept. Basytec logs charge positive: every `Charge`
    row of the sample has I > 0 and U rises 3.5258 -> 3.5329 V over it; in the DLR BDF file made
    from a Basytec export the current is negative while the voltage falls (3.7977 -> 3.786 V).
    A file without a current column is refused (nothing would say what the cell did).
  - voltage_v: `U[V]` (`U[mV]` scaled).
  - time_s: `~Time[unit]` (test time since the start of the test) in seconds; the wall-clock
    `Date`/`Time` columns, where exported, are not used. Several files of one cell are placed by
    their `~Start of Test` when every file states it, else chained end to end.
  - step_type: from `Command` (`Charge` -> charge, `Discharge` -> discharge, `Pause` -> rest, also
    German `Laden`/`Entladen`): the program, not a current threshold, says what a step is, so a
    small cell cycled below 1 mA is not booked as rest. Rows whose command names no direction
    (or files without `Command`) fall back to the sign of the current.
  - step_index: a new step wherever `Line` (program line), `Command` or the file changes, counted
    from 0; `Line` alone repeats in every loop of a program.
  - cycle_number: Basytec's `Cyc-Count` as exported (the program's cycle counter, which its
    `Ah-Cyc-*` counters follow), shifted so each further file continues the previous one;
    without it, cycles start at the first charge and each charge after a discharge.
  - capacity_ah: from the file's own counters. `Ah-Cyc-Charge-0` / `Ah-Cyc-Discharge-0` (else
    the same without `-0`) count per cycle and direction (the discharge one may be signed, so
    magnitudes are used); their per-row increments (the value itself where a counter restarts)
    are summed per canonical cycle and direction, so the result equals the counter whenever its
    restarts coincide with `Cyc-Count`. Without them, the per-step `Ah-Step` (signed, restarts
    each step) gives the increments; with neither, the current is integrated (base helper).
    Rest rows get null.
  - temperature_c: `T1[...]` in degC (or K converted), else null; internal_resistance_ohm: null
    (`R-AC`/`R-DC` carry no unit in the column row, so they are not taken as ohm).
  - source_row: 0-based data row after the column row; source_file: the file's name.
  - metadata: the header's test name, battery, test plan, channel and start go into the
    description. The sample states no chemistry or capacity, so none is set; a header line
    `~Nominal capacity: <number> [m]Ah` would be used with file provenance.
Rows are never dropped or repaired: an unparsable value becomes NaN and stays in its row.
"""

from __future__ import annotations

import io
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from battery_pipeline.science.readers.arbin_csv import cycles_from_charge_starts
from battery_pipeline.science.readers.base import (
    CellDefaults,
    CyclerReader,
    ReadResult,
    SourceFormatError,
    capacity_from_current,
    finalize_samples,
    from_file,
    place_files,
    rest_threshold_a,
    running_total,
    tame_overflowing_exponents,
    text_to_float,
)
from battery_pipeline.science.schema import empty_samples

_TITLE = "~resultfile from basytec"
_TIME_NAME = re.compile(r"^~?Time\[(?P<unit>[^\]]*)\]$")
_UNIT_NAME = re.compile(r"^(?P<base>[^\[]+)\[(?P<unit>[^\]]*)\]$")
_TIME_UNITS = {"s": 1.0, "min": 60.0, "h": 3600.0}
_CURRENT_UNITS = {"A": 1.0, "mA": 1e-3}
_VOLTAGE_UNITS = {"V": 1.0, "mV": 1e-3}
_CHARGE_UNITS = {"Ah": 1.0, "mAh": 1e-3}
_COUNTER_PAIRS = (("Ah-Cyc-Charge-0", "Ah-Cyc-Discharge-0"), ("Ah-Cyc-Charge", "Ah-Cyc-Discharge"))
# Checked in this order: "discharge" contains "charge", "entladen" contains "laden".
_COMMAND_KINDS = (("discharge", "discharge"), ("entlad", "discharge"), ("charge", "charge"),
                  ("lad", "charge"), ("pause", "rest"), ("rest", "rest"), ("wait", "rest"))
_HEADER_FIELD = re.compile(r"^~\s*([^:]+?)\s*:\s*(.*?)\s*$")
_DESCRIBED_FIELDS = ("Name of Test", "Battery", "Testplan", "Testchannel", "Start of Test")
_NOMINAL = re.compile(r"^(-?\d+(?:[.,]\d+)?)\s*(m?Ah)$")


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # never fails; Basytec on Windows writes ° as 0xB0


def _separator(line: str) -> str:
    return max(("\t", ";", ","), key=line.count)


def _names(line: str) -> list[str]:
    return [n.strip().strip('"') for n in line.rstrip("\r\n").split(_separator(line))]


def _is_column_row(line: str) -> bool:
    if not line.startswith("~"):
        return False
    names = _names(line)
    return (
        bool(_TIME_NAME.match(names[0]))
        and any(n.startswith("U[") for n in names)
        and any(n.startswith("I[") for n in names)
    )


def _split_lines(path: Path, size: int | None = None) -> list[str]:
    try:
        with path.open("rb") as handle:
            raw = handle.read() if size is None else handle.read(size)
    except OSError as exc:
        raise SourceFormatError(path, f"cannot open file ({exc.strerror})") from exc
    return _decode(raw).splitlines()


def _header_and_column_row(path: Path, lines: list[str]) -> tuple[list[str], int]:
    """(header lines, index of the column row); SourceFormatError naming what is missing."""
    if not lines:
        raise SourceFormatError(path, "file is empty")
    if not lines[0].startswith("~"):
        raise SourceFormatError(path, "line 1 does not start with '~' (not a Basytec result file)")
    for index, line in enumerate(lines):
        if not line.startswith("~"):
            # The `~` block ended without a column row: a cut or damaged header.
            raise SourceFormatError(
                path,
                f"damaged header: line {index + 1} follows the '~' header but no '~Time[...]' "
                "column row naming U[...] and I[...] came before it",
            )
        if _is_column_row(line):
            return lines[:index], index
        if line.startswith("~Time[") or line.startswith("~Time ["):
            names = _names(line)
            missing = [m for m in ("U[V]", "I[A]") if not any(n.startswith(m[:2]) for n in names)]
            if "I[A]" in missing:
                raise SourceFormatError(path, f"no current column (I[A]) in the column row (line {index + 1})")
            raise SourceFormatError(path, f"no voltage column (U[V]) in the column row (line {index + 1})")
    raise SourceFormatError(path, "damaged header: the file ends inside the '~' header, no '~Time[...]' column row")


def parse_header(header_lines: list[str]) -> dict[str, str]:
    """`~Key: value` lines (first occurrence wins)."""
    fields: dict[str, str] = {}
    for line in header_lines:
        match = _HEADER_FIELD.match(line)
        if match and match.group(1) not in fields:
            fields[match.group(1)] = match.group(2)
    return fields


def _start_of_test(fields: dict[str, str]) -> float | None:
    try:
        return datetime.strptime(fields.get("Start of Test", ""), "%d.%m.%Y %H:%M:%S").timestamp()
    except ValueError:
        return None


def _unit_factor(path: Path, column: str, table: dict[str, float]) -> float:
    match = _UNIT_NAME.match(column.lstrip("~"))
    unit = match.group("unit").strip() if match else ""
    if unit not in table:
        raise SourceFormatError(path, f"column {column!r}: unit {unit!r} not understood (expected one of {sorted(table)})")
    return table[unit]


def _temperature_offset(path: Path, column: str) -> float:
    unit = _UNIT_NAME.match(column).group("unit").strip()
    if unit == "K":
        return -273.15
    # '°C', 'C', or a degree sign mangled by re-encoding ('\ufffdC' in the zoo sample).
    if unit == "C" or (len(unit) >= 2 and unit.endswith("C") and not unit[:-1].isascii()):
        return 0.0
    raise SourceFormatError(path, f"column {column!r}: temperature unit {unit!r} not understood (expected °C or K)")


def step_kinds(command: np.ndarray | None, current_a: np.ndarray) -> np.ndarray:
    """charge / discharge / rest from Basytec's Command, else from the sign of the current."""
    kinds = np.where(current_a > 0, "charge", np.where(current_a < 0, "discharge", "rest")).astype(object)
    if command is None:
        return kinds
    # a program has a handful of distinct commands: classify those, not every row
    codes, uniques = pd.factorize(pd.Series(command, dtype=object).astype(str))
    by_command = np.array(
        [next((kind for word, kind in _COMMAND_KINDS if u.strip().lower().startswith(word)), "") for u in uniques]
        + [""],  # code -1 (a missing command) indexes this: no direction, keep the current's sign
        dtype=object,
    )
    named = by_command[codes]
    kinds = np.where(named != "", named, kinds)
    return kinds


def _increments_from_direction_counter(counter: np.ndarray) -> np.ndarray:
    """Per-row Ah from a counter that only grows within a cycle and restarts at 0."""
    magnitude = np.abs(np.nan_to_num(counter))
    previous = np.concatenate([[0.0], magnitude[:-1]])
    return np.where(magnitude < previous, magnitude, magnitude - previous)


def _increments_from_step_counter(counter: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Signed per-row Ah from Ah-Step, which restarts at every step."""
    values = np.nan_to_num(counter)
    out = np.diff(values, prepend=0.0)
    restart = np.concatenate([[True], step[1:] != step[:-1]])
    out[restart] = values[restart]
    return out


def _capacity(raw, kinds: np.ndarray, cycle: np.ndarray, step: np.ndarray) -> np.ndarray:
    n = len(kinds)
    if "charge_counter" in raw:
        booked = {
            "charge": _increments_from_direction_counter(np.asarray(raw["charge_counter"])),
            "discharge": _increments_from_direction_counter(np.asarray(raw["discharge_counter"])),
        }
    elif "step_counter" in raw:
        signed = _increments_from_step_counter(np.asarray(raw["step_counter"]), step)
        booked = {"charge": np.maximum(signed, 0.0), "discharge": np.maximum(-signed, 0.0)}
    else:
        current = np.asarray(raw["current_a"])
        return capacity_from_current(np.asarray(raw["time_s"]), current, cycle, rest_threshold_a(current))
    new_block = np.ones(n, dtype=bool)
    new_block[1:] = cycle[1:] != cycle[:-1]
    if "_file" in raw:  # (several files: each one's counters restart)
        files = np.asarray(raw["_file"])
        new_block[1:] |= files[1:] != files[:-1]
    out = np.full(n, np.nan)
    for direction, values in booked.items():
        running = running_total(values, new_block)
        rows = kinds == direction
        out[rows] = running[rows]
    return out


def _encoding(raw: bytes) -> str:
    """utf-8 where the bytes are (a character cut at the end of a slice allowed), else latin-1:
    Basytec on Windows writes the degree sign as 0xB0."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(raw) - 3 or exc.reason != "unexpected end of data":
            return "latin-1"
    return "utf-8-sig"


def _data_offset(raw_bytes: bytes, column_row: int) -> int | None:
    """Byte offset of the line after the column row (None if the lines do not end in \\n)."""
    offset = 0
    for _ in range(column_row + 1):
        offset = raw_bytes.find(b"\n", offset) + 1
        if offset == 0:
            return None
    return offset


def _fast_table(raw_bytes, column_row, sep, positions, names, encoding, decimal) -> dict[int, np.ndarray] | None:
    """The wanted columns by pyarrow's parser (multithreaded, correctly rounding), keyed by
    position; None where the table is not clean (ragged rows, odd line ends): the lenient
    pandas parse then reads it and says what is wrong."""
    offset = _data_offset(raw_bytes, column_row)
    if offset is None:
        return None
    wanted = [f"f{i}" for i in positions]
    types = {f"f{names.index('Command')}": pa.string()} if "Command" in names else {}
    try:
        table = pacsv.read_csv(
            pa.BufferReader(raw_bytes[offset:]),
            read_options=pacsv.ReadOptions(
                autogenerate_column_names=True, encoding="latin-1" if encoding == "latin-1" else "utf8"
            ),
            parse_options=pacsv.ParseOptions(delimiter=sep),
            convert_options=pacsv.ConvertOptions(
                include_columns=wanted, column_types=types, decimal_point=decimal
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowException, KeyError):
        return None
    if table.num_columns != len(wanted) or any(pa.types.is_binary(t) for t in table.schema.types):
        return None  # (binary: bytes that are not text in the file's encoding)
    return {int(name[1:]): table.column(name).to_numpy(zero_copy_only=False) for name in wanted}


def _lenient_table(path, raw_bytes, column_row, sep, positions, names, encoding, decimal) -> dict[int, np.ndarray]:
    try:
        # by position: a mangled name (T1[\ufffdC]) or a trailing separator cannot mislead it
        table = pd.read_csv(
            io.BytesIO(raw_bytes),
            sep=sep,
            skiprows=column_row + 1,
            header=None,
            usecols=positions,
            encoding=encoding,
            decimal=decimal,
            dtype={names.index("Command"): str} if "Command" in names else None,
            skip_blank_lines=True,
        )
    except pd.errors.EmptyDataError:
        raise SourceFormatError(path, "no data rows after the column row") from None
    except (ValueError, pd.errors.ParserError) as exc:
        raise SourceFormatError(path, f"cannot parse as Basytec text export ({exc})") from exc
    return {position: table[position].to_numpy() for position in table.columns}


def _defaults_from_header(fields: dict[str, str]) -> CellDefaults:
    described = [f"{k}: {fields[k]}" for k in _DESCRIBED_FIELDS if fields.get(k)]
    defaults = CellDefaults(description="; ".join(["Basytec result file", *described]))
    for key in ("Nominal capacity", "Nominal Capacity", "Capacity"):
        match = _NOMINAL.match(fields.get(key, ""))
        if match and float(match.group(1).replace(",", ".")) > 0:
            defaults.nominal_capacity_ah = float(match.group(1).replace(",", ".")) * _CHARGE_UNITS[match.group(2)]
            defaults.origin["nominal_capacity_ah"] = from_file(f"Basytec header '~{key}: {fields[key]}'")
            break
    return defaults


class BasytecTxtReader(CyclerReader):
    """Basytec result file text export; see the module docstring for every convention."""

    format_name = "basytec_txt"
    extensions = (".txt",)
    priority = 30  # a specific '~' header: before the generic canonical CSV (90)

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        if b"\x00" in head[:4096]:
            return False
        lines = _decode(head[:16384]).splitlines() if head else []
        if not lines or not lines[0].startswith("~"):
            return False
        if lines[0].lower().startswith(_TITLE):
            return True  # even with a damaged header: read() then says what is wrong
        for line in lines[:200]:
            if not line.startswith("~"):
                return False
            if _is_column_row(line):
                return True
        return False

    @classmethod
    def describe(cls, paths: list[Path]) -> CellDefaults:
        path = Path(paths[0])
        header, _ = _header_and_column_row(path, _split_lines(path, 64 * 1024))
        return _defaults_from_header(parse_header(header))

    @classmethod
    def read_file(cls, path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """One file's samples in SI plus Basytec's bookkeeping columns (name -> array), and its
        header fields. Arrays, not a frame: on a small file a frame costs more than parsing."""
        path = Path(path)
        try:
            raw_bytes = path.read_bytes()
        except OSError as exc:
            raise SourceFormatError(path, f"cannot open file ({exc.strerror})") from exc
        encoding = _encoding(raw_bytes[: 64 * 1024])
        lines = raw_bytes[: 64 * 1024].decode(encoding, errors="replace").splitlines()
        header, column_row = _header_and_column_row(path, lines)
        names = _names(lines[column_row])
        sep = _separator(lines[column_row])
        first_data = next((line for line in lines[column_row + 1 :] if line.strip()), "")
        decimal = "," if sep != "," and re.search(r"(^|[\t;])-?\d+,\d", first_data) else "."
        if len(names) != len(set(names)):
            raise SourceFormatError(path, f"duplicate column names in the column row: {names}")

        time_col = names[0]
        current_col = next(n for n in names if n.startswith("I["))
        voltage_col = next(n for n in names if n.startswith("U["))
        temperature_col = next((n for n in names if n.startswith("T1[")), None)
        counters = next(((c, d) for c, d in _COUNTER_PAIRS if c in names and d in names), None)
        step_counter = "Ah-Step" if "Ah-Step" in names else None
        bookkeeping = [c for c in ("Line", "Command", "Cyc-Count") if c in names]
        factors = {
            time_col: _unit_factor(path, time_col, _TIME_UNITS),
            current_col: _unit_factor(path, current_col, _CURRENT_UNITS),
            voltage_col: _unit_factor(path, voltage_col, _VOLTAGE_UNITS),
        }
        wanted = [time_col, current_col, voltage_col, temperature_col, *(counters or ()), step_counter, *bookkeeping]
        wanted = list(dict.fromkeys(c for c in wanted if c))
        positions = sorted(names.index(c) for c in wanted)
        raw = _fast_table(raw_bytes, column_row, sep, positions, names, encoding, decimal)
        if raw is None:
            # pandas' parser needs the exponent guard (module base); pyarrow's reads any exponent
            raw = _lenient_table(path, tame_overflowing_exponents(raw_bytes), column_row, sep, positions, names,
                                 _encoding(raw_bytes), decimal)
        raw = {names[position]: values for position, values in raw.items()}
        if not len(raw[time_col]):
            raise SourceFormatError(path, "no data rows after the column row")

        def number(column: str) -> np.ndarray:
            values = raw[column]
            if values.dtype.kind in "fiu":
                return values.astype("float64")
            # a damaged cell made the column text: coerce, unparsable -> NaN, row kept
            values = pd.Series(values, dtype=object).astype(str).str.strip()
            if decimal == ",":
                values = values.str.replace(",", ".", regex=False)
            return text_to_float(values).to_numpy(dtype="float64", na_value=np.nan)

        # columns gathered first, one frame built at the end: inserts cost more than a small file's parsing
        columns = {
            "time_s": number(time_col) * factors[time_col],
            "voltage_v": number(voltage_col) * factors[voltage_col],
            "current_a": number(current_col) * factors[current_col],
        }
        if temperature_col:
            columns["temperature_c"] = number(temperature_col) + _temperature_offset(path, temperature_col)
        if counters:
            columns["charge_counter"] = number(counters[0])
            columns["discharge_counter"] = number(counters[1])
        elif step_counter:
            columns["step_counter"] = number(step_counter)
        for column in ("Line", "Cyc-Count"):
            if column in bookkeeping:
                columns[column] = number(column)
        if "Command" in bookkeeping:
            columns["Command"] = raw["Command"].astype(object)
        rows = len(raw[time_col])
        columns["source_file"] = np.full(rows, path.name, dtype=object)
        columns["source_row"] = np.arange(rows, dtype="int64")
        return columns, parse_header(header)

    @classmethod
    def read(cls, paths: list[Path], cell_id: str) -> ReadResult:
        paths = [Path(p) for p in paths]
        pieces, headers = zip(*(cls.read_file(p) for p in paths)) if paths else ((), ())
        defaults = _defaults_from_header(headers[0]) if paths else CellDefaults()
        starts = [_start_of_test(fields) for fields in headers]
        if not pieces:
            return ReadResult(samples=empty_samples(), cell=defaults)
        if len(pieces) == 1:  # nothing to place or renumber
            return ReadResult(samples=_to_canonical(pieces[0], cell_id), cell=defaults)
        pieces = [pd.DataFrame(columns) for columns in pieces]
        durations = [float(np.nanmax(p["time_s"])) if np.isfinite(p["time_s"]).any() else 0.0 for p in pieces]
        order, offsets, placement = place_files(list(starts), durations)
        placed, last_cycle = [], None
        for index in order:
            piece = pieces[index]  # a frame of this read's own: changed in place
            piece["time_s"] = piece["time_s"] + offsets[index]
            piece["_file"] = index
            if "Cyc-Count" in piece and piece["Cyc-Count"].notna().any():
                if last_cycle is not None:  # each file restarts Cyc-Count: continue after the last
                    piece["Cyc-Count"] += last_cycle + 1 - piece["Cyc-Count"].min()
                last_cycle = piece["Cyc-Count"].max()
            placed.append(piece)
        if len(paths) > 1:
            defaults.description = f"{defaults.description}; {placement}"
        joined = placed[0] if len(placed) == 1 else pd.concat(placed, ignore_index=True)
        return ReadResult(samples=_to_canonical(joined, cell_id), cell=defaults)


def _to_canonical(raw, cell_id: str) -> pd.DataFrame:
    """`raw`: read_file's columns (or a frame of several files' rows) -> canonical samples."""
    current = np.asarray(raw["current_a"])
    kinds = step_kinds(np.asarray(raw["Command"]) if "Command" in raw else None, current)
    if "Cyc-Count" in raw:
        # An unreadable cycle count becomes -1: kept, and rejected visibly by the schema (ge=0).
        counted = np.asarray(raw["Cyc-Count"], dtype="float64")
        cycle = np.where(np.isfinite(counted), counted, -1).astype("int64")
    else:
        cycle = cycles_from_charge_starts(kinds)
    changes = np.zeros(len(current), dtype=bool)
    for key in [np.asarray(raw[c]) for c in ("_file", "Line", "Command") if c in raw] + [kinds]:
        changes[1:] |= key[1:] != key[:-1]
    step = np.cumsum(changes).astype("int64")
    columns = {
        "time_s": np.asarray(raw["time_s"]),
        "voltage_v": np.asarray(raw["voltage_v"]),
        "current_a": current,
        "cycle_number": cycle,
        "step_index": step,
        "step_type": kinds,
        "capacity_ah": _capacity(raw, kinds, cycle, step),
        "source_file": np.asarray(raw["source_file"]),
        "source_row": np.asarray(raw["source_row"]),
    }
    if "temperature_c" in raw:
        columns["temperature_c"] = np.asarray(raw["temperature_c"])
    return finalize_samples(columns, cell_id)
