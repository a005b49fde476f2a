"""NASA Ames PCoE Li-ion battery aging data set (`B0005.mat` ...): MATLAB 5 .mat files.

Layout (NASA README): one variable named after the cell (`B0005`), a 1x1 struct whose only field
`cycle` is a 1xN struct array of *operations* in chronological order, each with
  - `type`: 'charge', 'discharge' or 'impedance',
  - `ambient_temperature` (degC), `time`: 1x6 MATLAB datevec of the operation's start,
  - `data`: a struct; charge/discharge have `Voltage_measured`, `Current_measured`,
    `Temperature_measured`, `Time` (s since the operation's start) plus the charger's / load's
    own readings (`Current_charge`/`Voltage_charge` or `Current_load`/`Voltage_load`; NOT used,
    they are not the cell's), discharge also `Capacity` (Ah); impedance has `Re`, `Rct` (ohm),
    EIS spectra and no time series.

Canonical conventions this reader produces (see `science.schema`):
  - Samples are the charge and discharge operations' samples: voltage = `Voltage_measured` (V),
    current = `Current_measured` (A), temperature = `Temperature_measured` (degC, the cell's
    thermocouple, not the ambient).
  - Sign: the file already uses current positive = charge (CC charge +1.5 A, CC discharge
    -2.0 A, B0025's square wave -4 A / 0 A), so the current is taken unchanged. Trap: many
    charge operations start with a sample of about -3.4..-4.5 A (B0005: 169 of 170 charges,
    B0025: all; the charger's own `Current_charge` shows it too); it is kept as measured and
    labelled a discharge sample.
  - `time_s` = (operation start datevec - first operation's start datevec) + the operation's
    `Time` vector, in s. The first operation may be an impedance measurement (B0025), so the
    first sample need not be at 0 s. The gaps between operations (rests that were not logged,
    from about a minute to 13 days) stay visible as jumps in `time_s`.
  - `cycle_number`: a cycle starts at each charge operation, and also at a discharge operation
    when its cycle already holds a discharge (two discharges in a row mean the charge between
    them is not in the file: B0005-7 operations 180/181 (1-based), the second discharge starts
    at 4.22 V after a 33 h gap). So a cycle is normally one charge plus the discharge that
    follows it; two charges in a row (B0005-7 have two such pairs) give a charge-only cycle.
    Operations before the first charge are cycle 0 (B0025 starts with an impedance
    measurement; some NASA cells start with a discharge); the first charge starts cycle 1.
    B0005/6/7: cycles 1..171 (170 charges + 1 orphan discharge), 168 discharges.
  - `step_type`: from the current with a 10 mA rest threshold (not base's 1 mA): 99 % of this
    rig's rest readings lie within +-9 mA (median |I| 2-3 mA, rare outliers to 33 mA), while
    the CV charge ends at 20 mA, so 10 mA separates rest from current-carrying samples without
    splitting rests into flickering charge/discharge steps. `step_index` starts a new step at
    every step_type change and at every operation start.
  - `capacity_ah`: trapezoidal integration of the measured current, Ah moved in the sample's
    direction since its cycle began, charge and discharge accumulated separately (the Arbin
    Charge_/Discharge_Capacity convention); rest samples are null. The unlogged gap between two
    operations contributes nothing; each interval is booked to the direction of its mean
    current (see `_capacity_ah`). The file's `Capacity` (discharge operations only) is NASA's
    own trapezoidal integral of `Current_measured` over the operation *until the first sample
    below 2.7 V* (their README: "for discharge till 2.7V"; reproduced to < 0.01 %), so it is
    not used as capacity_ah. For B0005 (cut-off 2.7 V) it agrees with the cycle's integrated
    discharge capacity within 0.2 % (the few-second negative spike at the start of the cycle's
    charge adds ~0.002 Ah to the cycle's discharge counter, as it would on an Arbin); B0006,
    B0007 and B0025 were discharged below 2.7 V and moved 1-3 % more than `Capacity` says.
  - `ReadResult.cycle_summary`: `Capacity` per discharge operation (cell_id, cycle_number,
    discharge_capacity_ah, source_file, source_row = operation index). NASA's end-of-life
    criterion (1.4 Ah) and published SOH benchmarks are defined on this field, so the labels of
    this dataset use it (`capacity_source: "source"` in data/label_settings.json).
  - `source_file` = file name; `source_row` = 0-based running index of the sample in the file
    in operation-major order (all samples of the first charge/discharge operation, then those
    of the next; impedance operations hold no samples and take no rows).
  - Impedance operations are returned as `ReadResult.impedance` (columns
    `base.IMPEDANCE_COLUMNS`: time_s = operation start on the same clock as the samples,
    cycle_number = the cycle it follows (same counter as the samples), `Re`, `Rct`).
    B0025.mat (NASA original) has them; the rebuilt B0005-B0007 files do not (an empty frame).
Values are never repaired: B0005-7 contain a few voltage readings near 0 V and up to 8.4 V, and
B0025's last charge has two NaN samples; validation judges them.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from battery_pipeline.science.readers._matfile import (
    as_float_vector,
    as_text,
    load_mat,
    peek_mat5,
)
from battery_pipeline.science.readers.base import (
    IMPEDANCE_COLUMNS,
    CellDefaults,
    CyclerReader,
    ReadResult,
    SourceFormatError,
    finalize_samples,
    from_dataset_rule,
)

# 99 % of the NASA rig's rest readings lie within +-9 mA; the CV charge is cut at 20 mA.
NASA_REST_THRESHOLD_A = 0.010

DATASET = "NASA PCoE Battery Data Set"
LICENCE = "US Government work (public domain)"
CITATION = (
    'Saha, B. & Goebel, K. (2007) "Battery Data Set", NASA Ames Prognostics Data Repository, '
    "NASA Ames Research Center, Moffett Field, CA"
)
NOMINAL_CAPACITY_AH = 2.0
VOLTAGE_MAX_V = 4.2  # CC-CV charge to 4.2 V for every cell
# Discharge cut-off per cell from NASA's README_05_06_07_18.txt and README_25_26_27_28.txt. Used
# as voltage_min_v (measured: >= 99.98 % of samples of B0005/6/7/25 lie in [cut-off - 0.2 V,
# 4.3 V]). Unknown cells get the lowest cut-off NASA used (2.0 V).
_CELL_CONDITIONS = {
    "B0005": (2.7, "2.0 A CC discharge to 2.7 V"),
    "B0006": (2.5, "2.0 A CC discharge to 2.5 V"),
    "B0007": (2.2, "2.0 A CC discharge to 2.2 V"),
    "B0018": (2.5, "2.0 A CC discharge to 2.5 V"),
    "B0025": (2.0, "0.05 Hz square-wave discharge, 4 A amplitude, 50 % duty, to 2.0 V"),
    "B0026": (2.2, "0.05 Hz square-wave discharge, 4 A amplitude, 50 % duty, to 2.2 V"),
    "B0027": (2.5, "0.05 Hz square-wave discharge, 4 A amplitude, 50 % duty, to 2.5 V"),
    "B0028": (2.7, "0.05 Hz square-wave discharge, 4 A amplitude, 50 % duty, to 2.7 V"),
}
_DEFAULT_CUTOFF_V = 2.0
_CELL_ID = re.compile(r"^B\d{4}$")
_REQUIRED_SERIES = ("Voltage_measured", "Current_measured", "Temperature_measured", "Time")


def _cell_name(path: Path) -> str:
    return path.stem.upper() if _CELL_ID.match(path.stem.upper()) else path.stem


def _datevec_seconds(vec: np.ndarray) -> float:
    """Seconds since 1970 of a MATLAB datevec [Y M D h m s] (overflowing h/m/s allowed)."""
    y, mo, d, h, mi, s = (float(x) for x in vec)
    month_start = datetime(int(y), int(mo), 1)
    return (month_start - datetime(1970, 1, 1)).total_seconds() + (
        (d - 1.0) * 86400.0 + h * 3600.0 + mi * 60.0 + s
    )


def _find_cycle_array(mat: dict, path: Path) -> np.ndarray:
    """The 1xN `cycle` struct array of the file's cell variable."""
    candidates = []
    for key, value in mat.items():
        if key.startswith("__") or not isinstance(value, np.ndarray):
            continue
        names = value.dtype.names or ()
        if "cycle" in names and value.size >= 1:
            candidates.append(key)
    if not candidates:
        variables = ", ".join(k for k in mat if not k.startswith("__")) or "none"
        raise SourceFormatError(
            path, f"no NASA PCoE struct with a 'cycle' field (variables in file: {variables})"
        )
    key = _cell_name(path) if _cell_name(path) in candidates else candidates[0]
    cycle = mat[key].ravel()[0]["cycle"]
    names = getattr(cycle, "dtype", np.dtype(object)).names or ()
    missing = [n for n in ("type", "time", "data") if n not in names]
    if missing:
        raise SourceFormatError(
            path, f"'{key}.cycle' lacks the NASA fields {missing} (has {list(names)})"
        )
    return cycle.ravel()


