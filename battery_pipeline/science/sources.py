"""Find the cells in data folders: which files form which cell's test, read with which reader.

Every data file ends up in exactly one `CellSource`, including files no reader understands: those
become a source with `problem` set, so the failure shows on *their own* partition in the UI
instead of vanishing or breaking discovery for everyone else.

Partition keys are sanitized (`[A-Za-z0-9_.-]`, at most 64 characters) because they appear in
Dagster URLs and in DuckDB predicates; names that collide after sanitizing get a short hash of
their path so two different tests never share a partition.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from battery_pipeline.science.chemistry import VOLTAGE_WINDOWS_V, voltage_window
from battery_pipeline.science.readers import (
    CellDefaults,
    CyclerReader,
    SourceFormatError,
    detect_format,
    readers_by_priority,
)

SIDECAR_SUFFIX = ".cell.json"
# Files that describe a folder rather than hold data.
_NOT_DATA = re.compile(r"^(readme|licen[cs]e|citation|notice|changelog)", re.IGNORECASE)
_NOT_DATA_SUFFIXES = {".md", ".cff", ".pdf", ".json", ".yaml", ".yml", ".py", ".ipynb"}
# Files still being written by a copy tool.
_PARTIAL_SUFFIXES = {".part", ".tmp", ".crdownload", ".partial"}
MAX_KEY_LENGTH = 64


@dataclass(frozen=True)
class CellSource:
    partition_key: str
    raw_cell_key: str
    format_name: str | None
    files: tuple[Path, ...]
    problem: str | None = None  # set when no reader can read the file(s)

    @property
    def reader(self) -> type[CyclerReader]:
        if self.format_name is None:
            raise SourceFormatError(self.files[0], self.problem or "no reader")
        return CyclerReader.registry[self.format_name]


@dataclass
class Catalog:
    sources: dict[str, CellSource] = field(default_factory=dict)

    def __getitem__(self, key: str) -> CellSource:
        try:
            return self.sources[key]
        except KeyError:
            raise KeyError(
                f"no source files for cell partition {key!r} (known: {sorted(self.sources)[:20]})"
            ) from None

    def __iter__(self):
        return iter(self.sources.values())

    def __len__(self) -> int:
        return len(self.sources)

    def keys(self) -> list[str]:
        return sorted(self.sources)


def sanitize_cell_id(raw: str) -> str:
    """Partition-safe id: letters, digits, `_`, `.`, `-` only (no quotes, slashes or spaces)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.\-]+", "_", raw).strip("._-")
    if not cleaned:
        cleaned = "cell"
    if len(cleaned) > MAX_KEY_LENGTH:
        cleaned = cleaned[: MAX_KEY_LENGTH - 9] + "-" + _short_hash(raw)
    return cleaned


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def is_data_candidate(path: Path) -> bool:
    name = path.name
    if name.startswith((".", "_", "~$")):
        return False
    if name.endswith(SIDECAR_SUFFIX) or _NOT_DATA.match(name):
        return False
    suffix = path.suffix.lower()
    return suffix not in _NOT_DATA_SUFFIXES and suffix not in _PARTIAL_SUFFIXES


def iter_data_files(roots: list[Path]) -> list[Path]:
    files: list[Path] = []
    for root in roots:
        root = Path(root)
        if root.is_file():
            files.append(root)
        elif root.is_dir():
            files.extend(p for p in sorted(root.rglob("*")) if p.is_file() and is_data_candidate(p))
    return files


