"""Arbin Excel exports (.xlsx, and .xls read by the same engine), e.g. the CALCE CS2 cells.

Source layout: an `Info` sheet (test name, `Start_DateTime`, `Schedule_File_Name`, channel) and
one or more `Channel_<n>-<nnn>` data sheets (more than one when Arbin split a long test; read in
sheet order, `source_row` counting on across them), sometimes a `Statistics_*` sheet (ignored):

    Data_Point, Test_Time(s), Date_Time, Step_Time(s), Step_Index, Cycle_Index, Current(A),
    Voltage(V), Charge_Capacity(Ah), Discharge_Capacity(Ah), Charge_Energy(Wh),
    Discharge_Energy(Wh), dV/dt(V/s), Internal_Resistance(Ohm), ...

A workbook without `Channel_*` sheets is read from its first sheet carrying Arbin's columns.
Only the needed columns are converted (fastexcel/calamine, ~1e5 rows/s per core).

Grouping: CALCE names each export `<cell>_<month>_<day>_<year>` (`CS2_35_10_15_10.xlsx`), the
date being the *export* day; all files with the same `<cell>` form one cell's test
(`cell_key`), ordered by that date (`file_order`) and, when read, by each file's absolute test
start. Any other name is one cell per file.

All value conventions (signs, time stitching across files, cycle continuation, capacity
re-basing, sample-and-hold internal resistance, step typing, re-exported/duplicate files) are
the shared Arbin ones documented in `arbin_csv`. What the CALCE CS2 files showed:

- `Cycle_Index` restarts at 1 in every file and `Test_Time` restarts in every file (each file is
  one Arbin test); `Date_Time` is an Excel date (whole seconds) that drifts ~60 s/week against
  `Test_Time`, and files are hours to ~11 days apart (gaps kept as real time).
- `Charge_Capacity`/`Discharge_Capacity` accumulate over the whole file (tens of Ah), so they
  are re-based per cycle.
- `CS2_35_2_10_11.xlsx` is a re-export (made 2011-02-10) of the test already in
  `CS2_35_2_4_11.xlsx`: same start 2011-01-31 10:51:05, 5983 identical rows; only the Info
  sheet and the document timestamps differ. Both files' rows are returned; the copy repeats the
  first one's cycle numbers and times, so validation quarantines it as duplicate samples.
- The small first files (`*_8_17_10`, `*_8_18_10`, `*_8_19_10`) are each one complete cycle of
  the same schedule `CS2_1C.sdu` (0.55 A CC to 4.2 V, CV to 0.05 A, 1.1 A discharge to
  2.7 V; 10 s logging in the first, 30 s after), with discharge capacities (1.138, 1.138,
  1.137 Ah) continuous with the next file's first cycle: not a separate characterization, so
  they are cycles 1-3 of the test.
- No temperature column.
"""

from __future__ import annotations

import html
import re
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from battery_pipeline.science.readers.arbin_csv import (
    ArbinFile,
    arbin_file_from_columns,
    assemble_cell,
    looks_like_arbin_header,
    map_columns,
    role_of,
    with_notes,
)
from battery_pipeline.science.readers.base import (
    CellDefaults,
    CyclerReader,
    ReadResult,
    SourceFormatError,
    from_dataset_rule,
    month_day_year_from_stem,
)

_ZIP_MAGIC = b"PK\x03\x04"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_CHANNEL_SHEET = re.compile(r"^Channel_\d+-\d+")
_NOT_DATA_SHEET = re.compile(r"^(info|global_info|statistics.*)$", re.IGNORECASE)
_SHEET_NAME = re.compile(rb"<sheet\b[^>]*?\bname=\"([^\"]*)\"")
_SHARED_TEXT = re.compile(rb"<t(?:\s[^>]*)?>([^<]*)</t>")
_DATE_SUFFIX = re.compile(r"_(\d{1,2})_(\d{1,2})_(\d{2,4})$")
_CALCE_CS2 = re.compile(r"^CS2_\d+$", re.IGNORECASE)

