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
- `Auxiliary_Table`: auxiliary readings, one row per channel per logged point: `Test_ID`,
  `Data_Point` (the Channel_Normal_Table row it belongs to), `Auxiliary_Index` (the channel
  number within its kind), `Data_Type` (the kind), `X` (the reading) and, in later versions,
  `dX_dt`. `Aux_Global_Data_Table` names each channel: `Auxiliary_Index`, `Data_Type`,
  `Nickname`, `Unit`.

The database is read with mdbtools' `mdb-export` (Debian/Ubuntu `mdbtools`, Homebrew
`mdbtools`), the tool cellpy and galvani use for `.res` on Linux and macOS; its CSV is parsed by
pyarrow. From there every convention is the Arbin CSV reader's (`arbin_csv` module docstring:
current sign, cycle continuity, per-cycle capacity re-basing, step typing, resistance hold), so a
`.res` and its CSV export give the same canonical frame.

Auxiliary channels: `Data_Type` 0 is an auxiliary voltage, 1 a temperature (Arbin's schema, and
the order in which Global_Table lists the aux kinds: `Mapped_Aux_Voltage_Number`,
`Mapped_Aux_Temperature_Number`, `Mapped_Aux_Pressure_Number`, ...). cellpy does not decode the
number but names each channel from `Aux_Global_Data_Table`'s nickname and unit, so the unit
stated there is checked too (degC, K or F; anything else is not read). Temperature readings become `temperature_c`, joined onto the
samples by `Data_Point` (null on points without a reading); with several temperature channels
the first (lowest `Auxiliary_Index`) is taken. The cell's description says which channel it
came from and which channels (other temperatures, aux voltages: no canonical column; other
kinds) are present and not read. The zoo file's Auxiliary_Table is empty.

What is not invented: the user fields `MASS` (no unit in the file), `Specific_Capacity` and
`Capacity` go into the description as written; none becomes a nominal capacity, because the
file states no unit for them and MITS Pro stores 0 when the user left them blank. A file
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
_AUX_CHANNELS_TABLE = "Aux_Global_Data_Table"
AUX_VOLTAGE = 0
AUX_TEMPERATURE = 1


def _same(x):
    return x


def _from_kelvin(x):
    return x - 273.15


def _from_fahrenheit(x):
    return (x - 32.0) * 5.0 / 9.0


# Aux_Global_Data_Table `Unit` (lower-case, spaces removed) -> to degC; "" (no unit stated or no
# Aux_Global_Data_Table): Arbin's temperature channels log degC by default
_TEMPERATURE_UNITS = {
    "": _same, "c": _same, "degc": _same, "deg_c": _same, "\u00b0c": _same, "\u2103": _same,
    "k": _from_kelvin, "f": _from_fahrenheit, "\u00b0f": _from_fahrenheit,
}
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


def parse_mdb_csv(raw: bytes) -> pa.Table:
    """mdb-export's CSV as a pyarrow Table (text stays text, numbers are inferred)."""
    return pacsv.read_csv(pa.BufferReader(tame_overflowing_exponents(raw)))


def _export(path: Path, table: str) -> pa.Table:
    """One table as a pyarrow Table."""
    raw = _mdb(path, "mdb-export", "-b", "strip", table=table)
    if not raw.strip():
        raise SourceFormatError(path, f"{table} exports nothing (damaged database)")
    try:
        return parse_mdb_csv(raw)
    except pa.ArrowInvalid as exc:
        raise SourceFormatError(path, f"{table} cannot be parsed from mdb-export's CSV ({exc})") from exc


def _text(value) -> str:
    return "" if value is None or pd.isna(value) else str(value).strip()


def _channel_label(channels: pd.DataFrame | None, index: int, kind: int) -> tuple[str, str]:
    """(label for notes, unit as stated) of one aux channel, from Aux_Global_Data_Table if it names it."""
    label = f"Auxiliary_Index {index}"
    if channels is None or not {"Auxiliary_Index", "Data_Type"} <= set(channels.columns):
        return label, ""
    row = channels[(channels["Auxiliary_Index"] == index) & (channels["Data_Type"] == kind)]
    if row.empty:
        return label, ""
    nickname = _text(row["Nickname"].iloc[0]) if "Nickname" in row else ""
    unit = _text(row["Unit"].iloc[0]) if "Unit" in row else ""
    return label + (f" '{nickname}'" if nickname else "") + (f", unit {unit}" if unit else ""), unit