def discover(roots: list[Path]) -> Catalog:
    """Group the data files under `roots` into cell sources keyed by partition key."""
    groups: dict[tuple[str | None, str], list[Path]] = {}
    problems: dict[tuple[str | None, str], str] = {}
    companions = {r.format_name: r for r in readers_by_priority()}
    for path in iter_data_files(roots):
        if any(reader.is_companion(path) for reader in companions.values()):
            continue
        try:
            reader = detect_format(path)
        except SourceFormatError as exc:
            key = (None, str(path))  # unreadable files are never grouped with anything
            groups[key] = [path]
            problems[key] = exc.problem
            continue
        groups.setdefault((reader.format_name, _group_id(reader, path)), []).append(path)

    by_key: dict[str, list[tuple]] = {}
    for (format_name, group_id), paths in groups.items():
        if format_name is None:
            raw = paths[0].stem
        else:
            reader = CyclerReader.registry[format_name]
            paths.sort(key=reader.file_order)
            raw = reader.cell_key(paths[0])
        by_key.setdefault(sanitize_cell_id(raw), []).append((format_name, group_id, raw, paths))

    catalog = Catalog()
    for key, entries in by_key.items():
        for format_name, group_id, raw, paths in entries:
            partition_key = key
            if len(entries) > 1:  # same name, different tests: keep them apart
                partition_key = sanitize_cell_id(f"{key[:MAX_KEY_LENGTH - 9]}-{_short_hash(str(paths[0]))}")
            catalog.sources[partition_key] = CellSource(
                partition_key=partition_key,
                raw_cell_key=raw,
                format_name=format_name,
                files=tuple(paths),
                problem=problems.get((format_name, group_id)),
            )
    return catalog


def _group_id(reader: type[CyclerReader], path: Path) -> str:
    # Files of one test share a folder and a cell key.
    return f"{path.parent}/{reader.cell_key(path)}"


def sidecar_paths(source: CellSource) -> list[Path]:
    """Sidecars that may describe the cell: `<file stem>.cell.json` or `<cell key>.cell.json`."""
    candidates = []
    for path in source.files:
        candidates.append(path.with_name(path.stem + SIDECAR_SUFFIX))
        candidates.append(path.with_name(source.raw_cell_key + SIDECAR_SUFFIX))
    seen, found = set(), []
    for candidate in candidates:
        if candidate not in seen and candidate.is_file():
            seen.add(candidate)
            found.append(candidate)
    return found


_DEFAULT_FIELDS = {f.name: f.type for f in fields(CellDefaults) if f.name != "origin"}
# Sidecar keys that set each traced field (the voltage window is one field of two keys).
_TRACED_KEYS = {
    "chemistry": ("chemistry",),
    "nominal_capacity_ah": ("nominal_capacity_ah",),
    "voltage_window": ("voltage_min_v", "voltage_max_v"),
    "stated_cycle_life": ("stated_cycle_life",),
    "ambient_temperature": ("ambient_temperature_c",),
}


def read_sidecar(path: Path) -> dict:
    """Validated contents of a `.cell.json` sidecar; SourceFormatError on anything unexpected."""
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceFormatError(path, f"sidecar is not valid JSON ({exc})") from exc
    if not isinstance(content, dict):
        raise SourceFormatError(path, "sidecar must hold a JSON object")
    unknown = sorted(set(content) - set(_DEFAULT_FIELDS))
    if unknown:
        raise SourceFormatError(
            path, f"unknown sidecar keys {unknown}; allowed: {sorted(_DEFAULT_FIELDS)}"
        )
    life = content.get("stated_cycle_life")
    if life is not None and (isinstance(life, bool) or not isinstance(life, int) or life <= 0):
        raise SourceFormatError(path, f"sidecar key 'stated_cycle_life' must be a positive whole number of cycles, got {life!r}")
    ambient = content.get("ambient_temperature_c")
    if ambient is not None and (isinstance(ambient, bool) or not isinstance(ambient, (int, float)) or not -60 <= ambient <= 100):
        raise SourceFormatError(path, f"sidecar key 'ambient_temperature_c' must be a temperature in degC (-60..100), got {ambient!r}")
    for key in ("nominal_capacity_ah", "voltage_min_v", "voltage_max_v", "max_abs_current_a"):
        value = content.get(key)
        if value is not None and (not isinstance(value, (int, float)) or value <= 0):
            raise SourceFormatError(path, f"sidecar key {key!r} must be a positive number, got {value!r}")
    return content