CALCE_CITATION = (
    "CALCE Battery Research Group, University of Maryland, CS2 battery data; "
    "He W., Williard N., Osterman M., Pecht M., 'Prognostics of lithium-ion batteries based on "
    "Dempster-Shafer theory and the Bayesian Monte Carlo method', J. Power Sources 196 (2011) "
    "10314-10321; Xing Y., Ma E.W.M., Tsui K.-L., Pecht M., 'An ensemble model for predicting "
    "the remaining useful performance of lithium-ion batteries', Microelectron. Reliab. 53 "
    "(2013) 811-820"
)


# ------------------------------------------------------------------------------------------
# Sniffing helpers (content only, cheap)
# ------------------------------------------------------------------------------------------


def _member_from_head(head: bytes, wanted: str) -> bytes | None:
    """Decompressed bytes of zip member `wanted` if its local entry lies within `head`."""
    pos = 0
    target = wanted.encode()
    while True:
        pos = head.find(_ZIP_MAGIC, pos)
        if pos < 0 or pos + 30 > len(head):
            return None
        _, _, flags, method, _, _, _, csize, usize, nlen, elen = struct.unpack_from(
            "<IHHHHHIIIHH", head, pos
        )
        name = head[pos + 30 : pos + 30 + nlen]
        start = pos + 30 + nlen + elen
        if name == target:
            try:
                if method == 0:
                    return head[start : start + usize] if usize else None
                if method == 8:
                    return zlib.decompressobj(-15).decompress(head[start:], 4 << 20)
            except zlib.error:
                return None
            return None
        pos = start


def _sheet_names(workbook_xml: bytes) -> list[str]:
    return [html.unescape(m.decode("utf-8", "replace")) for m in _SHEET_NAME.findall(workbook_xml)]