def aux_temperature(
    data_points: np.ndarray, aux: pd.DataFrame, channels: pd.DataFrame | None = None, test_id=None
) -> tuple[np.ndarray | None, list[str]]:
    """Temperature (degC) per data point from Auxiliary_Table rows, and notes saying what was used.

    `aux`: Auxiliary_Table as mdb-export writes it (Data_Point, Auxiliary_Index, Data_Type, X,
    optionally Test_ID); `channels`: Aux_Global_Data_Table (names and units), if any. Returns
    (None, notes) when no temperature channel can be read; an empty table gives (None, []).
    """
    if aux.empty:
        return None, []
    missing = [c for c in ("Data_Point", "Auxiliary_Index", "Data_Type", "X") if c not in aux.columns]
    if missing:
        return None, [f"{_AUX_TABLE} holds {len(aux)} rows but lacks {', '.join(missing)}: not read"]
    if test_id is not None and "Test_ID" in aux.columns:
        aux = aux[aux["Test_ID"] == test_id]
    kinds = pd.to_numeric(aux["Data_Type"], errors="coerce")
    indexes = pd.to_numeric(aux["Auxiliary_Index"], errors="coerce")
    notes: list[str] = []

    def listing(kind: int, which) -> str:
        return ", ".join(_channel_label(channels, int(i), kind)[0] for i in which)

    voltage_channels = sorted(indexes[kinds == AUX_VOLTAGE].dropna().unique())
    if voltage_channels:
        notes.append(
            f"auxiliary voltage channel(s) {listing(AUX_VOLTAGE, voltage_channels)} present and not read "
            "(no canonical column)"
        )
    for kind in sorted(k for k in kinds.dropna().unique() if k not in (AUX_VOLTAGE, AUX_TEMPERATURE)):
        notes.append(
            f"auxiliary channel(s) of Data_Type {int(kind)} "
            f"({listing(int(kind), sorted(indexes[kinds == kind].dropna().unique()))}) present and not read"
        )

    temperature_channels = sorted(indexes[kinds == AUX_TEMPERATURE].dropna().unique())
    if not temperature_channels:
        return None, notes
    first = int(temperature_channels[0])
    label, unit = _channel_label(channels, first, AUX_TEMPERATURE)
    to_celsius = _TEMPERATURE_UNITS.get(unit.lower().replace(" ", ""))
    if to_celsius is None:
        notes.append(f"auxiliary temperature channel {label}: unit {unit!r} not understood, not read")
        return None, notes
    readings = aux[(kinds == AUX_TEMPERATURE) & (indexes == first)]
    points = pd.to_numeric(readings["Data_Point"], errors="coerce").to_numpy(dtype="float64")
    values = to_celsius(pd.to_numeric(readings["X"], errors="coerce").to_numpy(dtype="float64"))
    # one reading per point is Arbin's layout; should a point repeat, the last logged wins
    last = ~pd.Series(points).duplicated(keep="last").to_numpy()
    where = pd.Index(points[last]).get_indexer(np.asarray(data_points, dtype="float64"))
    temperature = np.where(where >= 0, values[last][np.maximum(where, 0)], np.nan)
    matched = int((where >= 0).sum())
    assumed = "" if unit else "; no unit stated, Arbin's default degC assumed"
    notes.append(
        f"temperature_c from auxiliary temperature channel {label}, joined by Data_Point "
        f"({matched} of {len(temperature)} samples have a reading{assumed})"
    )
    if len(temperature_channels) > 1:
        notes.append(
            f"further auxiliary temperature channel(s) {listing(AUX_TEMPERATURE, temperature_channels[1:])} "
            "not read: "
            "the first (lowest Auxiliary_Index) is taken"
        )
    return temperature, notes


def _file_aux_temperature(
    path: Path, tables: list[str], data_points: np.ndarray, test_id
) -> tuple[np.ndarray | None, list[str]]:
    """`aux_temperature` on the file's own aux tables; a damaged aux table costs the temperature only."""
    try:
        aux = _export(path, _AUX_TABLE).to_pandas()
    except SourceFormatError as exc:
        return None, [f"{_AUX_TABLE} cannot be read, no temperature taken ({exc})"]
    if aux.empty:
        return None, []
    notes = []
    channels = None
    # names and units are only worth a subprocess when there are readings
    if _AUX_CHANNELS_TABLE in tables:
        try:
            channels = _export(path, _AUX_CHANNELS_TABLE).to_pandas()
        except SourceFormatError as exc:
            notes.append(
                f"{_AUX_CHANNELS_TABLE} cannot be read: aux channels unnamed, units taken as Arbin's defaults ({exc})"
            )
    temperature, aux_notes = aux_temperature(data_points, aux, channels, test_id)
    return temperature, notes + aux_notes


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
        arbin_file = arbin_file_from_columns(path, raw, mapping)
        if _AUX_TABLE in tables and "Data_Point" in names:
            test_id = tests[0] if "Test_ID" in names else None
            data_points = table.column("Data_Point").to_numpy(zero_copy_only=False)
            temperature, aux_notes = _file_aux_temperature(path, tables, data_points, test_id)
            notes.extend(aux_notes)
            if temperature is not None and "temperature" in arbin_file.columns:
                notes.append(f"{_DATA_TABLE}'s own temperature column is kept; the auxiliary one is not used")
            elif temperature is not None:
                arbin_file.columns["temperature"] = temperature
        return arbin_file, notes

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


