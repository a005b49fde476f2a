"""Maccor raw text export (tab-separated), e.g. TRI's BEEP fixtures `*.034`, `*.010`.

Layout: one header line (`Today's Date ...  Date of Test: ... Filename: ... Procedure: ...
Comment/Barcode: ...`), then the column names (`Rec#, Cyc#, Step, Test (Sec), Step (Sec), Amp-hr,
Watt-hr, Amps, Volts, State, ES, DPt Time, ..., ACImp/Ohms, DCIR/Ohms, ...`), then one sample per
line. The file extension is the cycler channel (`.034` = channel 34), so detection is by content
only: a tab-separated column line starting with `Rec#` that names `Cyc#`, `Amps`, `Volts` and
`State`, within the first lines of the file.

Conversion to the canonical frame (`science.schema`):
  - current: Maccor's `Amps` is a magnitude and `State` gives the direction. Some exports
    (including both BEEP fixtures) already carry a minus sign on `D` rows, so the sign is *set*
    from the state, never flipped: `C` -> +|Amps|, `D` -> -|Amps|. Other states keep `Amps` as
    exported.
  - step_type from `State`: `C` charge, `D` discharge, `R` rest. Any other letter is a
    non-electrical record - `O` ("other": control steps such as Advance Cycle / End, seen once
    with 0 A at the end of the .010 fixture), `S` (stop/suspend records), ... - and gets its step
    type from its current (0 A -> rest).
  - capacity_ah: Maccor's `Amp-hr` restarts at 0 at every step (verified in both fixtures: each
    new `Step` starts at ~0 Ah, including consecutive charge steps 61 -> 62 -> 63). The canonical
    meaning is "Ah moved in the sample's direction since its cycle began" (Arbin convention), so
    each charge/discharge sample gets its own step's `Amp-hr` plus the final `Amp-hr` of every
    earlier step of the same direction in the same cycle (as BEEP's `quantity_sum` does). A
    step is a run of rows with the same `Cyc#`/`Step`; a drop of `Amp-hr` inside a run also
    starts a new one. Rest and other-state rows get null (they move no charge; the `O` record
    repeats the previous step's `Amp-hr`, which must not be counted twice). A file that starts in
    the middle of a cycle (the .010 slice starts 120 s into step 63) cannot know the steps before
    its first row: that first cycle's capacity counts only the steps present in the file.
  - time_s = `Test (Sec)` as the file states it: seconds since the start of the *test*. A file
    that is a slice of a long test (the .010 fixture starts at ~1.8e6 s) keeps that offset.
  - cycle_number = `Cyc#`, step_index = `Step` (program step number).
  - internal_resistance_ohm = `DCIR/Ohms` where nonzero, else `ACImp/Ohms` where nonzero, else
    null: Maccor writes 0 when nothing was measured (both fixtures are all 0 -> all null).
  - temperature_c from a column whose name starts with `Temp` if the export has one, else null.
  - several files for one cell (not the case for Maccor, where a test is one file per channel)
    are chained: a file whose test time or cycle count restarts is shifted to continue.

`BEEPDatapath_maccor_parameterized_memloaded.csv` (next to the fixtures) is BEEP's *processed*
copy of the .010 file (comma-separated, renamed columns). It is deliberately not claimed by this
reader (its first line is no Maccor column line): reading it would duplicate the .010 cell.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pandas as pd

from battery_pipeline.science.readers.base import (
    CellDefaults,
    CyclerReader,
    ReadResult,
    SourceFormatError,
    finalize_samples,
    from_dataset_rule,
    rest_threshold_a,
    step_type_from_current,
    tame_overflowing_exponents,
)

# The column line is found among the first lines of the file (normally line 2).
_MAX_PREAMBLE_LINES = 20
_COLUMN_LINE_MARKERS = ("Cyc#", "Amps", "Volts", "State")
_REQUIRED = ("Cyc#", "Step", "Amps", "Volts", "State")
_OPTIONAL = ("Amp-hr", "ACImp/Ohms", "DCIR/Ohms")
# The export names the unit of the test time: TRI's fixtures write seconds, battery-data-toolkit's
# maccor_example.001 minutes (its `DPt Time` advances 10 s per 0.1667 `Test (Min)`).
TEST_TIME_SECONDS = {"Test (Sec)": 1.0, "Test (Min)": 60.0, "Test (Hr)": 3600.0}


def _capacity_key(name: str) -> str:
    """`Amp-hr`, `Amp-Hr`, `AmpHr`, `Amp hr`: one column, spelled as the export version likes."""
    return name.strip().lower().replace("-", "").replace(" ", "")


def standard_column_names(names: list[str]) -> dict[str, str]:
    """{name in the file: name this reader uses} for the columns spelled in more than one way."""
    out: dict[str, str] = {}
    for name in names:
        stripped = name.strip()
        if stripped.lower() in {k.lower() for k in TEST_TIME_SECONDS}:
            out[name] = next(k for k in TEST_TIME_SECONDS if k.lower() == stripped.lower())
        elif _capacity_key(name) == "amphr":
            out[name] = "Amp-hr"
        elif stripped in (*_REQUIRED, *_OPTIONAL):
            out[name] = stripped
    return out

# TRI / BEEP fixtures: recognised by the test-file path or procedure in the header line.
_TRI_HEADER = re.compile(r"STANFORD LOANER|PreDiag_\d+|PredictionDiagnostics_\d+|FastCharge_\d+")
_HEADER_FIELDS = ("Today's Date", "Date of Test:", "Filename:", "Procedure:", "Comment/Barcode:")


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace") if raw.isascii() else raw.decode("latin-1")


def column_line_index(lines: list[str], leader: str = "Rec#\t", markers=None, max_lines: int | None = None) -> int | None:
    """Index of the column line: it starts with `leader` and names every marker (the raw
    export's by default; maccor_mactest passes its own)."""
    markers = _COLUMN_LINE_MARKERS if markers is None else markers
    for index, line in enumerate(lines[: max_lines or _MAX_PREAMBLE_LINES]):
        if line.startswith(leader):
            names = [n.strip() for n in line.rstrip("\r\n").split("\t")]
            if all(marker in names for marker in markers):
                return index
    return None


def _column_line_index(lines: list[str]) -> int | None:
    return column_line_index(lines)


def head_lines(path: Path, size: int = 64 * 1024, decode=None) -> list[str]:
    """The first `size` bytes of the file as lines; SourceFormatError if it cannot be opened."""
    try:
        with path.open("rb") as handle:
            return (decode or _decode)(handle.read(size)).splitlines()
    except OSError as exc:
        raise SourceFormatError(path, f"cannot open file ({exc.strerror})") from exc



def parse_header(line: str) -> dict[str, str]:
    """Fields of the Maccor header line (`Date of Test`, `Filename`, `Procedure`, ...)."""
    out: dict[str, str] = {}
    positions = [(line.find(f), f) for f in _HEADER_FIELDS if line.find(f) >= 0]
    positions.sort()
    for i, (start, name) in enumerate(positions):
        end = positions[i + 1][0] if i + 1 < len(positions) else len(line)
        out[name.rstrip(":")] = line[start + len(name) : end].strip(" \t:")
    return out


class MaccorTextReader(CyclerReader):
    format_name = "maccor_text"
    extensions = ()  # the extension is the channel number (.001 ... .999, any digits)
    priority = 20

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        return _column_line_index(_decode(head).splitlines()) is not None

    @classmethod
    def cell_key(cls, path: Path) -> str:
        # The stem names the test, the extension the channel: the same test name run on two
        # channels is two cells, so keep both.
        return path.name

    @classmethod
    def describe(cls, paths: list[Path]) -> CellDefaults:
        lines = head_lines(paths[0], 4096)
        header = lines[0] if lines and not lines[0].startswith("Rec#") else ""
        fields = parse_header(header)
        description = "Maccor test " + ", ".join(
            f"{k}: {v}" for k, v in fields.items() if v and k != "Today's Date"  # = export date
        )
        if _TRI_HEADER.search(header) or _TRI_HEADER.search(paths[0].name):
            # Facts read off the two BEEP fixtures themselves (no cell datasheet ships with them):
            # discharges end at 2.70 V, charges at 4.20 V, a diagnostic charge of the .010 cell
            # at 4.40 V; the two cells differ in size (~4.8 Ah: 0.69 A C/7-like steps and
            # 4.76 Ah discharged; ~2.4 Ah: 2.42 A steps, 9.68 A fast charge), so capacity and
            # chemistry are unknown here and left to a sidecar.
            return CellDefaults(
                dataset="TRI BEEP Maccor test fixtures",
                chemistry=None,
                nominal_capacity_ah=None,
                voltage_min_v=2.7,
                voltage_max_v=4.4,
                max_abs_current_a=None,
                licence="Apache-2.0",
                citation=(
                    "Toyota Research Institute, BEEP - Battery Evaluation and Early Prediction, "
                    "test fixtures, https://github.com/TRI-AMDD/beep (Apache-2.0)"
                ),
                description=description,
                origin={"voltage_window": from_dataset_rule(
                    "TRI BEEP Maccor fixtures, limits read off the fixtures (2.7 V discharge end, up to 4.4 V diagnostic charge)",
                    "TRI test name in the header or file name + Maccor text layout",
                )},
            )
        return CellDefaults(description=description)

    @classmethod
    def read(cls, paths: list[Path], cell_id: str) -> ReadResult:
        frames = [cls._read_file(Path(p)) for p in paths]
        raw = _chain(frames)
        return ReadResult(samples=_to_canonical(raw, cell_id))

    @classmethod
    def _read_file(cls, path: Path) -> pd.DataFrame:
        lines = head_lines(path)
        if not lines:
            raise SourceFormatError(path, "file is empty")
        column_line = _column_line_index(lines)
        if column_line is None:
            raise SourceFormatError(path, "no Maccor column line (Rec#, Cyc#, ..., Amps, Volts, State)")
        names = lines[column_line].rstrip("\r\n").split("\t")
        standard = standard_column_names(names)
        known = set(standard.values())
        missing = [c for c in _REQUIRED if c not in known]
        time_columns = [n for n, s in standard.items() if s in TEST_TIME_SECONDS]
        if not time_columns:
            missing.append(" or ".join(TEST_TIME_SECONDS))
        if missing:
            raise SourceFormatError(path, f"missing Maccor columns {missing}")
        temperature = next((n for n in names if n.lower().startswith("temp")), None)
        # first spelling of each column wins (a duplicated name would make pandas append ".1")
        chosen: dict[str, str] = {}
        for name, std in standard.items():
            if std in TEST_TIME_SECONDS:
                std = "time"
            chosen.setdefault(std, name)
        wanted = list(dict.fromkeys([*chosen.values(), *([temperature] if temperature else [])]))
        try:
            frame = pd.read_csv(
                io.BytesIO(tame_overflowing_exponents(path.read_bytes())),
                sep="\t",
                skiprows=column_line,
                header=0,
                usecols=wanted,
                dtype={chosen["State"]: str},
                encoding="latin-1",
                low_memory=False,
            )
        except (ValueError, pd.errors.ParserError) as exc:
            raise SourceFormatError(path, f"cannot parse as Maccor text ({exc})") from exc
        if frame.empty:
            raise SourceFormatError(path, "no data rows")
        state_column = chosen["State"]
        for col in wanted:
            if col != state_column:
                frame[col] = pd.to_numeric(frame[col], errors="coerce")
        time_column = chosen["time"]
        seconds_per_unit = TEST_TIME_SECONDS[standard[time_column]]
        frame = frame.rename(columns={name: std for std, name in chosen.items() if std != "time"})
        frame["State"] = frame["State"].fillna("").str.strip().str.upper()
        time_values = frame.pop(time_column)
        frame["Test (Sec)"] = time_values if seconds_per_unit == 1.0 else time_values * seconds_per_unit
        frame["source_file"] = path.name
        frame["source_row"] = np.arange(len(frame), dtype="int64")
        if temperature:
            frame = frame.rename(columns={temperature: "Temperature"})
        return frame


def _chain(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate one cell's files; shift a file whose test time or cycle count restarts."""
    if len(frames) == 1:
        frame = frames[0]
        frame["_file"] = 0
        return frame
    out = []
    last_time, last_cycle = None, None
    for index, frame in enumerate(frames):
        frame = frame.copy()
        frame["_file"] = index
        times, cycles = frame["Test (Sec)"], frame["Cyc#"]
        if last_time is not None and times.notna().any() and times.dropna().iloc[0] < last_time:
            frame["Test (Sec)"] = times + last_time
        if last_cycle is not None and cycles.notna().any() and cycles.dropna().iloc[0] < last_cycle:
            frame["Cyc#"] = cycles + last_cycle + 1 - cycles.dropna().iloc[0]
        if frame["Test (Sec)"].notna().any():
            last_time = frame["Test (Sec)"].max()
        if frame["Cyc#"].notna().any():
            last_cycle = frame["Cyc#"].max()
        out.append(frame)
    return pd.concat(out, ignore_index=True)


def _to_canonical(raw: pd.DataFrame, cell_id: str) -> pd.DataFrame:
    state = raw["State"].to_numpy(dtype=object)
    amps = raw["Amps"].to_numpy(dtype="float64")
    is_charge = state == "C"
    is_discharge = state == "D"
    is_rest = state == "R"
    current = np.where(is_charge, np.abs(amps), np.where(is_discharge, -np.abs(amps), amps))

    step_type = step_type_from_current(current, rest_threshold_a(current))  # states other than C/D/R
    step_type[is_charge] = "charge"
    step_type[is_discharge] = "discharge"
    step_type[is_rest] = "rest"

    cycle = raw["Cyc#"].to_numpy(dtype="float64")
    step = raw["Step"].to_numpy(dtype="float64")
    frame = pd.DataFrame(
        {
            "time_s": raw["Test (Sec)"].to_numpy(dtype="float64"),
            "voltage_v": raw["Volts"].to_numpy(dtype="float64"),
            "current_a": current,
            # An unreadable cycle/step number becomes -1: kept (never dropped), and invalid
            # under the schema (ge=0) so validation rejects that row visibly.
            "cycle_number": np.where(np.isfinite(cycle), cycle, -1).astype("int64"),
            "step_index": np.where(np.isfinite(step), step, -1).astype("int64"),
            "step_type": step_type,
            "source_file": raw["source_file"].to_numpy(),
            "source_row": raw["source_row"].to_numpy(),
        }
    )
    if "Temperature" in raw:
        frame["temperature_c"] = raw["Temperature"].to_numpy(dtype="float64")
    frame["capacity_ah"] = _cycle_capacity(raw, is_charge, is_discharge)
    frame["internal_resistance_ohm"] = _resistance(raw)
    return finalize_samples(frame, cell_id)


def _cycle_capacity(raw: pd.DataFrame, is_charge: np.ndarray, is_discharge: np.ndarray) -> np.ndarray:
    """Per-step `Amp-hr` -> Ah moved in the sample's direction since its cycle began."""
    n = len(raw)
    out = np.full(n, np.nan)
    if "Amp-hr" not in raw or n == 0:
        return out
    ah = raw["Amp-hr"].to_numpy(dtype="float64")
    cycle = raw["Cyc#"].to_numpy(dtype="float64")
    step = raw["Step"].to_numpy(dtype="float64")
    file_index = raw["_file"].to_numpy()
    direction = np.where(is_charge, 1, np.where(is_discharge, 2, 0))

    new_run = np.ones(n, dtype=bool)
    new_run[1:] = (
        (cycle[1:] != cycle[:-1])
        | (step[1:] != step[:-1])
        | (direction[1:] != direction[:-1])
        | (file_index[1:] != file_index[:-1])
        | (ah[1:] < ah[:-1])  # counter reset inside a step
    )
    run_id = np.cumsum(new_run) - 1
    starts = np.flatnonzero(new_run)
    ends = np.append(starts[1:], n) - 1
    runs = pd.DataFrame(
        {
            "cycle": cycle[starts],
            "file": file_index[starts],
            "direction": direction[starts],
            "total": np.nan_to_num(ah[ends]),
        }
    )
    # Cycle boundaries: a cycle is a contiguous stretch of one Cyc# within one file.
    new_cycle = np.ones(len(runs), dtype=bool)
    new_cycle[1:] = (runs["cycle"].to_numpy()[1:] != runs["cycle"].to_numpy()[:-1]) | (
        runs["file"].to_numpy()[1:] != runs["file"].to_numpy()[:-1]
    )
    runs["cycle_block"] = np.cumsum(new_cycle)
    # Ah of the earlier runs of the same direction in the same cycle (exclusive cumsum).
    grouped = runs.groupby(["cycle_block", "direction"], sort=False)["total"]
    runs["offset"] = grouped.cumsum() - runs["total"]
    offset = runs["offset"].to_numpy()[run_id]
    moving = is_charge | is_discharge
    out[moving] = (np.abs(ah) + offset)[moving]
    return out


def _resistance(raw: pd.DataFrame) -> np.ndarray:
    out = np.full(len(raw), np.nan)
    for column in ("ACImp/Ohms", "DCIR/Ohms"):  # DCIR last: it wins where both are measured
        if column in raw:
            values = raw[column].to_numpy(dtype="float64")
            measured = np.isfinite(values) & (values != 0)
            out[measured] = values[measured]
    return out
