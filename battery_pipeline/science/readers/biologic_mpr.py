"""BioLogic EC-Lab binary files (.mpr), decoded by galvani behind the optional extra `biologic-mpr`.

The .mpr layout is undocumented; the maintained parsers (galvani, yadg) are GPL-3.0, so galvani is
imported only inside `read`/`describe` and the core package stays Apache-2.0. Without it a file is
refused with a message saying how to install the extra, or to export the file as .mpt from EC-Lab
(`biologic_mpt` reads that without any GPL code).

A file is `BIO-LOGIC MODULAR FILE` followed by modules: `VMP Set` (settings), `VMP data` (one
record per sample, its columns named by numeric ids), optionally `VMP loop` and `VMP LOG`. galvani
turns the data module into a numpy record array with EC-Lab's column names (`time/s`, `Ewe/V`,
`dq/mA.h`, `Q charge/discharge/mA.h`, `half cycle`, ...) and the packed flag byte (`mode`,
`ox/red`). From those columns the conversion is the .mpt reader's (`biologic_mpt` docstring: sign,
step typing by mode/ox-red, step index, per-half-cycle signed capacity), by handing it the same
intermediate frame its `read_file` builds, so a .mpr and its .mpt export give the same canonical
frame. Two columns of the .mpt export are not stored in a GCPL .mpr and are what EC-Lab's export
computes from the stored ones:
  - current: a GCPL .mpr stores `dq/mA.h` (charge moved since the previous record) and the set
    point `control/V/mA`, no `I`. The measured current is dq/dt, which is EC-Lab's `<I>/mA`: on
    gcpl.pr_182.1 it equals the exported `<I>/mA` on all 2533 rows within 1e-16 mA. A record with no
    interval to divide by (the first, or a repeated time) gets 0 when it moved no charge, else NaN
    (kept; validation quarantines it). A stored `I/mA` or `<I>/mA` is used as it is. A file with
    neither a current nor dq is refused.
  - cycle_number: `half cycle // 2` (EC-Lab numbers half cycles so that a cycle is the even half
    cycle and the odd one after it; gcpl.pr_182.1's exported `cycle number` equals it on every
    row), unless the file stores `cycle number` itself.
Metadata: galvani exposes only the settings date and, with a LOG module, the start timestamp;
they go into the description. The settings module also holds user fields (mass, electrode
material, comments) at offsets galvani does not decode; they are not guessed here, so a .mpr gives
no chemistry or nominal capacity.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pandas as pd

from battery_pipeline.science.readers.base import (
    CellDefaults,
    CyclerReader,
    ReadResult,
    SourceFormatError,
)
from battery_pipeline.science.readers.biologic_mpt import (
    _CHARGE_COLUMNS,
    _CHARGE_UNITS,
    _CURRENT_NAME,
    _CURRENT_UNITS,
    _VOLTAGE_COLUMNS,
    _VOLTAGE_UNITS,
    _chain,
    _split_unit,
    _to_canonical,
    _unit_factor,
)

MPR_MAGIC = b"BIO-LOGIC MODULAR FILE"
_INSTALL_HINT = (
    'reading .mpr needs the optional extra `pip install "battery-pipeline[biologic-mpr]"` '
    "(galvani, GPL-3.0), or export the file as .mpt from EC-Lab, which is read without it"
)
# What galvani raises on a damaged or unknown file: bad magic/module/version (ValueError), short
# reads (OSError), record count or header padding checks (AssertionError), unknown column ids
# (NotImplementedError), a missing settings/data module (ValueError from unpacking).
_GALVANI_ERRORS = (ValueError, OSError, AssertionError, NotImplementedError, KeyError, IndexError,
                   TypeError, struct.error, EOFError, OverflowError, MemoryError)


def _galvani_mpr(path: Path):
    """galvani's MPRfile for `path`; SourceFormatError naming the file for anything that fails."""
    try:
        from galvani.BioLogic import MPRfile
    except ImportError as exc:
        raise SourceFormatError(path, _INSTALL_HINT) from exc
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SourceFormatError(path, f"cannot open file ({exc.strerror})") from exc
    try:
        # From memory: a damaged module length then reads short instead of allocating gigabytes.
        return MPRfile(io.BytesIO(raw))
    except SourceFormatError:
        raise
    except _GALVANI_ERRORS as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceFormatError(path, f"cannot decode as EC-Lab .mpr ({type(exc).__name__}: {reason})") from exc


def _numbers(column: np.ndarray) -> np.ndarray:
    values = np.asarray(column, dtype="float64")
    return np.where(np.isfinite(values), values, np.nan)