class NasaPcoeMatReader(CyclerReader):
    """NASA PCoE battery aging .mat (see the module docstring for every convention)."""

    format_name = "nasa_pcoe_mat"
    logs_step_end = False  # steps derived from the current between samples
    extensions = (".mat",)
    priority = 30

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        var = peek_mat5(head)
        if var is None or var.mx_class != "struct" or "cycle" not in var.fields:
            return False
        inner = var.first_field_value if var.fields[0] == "cycle" else None
        if inner is None:  # could not see the nested struct: the top-level shape must do
            return var.fields == ["cycle"]
        return inner.mx_class == "struct" and {"type", "data"} <= set(inner.fields)

    @classmethod
    def describe(cls, paths: list[Path]) -> CellDefaults:
        name = _cell_name(Path(paths[0]))
        if not _CELL_ID.match(name):
            # The PCoE struct layout alone is not evidence of the NASA set: another lab's file
            # in the same layout gets no NASA capacity or limits (a sidecar can give them).
            return CellDefaults(description=f"MATLAB file {Path(paths[0]).name} in the NASA PCoE struct layout; "
                                "its name is not a PCoE cell id (B0005 style), so no NASA metadata is assumed")
        cutoff, discharge = _CELL_CONDITIONS.get(name, (_DEFAULT_CUTOFF_V, None))
        evidence = (f"name {name} + PCoE .mat struct layout; capacities checked at labelling by "
                    "initial_soh_in_band")
        description = (
            f"NASA Ames PCoE cell {name}: 18650 Li-ion, rated 2 Ah; charge CC 1.5 A to 4.2 V, "
            "CV to 20 mA; "
            + (f"discharge {discharge}; " if discharge else "discharge cut-off not known to the reader; ")
            + "EIS 0.1 Hz-5 kHz between cycles (Re/Rct in the impedance table); room temperature "
            "(24 degC); end of life at 30 % fade (2 Ah -> 1.4 Ah). Chemistry not stated by NASA "
            "(LCO is often assumed in the literature without a primary source), so left empty."
        )
        return CellDefaults(
            dataset=DATASET,
            chemistry=None,
            nominal_capacity_ah=NOMINAL_CAPACITY_AH,
            voltage_min_v=cutoff,
            voltage_max_v=VOLTAGE_MAX_V,
            max_abs_current_a=None,
            licence=LICENCE,
            citation=CITATION,
            description=description,
            origin={
                "nominal_capacity_ah": from_dataset_rule("NASA PCoE, rated 2 Ah", evidence),
                "voltage_window": from_dataset_rule(
                    f"NASA PCoE README, {name} discharge cut-off {cutoff:g} V, charge to 4.2 V", evidence
                ),
            },
        )

    @classmethod
    def read(cls, paths: list[Path], cell_id: str) -> ReadResult:
        paths = [Path(p) for p in paths]
        parts: list[dict[str, np.ndarray]] = []
        impedance_rows: list[dict] = []
        summary_rows: list[dict] = []
        t0: float | None = None
        cycles_so_far = 0  # cycle number of the operation being read
        discharged_in_cycle = False
        # Several files of one cell (NASA ships one): chronological by their first operation.
        loaded = sorted(
            ((path, _find_cycle_array(load_mat(path), path)) for path in paths),
            key=lambda item: _first_start(item[1]),
        )
        for path, cycle in loaded:
            series: dict[str, list[np.ndarray]] = {
                k: [] for k in ("v", "i", "t", "time", "cycle", "op")
            }
            for k, op in enumerate(cycle):
                try:
                    op_type = as_text(op["type"]).lower()
                    start = _datevec_seconds(as_float_vector(op["time"])[:6])
                except (TypeError, ValueError, IndexError, OverflowError) as exc:
                    raise SourceFormatError(
                        path, f"operation {k + 1}: unreadable type/time ({exc})"
                    ) from exc
                if t0 is None:
                    t0 = start
                if op_type == "charge" or (op_type == "discharge" and discharged_in_cycle):
                    cycles_so_far += 1
                    discharged_in_cycle = False
                if op_type == "discharge":
                    discharged_in_cycle = True
                data = op["data"].ravel()[0] if np.size(op["data"]) else None
                data_fields = (data.dtype.names or ()) if data is not None else ()
                if op_type == "impedance":
                    impedance_rows.append(
                        {
                            "time_s": start - t0,
                            "cycle_number": cycles_so_far,
                            "re_ohm": _scalar(data, "Re", path, k, op_type) if "Re" in data_fields else np.nan,
                            "rct_ohm": _scalar(data, "Rct", path, k, op_type) if "Rct" in data_fields else np.nan,
                            "source_file": path.name,
                        }
                    )
                    continue
                if op_type not in ("charge", "discharge"):
                    raise SourceFormatError(
                        path, f"operation {k + 1}: unknown type {op_type!r} (expected charge/discharge/impedance)"
                    )
                missing = [f for f in _REQUIRED_SERIES if f not in data_fields]
                if missing:
                    raise SourceFormatError(
                        path, f"operation {k + 1} ({op_type}) lacks the fields {missing}"
                    )
                try:
                    columns = [as_float_vector(data[f]) for f in _REQUIRED_SERIES]
                except (TypeError, ValueError) as exc:
                    raise SourceFormatError(
                        path, f"operation {k + 1} ({op_type}): non-numeric measurement ({exc})"
                    ) from exc
                lengths = {len(c) for c in columns}
                if len(lengths) != 1:
                    raise SourceFormatError(
                        path,
                        f"operation {k + 1} ({op_type}): series of different lengths "
                        f"{dict(zip(_REQUIRED_SERIES, (len(c) for c in columns)))}",
                    )
                v, i, t, op_time = columns
                n = len(op_time)
                if op_type == "discharge" and "Capacity" in data_fields:
                    summary_rows.append(
                        {
                            "cycle_number": cycles_so_far,
                            "discharge_capacity_ah": _scalar(data, "Capacity", path, k, op_type),
                            "source_file": path.name,
                            "source_row": k,  # the operation's index in the file's cycle array
                        }
                    )
                series["v"].append(v)
                series["i"].append(i)
                series["t"].append(t)
                series["time"].append(op_time + (start - t0))
                series["cycle"].append(np.full(n, cycles_so_far, dtype="int64"))
                series["op"].append(np.full(n, k, dtype="int64"))
            if not series["v"]:
                continue
            part = {k: np.concatenate(v) for k, v in series.items()}
            part["source_file"] = np.full(len(part["v"]), path.name, dtype=object)
            part["source_row"] = np.arange(len(part["v"]), dtype="int64")
            part["file_index"] = np.full(len(part["v"]), len(parts), dtype="int64")
            parts.append(part)

        if parts:
            cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        else:
            cols = {k: np.zeros(0) for k in ("v", "i", "t", "time", "cycle", "op", "file_index")}
            cols["source_file"] = np.zeros(0, dtype=object)
            cols["source_row"] = np.zeros(0, dtype="int64")
        current = cols["i"]
        step_type = np.full(len(current), "rest", dtype=object)
        step_type[current > NASA_REST_THRESHOLD_A] = "charge"
        step_type[current < -NASA_REST_THRESHOLD_A] = "discharge"
        op_start = _op_starts(cols["op"], cols["file_index"])
        changed = op_start.copy()
        if len(changed):
            changed[1:] |= step_type[1:] != step_type[:-1]
            changed[0] = False
        frame = pd.DataFrame(
            {
                "cycle_number": cols["cycle"].astype("int64"),
                "step_index": np.cumsum(changed).astype("int64"),
                "step_type": step_type,
                "time_s": cols["time"],
                "voltage_v": cols["v"],
                "current_a": current,
                "temperature_c": cols["t"],
                "capacity_ah": _capacity_ah(cols["time"], current, step_type, cols["cycle"], op_start),
                "source_file": cols["source_file"],
                "source_row": cols["source_row"],
            }
        )
        impedance = pd.DataFrame(impedance_rows, columns=IMPEDANCE_COLUMNS[1:])
        impedance.insert(0, "cell_id", cell_id)
        impedance = impedance.astype(
            {
                "cell_id": str,
                "time_s": "float64",
                "cycle_number": "int64",
                "re_ohm": "float64",
                "rct_ohm": "float64",
                "source_file": str,
            }
        )[IMPEDANCE_COLUMNS]
        summary = pd.DataFrame(summary_rows, columns=["cycle_number", "discharge_capacity_ah", "source_file", "source_row"])
        summary.insert(0, "cell_id", cell_id)
        return ReadResult(
            samples=finalize_samples(frame, cell_id),
            cell=cls.describe(paths),
            impedance=impedance,
            cycle_summary=summary,
        )


