"""BioLogic EC-Lab / BT-Lab text export (.mpt), written from BioLogic's documented layout.

Layout: a header block (`EC-Lab ASCII FILE`, `Nb header lines : N`, settings of the technique,
`Battery capacity : ...`, `Electrode material : ...`, ...), whose N-th line is the tab-separated
column row (`mode, ox/red, ..., Ns, time/s, Ewe/V, <I>/mA, Q charge/discharge/mA.h, half cycle,
(Q-Qo)/mA.h, cycle number, ...`), then one sample per line, latin-1, decimal point or decimal comma
depending on the Windows locale of the exporting PC. Some exports omit the header block and start
with the column row (PyProBE's `Sample_data_biologic_no_header.mpt`). Detection is by content: the
`EC-Lab ASCII FILE` (or `BT-Lab ASCII FILE`) first line, or a first line that is a BioLogic column
row; the `.mpt` extension only breaks ties.

Conversion to the canonical frame (`science.schema`), checked on the zoo files:
  - current: `<I>/mA` (or `I/mA`, `I/A`, `I/uA`) -> A, sign kept. BioLogic's positive current is
    anodic (oxidation of the working electrode) and makes the cell voltage rise: in
    `gcpl.pr_182.1.mpt` `ox/red` = 1 on every active row with `<I>` > 0 and 0 on every row with
    `<I>` < 0, and Ewe rises 0.006 -> 1.13 V over the first positive half cycle and falls
    2.34 -> 0.004 V over the negative ones. Canonical "charge" is that direction (voltage rising).
    A file without a measured current column is refused: `control/V/mA` is the set point, not a
    measurement, and deriving a current would be a repair.
  - voltage_v: `Ewe/V` (the potential the technique controls and ends its steps on: the
    discharges of gcpl.pr_182.1 stop at Ewe = 4 mV), else `<Ewe>/V`, `Ecell/V`, `Ewe-Ece/V`.
  - step_type: `mode` 3 (OCV/rest) -> rest; other modes (1 galvanostatic, 2 potentiostatic) by the
    sign of the current, a zero current by `ox/red`. The 1 mA rest threshold of `base` is not used
    where `mode` exists: BioLogic cells are often coin cells cycled well below 1 mA (0.22 mA here).
  - step_index: a new step wherever `Ns` (sequence), `mode` or `half cycle` changes, counted
    from 0; `Ns` alone repeats in every loop of the technique.
  - cycle_number: EC-Lab's `cycle number` as exported (a float column, 0-based: cycle 0 is what
    precedes the first charge, a new cycle starts at each charge; in gcpl.pr_182.1 the first
    discharge is cycle 0, charges start cycles 1..4). Without that column, cycles are derived as
    for Arbin files without `Cycle_Index` (first charge and each charge after a discharge).
  - capacity_ah: EC-Lab's `Q charge/discharge/mA.h` is *signed* and restarts at 0 at every half
    cycle (a charge half cycle counts up from 0 to +Q, a discharge one down from 0 to -Q). The
    canonical meaning is "Ah moved in the sample's direction since its cycle began" (Arbin
    convention, as `base.capacity_from_current`), so the per-row increments of that counter (the
    counter itself on the first row of a half cycle) are summed per cycle and direction: positive
    increments into the charge total, negative ones into the discharge total; a charge row gets
    the charge total, a discharge row the discharge total, a rest row null. Without that column
    the cumulative `(Q-Qo)/mA.h` (signed, since the start) or the per-row `dq/mA.h` give the
    increments; with none of them the capacity is integrated from the current.
  - time_s = `time/s` as the file states it (seconds since the start of the EC-Lab experiment; a
    slice of a long test such as the header-less sample, which starts at 281 672 s, keeps its
    offset). Several files of one cell (linked techniques `<name>_01_OCV_C01.mpt`,
    `<name>_02_GCPL_C01.mpt`) are chained: a file whose time or cycle count restarts is shifted to
    continue the previous one.
  - temperature_c from a `Temperature/...` column (EC-Lab writes degC) if present, else null.
  - internal_resistance_ohm from `R/Ohm` (EC-Lab's resistance column of the same name) when non-zero.
  - metadata: `Battery capacity` (non-zero) and `Electrode material` (non-empty) are used with
    file provenance; a file stating neither gets neither (nothing is invented). `Mass of active
    material` goes into the description.
Rows are never dropped or repaired: an unparsable value becomes NaN and stays in its row.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pandas as pd

from battery_pipeline.science.readers.arbin_csv import cycles_from_charge_starts
from battery_pipeline.science.readers.base import (
    CellDefaults,
    CyclerReader,
    ReadResult,
    SourceFormatError,
    capacity_from_current,
    finalize_samples,
    from_file,
    rest_threshold_a,
    running_total,
    step_type_from_current,
    tame_overflowing_exponents,
)

_TITLE_LINES = ("EC-Lab ASCII FILE", "BT-Lab ASCII FILE")
_HEADER_COUNT = re.compile(r"^Nb header lines\s*:\s*(\d+)\s*$")
_HEADER_FIELD = re.compile(r"^\s*([^:]+?)\s*:\s*(.*?)\s*$")
# A BioLogic column row names the sequence bookkeeping columns next to time/s.
_COLUMN_ROW_MARKERS = ("time/s",)
_COLUMN_ROW_ANY_OF = ("mode", "ox/red", "Ns", "cycle number", "half cycle")
_VOLTAGE_COLUMNS = ("Ewe/V", "<Ewe>/V", "Ecell/V", "<Ecell>/V", "Ewe-Ece/V")
_CURRENT_NAME = re.compile(r"^<?I>?/(?P<unit>.+)$")
_CURRENT_UNITS = {"A": 1.0, "mA": 1e-3, "µA": 1e-6, "uA": 1e-6, "nA": 1e-9}
_VOLTAGE_UNITS = {"V": 1.0, "mV": 1e-3}
# Charge units EC-Lab offers for its Q columns; C -> Ah is /3600.
_CHARGE_UNITS = {"A.h": 1.0, "mA.h": 1e-3, "µA.h": 1e-6, "uA.h": 1e-6, "C": 1 / 3600, "mC": 1e-3 / 3600}
_CHARGE_COLUMNS = ("Q charge/discharge", "(Q-Qo)", "dq")  # in order of preference
_REST_MODE = 3
# EC-Lab technique names that can sit between the channel and the technique index in file names.
_LINKED_TECHNIQUE = re.compile(r"_\d{2}_[A-Za-z]+(?=_C\d+$|$)")


def _decode(raw: bytes) -> str:
    return raw.decode("latin-1")  # EC-Lab writes latin-1 (µ in column names); never fails


def _is_column_row(line: str) -> bool:
    names = line.rstrip("\r\n").split("\t")
    return all(m in names for m in _COLUMN_ROW_MARKERS) and any(m in names for m in _COLUMN_ROW_ANY_OF)


def _read_lines(path: Path, size: int | None = None) -> list[str]:
    try:
        with path.open("rb") as handle:
            raw = handle.read() if size is None else handle.read(size)
    except OSError as exc:
        raise SourceFormatError(path, f"cannot open file ({exc.strerror})") from exc
    return _decode(raw).splitlines()


def _column_row_index(path: Path, lines: list[str]) -> tuple[int, list[str]]:
    """(index of the column row, header lines before it); checks `Nb header lines`."""
    if not lines:
        raise SourceFormatError(path, "file is empty")
    if _is_column_row(lines[0]):
        return 0, []
    if lines[0].strip() not in _TITLE_LINES:
        raise SourceFormatError(path, "neither an EC-Lab header ('EC-Lab ASCII FILE') nor a BioLogic column row on line 1")
    match = _HEADER_COUNT.match(lines[1]) if len(lines) > 1 else None
    if not match:
        raise SourceFormatError(path, "line 2 is not 'Nb header lines : N'")
    count = int(match.group(1))
    actual = next((i + 1 for i, line in enumerate(lines) if _is_column_row(line)), None)
    where = f"the column row is line {actual}" if actual else "no column row found at all"
    if count < 3 or count > len(lines) or not _is_column_row(lines[count - 1]):
        raise SourceFormatError(
            path, f"damaged header: 'Nb header lines : {count}' but line {count} is not the column row ({where})"
        )
    return count - 1, lines[: count - 1]


def parse_header(header_lines: list[str]) -> dict[str, str]:
    """`Key : value` lines of the EC-Lab header (first occurrence wins)."""
    fields: dict[str, str] = {}
    for line in header_lines[2:]:
        match = _HEADER_FIELD.match(line)
        if match and match.group(1) not in fields:
            fields[match.group(1)] = match.group(2)
    return fields


def _quantity(text: str) -> tuple[float, str] | None:
    """'2.200 mA.h' / '2,200 mA.h' -> (2.2, 'mA.h'); None when no number."""
    match = re.match(r"^\s*(-?\d+(?:[.,]\d*)?(?:[eE][-+]?\d+)?)\s*(\S*)", text)
    if not match:
        return None
    return float(match.group(1).replace(",", ".")), match.group(2)


def _unit_factor(path: Path, column: str, unit: str, table: dict[str, float]) -> float:
    if unit not in table and unit[:1] and not unit[:1].isascii():
        # A µ mangled by a re-encoding tool ('ï¿½A' in the PyProBE sample): only micro sits there.
        unit = "µ" + re.sub(r"^[^\x00-\x7f]+", "", unit)
    if unit not in table:
        raise SourceFormatError(path, f"column {column!r}: unknown unit {unit!r} (expected one of {sorted(table)})")
    return table[unit]


def _split_unit(name: str) -> tuple[str, str]:
    base, _, unit = name.rpartition("/")
    return base, unit


class BiologicMptReader(CyclerReader):
    format_name = "biologic_mpt"
    extensions = (".mpt",)
    priority = 30

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        first_line = _decode(head[:4096]).split("\n", 1)[0].rstrip("\r")
        return first_line.strip() in _TITLE_LINES or _is_column_row(first_line)

    @classmethod
    def cell_key(cls, path: Path) -> str:
        # Linked techniques of one experiment are exported as <name>_NN_<TECH>_C<ch>.mpt; they are
        # one cell's test, the channel suffix still tells cells apart.
        return _LINKED_TECHNIQUE.sub("", path.stem)

    @classmethod
    def describe(cls, paths: list[Path]) -> CellDefaults:
        path = Path(paths[0])
        lines = _read_lines(path, 64 * 1024)
        _, header = _column_row_index(path, lines)
        if not header:
            return CellDefaults(description="BioLogic EC-Lab export without header block")
        fields = parse_header(header)
        technique = header[3].strip() if len(header) > 3 else ""
        described = [technique] if technique else []
        for key in ("Acquisition started on", "Run on channel", "Mass of active material", "Electrode surface area"):
            if fields.get(key):
                described.append(f"{key}: {fields[key]}")
        defaults = CellDefaults(description="; ".join(["BioLogic EC-Lab export", *described]))
        capacity = _quantity(fields.get("Battery capacity", ""))
        if capacity and capacity[0] > 0:
            factor = _CHARGE_UNITS.get(capacity[1])
            if factor is not None:
                defaults.nominal_capacity_ah = capacity[0] * factor
                defaults.origin["nominal_capacity_ah"] = from_file(
                    f"EC-Lab header 'Battery capacity : {fields['Battery capacity']}'"
                )
        material = fields.get("Electrode material", "").strip()
        if material:
            defaults.chemistry = material
            defaults.origin["chemistry"] = from_file(f"EC-Lab header 'Electrode material : {material}'")
        return defaults

    @classmethod
    def read(cls, paths: list[Path], cell_id: str) -> ReadResult:
        frames = [cls.read_file(Path(p)) for p in paths]
        return ReadResult(samples=_to_canonical(_chain(frames), cell_id), cell=cls.describe(paths))

    @classmethod
    def read_file(cls, path: Path) -> pd.DataFrame:
        """One file's samples in SI with BioLogic's own bookkeeping columns (mode, Ns, ...)."""
        lines = _read_lines(path)
        column_row, _ = _column_row_index(path, lines)
        names = lines[column_row].rstrip("\r\n").split("\t")
        data_lines = lines[column_row + 1 :]
        if not any(line.strip() for line in data_lines):
            raise SourceFormatError(path, "no data rows after the column row")
        first_data = next(line for line in data_lines if line.strip())
        decimal = "," if re.search(r"(^|\t)-?\d+,\d", first_data) else "."

        time_col = "time/s"
        voltage_col = next((c for c in _VOLTAGE_COLUMNS if c in names), None)
        current_col = next((c for c in names if _CURRENT_NAME.match(c)), None)
        if voltage_col is None:
            raise SourceFormatError(path, f"no voltage column (one of {list(_VOLTAGE_COLUMNS)})")
        if current_col is None:
            raise SourceFormatError(
                path, "no measured current column (<I>/mA or I/mA); control/V/mA is only the set point"
            )
        charge_col = next(
            (c for kind in _CHARGE_COLUMNS for c in names if _split_unit(c)[0] == kind), None
        )
        temperature_col = next((c for c in names if c.startswith("Temperature/")), None)
        resistance_col = "R/Ohm" if "R/Ohm" in names else None
        bookkeeping = [c for c in ("mode", "ox/red", "Ns", "half cycle", "cycle number") if c in names]
        wanted = [time_col, voltage_col, current_col, charge_col, temperature_col, resistance_col, *bookkeeping]
        wanted = list(dict.fromkeys(c for c in wanted if c))
        try:
            raw = pd.read_csv(
                io.BytesIO(tame_overflowing_exponents(path.read_bytes())),
                sep="\t",
                skiprows=column_row,
                header=0,
                usecols=wanted,
                encoding="latin-1",
                decimal=decimal,
                dtype=str,
                skip_blank_lines=True,
            )
        except (ValueError, pd.errors.ParserError) as exc:
            raise SourceFormatError(path, f"cannot parse as EC-Lab text export ({exc})") from exc

        def number(column: str) -> np.ndarray:
            values = raw[column].str.strip()
            if decimal == ",":
                values = values.str.replace(",", ".", regex=False)
            return pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64")

        out = pd.DataFrame(
            {
                "time_s": number(time_col),
                "voltage_v": number(voltage_col)
                * _unit_factor(path, voltage_col, _split_unit(voltage_col)[1], _VOLTAGE_UNITS),
                "current_a": number(current_col)
                * _unit_factor(path, current_col, _CURRENT_NAME.match(current_col).group("unit"), _CURRENT_UNITS),
            }
        )
        for column in bookkeeping:
            out[column] = number(column)
        if charge_col:
            kind, unit = _split_unit(charge_col)
            out["charge_kind"] = kind
            out["charge_ah"] = number(charge_col) * _unit_factor(path, charge_col, unit, _CHARGE_UNITS)
        if temperature_col:
            out["temperature_c"] = number(temperature_col)
        if resistance_col:
            resistance = number(resistance_col)
            out["internal_resistance_ohm"] = np.where(resistance != 0, resistance, np.nan)
        out["source_file"] = path.name
        out["source_row"] = np.arange(len(out), dtype="int64")
        return out


def _step_types(frame: pd.DataFrame) -> np.ndarray:
    current = frame["current_a"].to_numpy()
    if "mode" not in frame:
        return step_type_from_current(current, rest_threshold_a(current))
    mode = frame["mode"].to_numpy()
    out = np.where(current > 0, "charge", np.where(current < 0, "discharge", "rest")).astype(object)
    if "ox/red" in frame:
        oxred = frame["ox/red"].to_numpy()
        zero = current == 0
        out[zero & (oxred == 1)] = "charge"
        out[zero & (oxred == 0)] = "discharge"
    out[mode == _REST_MODE] = "rest"
    return out


def _charge_increments(frame: pd.DataFrame) -> np.ndarray | None:
    """Signed Ah moved during each row's interval, from the file's own charge counter."""
    if "charge_ah" not in frame:
        return None
    counter = frame["charge_ah"].to_numpy()
    kind = frame["charge_kind"].iloc[0] if len(frame) else ""
    if kind == "dq":
        return np.nan_to_num(counter)
    increments = np.diff(np.nan_to_num(counter), prepend=0.0)
    if kind == "Q charge/discharge":
        # The counter restarts at 0 with every half cycle: there the row's value is its increment.
        if "half cycle" in frame:
            half = frame["half cycle"].to_numpy()
            restart = np.concatenate([[True], half[1:] != half[:-1]])
        else:
            previous = np.concatenate([[0.0], np.nan_to_num(counter[:-1])])
            restart = (np.sign(counter) != np.sign(previous)) | (np.abs(counter) < np.abs(previous))
        increments[restart] = np.nan_to_num(counter[restart])
    return increments


def _capacity(frame: pd.DataFrame, step_type: np.ndarray, cycle: np.ndarray) -> np.ndarray:
    increments = _charge_increments(frame)
    if increments is None:
        current = frame["current_a"].to_numpy()
        return capacity_from_current(frame["time_s"].to_numpy(), current, cycle, rest_threshold_a(current))
    n = len(frame)
    new_block = np.ones(n, dtype=bool)
    new_block[1:] = cycle[1:] != cycle[:-1]
    if "_file" in frame:  # (several files)
        files = frame["_file"].to_numpy()
        new_block[1:] |= files[1:] != files[:-1]
    out = np.full(n, np.nan)
    for direction, booked in (("charge", np.maximum(increments, 0.0)), ("discharge", np.maximum(-increments, 0.0))):
        running = running_total(booked, new_block)
        rows = step_type == direction
        out[rows] = running[rows]
    return out


def _chain(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate one cell's files; shift a file whose time or cycle count restarts."""
    if len(frames) == 1:
        return frames[0]
    out, last_time, last_cycle = [], None, None
    for index, frame in enumerate(frames):
        frame = frame.copy()
        frame["_file"] = index
        times = frame["time_s"].dropna()
        if last_time is not None and len(times) and times.iloc[0] < last_time:
            frame["time_s"] = frame["time_s"] + last_time
        if "cycle number" in frame:
            cycles = frame["cycle number"].dropna()
            if last_cycle is not None and len(cycles) and cycles.iloc[0] < last_cycle:
                frame["cycle number"] = frame["cycle number"] + last_cycle + 1 - cycles.iloc[0]
            if frame["cycle number"].notna().any():
                last_cycle = frame["cycle number"].max()
        if frame["time_s"].notna().any():
            last_time = frame["time_s"].max()
        out.append(frame)
    return pd.concat(out, ignore_index=True) if len(out) > 1 else out[0]


