"""Neware BTS binary files: legacy `.nda` and `.ndax` (a zip of XML + binary `.ndc` members).

Decoding is fastnda's (`fastnda.read`); this module only maps its frame onto the canonical one.
Detection is by content: an `.nda` starts with the magic bytes `NEWARE`; an `.ndax` is a zip
whose local file headers (in the first 64 KiB) name Neware's members (`Step.xml`,
`TestInfo.xml`, `VersionInfo.xml`, `EditStep.xml` or any `*.ndc`), so no other zip (an `.xlsx`)
is claimed and a truncated `.ndax` still reaches `read`, which then names what is wrong.

Conventions (checked on the cycler zoo files, see `test_neware.py`):

- current: Neware logs charge positive, discharge negative (every `*_Chg` row has I > 0, every
  `*_DChg` row I < 0 in all zoo files); mA -> A.
- time_s: fastnda's `total_time_s`, the test clock built from Neware's per-step `step_time_s`
  (which resets at every step). The wall clock `unix_time_s` is not used within a file: in
  TestFile.nda it runs backwards by 165 s at row 4914 and jumps 16 969 s at row 6622 while the
  step clock advances 0.01 s. Several files of one test are placed by their absolute start
  (`unix_time_s - total_time_s` of the first row) when that keeps them in order and apart,
  else chained end to end; the description says which.
- cycle_number: fastnda's default `cycle_mode="chg"`, Neware BTSDA's "charge first" statistic
  (a cycle starts at a charge following a discharge), not the file's raw loop counter
  `cycle_count`: the raw counter counts program loops, so test_2.ndax's seven rate-test
  charge/discharge pairs before the first loop are all "cycle 1" (44 raw cycles vs 54 real
  ones), which would add seven charges into one cycle's capacity. Cycles continue across files.
- step_index: Neware's `step_count` (the running step number, a new value at every step,
  including repeats of one program line); step_type from Neware's step type: `*_DChg` ->
  discharge, `*_Chg` -> charge, Rest/OCV/Pause -> rest; any other type (Pulse, SIM, IR, ...)
  is typed sample by sample from the current's sign.
- capacity_ah: Neware's capacity counter resets at every step. The canonical value is the
  charge moved in the sample's direction since its cycle began (the Arbin convention of
  `base.capacity_from_current`), so each row gets its step's |capacity| plus the final
  |capacity| of the earlier steps of the same direction in the same cycle (a CC and a CV
  charge step add up). Rest rows and rows of step types without a direction are null.
- temperature_c: the first auxiliary temperature channel (`aux*_temperature_degC`), else null.
- internal_resistance_ohm: not in fastnda's record table: null.
- source_row: 0-based position in fastnda's record frame (fastnda's `index` is 1-based);
  source_file: the file's name.
- metadata: no chemistry or nominal capacity is invented. An active mass the `.nda` header
  states (fastnda `active_mass_mg` > 0) is quoted in the description as from the file; the
  `.ndax` Step.xml fields `SCQ`/`SCQ_F` are undocumented and not interpreted.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import warnings
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pandas as pd

from battery_pipeline.science.readers.base import (
    CellDefaults,
    CyclerReader,
    ReadResult,
    SourceFormatError,
    chain_pieces,
    finalize_samples,
    from_file,
    rest_threshold_a,
    step_type_from_current,
)
from battery_pipeline.science.schema import empty_samples

NDA_MAGIC = b"NEWARE"
ZIP_LOCAL_HEADER = b"PK\x03\x04"
NEWARE_ZIP_MEMBERS = {"Step.xml", "TestInfo.xml", "VersionInfo.xml", "EditStep.xml"}
_REST_STEP_TYPES = {"rest", "ocv", "pause"}
_AUX_TEMPERATURE = re.compile(r"^aux\d*_temperature_degC$")


# ------------------------------------------------------------------------------------------
# Helpers shared with neware_csv
# ------------------------------------------------------------------------------------------


def _kind_of_neware_type(name) -> str | None:
    """charge/discharge/rest for one Neware step type name; None if the name has no direction."""
    text = str(name).lower().replace(" ", "_")
    if "dchg" in text:
        return "discharge"
    if "chg" in text:
        return "charge"
    return "rest" if text in _REST_STEP_TYPES else None


def _per_name(step_type_names, rule) -> np.ndarray:
    """`rule` applied once per distinct name, spread to the rows (a column holds a few names)."""
    codes, names = pd.factorize(pd.Series(step_type_names), use_na_sentinel=False)
    return np.array([rule(name) for name in names], dtype=object)[codes]


def step_kinds_from_neware_types(step_type_names, current_a: np.ndarray) -> np.ndarray:
    """charge/discharge/rest from Neware's step type names (`CC_DChg`, `CCCV Chg`, `Rest`, ...).

    A type without a direction (Pulse, SIM, IR, unknown) is typed from the current's sign.
    """
    kinds = _per_name(step_type_names, _kind_of_neware_type)
    undirected = pd.isna(kinds)
    if undirected.any():
        current_a = np.asarray(current_a, dtype="float64")
        kinds[undirected] = step_type_from_current(current_a[undirected], rest_threshold_a(current_a))
    return kinds


def neware_typed_rows(step_type_names) -> np.ndarray:
    """True where Neware's step type itself says charge or discharge (capacity is meaningful)."""
    return _per_name(step_type_names, lambda name: "chg" in str(name).lower()).astype(bool)


