"""Panasonic 18650PF data (Kollmeyer, UW-Madison, 2018): one MATLAB 5 .mat file per test.

Every file holds one 1x1 struct `meas` with column vectors `TimeStamp` (cell array of
'M/D/YYYY h:mm:ss AM' strings), `Voltage`, `Current`, `Ah`, `Wh`, `Power`,
`Battery_Temp_degC`, `Time`, `Chamber_Temp_degC`. All files of the 25 degC set are MATLAB 5
("-v7", zlib-compressed) files; MATLAB v7.3 (HDF5) files are refused with a clear
SourceFormatError. All-zero columns are stored as uint8 (e.g. `Current` of pause files) and are
converted to float.

Canonical conventions this reader produces (see `science.schema`):
  - One file = one test (`cell_key` = file stem), as the data set publishes them; files are
    ordered by the date/time their names start with.
  - Units are already V, A, degC, Ah, s. Sign: discharge current is negative in the file
    (1C discharges at -2.9 A, charges at +2.9 A, drive cycles negative with positive regen
    pulses), which is the canonical convention, so current is taken unchanged.
  - `temperature_c` = `Battery_Temp_degC` (thermocouple on the cell case), not the chamber.
  - `time_s` = `Time` (s, 0 at the file's first sample, non-decreasing; 0.1 s steps in drive
    cycles, 1 s in HPPC, 10-60 s in charges/discharges/pauses), plus the wall-clock length of
    any pause that `Time` skips. Trap: the tester's `Time` stops while a test is paused, but
    `TimeStamp` does not: in "25degC_Cycle_1" `Time` spans 3.05 h while the stamps span 22.5 h
    (pauses of 16.4 h and 3.05 h at 0 A), and "3406_Charge1" holds a 17-min charge before that
    drive cycle and the rest of the charge after it (Time jumps by 5.0 h, the stamps by
    24.5 h; the file names' start times confirm the stamps). Wherever
    (stamp elapsed - Time) grows by more than `PAUSE_MIN_S` between two samples, that growth is
    added to every later sample, so time_s is real elapsed time at Time's 0.1 s resolution.
    Elsewhere stamps and Time agree within 11 s over up to two days (1 s stamp resolution and
    clock drift), far below the threshold. Without parseable stamps, time_s = Time.
  - `cycle_number` starts at 0 for the file and increments wherever the file's `Ah` counter
    moves in a way the logged current cannot explain, i.e. outside
    [min(I[k-1], I[k], 0), max(I[k-1], I[k], 0)] * dt (+2 %, +-`AH_TOLERANCE_AH`). That happens
    when the counter was reset (the README: reset "before each charge, test, or drive cycle")
    or when charge moved while nothing was logged: the 10 repeated 1C discharges of
    `*_Dis1C_Rp.mat` (the charges in between are in `*_ChargeRp.mat`, so the counter jumps
    from ~0 to +2.29 Ah at each discharge start) give cycles 0..9, the 10 charges of
    `*_ChargeRp.mat` likewise, the HPPC file's pulse sets (the discharges between them were not
    logged) give one cycle per SOC level, and the sparse `*_TS*.mat` logs get one cycle per
    sample whose counter jumped. Drive cycles, single charges/discharges, pauses and the C/20
    test are one cycle (0).
  - `capacity_ah` comes from the file's own `Ah` counter, not from integrating the logged
    current: the tester integrates internally at a high rate, while trapezoids over the logged
    10-60 s samples miss 0.024 Ah (about 1 %) at every current step of a charge file, and the
    counter also covers current between logged samples. Each counter increment between two
    samples of the same cycle is booked by its sign (positive = charge, negative = discharge);
    a sample shows its direction's running total since its cycle began (>= 0; Arbin
    Charge_/Discharge_Capacity convention); rest samples are null. In drive cycles the
    discharge total is the discharge throughput (e.g. Cycle_1: 3.55 Ah discharged, 0.85 Ah
    regen, net -2.70 Ah = the counter), which matches trapezoidal integration within 0.1 %.
  - `step_type` from the current (1 mA threshold; rests read exactly 0 A), `step_index` new at
    every step_type change and every cycle start.
  - `source_file` = file name, `source_row` = 0-based index of the sample in the file.
Values are never repaired or dropped. The tester writes an extra record with the same `Time`
at many step ends (1-153 per file, sometimes with different V/I); validation quarantines them as
duplicates. The `*_TS*.mat` files log 0 A while their Ah counter moves
by up to 2.76 Ah (snapshots of a test logged elsewhere) and are kept as they are.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from battery_pipeline.science.readers._matfile import (
    as_float_vector,
    load_mat,
    peek_mat5,
)
from battery_pipeline.science.readers.base import (
    CellDefaults,
    CyclerReader,
    folder_temperature_c,
    ReadResult,
    SourceFormatError,
    finalize_samples,
    from_dataset_rule,
    step_type_from_current,
)

DATASET = "Panasonic 18650PF Li-ion Battery Data"
LICENCE = "CC BY 4.0"
CITATION = (
    'Kollmeyer, P. (2018) "Panasonic 18650PF Li-ion Battery Data", Mendeley Data, V1, '
    "doi:10.17632/wykht8y7tg.1"
)
NOMINAL_CAPACITY_AH = 2.9
VOLTAGE_MIN_V = 2.5  # discharge end (drive cycles stop when the voltage first hits 2.5 V)
VOLTAGE_MAX_V = 4.2  # CC-CV charge to 4.2 V; regen pulses near full charge reach 4.24 V
MAX_ABS_CURRENT_A = 25.0  # the Digatron channel's rating; US06 peaks are measured at -20.8 A

PAUSE_MIN_S = 60.0  # (stamp elapsed - Time) growth that marks a pause Time did not count
# Counter moves beyond the logged current by less than this are noise. Over all 60 files of the
# 25 degC set, kept intervals exceed the current bound by <= 0.0016 Ah, breaks by >= 0.028 Ah.
AH_TOLERANCE_AH = 0.005
AH_RELATIVE_TOLERANCE = 0.02

_FIELDS = ("Voltage", "Current", "Ah", "Battery_Temp_degC", "Time")
_NAME_START = re.compile(r"^(\d{1,2})-(\d{1,2})-(\d{2})_(\d{1,2})\.(\d{2})\s*(.*)$")


def _descriptor(stem: str) -> str:
    match = _NAME_START.match(stem)
    return match.group(6) if match else stem


def _find_meas(mat: dict, path: Path):
    """The `meas` struct (or the first struct holding the Panasonic fields)."""
    keys = [k for k in mat if not k.startswith("__")]
    ordered = (["meas"] if "meas" in keys else []) + [k for k in keys if k != "meas"]
    for key in ordered:
        value = mat[key]
        names = getattr(getattr(value, "dtype", None), "names", None) or ()
        if isinstance(value, np.ndarray) and value.size >= 1 and set(_FIELDS) <= set(names):
            return value.ravel()[0]
    raise SourceFormatError(
        path,
        f"no Panasonic 'meas' struct with fields {list(_FIELDS)} "
        f"(variables in file: {', '.join(keys) or 'none'})",
    )


def _stamp_seconds(stamps) -> np.ndarray | None:
    """Seconds since 1970 of each `TimeStamp` string; None if any cannot be parsed."""
    flat = np.asarray(stamps, dtype=object).ravel()
    text = np.array(
        ["".join(np.asarray(s).ravel().astype(str)) if np.size(s) else "" for s in flat],
        dtype=object,
    )
    unique, inverse = np.unique(text, return_inverse=True)
    parsed = pd.to_datetime(pd.Series(unique), format="%m/%d/%Y %I:%M:%S %p", errors="coerce")
    # MATLAB's datestr drops the time of day at exact midnight ('3/19/2017').
    missing = parsed.isna()
    if missing.any():
        parsed[missing] = pd.to_datetime(
            pd.Series(unique[missing.to_numpy()]), format="%m/%d/%Y", errors="coerce"
        ).to_numpy()
    if parsed.isna().any():
        return None
    seconds = (parsed - pd.Timestamp("1970-01-01")).dt.total_seconds().to_numpy()
    return seconds[inverse]


def _pause_corrected_time(time_raw: np.ndarray, stamp_s: np.ndarray | None) -> np.ndarray:
    if stamp_s is None or len(time_raw) < 2:
        return time_raw.copy()
    offset = (stamp_s - stamp_s[0]) - time_raw
    growth = np.diff(offset)
    added = np.where(growth > PAUSE_MIN_S, growth, 0.0)
    return time_raw + np.concatenate([[0.0], np.cumsum(added)])


def _counter_breaks(time_raw, current, ah) -> np.ndarray:
    """True at sample k when the Ah counter moved between k-1 and k beyond the logged current."""
    n = len(ah)
    breaks = np.zeros(n, dtype=bool)
    if n < 2:
        return breaks
    dt_h = np.clip(np.diff(time_raw), 0.0, None) / 3600.0
    pair_min = np.minimum(np.minimum(current[1:], current[:-1]), 0.0)
    pair_max = np.maximum(np.maximum(current[1:], current[:-1]), 0.0)
    lo = pair_min * dt_h * (1 + AH_RELATIVE_TOLERANCE) - AH_TOLERANCE_AH
    hi = pair_max * dt_h * (1 + AH_RELATIVE_TOLERANCE) + AH_TOLERANCE_AH
    d_ah = np.diff(ah)
    with np.errstate(invalid="ignore"):
        breaks[1:] = (d_ah < lo) | (d_ah > hi)
    return breaks


def _capacity_from_counter(ah, step_type, cycle_number, breaks) -> np.ndarray:
    """Per cycle and direction, the running sum of the counter's increments (see module doc)."""
    n = len(ah)
    out = np.full(n, np.nan)
    if n == 0:
        return out
    d_ah = np.concatenate([[0.0], np.diff(ah)])
    d_ah[breaks] = 0.0
    d_ah = np.nan_to_num(d_ah)
    new_cycle = np.ones(n, dtype=bool)
    new_cycle[1:] = cycle_number[1:] != cycle_number[:-1]
    cycle_start_idx = np.maximum.accumulate(np.where(new_cycle, np.arange(n), 0))
    for direction, contribution in (
        ("charge", np.clip(d_ah, 0.0, None)),
        ("discharge", np.clip(-d_ah, 0.0, None)),
    ):
        mask = step_type == direction
        running = np.cumsum(contribution)
        before_cycle = running[cycle_start_idx] - contribution[cycle_start_idx]
        out[mask] = (running - before_cycle)[mask]
    return out