def _to_canonical(raw: pd.DataFrame, cell_id: str) -> pd.DataFrame:
    step_type = _step_types(raw)
    if "cycle number" in raw and raw["cycle number"].notna().all():
        cycle = raw["cycle number"].to_numpy().astype("int64")
    elif "cycle number" in raw:
        # An unreadable cycle number becomes -1: kept, and rejected visibly by the schema (ge=0).
        cycle = np.where(np.isfinite(raw["cycle number"]), raw["cycle number"], -1).astype("int64")
    else:
        cycle = cycles_from_charge_starts(step_type)
    step_key = [raw[c].to_numpy() for c in ("_file", "Ns", "mode", "half cycle") if c in raw]
    step_key.append(step_type)
    changes = np.zeros(len(raw), dtype=bool)
    for key in step_key:
        changes[1:] |= key[1:] != key[:-1]
    columns = {
        "time_s": raw["time_s"].to_numpy(),
        "voltage_v": raw["voltage_v"].to_numpy(),
        "current_a": raw["current_a"].to_numpy(),
        "cycle_number": cycle,
        "step_index": np.cumsum(changes).astype("int64"),
        "step_type": step_type,
        "capacity_ah": _capacity(raw, step_type, cycle),
        "source_file": raw["source_file"].to_numpy(),
        "source_row": raw["source_row"].to_numpy(),
    }
    for optional in ("temperature_c", "internal_resistance_ohm"):
        if optional in raw:
            columns[optional] = raw[optional].to_numpy()
    return finalize_samples(columns, cell_id)