def charge_first_cycles(kinds: np.ndarray, directed: np.ndarray) -> np.ndarray:
    """1-based cycles, a new one at every charge step following a discharge step.

    The same rule as fastnda's default `cycle_mode="chg"` (Neware BTSDA's "charge first"
    statistic), so binary and CSV exports of one test get the same cycle numbers.
    """
    direction = pd.Series(np.where(~np.asarray(directed, dtype=bool), np.nan,
                                   np.where(kinds == "charge", 1.0, np.where(kinds == "discharge", 0.0, np.nan))))
    starts = direction.ffill().diff().eq(1.0).to_numpy()
    return (np.cumsum(starts) + 1).astype("int64")


def cycle_capacity_from_step_counters(
    step_capacity_ah: np.ndarray,
    step_id: np.ndarray,
    cycle_number: np.ndarray,
    kinds: np.ndarray,
    directed: np.ndarray,
) -> np.ndarray:
    """Per-cycle running capacity (Ah) in each row's direction from Neware's per-step counters.

    A step's counter starts at 0, so its last |value| is what the step moved; each row gets its
    own |value| plus the totals of earlier steps of its direction within its cycle. Rows that
    are rest, or whose step type has no direction (`directed` False), are NaN.
    """
    n = len(step_capacity_ah)
    out = np.full(n, np.nan)
    if n == 0:
        return out
    magnitude = np.abs(np.asarray(step_capacity_ah, dtype="float64"))
    step_id = np.asarray(step_id)
    cycle_number = np.asarray(cycle_number)
    boundary = np.empty(n, dtype=bool)
    boundary[0] = True
    boundary[1:] = (step_id[1:] != step_id[:-1]) | (cycle_number[1:] != cycle_number[:-1])
    segment = np.cumsum(boundary) - 1
    starts = np.flatnonzero(boundary)
    ends = np.r_[starts[1:], n] - 1
    segment_total = np.nan_to_num(magnitude[ends])
    segment_cycle = cycle_number[starts]
    kinds = np.asarray(kinds, dtype=object)
    directed = np.asarray(directed, dtype=bool)
    for kind in ("charge", "discharge"):
        # a segment's direction is its first row's (Neware types whole steps)
        segment_counts = (kinds[starts] == kind) & directed[starts]
        contribution = np.where(segment_counts, segment_total, 0.0)
        before = pd.Series(contribution).groupby(segment_cycle).cumsum().to_numpy() - contribution
        rows = (kinds == kind) & directed
        out[rows] = before[segment[rows]] + magnitude[rows]
    return out