class Panasonic18650PFMatReader(CyclerReader):
    """Panasonic 18650PF `meas` .mat files (see the module docstring for every convention)."""

    format_name = "panasonic_18650pf_mat"
    logs_step_end = False  # steps derived from the current between samples
    extensions = (".mat",)
    priority = 30

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        var = peek_mat5(head, depth=0)
        return (
            var is not None
            and var.mx_class == "struct"
            and {"Voltage", "Current", "Ah", "Time"} <= set(var.fields)
        )

    @classmethod
    def file_order(cls, path: Path):
        match = _NAME_START.match(path.stem)
        if not match:
            return (9999, 0, 0, 0, 0, path.name)
        month, day, year, hour, minute = (int(g) for g in match.groups()[:5])
        return (2000 + year, month, day, hour, minute, path.name)

    @classmethod
    def describe(cls, paths: list[Path]) -> CellDefaults:
        path = Path(paths[0])
        folder = next((p for p in reversed(path.parts[:-1]) if re.search(r"degC", p)), None)
        if not _NAME_START.match(path.stem):
            return CellDefaults(description=f"MATLAB file {path.name} in the Panasonic 18650PF `meas` layout; "
                                "its name is not the set's (MM-DD-YY_HH.MM ...), so no Panasonic metadata is assumed")
        evidence = (f"name {path.stem} (date-stamped test name) + `meas` struct layout; capacities "
                    "checked at labelling by initial_soh_in_band")
        rule = "Panasonic NCR18650PF datasheet as cited by the set (NCA, 2.9 Ah, 2.5-4.2 V)"
        # the set's README: tests ran in a chamber at the folder's temperature (the file's own
        # Chamber_Temp_degC, whole degrees, is per sample; the registry keeps the set point)
        set_point, folder_name = folder_temperature_c(path)
        ambient_origin = ({"ambient_temperature": from_dataset_rule("Panasonic 18650PF set README (chamber at the folder's temperature)",
                                                                    f"folder {folder_name!r}")} if set_point is not None else {})
        return CellDefaults(
            dataset=DATASET,
            chemistry="NCA",
            nominal_capacity_ah=NOMINAL_CAPACITY_AH,
            voltage_min_v=VOLTAGE_MIN_V,
            voltage_max_v=VOLTAGE_MAX_V,
            max_abs_current_a=MAX_ABS_CURRENT_A,
            licence=LICENCE,
            citation=CITATION,
            description=(
                f"Panasonic NCR18650PF (NCA, 2.9 Ah) test '{_descriptor(path.stem)}'"
                + (f" ({folder} set)" if folder else "")
                + "; University of Wisconsin-Madison, 25 A Digatron channel in a thermal "
                "chamber; charges at 1C to 4.2 V, 50 mA cut-off; drive cycles end at 2.5 V "
                "at 25 and 10 degC. All files of the set come from one cell, which aged over "
                "the ~110 cycles of the programme (1C capacity 2.8 -> 2.3 Ah)."
            ),
            ambient_temperature_c=set_point,
            origin={**{field: from_dataset_rule(rule, evidence)
                       for field in ("chemistry", "nominal_capacity_ah", "voltage_window")}, **ambient_origin},
        )

    @classmethod
    def read(cls, paths: list[Path], cell_id: str) -> ReadResult:
        paths = sorted((Path(p) for p in paths), key=cls.file_order)
        frames = []
        first_stamp: float | None = None
        time_end = 0.0
        next_cycle = 0
        for path in paths:
            meas = _find_meas(load_mat(path), path)
            try:
                v, i, ah, temp, time_raw = (as_float_vector(meas[f]) for f in _FIELDS)
            except (TypeError, ValueError) as exc:
                raise SourceFormatError(path, f"non-numeric measurement in 'meas' ({exc})") from exc
            lengths = dict(zip(_FIELDS, map(len, (v, i, ah, temp, time_raw))))
            if len(set(lengths.values())) != 1:
                raise SourceFormatError(path, f"'meas' fields of different lengths {lengths}")
            stamp_s = None
            names = meas.dtype.names or ()
            if "TimeStamp" in names and np.size(meas["TimeStamp"]) == len(time_raw):
                stamp_s = _stamp_seconds(meas["TimeStamp"])
            time_s = _pause_corrected_time(time_raw, stamp_s)
            # Several files of one test: put them on one clock (stamps), else back to back.
            if frames:
                if stamp_s is not None and first_stamp is not None and len(stamp_s):
                    time_s = time_s + max(stamp_s[0] - first_stamp, time_end)
                else:
                    time_s = time_s + time_end
            elif stamp_s is not None and len(stamp_s):
                first_stamp = stamp_s[0]
            step_type = step_type_from_current(i)
            breaks = _counter_breaks(time_raw, i, ah)
            cycle = next_cycle + np.cumsum(breaks).astype("int64")
            changed = breaks.copy()
            if len(step_type) > 1:
                changed[1:] |= step_type[1:] != step_type[:-1]
            frames.append(
                pd.DataFrame(
                    {
                        "cycle_number": cycle,
                        "step_type": step_type,
                        "changed": changed,
                        "time_s": time_s,
                        "voltage_v": v,
                        "current_a": i,
                        "temperature_c": temp,
                        "capacity_ah": _capacity_from_counter(ah, step_type, cycle, breaks),
                        "source_file": path.name,
                        "source_row": np.arange(len(v), dtype="int64"),
                    }
                )
            )
            if len(v):
                time_end = float(np.nanmax(time_s))
                next_cycle = int(cycle[-1]) + 1
        if not frames:
            raise SourceFormatError(Path(cell_id), "no files given")
        frame = pd.concat(frames, ignore_index=True)
        changed = frame.pop("changed").to_numpy().copy()
        if len(changed):
            changed[0] = False
            file_start = np.ones(len(frame), dtype=bool)
            file_start[1:] = frame["source_file"].to_numpy()[1:] != frame["source_file"].to_numpy()[:-1]
            changed |= file_start
            changed[0] = False
        frame.insert(1, "step_index", np.cumsum(changed).astype("int64"))
        return ReadResult(samples=finalize_samples(frame, cell_id), cell=cls.describe(paths))