def _zip_workbook_info(path: Path) -> tuple[list[str], list[str]] | None:
    """(sheet names, first shared strings) from the zip's central directory; None if unreadable."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "xl/workbook.xml" not in names:
                return None
            sheets = _sheet_names(archive.read("xl/workbook.xml"))
            strings: list[str] = []
            if "xl/sharedStrings.xml" in names:
                with archive.open("xl/sharedStrings.xml") as handle:
                    chunk = handle.read(512 * 1024)
                strings = [html.unescape(s.decode("utf-8", "replace")) for s in _SHARED_TEXT.findall(chunk)]
            return sheets, strings
    except (OSError, zipfile.BadZipFile, KeyError, ValueError, zlib.error):
        return None


def _zip_problem(path: Path) -> str | None:
    """Why a file that starts like a zip cannot be opened as one (None if it can)."""
    try:
        with path.open("rb") as handle:
            if handle.read(4) != _ZIP_MAGIC:
                return None
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            return f"zip member {bad!r} is corrupt" if bad else None
    except (zlib.error, EOFError, NotImplementedError) as exc:
        # testzip reports a bad CRC, but a damaged deflate stream raises on the way there
        return f"the xlsx (zip) container is corrupt: a member cannot be decompressed ({exc})"
    except zipfile.BadZipFile:
        size = path.stat().st_size
        return (
            f"the xlsx (zip) container is truncated or corrupt: no end-of-central-directory "
            f"record in its {size} bytes (an incomplete copy?)"
        )
    except OSError as exc:
        return f"cannot open file ({exc.strerror})"


# ------------------------------------------------------------------------------------------
# Reading one workbook
# ------------------------------------------------------------------------------------------


def _arrow_to_numpy(column) -> np.ndarray:
    import pyarrow as pa

    kind = column.type
    if pa.types.is_null(kind):
        return np.full(len(column), np.nan)
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        return column.to_numpy(zero_copy_only=False).astype("datetime64[ns]")
    if pa.types.is_floating(kind) or pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        return column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    return np.asarray(column.to_pylist(), dtype=object)


def _is_rust_panic(exc: BaseException) -> bool:
    """True for a panic of fastexcel's Rust code, e.g. 'TimeDelta::milliseconds out of bounds'
    on a date cell holding 1e18 (found by fuzzing). pyo3 raises it as PanicException, which
    derives from BaseException, so `except Exception` never sees it; it has no importable name."""
    return type(exc).__name__ == "PanicException"


def _open_workbook(path: Path):
    import fastexcel

    try:
        return fastexcel.read_excel(str(path))
    except fastexcel.FastExcelError as exc:
        problem = _zip_problem(path) or f"cannot open as an Excel workbook ({str(exc).splitlines()[0]})"
        raise SourceFormatError(path, problem) from exc
    except OSError as exc:
        raise SourceFormatError(path, f"cannot open file ({exc.strerror})") from exc
    except BaseException as exc:
        if not _is_rust_panic(exc):
            raise
        raise SourceFormatError(path, f"the Excel reader failed on the workbook ({exc})") from exc


def _read_info(workbook) -> dict[str, str]:
    """`Info` sheet as {field: value} (Start_DateTime, Schedule_File_Name, Channel, ...)."""
    import fastexcel

    if "Info" not in workbook.sheet_names:
        return {}
    try:
        rows = workbook.load_sheet("Info", header_row=None, eager=True).to_pylist()
    except fastexcel.FastExcelError:
        return {}
    except BaseException as exc:  # a malformed Info cell: no metadata, as for other errors
        if not _is_rust_panic(exc):
            raise
        return {}
    rows = [list(r.values()) for r in rows]
    for i, row in enumerate(rows[:-1]):
        if "Start_DateTime" in [str(v).strip() for v in row]:
            keys = [str(v).strip() if v is not None else "" for v in row]
            values = rows[i + 1]
            return {k: str(v).strip() for k, v in zip(keys, values) if k and v not in (None, "")}
    return {}


def read_workbook(path: Path) -> ArbinFile:
    import fastexcel

    path = Path(path)
    workbook = _open_workbook(path)
    sheets = [s for s in workbook.sheet_names if _CHANNEL_SHEET.match(s)]
    fallback = not sheets
    if fallback:
        sheets = [s for s in workbook.sheet_names if not _NOT_DATA_SHEET.match(s)]

    parts: list[ArbinFile] = []
    problems: list[str] = []
    for sheet in sheets:
        where = f"sheet {sheet!r}: "
        try:
            batch = workbook.load_sheet(
                sheet, use_columns=lambda c: role_of(c.name) is not None, eager=True
            )
        except fastexcel.FastExcelError as exc:
            problem = _zip_problem(path) or f"{where}cannot be read ({str(exc).splitlines()[0]})"
            raise SourceFormatError(path, problem) from exc
        except BaseException as exc:
            if not _is_rust_panic(exc):
                raise
            raise SourceFormatError(
                path, f"{where}a cell cannot be converted, the Excel reader failed ({exc}): corrupt sheet?"
            ) from exc
        names = batch.schema.names
        try:
            mapping = map_columns(path, names, where)
        except SourceFormatError:
            # Name every column the sheet has, not only the recognised ones.
            header = workbook.load_sheet(sheet, n_rows=0)
            try:
                mapping = map_columns(path, [c.name for c in header.available_columns()], where)
            except SourceFormatError as full:
                problems.append(full.problem)
                if fallback:
                    continue
                raise
        raw = {name: _arrow_to_numpy(batch.column(name)) for name in names}
        if batch.num_rows == 0:
            problems.append(f"{where}no data rows")
            continue
        parts.append(arbin_file_from_columns(path, raw, mapping))
        if fallback:
            break
    if not parts:
        detail = "; ".join(problems) or f"sheets {workbook.sheet_names}"
        raise SourceFormatError(path, f"no Arbin data sheet with rows ({detail})")

    merged = parts[0]
    if len(parts) > 1:
        roles = {r for p in parts for r in p.columns}
        columns = {
            role: np.concatenate(
                [p.columns.get(role, np.full(p.n_rows, np.nan)) for p in parts]
            )
            for role in roles
        }
        merged = ArbinFile(path=path, columns=columns, n_rows=sum(p.n_rows for p in parts))
    merged.info = _read_info(workbook)
    return merged


# ------------------------------------------------------------------------------------------
# The reader
# ------------------------------------------------------------------------------------------


def _calce_date(stem: str):
    date = month_day_year_from_stem(stem)
    if date is None:
        return None
    _, month, day = date
    return date if 1 <= month <= 12 and 1 <= day <= 31 else None


def _describe(paths: list[Path], infos: list[dict[str, str]]) -> CellDefaults:
    key = ArbinXlsxReader.cell_key(Path(paths[0]))
    channels = sorted({i["Channel"] for i in infos if i.get("Channel")})
    schedules = sorted({i["Schedule_File_Name"] for i in infos if i.get("Schedule_File_Name")})
    starts = sorted(i["Start_DateTime"] for i in infos if i.get("Start_DateTime"))
    parts = [f"Arbin xlsx export, {len(paths)} file(s)"]
    if channels:
        parts.append(f"channel {', '.join(channels)}")
    if schedules:
        parts.append(f"schedule {', '.join(schedules)}")
    if starts:
        parts.append(f"tests started {starts[0]} .. {starts[-1]}")
    description = "; ".join(parts)
    if _CALCE_CS2.match(key):
        evidence = f"name {key} + Arbin xlsx layout; capacities checked at labelling by initial_soh_in_band"
        rule = "CALCE CS2 (LCO/graphite prismatic, 1.1 Ah, 2.7-4.2 V)"
        return CellDefaults(
            dataset="CALCE CS2",
            chemistry="LCO",
            nominal_capacity_ah=1.1,
            voltage_min_v=2.7,
            voltage_max_v=4.2,
            licence="free for research with citation",
            citation=CALCE_CITATION,
            description=(
                f"CALCE CS2 prismatic LCO/graphite cell {key}, 1.1 Ah, 2.7-4.2 V; cycled 0.55 A "
                "CC to 4.2 V, CV to 0.05 A, 1.1 A (1C) discharge to 2.7 V; " + description
            ),
            origin={field: from_dataset_rule(rule, evidence)
                    for field in ("chemistry", "nominal_capacity_ah", "voltage_window")},
        )
    return CellDefaults(description=description)


class ArbinXlsxReader(CyclerReader):
    """Arbin Excel export; conventions in this module's and `arbin_csv`'s docstrings."""

    format_name = "arbin_xlsx"
    extensions = (".xlsx", ".xls")
    priority = 30

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        try:
            if head.startswith(_ZIP_MAGIC):
                return cls._sniff_zip(Path(path), head)
            if head.startswith(_OLE_MAGIC):  # legacy .xls (BIFF): look for Arbin strings
                def has(text: str) -> bool:
                    return text.encode("latin-1") in head or text.encode("utf-16-le") in head

                return has("Channel_") and (has("Test_Time") or has("Cycle_Index"))
        except Exception:  # a sniffer answers yes or no, never raises
            return False
        return False

    @classmethod
    def _sniff_zip(cls, path: Path, head: bytes) -> bool:
        workbook_xml = _member_from_head(head, "xl/workbook.xml")
        if workbook_xml is not None and any(_CHANNEL_SHEET.match(s) for s in _sheet_names(workbook_xml)):
            return True  # even if the rest of the file is missing: read() then says so
        info = _zip_workbook_info(path)
        if info is None:
            return False
        sheets, strings = info
        return any(_CHANNEL_SHEET.match(s) for s in sheets) or looks_like_arbin_header(strings)

    @classmethod
    def cell_key(cls, path: Path) -> str:
        stem = Path(path).stem
        if _calce_date(stem) is None:
            return stem
        return _DATE_SUFFIX.sub("", stem) or stem

    @classmethod
    def file_order(cls, path: Path):
        return (_calce_date(Path(path).stem) or (0, 0, 0), Path(path).name)

    @classmethod
    def describe(cls, paths: list[Path]) -> CellDefaults:
        infos = []
        for path in paths:
            try:
                infos.append(_read_info(_open_workbook(Path(path))))
            except SourceFormatError:
                infos.append({})
        return _describe(paths, infos)

    @classmethod
    def read(cls, paths: list[Path], cell_id: str) -> ReadResult:
        files = [read_workbook(Path(p)) for p in paths]
        assembled = assemble_cell(files, cell_id)
        cell = _describe([f.path for f in files], [f.info for f in files])
        return ReadResult(samples=assembled.samples, cell=with_notes(cell, assembled.notes))
