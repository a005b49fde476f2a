"""PEC SBT/ACT LifeTest CSV exports (the record table LifeTest writes per test), from the zoo files.

Layout: a key/value header block (`Request Year:,2019`, `Test:,187`, `TestRegime Name:,...`,
`TestRegime CellSize:,1500 mAh`, `Chemistry:,...`, optionally a `#RESULTS CHECK` ... `#END RESULTS
CHECK` table), then the column row, then one row per logged point, UTF-8, comma separated::

    Test,Cell,Rack,Shelf,Position,Cell ID,Step,[Instruction Name,]Cycle,Total Time (Seconds),...,
    Voltage (mV),Current (mA),Charge Capacity (mAh),Discharge Capacity (mAh),...

Units differ between LifeTest versions (pec.csv: `Voltage (mV)`, `Current (mA)`, `Total Time
(Seconds)`; Test25205.csv: `Voltage (V)`, `Current (A)`, `Total Time (Hours in hh:mm:ss.xxx)`), so
every unit is read from the column name and an unknown unit is a SourceFormatError, never a silent
factor of 1.

Detected by content: a column row starting `Test,Cell,` that names `Step`, `Cycle`, a `Total Time
(...)`, `Voltage (...)`, `Current (...)` and `Charge Capacity (...)` column, found in the first
64 KiB (after the header block, or as the first line of a header-less export). No other reader's
files have such a row (Arbin: `Data_Point`/`Charge_Capacity`; Neware: `DataPoint`/`Chg. Cap.`;
Digatron: `Prog Time`; canonical: snake_case), and their sniffers reject PEC's header block.

Conventions (checked on the zoo files):
  - current_a: PEC writes discharge negative: in pec.csv every row of step 1 and 10 has I < 0
    while `Discharge Capacity` grows, every row of step 8 I > 0 while `Charge Capacity` grows;
    taken as is, converted mA -> A where the column says mA.
  - time_s: `Total Time` (the test clock; seconds or `hh:mm:ss.xxx` with hours beyond 24).
  - cycle_number: PEC's `Cycle` as exported (0-based; pec.csv: cycle 0 is the initial discharge,
    each charge step 8 starts the next cycle, and both capacity counters restart there).
  - step_index: PEC's `Step` (the regime's step number, repeated in every cycle). PEC logs a
    step's last point when it ends and the next step's first 2 ms later (pec.csv: 25569.566 s
    last discharge row, 25569.568 s first rest row), so `logs_step_end` stays True.
  - step_type, per run of rows with one (Cycle, Step), from the file's own bookkeeping, never
    from the 1 mA threshold alone (a coin cell is cycled below it): the `Instruction Name` where
    exported (`Idle`/`Rest`/`Pause`/`OCV` -> rest, names with `Dis`/`Charge` -> their
    direction); else the capacity counters: only `Charge Capacity` grows -> charge, only
    `Discharge Capacity` -> discharge, neither -> rest; both (or an unknown instruction) -> the
    sign of the run's mean current beyond `base.rest_threshold_a` of the file, else rest.
  - capacity_ah: PEC's `Charge Capacity` / `Discharge Capacity` count per cycle and direction
    already (the Arbin convention), so a charge row gets the charge counter and a discharge row
    the discharge counter; they are re-accumulated from their increments per cycle so that an
    export whose counters do not restart at each cycle still comes out per cycle. Rest rows: null.
  - temperature_c: `Cell surface temperature`, else `Temp`, else `Ambient temperature` (degC).
  - internal_resistance_ohm: `DC Internal Resistance (mOhm)`, else `Internal Resistance 1`, where
    non-zero (PEC writes 0 when it did not measure).
  - metadata: `Chemistry:` (unless empty or `<NONE>`) and a numeric `TestRegime CellSize:` are used
    with file provenance; `Default cellsize` states nothing. When the test's `C-Rate (mAh)`
    parameter contradicts the regime's cell size (Test25205: 64000 vs 1500 mAh) neither is taken:
    the file does not say which is the cell, so both go into the description only.
  - source_row: 0-based data row after the column row; source_file: the file's name.
Rows are never dropped or repaired: an unparsable value becomes NaN and stays in its row.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pandas as pd

from battery_pipeline.science.readers.base import (
    rest_threshold_a,
    CellDefaults,
    CyclerReader,
    ReadResult,
    SourceFormatError,
    chain_pieces,
    finalize_samples,
    from_file,
    tame_overflowing_exponents,
)
from battery_pipeline.science.readers.neware_csv import clock_seconds
from battery_pipeline.science.schema import empty_samples

_HEADER_FIELD = re.compile(r"^([^,]+?):,(.*)$")
_UNIT = re.compile(r"^(?P<name>.*?)\s*\((?P<unit>[^)]*)\)\s*$")
_FACTORS = {
    "voltage": {"V": 1.0, "mV": 1e-3},
    "current": {"A": 1.0, "mA": 1e-3, "uA": 1e-6, "µA": 1e-6},
    "charge_capacity": {"Ah": 1.0, "mAh": 1e-3},
    "discharge_capacity": {"Ah": 1.0, "mAh": 1e-3},
    "temperature": {"°C": 1.0, "C": 1.0, "degC": 1.0},
    "resistance": {"Ohm": 1.0, "mOhm": 1e-3},
}
# role -> column base names in order of preference
_ROLE_NAMES = {
    "step": ("Step",),
    "instruction": ("Instruction Name",),
    "cycle": ("Cycle",),
    "time": ("Total Time",),
    "voltage": ("Voltage",),
    "current": ("Current",),
    "charge_capacity": ("Charge Capacity",),
    "discharge_capacity": ("Discharge Capacity",),
    "temperature": ("Cell surface temperature", "Temp", "Ambient temperature"),
    "resistance": ("DC Internal Resistance", "Internal Resistance 1"),
}
REQUIRED_ROLES = ("step", "cycle", "time", "voltage", "current", "charge_capacity", "discharge_capacity")
_REST_INSTRUCTIONS = ("idle", "rest", "pause", "ocv", "wait")


def _split(name: str) -> tuple[str, str | None]:
    match = _UNIT.match(name.strip())
    return (match.group("name"), match.group("unit").strip()) if match else (name.strip(), None)


def roles_of(names: list[str]) -> dict[str, str]:
    """role -> column name; the first preferred base name present wins."""
    bases = {}
    for name in names:
        bases.setdefault(_split(name)[0], name)
    found = {}
    for role, candidates in _ROLE_NAMES.items():
        for base in candidates:
            if base in bases:
                found[role] = bases[base]
                break
    return found


def _fields(line: str) -> list[str]:
    return [cell.strip() for cell in line.rstrip("\r\n").split(",")]


def is_column_row(line: str) -> bool:
    names = _fields(line)
    if names[:2] != ["Test", "Cell"]:
        return False
    roles = roles_of(names)
    return all(r in roles for r in REQUIRED_ROLES if r != "discharge_capacity")


def _column_row(path: Path, lines: list[str]) -> int:
    for index, line in enumerate(lines):
        if is_column_row(line):
            return index
    raise SourceFormatError(
        path, f"no PEC column row ('Test,Cell,...,Step,Cycle,Total Time (...),Voltage (...),Current (...),"
        f"Charge Capacity (...)') in its {len(lines)} lines: header truncated or not a PEC export"
    )


def parse_header(lines: list[str]) -> dict[str, str]:
    """`Key:,value` lines before the column row (first occurrence wins; values keep their commas)."""
    fields: dict[str, str] = {}
    for line in lines:
        match = _HEADER_FIELD.match(line.rstrip("\r\n"))
        if match and match.group(1).strip() not in fields:
            fields[match.group(1).strip()] = match.group(2).strip().rstrip(",").strip()
    return fields


def _mah(text: str) -> float | None:
    """'1500 mAh' / '1.5 Ah' / '64000' (mAh named in the parameter) -> Ah; None for anything else."""
    match = re.match(r"^\s*(\d+(?:\.\d*)?)\s*(mAh|Ah)?\s*$", text or "")
    if not match:
        return None
    return float(match.group(1)) * (1.0 if match.group(2) == "Ah" else 1e-3)


def cycle_totals_from_counter(counter: np.ndarray, cycle: np.ndarray, book: np.ndarray | None = None) -> np.ndarray:
    """Running Ah per cycle from a non-negative counter's increments.

    A counter that drops (restarted at a step, cycle or file) contributes its new value, as if it
    had counted up from 0; NaN counts nothing. `book` (bool) limits which rows' increments count.
    """
    counter = np.nan_to_num(np.abs(np.asarray(counter, dtype="float64")))
    n = len(counter)
    if n == 0:
        return np.zeros(0)
    previous = np.concatenate([[0.0], counter[:-1]])
    increments = np.where(counter >= previous, counter - previous, counter)
    new_cycle = np.concatenate([[True], cycle[1:] != cycle[:-1]])
    increments[new_cycle] = counter[new_cycle]
    if book is not None:
        increments = np.where(book, increments, 0.0)
    return pd.Series(increments).groupby(np.cumsum(new_cycle)).cumsum().to_numpy()


def _run_ids(*keys: np.ndarray) -> np.ndarray:
    n = len(keys[0])
    changed = np.zeros(n, dtype=bool)
    for key in keys:
        changed[1:] |= key[1:] != key[:-1]
    return np.cumsum(changed)


def step_types(instruction, cycle, step, current, charge_q, discharge_q) -> np.ndarray:
    """charge/discharge/rest per run of one (Cycle, Step); see the module docstring."""
    run = _run_ids(cycle, step)
    frame = pd.DataFrame({"run": run, "i": current, "qc": charge_q, "qd": discharge_q})
    grouped = frame.groupby("run", sort=False)
    grew_c = (grouped["qc"].max() - grouped["qc"].min()).fillna(0).to_numpy() > 0
    grew_d = (grouped["qd"].max() - grouped["qd"].min()).fillna(0).to_numpy() > 0
    mean_i = grouped["i"].mean().fillna(0).to_numpy()
    threshold_a = rest_threshold_a(np.asarray(current, dtype="float64"))
    by_current = np.where(mean_i > threshold_a, "charge", np.where(mean_i < -threshold_a, "discharge", "rest"))
    kind = np.where(grew_c & ~grew_d, "charge", np.where(grew_d & ~grew_c, "discharge", "rest")).astype(object)
    kind[grew_c & grew_d] = by_current[grew_c & grew_d]
    if instruction is not None:
        names = pd.Series(instruction).astype(str).str.strip().str.lower().groupby(run).first().to_numpy()
        for i, name in enumerate(names):
            if any(word in name for word in _REST_INSTRUCTIONS):
                kind[i] = "rest"
            elif "dis" in name:
                kind[i] = "discharge"
            elif "charge" in name or "chg" in name:
                kind[i] = "charge"
    return kind[run - run[0]]


class PecCsvReader(CyclerReader):
    """PEC LifeTest CSV export; see the module docstring for every convention."""

    format_name = "pec_csv"
    extensions = (".csv",)
    priority = 30  # a specific column row, like arbin_csv/neware_csv: before canonical CSV (90)

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        if b"\x00" in head[:4096]:
            return False
        lines = head.decode("utf-8-sig", errors="replace").splitlines()
        if len(head) >= 64 * 1024:
            lines = lines[:-1]  # the last line may be cut
        first = next((line for line in lines if line.strip()), "")
        # a PEC export starts with its header block or directly with the column row
        if not (_HEADER_FIELD.match(first) or is_column_row(first)):
            return False
        return any(is_column_row(line) for line in lines)

    @classmethod
    def _lines(cls, path: Path) -> list[str]:
        try:
            raw = path.read_bytes()
        except FileNotFoundError as exc:
            raise SourceFormatError(path, "file not found") from exc
        except OSError as exc:
            raise SourceFormatError(path, f"cannot open file ({exc.strerror})") from exc
        if b"\x00" in raw[:65536]:
            raise SourceFormatError(path, "binary content (NUL bytes): not a PEC CSV export")
        return tame_overflowing_exponents(raw).decode("utf-8-sig", errors="replace").splitlines()

    @classmethod
    def describe(cls, paths: list[Path]) -> CellDefaults:
        path = Path(paths[0])
        try:
            with path.open("rb") as handle:
                lines = handle.read(64 * 1024).decode("utf-8-sig", errors="replace").splitlines()
        except OSError as exc:
            raise SourceFormatError(path, f"cannot open file ({exc.strerror})") from exc
        header = parse_header(lines[: _column_row(path, lines)])
        described = [f"PEC LifeTest CSV export {path.name}"]
        for key in ("Test", "TestRegime Name", "TestRegime CellSize", "Product ID", "Start Time"):
            if header.get(key):
                described.append(f"{key}: {header[key]}")
        defaults = CellDefaults()
        chemistry = header.get("Chemistry", "")
        if chemistry and chemistry.upper() != "<NONE>":
            defaults.chemistry = chemistry
            defaults.origin["chemistry"] = from_file(f"PEC header 'Chemistry:,{chemistry}'")
        cell_size = _mah(header.get("TestRegime CellSize", ""))
        rate_base = None
        names = [n.strip() for n in header.get("Parameter names", "").split(",")]
        values = [v.strip() for v in header.get("Parameter values", "").split(",")]
        if "C-Rate (mAh)" in names and names.index("C-Rate (mAh)") < len(values):
            rate_base = _mah(values[names.index("C-Rate (mAh)")])
            if rate_base is not None:
                described.append(f"parameter C-Rate (mAh): {values[names.index('C-Rate (mAh)')]}")
        if cell_size and rate_base and abs(rate_base - cell_size) > 0.01 * cell_size:
            described.append("nominal capacity not taken: regime cell size and C-Rate parameter disagree")
        elif cell_size:
            defaults.nominal_capacity_ah = cell_size
            defaults.origin["nominal_capacity_ah"] = from_file(
                f"PEC header 'TestRegime CellSize:,{header['TestRegime CellSize']}'"
            )
        defaults.description = "; ".join(described)
        return defaults

    @classmethod
    def read_file(cls, path: Path) -> pd.DataFrame:
        path = Path(path)
        lines = cls._lines(path)
        row = _column_row(path, lines)
        names = _fields(lines[row])
        roles = roles_of(names)
        missing = [r for r in REQUIRED_ROLES if r not in roles]
        if missing:
            raise SourceFormatError(path, f"PEC column row lacks {missing} (columns: {', '.join(names)})")
        factors = {}
        for role, by_unit in _FACTORS.items():
            if role in roles:
                unit = _split(roles[role])[1]
                if unit not in by_unit:
                    raise SourceFormatError(
                        path, f"column {roles[role]!r}: unit {unit!r} not understood (expected one of {sorted(by_unit)})"
                    )
                factors[role] = by_unit[unit]
        body = "\n".join(lines[row + 1 :])
        if not body.strip():
            raise SourceFormatError(path, "no data rows after the PEC column row")
        try:
            # rows end with a comma (an unnamed last field): give every field a unique name
            unique = [name or f"_unnamed{i}" for i, name in enumerate(names)]
            table = pd.read_csv(io.StringIO(body), header=None, names=unique,
                                usecols=list(roles.values()), dtype=str, keep_default_na=False)
        except (ValueError, pd.errors.ParserError) as exc:
            raise SourceFormatError(path, f"cannot parse the PEC data rows as CSV ({exc})") from exc

        def number(role: str) -> np.ndarray:
            values = pd.to_numeric(table[roles[role]], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
            return values * factors.get(role, 1.0)

        current = number("current")
        charge_q, discharge_q = number("charge_capacity"), number("discharge_capacity")
        cycle_raw = number("cycle")
        # an unreadable cycle becomes -1: kept, and rejected visibly by the schema (ge=0)
        cycle = np.where(np.isfinite(cycle_raw), cycle_raw, -1).astype("int64")
        step_raw = number("step")
        step = np.where(np.isfinite(step_raw), step_raw, 0).astype("int64")
        kind = step_types(table[roles["instruction"]].to_numpy() if "instruction" in roles else None,
                          cycle, step, current, charge_q, discharge_q)
        capacity = np.full(len(table), np.nan)
        for direction, counter in (("charge", charge_q), ("discharge", discharge_q)):
            totals = cycle_totals_from_counter(counter, cycle)
            capacity[kind == direction] = totals[kind == direction]
        time_s = clock_seconds(table[roles["time"]])
        out = pd.DataFrame(
            {
                "cycle_number": cycle,
                "step_index": step,
                "step_type": kind,
                "time_s": time_s,
                "voltage_v": number("voltage"),
                "current_a": current,
                "temperature_c": number("temperature") if "temperature" in roles else np.nan,
                "capacity_ah": capacity,
                "source_file": path.name,
                "source_row": np.arange(len(table), dtype="int64"),
            }
        )
        if "resistance" in roles:
            resistance = number("resistance")
            out["internal_resistance_ohm"] = np.where(resistance != 0, resistance, np.nan)
        return out

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