def _current_from_charge(time_s: np.ndarray, dq_ah: np.ndarray) -> np.ndarray:
    """A (signed) from the charge moved since the previous record, as EC-Lab's `<I>` export."""
    dt = np.diff(time_s, prepend=np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        current = dq_ah * 3600.0 / dt
    no_interval = ~(dt > 0)
    current[no_interval] = np.where(dq_ah[no_interval] == 0, 0.0, np.nan)
    return current


class BiologicMprReader(CyclerReader):
    format_name = "biologic_mpr"
    extensions = (".mpr",)
    priority = 30

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        return head.startswith(MPR_MAGIC)

    @classmethod
    def describe(cls, paths: list[Path]) -> CellDefaults:
        return _describe(_galvani_mpr(Path(paths[0])))

    @classmethod
    def read(cls, paths: list[Path], cell_id: str) -> ReadResult:
        # Each file is decoded once: the first one's galvani object also gives the description.
        decoded = [(Path(p), _galvani_mpr(Path(p))) for p in paths]
        frames = [_intermediate_frame(path, mpr) for path, mpr in decoded]
        return ReadResult(samples=_to_canonical(_chain(frames), cell_id), cell=_describe(decoded[0][1]))

    @classmethod
    def read_file(cls, path: Path) -> pd.DataFrame:
        """One file as the intermediate frame of `BiologicMptReader.read_file` (SI + bookkeeping)."""
        return _intermediate_frame(path, _galvani_mpr(path))


def _describe(mpr) -> CellDefaults:
    described = ["BioLogic EC-Lab .mpr"]
    timestamp = getattr(mpr, "timestamp", None)
    if timestamp is not None:
        described.append(f"Acquisition started on: {timestamp.isoformat(sep=' ')}")
    elif getattr(mpr, "startdate", None) is not None:
        described.append(f"settings dated: {mpr.startdate.isoformat()}")
    described.append(f"data module version {mpr.version}, {len(mpr.data)} records")
    return CellDefaults(description="; ".join(described))


def _intermediate_frame(path: Path, mpr) -> pd.DataFrame:
    data = mpr.data
    names = list(data.dtype.names or ())
    if len(data) == 0:
        raise SourceFormatError(path, "the data module holds no records")
    if "time/s" not in names:
        raise SourceFormatError(path, f"no time/s column (columns: {names})")
    voltage_col = next((c for c in _VOLTAGE_COLUMNS if c in names), None)
    if voltage_col is None:
        raise SourceFormatError(path, f"no voltage column (one of {list(_VOLTAGE_COLUMNS)}; columns: {names})")

    time_s = _numbers(data["time/s"])
    out = {
        "time_s": time_s,
        "voltage_v": _numbers(data[voltage_col])
        * _unit_factor(path, voltage_col, _split_unit(voltage_col)[1], _VOLTAGE_UNITS),
    }
    current_col = next((c for c in names if _CURRENT_NAME.match(c)), None)
    if current_col is not None:
        unit = _CURRENT_NAME.match(current_col).group("unit")
        out["current_a"] = _numbers(data[current_col]) * _unit_factor(path, current_col, unit, _CURRENT_UNITS)
    elif "dq/mA.h" in names:
        out["current_a"] = _current_from_charge(time_s, _numbers(data["dq/mA.h"]) * 1e-3)
    else:
        raise SourceFormatError(
            path, "no measured current: neither I/mA, <I>/mA nor dq/mA.h (control/V/mA is only the set point)"
        )
    for flag in ("mode", "ox/red"):
        if flag in mpr.flags_dict:
            out[flag] = mpr.get_flag(flag).astype("float64")
    for column in ("Ns", "half cycle", "cycle number"):
        if column in names:
            out[column] = _numbers(data[column])
    if "cycle number" not in out and "half cycle" in out:
        out["cycle number"] = np.floor(out["half cycle"] / 2)
    charge_col = next((c for kind in _CHARGE_COLUMNS for c in names if _split_unit(c)[0] == kind), None)
    if charge_col:
        kind, unit = _split_unit(charge_col)
        out["charge_kind"] = np.full(len(data), kind, dtype=object)
        out["charge_ah"] = _numbers(data[charge_col]) * _unit_factor(path, charge_col, unit, _CHARGE_UNITS)
    temperature_col = next((c for c in names if c.startswith("Temperature/")), None)
    if temperature_col:
        out["temperature_c"] = _numbers(data[temperature_col])
    if "R/Ohm" in names:
        resistance = _numbers(data["R/Ohm"])
        out["internal_resistance_ohm"] = np.where(resistance != 0, resistance, np.nan)
    out["source_file"] = np.full(len(data), path.name, dtype=object)
    out["source_row"] = np.arange(len(data), dtype="int64")
    frame = pd.DataFrame(out)  # built once: column-by-column insertion is most of the cost here
    return frame
