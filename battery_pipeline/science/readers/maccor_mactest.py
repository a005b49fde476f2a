"""Maccor MacTest text export with a key/value header (cellpy's `maccor_txt` model "two", KIT).

Layout: `Name:\\t...`, `Channel:\\t81`, `Tester\\t...`, `Procedure\\t...`, `Description\\t...`,
`Started\\t...`, `SCap\\t...`, `C Rate\\t...`, channel limits (`Ch. max. V\\t6,00 V`, ...), a blank
line, the column line (`Rec, Cycle P, Cycle C, Step, TestTime, StepTime, Cap. [Ah], Ener. [Wh],
Current [A], Voltage [V], Md, ES, DPT Time, VAR1..VAR15`), a blank line, then one sample per line.
The decimal separator follows the exporting PC's locale (`0,017` in maccor_two.txt, `0.017` in
maccor_002.txt); fields are tab separated, so a comma inside a number can only be a decimal one.
maccor_002.txt's Description is padded with control and 0xFF bytes: the text is read as latin-1,
where every byte is a character, and the header is only used for the description.

Conversion (checked on both zoo files; the canonical rules are those of `maccor.py`, whose
capacity and sign logic is reused on the renamed columns):
  - time_s: `TestTime` carries no unit. In both files it is minutes: `DPT Time` advances 60 s per
    1.0 of `TestTime` (maccor_002.txt: 3809.84 over 5/11 3:40:24 PM -> 5/14 7:10:13 AM). The unit
    is taken from the file itself - the wall-clock span of `DPT Time` over the span of `TestTime`,
    snapped to s/min/h - and minutes are assumed only when that cannot be measured (a file of one
    timestamp). cellpy labels this column seconds, which is 60x off for these files.
  - current: `Current [A]` is unsigned (D rows are positive in maccor_002.txt), so the sign comes
    from `Md` (the Maccor State: C/D/R), as in the raw export.
  - cycle_number = `Cycle C` (it counts charge/discharge cycles: 1, 1, 2 over rest/charge/
    discharge; `Cycle P` stays 1 from the first charge on), step_index = `Step`.
  - capacity_ah: `Cap. [Ah]` restarts at 0 at every step (maccor_002.txt: step 4 ends at
    0.00244 Ah, step 5 starts at 0), so it is summed over a cycle's steps per direction.
  - `SCap` (0,017 in both files) has no unit in the file and is not what the cell delivers
    (~0.0023 Ah per half cycle), so it is no nominal capacity: it goes into the description only,
    as do the channel limits. The VAR1..VAR15 columns carry no meaning in the file: not read.
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
    tame_overflowing_exponents,
    text_to_float,
)
from battery_pipeline.science.readers.maccor import _chain, _to_canonical, column_line_index, head_lines

_MAX_PREAMBLE_LINES = 40
# {MacTest column: the raw-export name maccor.py's conversion expects}
_COLUMNS = {
    "Cycle C": "Cyc#",
    "Step": "Step",
    "TestTime": "TestTime",
    "Current [A]": "Amps",
    "Voltage [V]": "Volts",
    "Md": "State",
    "Cap. [Ah]": "Amp-hr",
    "DPT Time": "DPT Time",
}
_REQUIRED = ("Cycle C", "Step", "TestTime", "Current [A]", "Voltage [V]", "Md")
_FIRST_KEY = re.compile(r"^Name:?\t")
_SECONDS_PER_UNIT = (1.0, 60.0, 3600.0)
_DEFAULT_SECONDS_PER_UNIT = 60.0  # both known exports (maccor_two.txt, maccor_002.txt) write minutes


def _decode(raw: bytes) -> str:
    return raw.decode("latin-1")


def _column_line_index(lines: list[str]) -> int | None:
    return column_line_index(lines, "Rec\t", ("Cycle C", "Current [A]", "Voltage [V]", "Md"), _MAX_PREAMBLE_LINES)


def _head_lines(path: Path, size: int = 64 * 1024) -> list[str]:
    return head_lines(path, size, _decode)


def parse_header(lines: list[str]) -> dict[str, str]:
    """The key/value lines before the column line (`Name`, `Channel`, `SCap`, ...)."""
    out: dict[str, str] = {}
    for line in lines:
        if line.startswith("Rec\t"):
            break
        key, sep, value = line.partition("\t")
        if sep and key.strip():
            # padding (control characters, 0xFF) is no part of the value
            clean = "".join(ch for ch in value if ch.isprintable() and ch != "\xff")
            out[key.strip().rstrip(":")] = " ".join(clean.split())
    return out


def _seconds_per_unit(test_time: np.ndarray, wall_clock: pd.Series | None) -> tuple[float, str]:
    """(s per unit of `TestTime`, how that was found): the `DPT Time` span over the `TestTime`
    span, snapped to s/min/h; minutes, said to be assumed, where the file cannot tell."""
    measured = _measured_seconds_per_unit(test_time, wall_clock) if wall_clock is not None else None
    if measured is None:
        return _DEFAULT_SECONDS_PER_UNIT, "TestTime unit not measurable from DPT Time: minutes assumed (as in known MacTest exports)"
    name = {1.0: "seconds", 60.0: "minutes", 3600.0: "hours"}[measured]
    return measured, f"TestTime in {name} (measured from the DPT Time span)"


def _measured_seconds_per_unit(test_time: np.ndarray, wall_clock: pd.Series) -> float | None:
    usable = np.flatnonzero(np.isfinite(test_time) & wall_clock.notna().to_numpy())
    if len(usable) < 2:
        return None
    first, last = usable[0], usable[-1]
    # two stamps, not the column: parsing 7 000 mixed-format stamps would cost more than the file
    stamps = pd.to_datetime(wall_clock.iloc[[first, last]], errors="coerce", format="mixed")
    span = test_time[last] - test_time[first]
    if stamps.isna().any() or not span > 0:
        return None
    ratio = (stamps.iloc[1] - stamps.iloc[0]).total_seconds() / span
    if not np.isfinite(ratio) or ratio <= 0:
        return None
    best = min(_SECONDS_PER_UNIT, key=lambda unit: abs(np.log(ratio / unit)))
    # a wall clock more than 20 % off every unit (clock change, damaged stamps) proves nothing
    return best if abs(np.log(ratio / best)) < np.log(1.2) else None


class MaccorMacTestReader(CyclerReader):
    format_name = "maccor_mactest"
    extensions = (".txt",)
    priority = 20  # its `Name:` header and `Rec`/`Cycle C`/`Md` columns match no other format

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        lines = _decode(head).splitlines()
        return bool(lines) and bool(_FIRST_KEY.match(lines[0])) and _column_line_index(lines) is not None

    @classmethod
    def cell_key(cls, path: Path) -> str:
        return path.stem

    @classmethod
    def describe(cls, paths: list[Path]) -> CellDefaults:
        fields = parse_header(_head_lines(paths[0], 4096))
        description = "Maccor MacTest export " + ", ".join(f"{k}: {v}" for k, v in fields.items() if v)
        return CellDefaults(description=description)

    @classmethod
    def read(cls, paths: list[Path], cell_id: str) -> ReadResult:
        read = [cls._read_file(Path(p)) for p in paths]
        defaults = cls.describe(paths)
        notes = "; ".join(f"{Path(p).name}: {note}" for p, (_, note) in zip(paths, read))
        defaults.description = f"{defaults.description}. {notes}"
        return ReadResult(samples=_to_canonical(_chain([frame for frame, _ in read]), cell_id), cell=defaults)

    @classmethod
    def _read_file(cls, path: Path) -> tuple[pd.DataFrame, str]:
        lines = _head_lines(path)
        if not lines:
            raise SourceFormatError(path, "file is empty")
        column_line = _column_line_index(lines)
        if column_line is None:
            raise SourceFormatError(path, "no MacTest column line (Rec, Cycle C, ..., Current [A], Voltage [V], Md)")
        names = [n.strip() for n in lines[column_line].rstrip("\r\n").split("\t")]
        missing = [c for c in _REQUIRED if c not in names]
        if missing:
            raise SourceFormatError(path, f"missing MacTest columns {missing}")
        positions = {name: names.index(name) for name in _COLUMNS if name in names}
        data_lines = [line for line in lines[column_line + 1 : column_line + 20] if line.strip()]
        time_field = positions["TestTime"]
        first_times = [line.split("\t")[time_field] for line in data_lines if len(line.split("\t")) > time_field]
        decimal = "," if any("," in t for t in first_times) else "."
        by_position = {index: _COLUMNS[name] for name, index in positions.items()}
        try:
            frame = pd.read_csv(
                io.BytesIO(tame_overflowing_exponents(path.read_bytes())),
                sep="\t",
                skiprows=column_line + 1,  # the blank line after the column line is skipped too
                header=None,
                usecols=list(by_position),
                dtype={positions["Md"]: str, **({positions["DPT Time"]: str} if "DPT Time" in positions else {})},
                decimal=decimal,
                encoding="latin-1",
                low_memory=False,
            )
        except pd.errors.EmptyDataError:
            raise SourceFormatError(path, "no data rows") from None
        except (ValueError, pd.errors.ParserError) as exc:
            raise SourceFormatError(path, f"cannot parse as Maccor MacTest text ({exc})") from exc
        if frame.empty:
            raise SourceFormatError(path, "no data rows")
        frame = frame.rename(columns=by_position)
        for col in frame.columns:
            if col not in ("State", "DPT Time") and frame[col].dtype.kind not in "fiu":
                # a damaged cell left the column as text: NaN where unreadable, the rest kept
                text = frame[col].astype(str)
                if decimal == ",":
                    text = text.str.replace(",", ".", regex=False)
                frame[col] = text_to_float(text)
        frame["State"] = frame["State"].fillna("").str.strip().str.upper()
        test_time = frame.pop("TestTime").to_numpy(dtype="float64")
        unit, unit_note = _seconds_per_unit(test_time, frame["DPT Time"] if "DPT Time" in frame else None)
        frame["Test (Sec)"] = test_time * unit
        frame = frame.drop(columns=["DPT Time"], errors="ignore")
        frame["source_file"] = path.name
        frame["source_row"] = np.arange(len(frame), dtype="int64")
        return frame, unit_note
