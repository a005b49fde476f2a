"""Arbin MITS Pro `.res` result files: an MS Access (Jet 4) database per test.

The tables that matter (names as MITS Pro 4.x/5.x writes them):

- `Global_Table`: one row per test: `Test_ID`, `Test_Name`, `Start_DateTime` (Excel serial day,
  the cycler PC's local time), `Channel_Number`, `Schedule_File_Name`, `Creator`, `Comments`,
  `Software_Version`, and the cell fields a user may fill in: `MASS`, `Specific_Capacity`,
  `Capacity`.
- `Channel_Normal_Table`: one row per logged point, the same columns an Arbin CSV export holds
  (`Data_Point`, `Test_Time`, `Step_Time`, `DateTime`, `Step_Index`, `Cycle_Index`, `Current`,
  `Voltage`, `Charge_Capacity`, `Discharge_Capacity`, `Internal_Resistance`, ...) in SI units
  without unit suffixes (s, A, V, Ah, Ohm; `DateTime` an Excel serial day), keyed by `Test_ID`.
- `Auxiliary_Table`: auxiliary channels (thermocouples, extra voltages) by `Data_Point`.

The database is read with mdbtools' `mdb-export` (Debian/Ubuntu `mdbtools`, Homebrew
`mdbtools`), the tool cellpy and galvani use for `.res` on Linux and macOS; its CSV is parsed by
pyarrow. From there every convention is the Arbin CSV reader's (`arbin_csv` module docstring:
current sign, cycle continuity, per-cycle capacity re-basing, step typing, resistance hold), so a
`.res` and its CSV export give the same canonical frame.

What is not invented: the user fields `MASS` (no unit in the file), `Specific_Capacity` and
`Capacity` go into the description as written; none becomes a nominal capacity, because the
file states no unit for them and MITS Pro stores 0 when the user left them blank. Auxiliary
channels are not read yet; a file that holds some says so in the cell's description. A file
holding several tests (several `Test_ID`) is refused: one cell per file.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from battery_pipeline.science.readers.arbin_csv import (
    ArbinFile,
    arbin_file_from_columns,
    assemble_cell,
    map_columns,
    with_notes,
)
from battery_pipeline.science.readers.base import (
    CellDefaults,
    CyclerReader,
    ReadResult,
    SourceFormatError,
    tame_overflowing_exponents,
)

# Jet 3/4 (Access 97-2003) and ACE (Access 2007+) database signatures at byte 4.
_JET_MAGICS = (b"Standard Jet DB", b"Standard ACE DB")
_DATA_TABLE = "Channel_Normal_Table"
_GLOBAL_TABLE = "Global_Table"
_AUX_TABLE = "Auxiliary_Table"
_MDB_TIMEOUT_S = 600
_DESCRIBED = (
    ("Test_Name", "test"), ("Channel_Number", "channel"), ("Schedule_File_Name", "schedule"),
    ("Creator", "creator"), ("Comments", "comments"), ("Item_ID", "item"),
    ("Software_Version", "MITS Pro"), ("MASS", "MASS (unit not stated)"),
    ("Specific_Capacity", "Specific_Capacity (unit not stated)"), ("Capacity", "Capacity (unit not stated)"),
)


def mdb_export_available() -> bool:
    return shutil.which("mdb-export") is not None


def _mdb(path: Path, tool: str, *options: str, table: str | None = None) -> bytes:
    """stdout of `tool [options] path [table]` (mdbtools); SourceFormatError naming the file."""
    if shutil.which(tool) is None:
        raise SourceFormatError(
            path,
            f"an Arbin .res file is an Access database and needs mdbtools' {tool} to be read: install "
            "mdbtools (apt-get install mdbtools, brew install mdbtools), or export the test as CSV "
            "from MITS Pro, which reads without it",
        )
    try:
        command = [tool, *options, str(path), *([table] if table else [])]
        done = subprocess.run(command, capture_output=True, timeout=_MDB_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise SourceFormatError(path, f"{tool} did not finish within {_MDB_TIMEOUT_S} s") from exc
    if done.returncode != 0:
        why = done.stderr.decode("utf-8", errors="replace").strip().splitlines()
        raise SourceFormatError(
            path, f"not a readable Access database ({tool} exit {done.returncode}: {why[-1] if why else 'no message'})"
        )
    return done.stdout


def _tables(path: Path) -> list[str]:
    return [t for t in _mdb(path, "mdb-tables", "-1").decode("utf-8", errors="replace").splitlines() if t]


def _export(path: Path, table: str) -> pa.Table:
    """One table as a pyarrow Table (text stays text, numbers are inferred)."""
    raw = _mdb(path, "mdb-export", "-b", "strip", table=table)
    if not raw.strip():
        raise SourceFormatError(path, f"{table} exports nothing (damaged database)")
    try:
        return pacsv.read_csv(pa.BufferReader(tame_overflowing_exponents(raw)))
    except pa.ArrowInvalid as exc:
        raise SourceFormatError(path, f"{table} cannot be parsed from mdb-export's CSV ({exc})") from exc


def _global_row(path: Path) -> dict[str, object]:
    try:
        table = _export(path, _GLOBAL_TABLE).to_pandas()
    except SourceFormatError:
        return {}
    return table.iloc[0].to_dict() if len(table) else {}


def _excel_day_text(value) -> str | None:
    try:
        day = float(value)
    except (TypeError, ValueError):
        return None
    if not np.isfinite(day) or day <= 0:
        return None
    return f"{pd.Timestamp('1899-12-30') + pd.to_timedelta(day, unit='D'):%Y-%m-%d %H:%M:%S} (cycler local time)"


class ArbinResReader(CyclerReader):
    """Arbin MITS Pro `.res` (Access database); see the module docstring."""

    format_name = "arbin_res"
    extensions = (".res",)
    priority = 20

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        return head[4:19] in _JET_MAGICS

    @classmethod
    def describe(cls, paths: list[Path]) -> CellDefaults:
        path = Path(paths[0])
        parts = [f"Arbin MITS Pro .res {path.name}"]
        row = _global_row(path) if mdb_export_available() else {}
        for key, label in _DESCRIBED:
            value = row.get(key)
            if value is None or (isinstance(value, float) and not np.isfinite(value)) or str(value).strip() == "":
                continue
            parts.append(f"{label} {value}")
        started = _excel_day_text(row.get("Start_DateTime"))
        if started:
            parts.append(f"started {started}")
        return CellDefaults(description="; ".join(parts))

    @classmethod
    def read_file(cls, path: Path) -> tuple[ArbinFile, list[str]]:
        path = Path(path)
        if not path.is_file():
            raise SourceFormatError(path, "file not found")
        tables = _tables(path)
        if _DATA_TABLE not in tables:
            raise SourceFormatError(
                path, f"an Access database without {_DATA_TABLE}: not an Arbin result file (tables: {', '.join(tables[:12])})"
            )
        table = _export(path, _DATA_TABLE)
        if table.num_rows == 0:
            raise SourceFormatError(path, f"{_DATA_TABLE} holds no rows")
        names = table.column_names
        notes = []
        if "Test_ID" in names:
            tests = pd.unique(table.column("Test_ID").to_numpy(zero_copy_only=False))
            if len(tests) > 1:
                raise SourceFormatError(
                    path, f"holds {len(tests)} tests (Test_ID {', '.join(map(str, tests[:5]))}): one cell per file is expected"
                )
        if "Data_Point" in names:
            # rows come in storage order; Arbin's Data_Point is the logging order
            order = np.argsort(np.asarray(table.column("Data_Point").to_numpy(zero_copy_only=False), dtype="float64"), kind="stable")
            if not np.all(order[1:] > order[:-1]):
                table = table.take(pa.array(order))
                notes.append("rows re-ordered by Data_Point")
        mapping = map_columns(path, names, where=f"{_DATA_TABLE}: ")
        raw = {name: table.column(name).to_numpy(zero_copy_only=False) for name, _ in mapping.values()}
        if _AUX_TABLE in tables:
            aux_rows = max(0, len(_mdb(path, "mdb-export", "-b", "strip", table=_AUX_TABLE).splitlines()) - 1)
            if aux_rows:
                notes.append(f"{_AUX_TABLE} holds {aux_rows} auxiliary readings (thermocouples etc.) that are not read")
        return arbin_file_from_columns(path, raw, mapping), notes

    @classmethod
    def read(cls, paths: list[Path], cell_id: str) -> ReadResult:
        files, notes = [], []
        for p in paths:
            arbin_file, file_notes = cls.read_file(Path(p))
            files.append(arbin_file)
            notes.extend(f"{Path(p).name}: {n}" for n in file_notes)
        assembled = assemble_cell(files, cell_id)
        return ReadResult(
            samples=assembled.samples,
            cell=with_notes(cls.describe([Path(p) for p in paths]), [*notes, *assembled.notes]),
        )