def _first_start(cycle: np.ndarray) -> float:
    try:
        return _datevec_seconds(as_float_vector(cycle[0]["time"])[:6])
    except (TypeError, ValueError, IndexError, OverflowError):
        return float("inf")  # unreadable: the main loop reports it


def _scalar(data, name: str, path: Path, k: int, op_type: str) -> float:
    """First value of a scalar field of operation k (Re, Rct, Capacity); NaN when empty."""
    try:
        values = as_float_vector(data[name]) if np.size(data[name]) else np.zeros(0)
    except (TypeError, ValueError) as exc:  # text or a cell array where a number belongs
        raise SourceFormatError(
            path, f"operation {k + 1} ({op_type}): field {name!r} is not a number ({exc})"
        ) from exc
    return float(values[0]) if len(values) else float("nan")


def _op_starts(op: np.ndarray, file_index: np.ndarray) -> np.ndarray:
    """True at the first sample of every operation (of every file)."""
    starts = np.ones(len(op), dtype=bool)
    if len(op) > 1:
        starts[1:] = (op[1:] != op[:-1]) | (file_index[1:] != file_index[:-1])
    return starts


def _capacity_ah(time_s, current_a, step_type, cycle_number, op_start) -> np.ndarray:
    """Ah moved in the sample's direction since its cycle began; null for rest samples.

    Trapezoidal and vectorized. Each interval between two samples is booked to the direction of
    its *mean* current (|mean| > NASA_REST_THRESHOLD_A), not to the direction of its end sample:
    B0025's 0.05 Hz square-wave discharge is sampled every ~10 s, i.e. alternately at -4 A and
    0 A, and booking by end sample would drop every second interval (half the capacity). Charge
    and discharge are accumulated separately per cycle; the unlogged gap before each
    operation's first sample contributes nothing. A sample shows its own direction's counter.
    """
    n = len(time_s)
    out = np.full(n, np.nan)
    if n == 0:
        return out
    dt = np.diff(time_s, prepend=time_s[0])
    dt[op_start] = 0.0
    i_mid = np.concatenate([[current_a[0]], 0.5 * (current_a[1:] + current_a[:-1])])
    dq_ah = np.nan_to_num(i_mid * dt / 3600.0)
    new_cycle = np.ones(n, dtype=bool)
    new_cycle[1:] = cycle_number[1:] != cycle_number[:-1]
    cycle_start_idx = np.maximum.accumulate(np.where(new_cycle, np.arange(n), 0))
    with np.errstate(invalid="ignore"):
        booked = {
            "charge": np.where(i_mid > NASA_REST_THRESHOLD_A, dq_ah, 0.0),
            "discharge": np.where(i_mid < -NASA_REST_THRESHOLD_A, -dq_ah, 0.0),
        }
    for direction, contribution in booked.items():
        mask = step_type == direction
        running = np.cumsum(contribution)
        before_cycle = running[cycle_start_idx] - contribution[cycle_start_idx]
        out[mask] = (running - before_cycle)[mask]
    return out
