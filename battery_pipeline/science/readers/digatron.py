"""Digatron (Firing Circuits UBT) CSV export, e.g. the LG 18650HG2 set of Kollmeyer et al. (2020).

Layout (found by content, never by line number): blank lines, `key,value` test metadata
(`Measurement ID`, `Battery Name`, `Nominal Capacity`, `Maximum Voltage`, `Producer`, ...), a
line holding only a NUL byte, the column line `Time Stamp,Step,Status,Prog Time,Step Time,Cycle,
Cycle Level,Procedure,Voltage,Current,Temperature,Capacity,WhAccu,Cnt,` (trailing comma), a units
line `,,,,,,,,[V],[A],[C],[Ah],[Wh],[Cnt],`, then data. Lines end in CRLF.

Conversion to the canonical frame (`science.schema`):
  - units from the units line: [V]/[mV], [A]/[mA], [Ah]/[mAh], [C]/[degC]/[K]; a column without
    a unit is taken as SI; an unknown unit is a SourceFormatError (never a silent guess).
  - current: Digatron's `Current` is already signed (DCH rows < 0, CHA rows > 0 in every LG
    file), matching the canonical +charge convention: kept as is.
  - step_type from `Status`: CHA charge, DCH discharge, PAU (pause) and STO (stop record) rest;
    TABLE (a drive-cycle current profile, charge and regen mixed) and any other status from the
    sign of the current.
  - time_s from `Prog Time` (h:mm:ss.fff, hours beyond 24, e.g. 105:12:13.5), i.e. the clock of
    the cycler *program*. An LG file is one section of a longer program (549_C20DisCh starts at
    Prog Time 29:20:19), so time is made relative to the file's first sample. When several files
    form one test, later files continue on the same program clock (restarts are shifted).
  - step_index = `Step` (program line; 9999 is the end-of-program line).
  - cycle_number: Digatron's `Cycle` is a *loop* counter of the program (0 outside loops, 1
    inside the drive-cycle loop, back to 0 after it), not a charge/discharge cycle, so it is not
    used. Instead (Arbin convention) a new cycle begins where a charge (CHA) starts after a
    discharge (DCH or TABLE) - or, when the file holds several separate charges (549_Charge.csv
    holds four), after the cycler's Ah counter was reset since the previous charge. The first
    cycle is 0.
  - capacity_ah: `Capacity` is the cycler's *signed, cumulative* Ah counter (it runs from 0 to
    -2.78 Ah over a C/20 discharge and back up to +0.19 Ah over the following charge; it does not
    restart per step, is reset at some pauses, and sometimes carries over from the previous
    section: 549_Dis_0p5C starts at +0.165 Ah while discharging). The reader differences it,
    treats a jump larger than |I|*dt allows as a counter reset (the increment is then the new
    counter value), estimates the charge moved before the first sample as
    `Current * Step Time` (the first sample is logged 60 s into a constant-current step), and
    sums charge and discharge increments separately within each cycle. Result: Ah moved in the
    sample's direction since its cycle began (>= 0); null for rest samples.
  - temperature_c = `Temperature` (cell case sensor); internal_resistance_ohm null.
  - rows are never dropped: the duplicated last row of many files, and the STO record with
    0.000 V at the end of some charge files, are kept for validation to judge.

Cell key: each file is its own test; the key is `<dataset folder>_<temperature folder>_<stem>`
(e.g. `lg_hg2_25degC_549_C20DisCh`) when the file sits in a temperature folder such as `25degC`
or `n10degC`, else the file stem.

Licence of the LG set: CC BY 4.0 (Mendeley Data). The `LICENSE` file inside `lg_hg2/` is an MIT
licence of a 2021 GitHub repackaging (Raghuram Shankar), not the data licence. Neither it nor the
`Readme file - ...txt` is claimed by this reader (no Digatron column line).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from battery_pipeline.science.readers.base import (
    CellDefaults,
    CyclerReader,
    folder_temperature_c,
    ReadResult,
    SourceFormatError,
    finalize_samples,
    from_dataset_rule,
    from_file,
    rest_threshold_a,
    step_type_from_current,
    tame_overflowing_exponents,
)

_HEAD_BYTES = 64 * 1024
_COLUMN_MARKERS = ("Status", "Prog Time", "Voltage", "Current")
_NEEDED = ("Step", "Status", "Prog Time", "Step Time", "Voltage", "Current", "Temperature", "Capacity")
_REQUIRED = ("Prog Time", "Voltage", "Current")
_NUMERIC = ("Step", "Voltage", "Current", "Temperature", "Capacity")

# unit -> (scale, offset) to SI (V, A, Ah, degC)
_UNITS = {
    "Voltage": {"V": (1.0, 0.0), "mV": (1e-3, 0.0)},
    "Current": {"A": (1.0, 0.0), "mA": (1e-3, 0.0)},
    "Capacity": {"Ah": (1.0, 0.0), "mAh": (1e-3, 0.0)},
    "Temperature": {"C": (1.0, 0.0), "°C": (1.0, 0.0), "degC": (1.0, 0.0), "K": (1.0, -273.15)},
}
_TEMPERATURE_FOLDER = re.compile(r"^(n|m|minus|-)?\d+(\.\d+)?_?deg_?C$", re.IGNORECASE)

# A jump of the Ah counter beyond what the current can explain is a counter reset.
_RESET_SLACK = 1.5
_RESET_MARGIN_AH = 0.005

_LG_HG2 = dict(
    dataset="LG 18650HG2, Kollmeyer et al. 2020 (McMaster University)",
    chemistry="NMC",
    nominal_capacity_ah=3.0,
    voltage_min_v=2.5,  # datasheet discharge cut-off (the tests stop at 2.8 V)
    voltage_max_v=4.2,
    max_abs_current_a=20.0,  # datasheet max continuous discharge (drive cycles reach -13 A)
    licence="CC BY 4.0",
    citation=(
        "Kollmeyer P., Vidal C., Naguib M., Skells M. (2020) LG 18650HG2 Li-ion Battery Data "
        "and Example Deep Neural Network xEV SOC Estimator Script, Mendeley Data, V3, "
        "doi:10.17632/cp3473x7xv.3"
    ),
)


def _decode(raw: bytes) -> str:
    return raw.decode("latin-1")


class _Layout:
    """Where the parts of one Digatron file are."""

    def __init__(self, metadata: dict[str, str], names: list[str], units: dict[str, str], data_offset: int):
        self.metadata = metadata
        self.names = names
        self.units = units
        self.data_offset = data_offset


def _find_column_line(lines: list[bytes]) -> int | None:
    for index, line in enumerate(lines):
        if b"Prog Time" not in line:
            continue
        names = [n.strip() for n in _decode(line).split(",")]
        if all(marker in names for marker in _COLUMN_MARKERS):
            return index
    return None


def _layout(path: Path, head: bytes) -> _Layout:
    lines = head.split(b"\n")
    column_line = _find_column_line(lines[:-1] if len(head) == _HEAD_BYTES else lines)
    if column_line is None:
        raise SourceFormatError(path, "no Digatron column line (Time Stamp, Step, Status, Prog Time, ...)")
    names = [n.strip() for n in _decode(lines[column_line]).rstrip("\r").split(",")]
    names = [n if n else f"_unnamed_{i}" for i, n in enumerate(names)]
    # A name given twice (a damaged or hand-edited column line) would stop both CSV parsers;
    # later copies get a suffix, so the first column of a name is the one read.
    names = [n if n not in names[:i] else f"{n}_{i}" for i, n in enumerate(names)]
    metadata: dict[str, str] = {}
    for line in lines[:column_line]:
        text = _decode(line).replace("\x00", "").strip()
        if "," in text:
            key, value = text.split(",", 1)
            if key.strip() and key.strip() not in metadata:
                metadata[key.strip()] = value.strip()
    offset = sum(len(line) + 1 for line in lines[: column_line + 1])
    units: dict[str, str] = {}
    if column_line + 1 < len(lines):
        unit_line = _decode(lines[column_line + 1]).rstrip("\r")
        tokens = [t.strip() for t in unit_line.split(",")]
        if any(t.startswith("[") for t in tokens):
            for name, token in zip(names, tokens):
                if token:
                    units[name] = token.strip("[]").strip()
            offset += len(lines[column_line + 1]) + 1
    return _Layout(metadata, names, units, offset)


def _hms_seconds(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """'h:mm:ss.fff' (hours may exceed 24) -> seconds, vectorized; NaN where unreadable."""
    values = pc.utf8_trim_whitespace(values)
    parts = pc.split_pattern(values, ":")
    lengths = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
    n = len(values)
    if n and np.all(lengths == 3):
        try:
            flat = pc.cast(pc.list_flatten(parts), pa.float64()).to_numpy(zero_copy_only=False)
            hms = flat.reshape(-1, 3)
            return hms[:, 0] * 3600.0 + hms[:, 1] * 60.0 + hms[:, 2]
        except (pa.ArrowInvalid, ValueError):
            pass
    # Slow path (a damaged value somewhere): per value, NaN where unreadable.
    out = np.full(n, np.nan)
    for i, text in enumerate(values.to_pylist()):
        if not text:
            continue
        fields = text.split(":")
        try:
            seconds = 0.0
            for field in fields:
                seconds = seconds * 60.0 + float(field)
            out[i] = seconds if len(fields) in (2, 3) else np.nan
        except ValueError:
            pass
    return out


def _read_columns(path: Path, layout: _Layout, data: bytes) -> dict[str, np.ndarray | pa.Array]:
    wanted = [c for c in _NEEDED if c in layout.names]
    body = data[layout.data_offset :]
    try:  # fast path: multithreaded Arrow parser with fixed types
        table = pacsv.read_csv(
            pa.BufferReader(body),
            read_options=pacsv.ReadOptions(column_names=layout.names),
            convert_options=pacsv.ConvertOptions(
                include_columns=wanted,
                column_types={
                    **{c: pa.float64() for c in _NUMERIC if c in wanted},
                    **{c: pa.string() for c in ("Status", "Prog Time", "Step Time") if c in wanted},
                },
                strings_can_be_null=True,
            ),
        )
        columns = {name: table.column(name) for name in wanted}
        for name in _NUMERIC:
            if name in columns:
                columns[name] = columns[name].to_numpy()  # nulls -> NaN
        return columns
    except pa.ArrowInvalid:
        pass  # a short (truncated) row or text in a numeric column: lenient parser below
    try:
        # No `usecols`: with it pandas refuses a file whose first data row is cut short (a
        # file truncated in its first row); without it the missing fields are NaN, as in the
        # truncated last row of any longer file.
        frame = pd.read_csv(
            io.BytesIO(tame_overflowing_exponents(body)),
            header=None,
            names=layout.names,
            dtype={c: str for c in ("Status", "Prog Time", "Step Time") if c in wanted},
            encoding="latin-1",
            skip_blank_lines=True,
            low_memory=False,
        )[wanted]
    except ValueError as exc:  # pandas' ParserError is a ValueError: an unclosed quote, ...
        raise SourceFormatError(path, f"data rows cannot be parsed as CSV ({str(exc).strip()})") from exc
    columns = {}
    for name in wanted:
        if name in _NUMERIC:
            columns[name] = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype="float64")
        else:
            columns[name] = pa.array(frame[name].to_numpy(dtype=object), type=pa.string(), from_pandas=True)
    return columns


def _scale(path: Path, layout: _Layout, name: str, values: np.ndarray) -> np.ndarray:
    unit = layout.units.get(name)
    if not unit:
        return values
    known = _UNITS.get(name, {})
    if unit not in known:
        raise SourceFormatError(path, f"unsupported unit [{unit}] for column {name!r} (known: {sorted(known)})")
    scale, offset = known[unit]
    return values * scale + offset if (scale, offset) != (1.0, 0.0) else values


def _read_file(path: Path) -> dict[str, np.ndarray]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SourceFormatError(path, f"cannot open file ({exc.strerror})") from exc
    if not data.strip():
        raise SourceFormatError(path, "file is empty")
    layout = _layout(path, data[:_HEAD_BYTES])
    missing = [c for c in _REQUIRED if c not in layout.names]
    if missing:
        raise SourceFormatError(path, f"missing Digatron columns {missing}")
    columns = _read_columns(path, layout, data)
    n = len(columns["Prog Time"])
    if n == 0:
        raise SourceFormatError(path, "no data rows")

    def numeric(name: str) -> np.ndarray:
        if name not in columns:
            return np.full(n, np.nan)
        return _scale(path, layout, name, np.asarray(columns[name], dtype="float64"))

    def text(name: str) -> np.ndarray:
        if name not in columns:
            return np.full(n, "", dtype=object)
        values = pc.fill_null(pc.utf8_upper(pc.utf8_trim_whitespace(columns[name])), "")
        return values.to_numpy(zero_copy_only=False).astype(object)

    step_time = _hms_seconds(columns["Step Time"]) if "Step Time" in columns else np.full(n, np.nan)
    return {
        "prog_s": _hms_seconds(columns["Prog Time"]),
        "step_s": step_time,
        "step": numeric("Step"),
        "status": text("Status"),
        "voltage": numeric("Voltage"),
        "current": numeric("Current"),
        "temperature": numeric("Temperature"),
        "counter_ah": numeric("Capacity"),
        "source_row": np.arange(n, dtype="int64"),
        "source_file": np.full(n, path.name, dtype=object),
        "file_start": np.eye(1, n, dtype=bool)[0],
    }


def _cycles(status: np.ndarray, step_type: np.ndarray, reset: np.ndarray) -> np.ndarray:
    """Cycle number: +1 at a charge that follows a discharge (or a counter reset after a charge)."""
    n = len(status)
    if n == 0:
        return np.zeros(0, dtype="int64")
    index = np.arange(n)
    is_charge = status == "CHA"
    starts = is_charge.copy()
    starts[1:] &= ~is_charge[:-1]
    discharged = np.cumsum((step_type == "discharge") | (status == "TABLE"))
    resets = np.cumsum(reset)
    last_charge = np.maximum.accumulate(np.where(is_charge, index, -1))
    before = np.concatenate([[-1], last_charge[:-1]])  # last charge row strictly before i
    j = np.maximum(before, 0)
    new_cycle = starts & np.where(
        before < 0,
        discharged > 0,
        ((discharged - discharged[j]) > 0) | ((resets - resets[j]) > 0),
    )
    return np.cumsum(new_cycle).astype("int64")


def _counter_increments(raw: dict[str, np.ndarray], time_s: np.ndarray):
    """Ah moved per sample from the signed cumulative counter; (increments, reset flags)."""
    q = raw["counter_ah"]
    current = raw["current"]
    n = len(q)
    dq = np.zeros(n)
    reset = np.zeros(n, dtype=bool)
    if n == 0:
        return dq, reset
    dq[1:] = np.diff(q)
    dt = np.zeros(n)
    dt[1:] = np.diff(time_s)
    abs_i = np.abs(np.nan_to_num(current))
    bound = np.zeros(n)
    bound[1:] = np.maximum(abs_i[1:], abs_i[:-1]) * np.abs(np.nan_to_num(dt[1:])) / 3600.0
    bound = bound * _RESET_SLACK + _RESET_MARGIN_AH
    reset = np.isfinite(dq) & (np.abs(dq) > bound)
    dq[reset] = q[reset]
    # First sample of each file: charge moved since its step began, at the logged current.
    first = raw["file_start"]
    estimate = np.nan_to_num(current * raw["step_s"] / 3600.0)
    dq[first] = estimate[first]
    reset[first] = False
    return np.nan_to_num(dq), reset


def _per_cycle_cumsum(increments: np.ndarray, cycle: np.ndarray) -> np.ndarray:
    running = np.cumsum(increments)
    n = len(cycle)
    new_cycle = np.ones(n, dtype=bool)
    new_cycle[1:] = cycle[1:] != cycle[:-1]
    start = np.maximum.accumulate(np.where(new_cycle, np.arange(n), 0))
    return running - (running[start] - increments[start])


def _chain(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One test from several files: keep the program clock, shift a file whose clock restarts."""
    last_end = None
    for part in parts:
        prog = part["prog_s"]
        if last_end is not None and np.isfinite(prog).any() and np.nanmin(prog) < last_end:
            part["prog_s"] = prog - np.nanmin(prog) + last_end
        if np.isfinite(part["prog_s"]).any():
            last_end = np.nanmax(part["prog_s"])
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def to_canonical(raw: dict[str, np.ndarray], cell_id: str) -> pd.DataFrame:
    prog = raw["prog_s"]
    finite = np.isfinite(prog)
    start = prog[finite][0] if finite.any() else 0.0
    time_s = prog - start

    status = raw["status"]
    current = raw["current"]
    step_type = step_type_from_current(current, rest_threshold_a(current))
    step_type[status == "CHA"] = "charge"
    step_type[status == "DCH"] = "discharge"
    step_type[(status == "PAU") | (status == "STO")] = "rest"

    increments, reset = _counter_increments(raw, time_s)
    cycle = _cycles(status, step_type, reset)
    charged = _per_cycle_cumsum(np.maximum(increments, 0.0), cycle)
    discharged = _per_cycle_cumsum(np.maximum(-increments, 0.0), cycle)
    capacity = np.where(step_type == "charge", charged, np.where(step_type == "discharge", discharged, np.nan))

    step = raw["step"]
    frame = pd.DataFrame(
        {
            "time_s": time_s,
            "voltage_v": raw["voltage"],
            "current_a": current,
            "cycle_number": cycle,
            # An unreadable step number becomes -1, which validation rejects (schema ge=0).
            "step_index": np.where(np.isfinite(step), step, -1).astype("int64"),
            "step_type": step_type,
            "temperature_c": raw["temperature"],
            "capacity_ah": capacity,
            "source_file": raw["source_file"],
            "source_row": raw["source_row"],
        }
    )
    return finalize_samples(frame, cell_id)