def _ndax_test_info(path: Path) -> dict[str, str]:
    """The attributes of TestInfo.xml's <TestInfo> in an .ndax (barcode, remark, program, start).

    The only metadata `describe` shows; fastnda's read_metadata parses every XML member of the
    archive, in threads, for 7 ms a file. Decoded as fastnda decodes it.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            raw = archive.read("TestInfo.xml")
        node = ElementTree.fromstring(raw.decode(errors="ignore")).find("config/TestInfo")
    except Exception:  # noqa: BLE001 - any damage (zlib, CRC, XML, a missing member): no metadata;
        return {}  # read() is what judges the file and names what is wrong
    return dict(node.attrib) if node is not None else {}


def _import_fastnda():
    """fastnda, with the process's zlib left as it was. Importing fastnda's ndax module (which
    fastnda itself imports on its first .ndax read) replaces
    `zlib.decompress` and `zlib.decompressobj` process-wide with isal's, whose errors are not
    `zlib.error`: every other reader's handling of a damaged zip or gzip (.xlsx, .mat, .gz) would
    then let them through (the reader fuzzing found it). fastnda then inflates with zlib itself."""
    import zlib

    saved = zlib.decompress, zlib.decompressobj
    try:
        import fastnda
        import fastnda.ndax  # noqa: F401 - the module that swaps zlib; fastnda imports it lazily
    finally:
        zlib.decompress, zlib.decompressobj = saved
    return fastnda


def decode_error(path: Path, exc: BaseException) -> SourceFormatError:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return SourceFormatError(path, f"fastnda cannot decode the file ({type(exc).__name__}: {detail or 'no detail'})")


# ------------------------------------------------------------------------------------------
# Detection
# ------------------------------------------------------------------------------------------


def zip_member_names(head: bytes) -> list[str]:
    """Names of the zip local file headers found in `head` (no central directory needed)."""
    names = []
    position = head.find(ZIP_LOCAL_HEADER)
    while position != -1 and position + 30 <= len(head):
        name_length = int.from_bytes(head[position + 26 : position + 28], "little")
        name = head[position + 30 : position + 30 + name_length]
        names.append(name.decode("utf-8", errors="replace"))
        position = head.find(ZIP_LOCAL_HEADER, position + 30 + name_length)
    return names


def is_neware_ndax(head: bytes) -> bool:
    if not head.startswith(ZIP_LOCAL_HEADER):
        return False
    return any(n in NEWARE_ZIP_MEMBERS or n.endswith(".ndc") for n in zip_member_names(head))


# ------------------------------------------------------------------------------------------
# The reader
# ------------------------------------------------------------------------------------------


class NewareNdaReader(CyclerReader):
    """Neware `.nda` / `.ndax`; see the module docstring for every convention."""

    format_name = "neware_nda"
    extensions = (".nda", ".ndax")
    priority = 20  # magic bytes / member names: nothing else can match
    # Neware logs a step's last point at the step's end (its step time reaches the limit).
    logs_step_end = True

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        return head.startswith(NDA_MAGIC) or is_neware_ndax(head)

    @classmethod
    def _suffix_for_content(cls, path: Path) -> str:
        with path.open("rb") as handle:
            head = handle.read(64 * 1024)
        if head.startswith(NDA_MAGIC):
            return ".nda"
        if is_neware_ndax(head):
            return ".ndax"
        raise SourceFormatError(path, "neither a Neware .nda (no NEWARE magic) nor a Neware .ndax zip")

    @classmethod
    def _call_fastnda(cls, path: Path, function_name: str, **kwargs):
        """Call fastnda on `path`, under the suffix its content needs; every failure -> SourceFormatError."""
        fastnda = _import_fastnda()

        path = Path(path)
        try:
            suffix = cls._suffix_for_content(path)
        except OSError as exc:
            raise SourceFormatError(path, f"cannot open file ({exc.strerror})") from exc
        function = getattr(fastnda, function_name)
        aliased = path.suffix.lower() != suffix
        # (a temporary folder only when needed: making and removing one costs 2 ms a call)
        with (tempfile.TemporaryDirectory() if aliased else contextlib.nullcontext()) as alias_dir, \
                warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            target = path
            if aliased:
                # fastnda picks its decoder by the suffix; detection here is by content
                target = Path(alias_dir) / f"{path.stem}{suffix}"
                os.symlink(path.resolve(), target)
            try:
                result = function(target, **kwargs)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # noqa: BLE001 - pyo3 PanicException is a BaseException
                raise decode_error(path, exc) from exc
        notes = sorted({f"fastnda warned: {w.message}" for w in caught})
        return result, notes

    @classmethod
    def read_frame(cls, path: Path) -> tuple[pd.DataFrame, list[str]]:
        """fastnda's record frame (pandas) with Neware step type names as text, plus warnings."""
        frame, notes = cls._call_fastnda(path, "read", cycle_mode="chg")
        try:
            # column by column: polars' to_pandas goes through pyarrow, 2.5x the cost on a small file
            frame = pd.DataFrame({name: frame[name].to_numpy() for name in frame.columns})
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001
            raise decode_error(path, exc) from exc
        required = ("voltage_V", "current_mA", "total_time_s", "cycle_count", "step_count", "step_type", "capacity_mAh")
        missing = [c for c in required if c not in frame.columns]
        if missing:
            raise SourceFormatError(path, f"fastnda's frame lacks column(s) {missing} (got {list(frame.columns)})")
        return frame, notes

    @classmethod
    def describe(cls, paths: list[Path]) -> CellDefaults:
        path = Path(paths[0])
        parts = [f"Neware {path.suffix.lower().lstrip('.') or 'binary'} file {path.name}"]
        try:
            if cls._suffix_for_content(path) == ".ndax":
                meta, info = {}, _ndax_test_info(path)
            else:
                meta, _ = cls._call_fastnda(path, "read_metadata")
                info = (meta.get("TestInfo") or {}).get("TestInfo") or {} if isinstance(meta, dict) else {}
        except (SourceFormatError, OSError):
            return CellDefaults(description=parts[0])
        for label, key in (("barcode", "Barcode"), ("remark", "Remark"), ("program", "StepName"), ("started", "StartTime")):
            if info.get(key):
                parts.append(f"{label} {info[key]}")
        for label, key in (("remark", "remarks"), ("started", "start_time"), ("BTS", "bts_version")):
            if isinstance(meta, dict) and meta.get(key):
                parts.append(f"{label} {meta[key]}")
        mass = meta.get("active_mass_mg") if isinstance(meta, dict) else None
        if isinstance(mass, (int, float)) and mass > 0:
            parts.append(f"active mass {mass:g} mg ({from_file('nda header active_mass_mg')})")
        return CellDefaults(description="; ".join(parts))

    @classmethod
    def samples_from_frame(cls, path: Path, frame: pd.DataFrame) -> pd.DataFrame:
        current_a = frame["current_mA"].to_numpy(dtype="float64") / 1000.0
        type_names = frame["step_type"]  # categorical: the rules run per category
        kinds = step_kinds_from_neware_types(type_names, current_a)
        cycle = frame["cycle_count"].to_numpy(dtype="int64")
        step = frame["step_count"].to_numpy(dtype="int64")
        capacity = cycle_capacity_from_step_counters(
            frame["capacity_mAh"].to_numpy(dtype="float64") / 1000.0, step, cycle, kinds, neware_typed_rows(type_names)
        )
        temperature_columns = [c for c in frame.columns if _AUX_TEMPERATURE.match(c)]
        return pd.DataFrame(
            {
                "cycle_number": cycle,
                "step_index": step,
                "step_type": kinds,
                "time_s": frame["total_time_s"].to_numpy(dtype="float64"),
                "voltage_v": frame["voltage_V"].to_numpy(dtype="float64"),
                "current_a": current_a,
                "temperature_c": frame[temperature_columns[0]].to_numpy(dtype="float64") if temperature_columns else np.nan,
                "capacity_ah": capacity,
                "source_file": path.name,
                "source_row": np.arange(len(frame), dtype="int64"),
            }
        )

    @classmethod
    def read(cls, paths: list[Path], cell_id: str) -> ReadResult:
        paths = [Path(p) for p in paths]
        pieces, starts, notes = [], [], []
        for path in paths:
            frame, warned = cls.read_frame(path)
            notes += [f"{path.name}: {w}" for w in warned]
            piece = cls.samples_from_frame(path, frame)
            t = piece["time_s"].to_numpy()
            finite = np.isfinite(t)
            start = None
            if "unix_time_s" in frame.columns and len(frame) and finite[0]:
                start = float(frame["unix_time_s"].iloc[0]) - float(t[0])
            starts.append(start)
            pieces.append(piece)
        samples, placement = chain_pieces(pieces, starts)  # every file restarts its cycle count at 1
        if placement:
            notes.append(placement)
        defaults = cls.describe(paths)
        if notes:
            defaults.description = "; ".join([defaults.description or "", *notes]).strip("; ")
        if samples is None:
            return ReadResult(samples=empty_samples(), cell=defaults)
        return ReadResult(samples=finalize_samples(samples, cell_id), cell=defaults)