def cell_record(source: CellSource) -> dict:
    """The `cells` registry row: reader defaults, overridden by sidecars, gaps filled by chemistry.

    Chemistry, nominal capacity and voltage window each carry where they came from
    (`*_source` columns, kinds in `readers.base.ORIGIN_KINDS`): the sidecar that set it, the file
    itself or a dataset rule (as the reader states), inferred (the voltage window from the
    chemistry table), or unknown. Nothing is guessed from a layout alone: a value a reader gives
    without saying where it came from is an error.
    """
    defaults = source.reader.describe(list(source.files))
    values = {name: getattr(defaults, name) for name in _DEFAULT_FIELDS}
    sources = {}
    for traced, keys in _TRACED_KEYS.items():
        known = all(values[k] is not None for k in keys)
        if known and traced not in defaults.origin:
            raise SourceFormatError(
                source.files[0], f"reader {source.format_name} gives {traced} without saying where it came from"
            )
        # a reader may say why a value is unknown ("unknown: no cycle-life file beside the folder")
        why_unknown = defaults.origin.get(traced, "")
        sources[traced] = defaults.origin[traced] if known else why_unknown if why_unknown.startswith("unknown") else "unknown"
    origin = ["reader defaults"]
    for sidecar in sidecar_paths(source):
        content = read_sidecar(sidecar)
        values.update(content)
        origin.append(f"sidecar {sidecar.name}")
        for traced, keys in _TRACED_KEYS.items():
            if any(content.get(k) is not None for k in keys):
                sources[traced] = f"sidecar: {sidecar.name}"
    if values["voltage_min_v"] is None or values["voltage_max_v"] is None:
        low, high = voltage_window(values["chemistry"])
        values["voltage_min_v"] = values["voltage_min_v"] or low
        values["voltage_max_v"] = values["voltage_max_v"] or high
        origin.append(f"chemistry table ({values['chemistry'] or 'generic Li-ion'})")
        sources["voltage_window"] = (
            f"inferred: chemistry table for {values['chemistry']} (chemistry from {sources['chemistry']})"
            if values["chemistry"] and values["chemistry"].upper() in VOLTAGE_WINDOWS_V
            else f"unknown: validation only refuses readings outside lithium cells' envelope {low:g}-{high:g} V"
        )
    if values["voltage_min_v"] >= values["voltage_max_v"]:
        raise SourceFormatError(
            source.files[0],
            f"voltage window is empty: min {values['voltage_min_v']} V >= max {values['voltage_max_v']} V",
        )
    return {
        "cell_id": source.partition_key,
        "dataset": values["dataset"],
        "source_format": source.format_name,
        "chemistry": values["chemistry"],
        "nominal_capacity_ah": values["nominal_capacity_ah"],
        "voltage_min_v": float(values["voltage_min_v"]),
        "voltage_max_v": float(values["voltage_max_v"]),
        "max_abs_current_a": values["max_abs_current_a"],
        "licence": values["licence"],
        "citation": values["citation"],
        "description": values["description"],
        "source_files": json.dumps([p.name for p in source.files]),
        "metadata_origin": "; ".join(origin),
        "chemistry_source": sources["chemistry"],
        "nominal_capacity_source": sources["nominal_capacity_ah"],
        "voltage_window_source": sources["voltage_window"],
        "stated_cycle_life": values["stated_cycle_life"],
        "stated_cycle_life_source": sources["stated_cycle_life"],
        "ambient_temperature_c": values["ambient_temperature_c"],
        "ambient_temperature_source": sources["ambient_temperature"],
    }


def trusted_nominal(record) -> float | None:
    """The cell's nominal capacity if a sidecar, the file or a dataset rule states it, else None
    (an unknown capacity is never stood in for by a guess)."""
    value = record.get("nominal_capacity_ah")
    source = str(record.get("nominal_capacity_source") or "unknown")
    if value is None or value != value or not source.startswith(("sidecar", "file", "dataset rule")):
        return None
    return float(value)