def _metadata(path: Path) -> dict[str, str]:
    try:
        with path.open("rb") as handle:
            head = handle.read(_HEAD_BYTES)
    except OSError as exc:
        raise SourceFormatError(path, f"cannot open file ({exc.strerror})") from exc
    return _layout(path, head).metadata


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and value > 0 else None


class DigatronCsvReader(CyclerReader):
    format_name = "digatron_csv"
    extensions = (".csv",)
    priority = 30

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        lines = head.split(b"\n")
        if len(head) >= _HEAD_BYTES:
            lines = lines[:-1]  # possibly cut
        return _find_column_line(lines) is not None

    @classmethod
    def cell_key(cls, path: Path) -> str:
        parent = path.parent
        if _TEMPERATURE_FOLDER.match(parent.name):
            dataset = parent.parent.name
            return f"{dataset}_{parent.name}_{path.stem}" if dataset else f"{parent.name}_{path.stem}"
        return path.stem

    @classmethod
    def describe(cls, paths: list[Path]) -> CellDefaults:
        meta = _metadata(Path(paths[0]))
        battery = meta.get("Battery Name", "")
        parts = [
            f"Digatron test {meta.get('Measurement ID', '?')}",
            f"section {meta.get('Test section', '?')}",
            f"program {meta.get('Program', '?')}",
            f"battery {battery or '?'}",
            f"started {meta.get('Start Time', '?')}",
        ]
        if meta.get("Comment"):
            parts.append(meta["Comment"])
        description = "; ".join(parts)
        nominal = _number(meta.get("Nominal Capacity"))
        v_max = _number(meta.get("Maximum Voltage"))
        stated = {}
        if nominal:
            stated["nominal_capacity_ah"] = from_file(f"Digatron header 'Nominal Capacity' {nominal:g} Ah")
        # The LG set's README: each temperature folder's tests ran in a chamber at that temperature
        # (a set point, not a measurement: the thermal layer checks it against the cell's readings)
        in_lg_set = "LG" in meta.get("Producer", "").upper() and "LG_HG2" in meta.get("Program", "").upper()
        set_point, folder = folder_temperature_c(Path(paths[0]))
        if set_point is not None and ("HG2" in battery.upper() or in_lg_set):
            stated["ambient_temperature"] = from_dataset_rule(
                "LG 18650HG2 set README (chamber at the folder's temperature)", f"folder {folder!r}")
        else:
            set_point = None
        if "HG2" in battery.upper():
            defaults = dict(_LG_HG2)
            defaults["ambient_temperature_c"] = set_point
            defaults["nominal_capacity_ah"] = nominal or defaults["nominal_capacity_ah"]
            defaults["voltage_max_v"] = v_max or defaults["voltage_max_v"]
            rule = from_dataset_rule(
                "LG 18650HG2 datasheet (NMC, 3.0 Ah, 2.5-4.2 V)",
                f"battery name {battery!r} in the Digatron header + Digatron CSV layout",
            )
            origin = {"chemistry": rule, "nominal_capacity_ah": rule, "voltage_window": rule, **stated}
            return CellDefaults(description=description, origin=origin, **defaults)
        # Not an HG2 (the 10 degC tests 575_* name an "LG ICR18650MG1" with 2.9 Ah): only what
        # the file states; the set's licence and citation still apply when it is in the LG set.
        return CellDefaults(
            dataset=_LG_HG2["dataset"] if in_lg_set else None,
            chemistry=None,
            nominal_capacity_ah=nominal,
            voltage_min_v=None,
            voltage_max_v=v_max,
            max_abs_current_a=None,
            licence=_LG_HG2["licence"] if in_lg_set else None,
            citation=_LG_HG2["citation"] if in_lg_set else None,
            description=description,
            ambient_temperature_c=set_point,
            origin=stated,
        )

    @classmethod
    def read(cls, paths: list[Path], cell_id: str) -> ReadResult:
        parts = [_read_file(Path(p)) for p in paths]
        raw = parts[0] if len(parts) == 1 else _chain(parts)
        return ReadResult(samples=to_canonical(raw, cell_id))
