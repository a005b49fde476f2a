"""Novonix HPC/UHPC CSV exports ([Summary] / [Protocol] / [Data] sections), from the zoo file.

Layout: `[Summary]` with `Key: value` lines (`Channel: 01`, `Cell: ...`, `Protocol: ...`,
`Capacity (Ah): 0.24`, `Mass (g)`, `Started: ...`), `[End Summary]`, the protocol tree
(`[Protocol]` ... `[End Protocol]`), `[Data]`, then the column row and one row per point, each
line wrapped in double quotes (`"2022-04-11 10:58:07 AM,1,0,0.0000000,..."`), UTF-8::

    Date and Time,Cycle Number,Step Type,Run Time (h),Step Time (h),Current (A),Potential (V),
    Capacity (Ah),Temperature (°C),Circuit Temperature (°C),Energy (Wh),...,Step Number,Step position

A `<name>_metadata.csv` next to `<name>.csv` (BEEP's sidecar: Novonix's per-cycle summary, Qc, Qd,
CE, ...) is a companion (`is_companion`), read by `describe`, never a cell of its own.

Detected by content: a `[Summary]` first line with `Novonix` in the block, or (an export without
the header sections) a first line that is a Novonix column row (`Cycle Number`, `Step Type`,
`Run Time (h)`, `Potential (V)`). Nothing else in the zoo starts with `[Summary]`, and the column
row has none of the record/step-type columns other CSV readers need.

Conventions:
  - step_type from Novonix's `Step Type` code, as BEEP's `novonix_conversion.yaml` names them:
    0 rest, 1 CC charge, 2 CC discharge, 7 CC-CV charge (CC part), 8 CV hold of a charge,
    9 CC-CV discharge, 10 CV hold of a discharge. The code, not the 1 mA threshold, decides: the
    CV hold (code 8) of the zoo file runs at 21-50 uA and is still charge (BEEP's structurer maps
    8 to discharge, contradicting its own yaml and the data: I > 0 and Capacity rising). An
    unknown code falls back to the current's sign beyond `base.rest_threshold_a` of the file.
  - current_a: `Current (A)`; charge positive (codes 1/7/8 in the zoo file: I >= 0). The zoo file
    holds no discharge; an export whose discharge-coded rows carry positive current (unsigned) has
    them negated, so the canonical sign holds either way; a signed one is kept as is.
  - time_s: `Run Time (h)` * 3600 (the test clock). cycle_number: `Cycle Number` as exported
    (1-based, Novonix's own counter, advanced by the protocol's Increment_cycle_counter).
  - step_index: `Step Number` (Novonix's running step counter). Novonix logs a step's end
    (`Step position` 3/2) and the next step's start (`Step position` 1) a fraction of a second
    apart (zoo file: 120.07 s -> 120.46 s), so `logs_step_end` stays True.
  - capacity_ah: `Capacity (Ah)` is one unsigned counter that does not restart at every step (the
    zoo file's CC charge continues at 0.669 mAh where the CC-CV step ended); its increments are
    booked to the row's direction and summed per cycle, a drop of the counter (restart) counting
    its new value, so charge and discharge come out per cycle whatever the counter's reset rule.
    Rest rows: null.
  - temperature_c: `Temperature (°C)` (the cell probe; `Circuit Temperature` is the channel's).
  - metadata: `Capacity (Ah)` of the summary (the capacity the protocol's C-rates refer to: the
    zoo's "20 C/xx" charge runs at 0.012 A = 0.24 Ah / 20) is the nominal capacity, with file
    provenance; `Cell`, `Channel`, `Protocol`, `Started` and the companion's per-cycle Qc/Qd go into
    the description. Novonix states no chemistry; a companion column `Chemistry` would be used.
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
    CellDefaults,
    CyclerReader,
    ReadResult,
    SourceFormatError,
    chain_pieces,
    finalize_samples,
    from_file,
    rest_threshold_a,
    step_type_from_current,
    tame_overflowing_exponents,
)
from battery_pipeline.science.readers.pec_csv import cycle_totals_from_counter
from battery_pipeline.science.schema import empty_samples

METADATA_SUFFIX = "_metadata.csv"
_SUMMARY_FIELD = re.compile(r"^\s*([^:]+?)\s*:\s*(.*?)\s*$")
_CODE_KIND = {0: "rest", 1: "charge", 2: "discharge", 7: "charge", 8: "charge", 9: "discharge", 10: "discharge"}
_COLUMNS = {
    "cycle": "Cycle Number",
    "code": "Step Type",
    "time": "Run Time (h)",
    "current": "Current (A)",
    "voltage": "Potential (V)",
    "capacity": "Capacity (Ah)",
    "step": "Step Number",
}
_TEMPERATURE = "Temperature (°C)"
_SNIFF_COLUMNS = ("Cycle Number", "Step Type", "Run Time (h)", "Potential (V)")


def _names(line: str) -> list[str]:
    return [n.strip() for n in line.strip().strip('"').split(",")]


def is_column_row(line: str) -> bool:
    names = _names(line)
    return all(c in names for c in _SNIFF_COLUMNS)


def _sections(path: Path, lines: list[str]) -> tuple[list[str], int]:
    """(summary lines, index of the column row)."""
    if not lines:
        raise SourceFormatError(path, "file is empty")
    if is_column_row(lines[0]):
        return [], 0
    if lines[0].strip() != "[Summary]":
        raise SourceFormatError(path, "first line is neither '[Summary]' nor a Novonix column row")
    end = next((i for i, line in enumerate(lines) if line.strip() == "[End Summary]"), None)
    data = next((i for i, line in enumerate(lines) if line.strip() == "[Data]"), None)
    if data is None:
        raise SourceFormatError(path, "no '[Data]' section: truncated before the data, or not a Novonix export")
    if data + 1 >= len(lines) or not is_column_row(lines[data + 1]):
        raise SourceFormatError(path, "the line after '[Data]' is not the Novonix column row")
    return lines[1 : end if end is not None else data], data + 1


def parse_summary(lines: list[str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in lines:
        match = _SUMMARY_FIELD.match(line)
        if match and match.group(1) not in fields:
            fields[match.group(1)] = match.group(2)
    return fields


def companion_of(path: Path) -> Path:
    return path.with_name(path.stem + METADATA_SUFFIX)


class NovonixCsvReader(CyclerReader):
    """Novonix HPC CSV export; see the module docstring for every convention."""

    format_name = "novonix_csv"
    extensions = (".csv",)
    priority = 30  # a specific layout: before the generic canonical CSV (90)

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        if b"\x00" in head[:4096] or cls.is_companion(path):
            return False
        text = head.decode("utf-8-sig", errors="replace")
        first, _, rest = text.partition("\n")
        if first.strip() == "[Summary]":
            summary = rest.split("[End Summary]", 1)[0]
            return "Novonix" in summary
        return is_column_row(first)

    @classmethod
    def is_companion(cls, path: Path) -> bool:
        # BEEP's sidecar: <name>_metadata.csv next to the <name>.csv it summarises
        name = path.name
        if not name.lower().endswith(METADATA_SUFFIX):
            return False
        return path.with_name(name[: -len(METADATA_SUFFIX)] + ".csv").exists()

    @classmethod
    def _lines(cls, path: Path) -> list[str]:
        try:
            raw = path.read_bytes()
        except FileNotFoundError as exc:
            raise SourceFormatError(path, "file not found") from exc
        except OSError as exc:
            raise SourceFormatError(path, f"cannot open file ({exc.strerror})") from exc
        if b"\x00" in raw[:65536]:
            raise SourceFormatError(path, "binary content (NUL bytes): not a Novonix CSV export")
        return tame_overflowing_exponents(raw).decode("utf-8-sig", errors="replace").splitlines()

    @classmethod
    def describe(cls, paths: list[Path]) -> CellDefaults:
        path = Path(paths[0])
        try:
            with path.open("rb") as handle:
                lines = handle.read(64 * 1024).decode("utf-8-sig", errors="replace").splitlines()
        except OSError as exc:
            raise SourceFormatError(path, f"cannot open file ({exc.strerror})") from exc
        if lines and lines[0].strip() == "[Summary]":
            # the summary alone: a protocol longer than the 64 KiB read must not hide it
            end = next((i for i, line in enumerate(lines) if line.strip() == "[End Summary]"), len(lines))
            summary_lines = lines[1:end]
        else:
            summary_lines, _ = _sections(path, lines)
        fields = parse_summary(summary_lines)
        described = [f"Novonix CSV export {path.name}"]
        for key in ("Cell", "Channel", "Protocol", "Started"):
            if fields.get(key):
                described.append(f"{key}: {fields[key]}")
        defaults = CellDefaults()
        capacity = fields.get("Capacity (Ah)", "")
        try:
            value = float(capacity)
        except ValueError:
            value = None
        if value is not None and value > 0:
            defaults.nominal_capacity_ah = value
            defaults.origin["nominal_capacity_ah"] = from_file(f"Novonix [Summary] 'Capacity (Ah): {capacity}'")
        sidecar = companion_of(path)
        if sidecar.exists():
            try:
                table = pd.read_csv(sidecar)
            except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
                raise SourceFormatError(sidecar, f"companion metadata is not a readable CSV ({exc})") from exc
            for _, row in table.iterrows():
                if {"Cycle", "Qc", "Qd"} <= set(table.columns):
                    described.append(
                        f"{sidecar.name}: cycle {int(row['Cycle'])} Qc {row['Qc']:.6g} Ah, Qd {row['Qd']:.6g} Ah"
                    )
            if "Chemistry" in table.columns and table["Chemistry"].notna().any():
                chemistry = str(table["Chemistry"].dropna().iloc[0]).strip()
                if chemistry:
                    defaults.chemistry = chemistry
                    defaults.origin["chemistry"] = from_file(f"{sidecar.name} column 'Chemistry': {chemistry}")
        defaults.description = "; ".join(described)
        return defaults

    @classmethod
    def read_file(cls, path: Path) -> pd.DataFrame:
        path = Path(path)
        lines = cls._lines(path)
        _, row = _sections(path, lines)
        names = _names(lines[row])
        missing = [c for c in _COLUMNS.values() if c not in names]
        if missing:
            raise SourceFormatError(path, f"Novonix column row lacks {missing} (columns: {', '.join(names)})")
        # each data line is wrapped in quotes (one quoted field for a CSV parser): unwrap them
        body = "\n".join(line.strip().strip('"') for line in lines[row + 1 :])
        if not body.strip():
            raise SourceFormatError(path, "no data rows after the Novonix column row")
        wanted = list(_COLUMNS.values()) + ([_TEMPERATURE] if _TEMPERATURE in names else [])
        try:
            table = pd.read_csv(io.StringIO(body), header=None, names=names, usecols=wanted, dtype=str,
                                keep_default_na=False)
        except (ValueError, pd.errors.ParserError) as exc:
            raise SourceFormatError(path, f"cannot parse the Novonix data rows as CSV ({exc})") from exc

        def number(column: str) -> np.ndarray:
            return pd.to_numeric(table[column], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)

        current = number(_COLUMNS["current"])
        code = number(_COLUMNS["code"])
        by_current = step_type_from_current(current, rest_threshold_a(current))  # codes without a direction
        kind = np.array([_CODE_KIND.get(int(c), None) if np.isfinite(c) else None for c in code], dtype=object)
        kind = np.where(pd.isna(kind), by_current, kind).astype(object)
        discharge = kind == "discharge"
        if discharge.any() and np.nanmedian(current[discharge]) > 0:
            current = np.where(discharge, -current, current)  # unsigned export: discharge made negative
        cycle_raw = number(_COLUMNS["cycle"])
        cycle = np.where(np.isfinite(cycle_raw), cycle_raw, -1).astype("int64")
        step_raw = number(_COLUMNS["step"])
        step = np.where(np.isfinite(step_raw), step_raw, 0).astype("int64")
        counter = number(_COLUMNS["capacity"])
        capacity = np.full(len(table), np.nan)
        for direction in ("charge", "discharge"):
            rows = kind == direction
            capacity[rows] = cycle_totals_from_counter(counter, cycle, book=rows)[rows]
        return pd.DataFrame(
            {
                "cycle_number": cycle,
                "step_index": step,
                "step_type": kind,
                "time_s": number(_COLUMNS["time"]) * 3600.0,
                "voltage_v": number(_COLUMNS["voltage"]),
                "current_a": current,
                "temperature_c": number(_TEMPERATURE) if _TEMPERATURE in names else np.nan,
                "capacity_ah": capacity,
                "source_file": path.name,
                "source_row": np.arange(len(table), dtype="int64"),
            }
        )

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
