"""Pack telemetry sources: find pack files, read them, and store them in a long layout.

Where packs come from (`discover_packs`):
  - pack_sim's layout: `<id>.parquet` + a `<id>.json` sidecar whose "files" name the telemetry
    file and its companions (ground truth, alerts, ...), which are not packs themselves;
  - a plain CSV or Parquet file with the same column layout (time, pack current, one column per
    cell voltage, temperatures; which columns are which comes from the twin settings'
    `sources.pack_telemetry`), optionally with a `<stem>.json` sidecar giving chemistry and
    nominal (cell) capacity;
  - a cell of the cycler pipeline as a one-cell pack (`cell_packs`): its `validated_samples`,
    read through the settings' `single_cell` mapping. Validated rather than re-read from the
    cycler file, because the validated rows are already in SI units and sign convention, with
    unusable rows quarantined for a reason, and the cells registry knows the chemistry and
    capacity: the twin sees what the rest of the pipeline sees, and no reader runs twice.
Every other file in a pack folder becomes a pack with a `problem`, so that it fails its own
partition with a clear message instead of vanishing. Source files are only read.

Long layout (`telemetry_long`): one row per (sample, channel), so packs of any cell count share
one table: pack_id, sample (row of the file, 0-based), timestamp, time_s, current_a,
channel (the source column), quantity (the logical input the settings map it to: cell_voltages,
temperatures, ... or "unmapped"), channel_id (cell or sensor id), value. `telemetry_wide` turns
it back into the source's columns for the models.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from battery_pipeline.science.sources import Catalog, is_data_candidate, sanitize_cell_id
from battery_pipeline.science.twin.settings import TwinSettings, TwinSettingsError, enabled_models

PACK_FILE_SUFFIXES = (".parquet", ".csv")
PACK_SOURCE_KIND = "pack_telemetry"
CELL_SOURCE_KIND = "single_cell"
TIMESTAMP_COLUMN = "timestamp"
UNMAPPED = "unmapped"
LONG_COLUMNS = ["pack_id", "sample", "timestamp", "time_s", "current_a", "channel", "quantity", "channel_id", "value"]


class PackFormatError(ValueError):
    """A pack file that cannot be used; the message names the file and what is wrong."""

    def __init__(self, path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = Path(path), problem


@dataclass(frozen=True)
class PackSource:
    pack_id: str
    kind: str  # "file" (pack telemetry file) or "cell" (a cell partition's validated samples)
    path: Path | None = None
    sidecar: Path | None = None
    cell_id: str | None = None
    problem: str | None = None

    @property
    def source_kind(self) -> str:
        """The twin settings' source kind whose column mapping reads this pack."""
        return CELL_SOURCE_KIND if self.kind == "cell" else PACK_SOURCE_KIND

    @property
    def origin(self) -> str:
        return f"validated_samples of cell {self.cell_id}" if self.kind == "cell" else str(self.path)


@dataclass
class PackCatalog(Catalog):
    """Pack sources by partition key (iteration, len and keys as the cells' Catalog)."""

    sources: dict[str, PackSource] = field(default_factory=dict)

    def __getitem__(self, key: str) -> PackSource:
        try:
            return self.sources[key]
        except KeyError:
            raise KeyError(f"no pack source for partition {key!r} (known: {sorted(self.sources)[:20]})") from None


def _read_sidecar(path: Path) -> dict | None:
    """A pack sidecar (a JSON object), or None for any other JSON file."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


def _add(catalog: PackCatalog, source: PackSource) -> None:
    key = source.pack_id
    if key in catalog.sources:  # two files with one name in different folders: keep both apart
        import hashlib

        digest = hashlib.sha1(str(source.path or source.cell_id).encode()).hexdigest()[:8]
        key = f"{key[:55]}-{digest}"
        source = PackSource(key, source.kind, source.path, source.sidecar, source.cell_id, source.problem)
    catalog.sources[key] = source


def discover_packs(roots: list[Path], cell_packs: list[str] | tuple[str, ...] = ()) -> PackCatalog:
    """Pack sources in `roots` (searched recursively), plus the cells named in `cell_packs`."""
    catalog = PackCatalog()
    files: list[Path] = []
    for root in map(Path, roots):
        if root.is_file():
            files.append(root)
        elif root.is_dir():
            files.extend(p for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith((".", "_")))
    sidecars: dict[Path, dict] = {}
    claimed: set[Path] = set()  # companions named by a sidecar: ground truth etc., not packs
    for path in files:
        if path.suffix.lower() == ".json":
            raw = _read_sidecar(path)
            if raw is not None:
                sidecars[path] = raw
                for role, name in (raw.get("files") or {}).items():
                    if role != "telemetry" and isinstance(name, str):
                        claimed.add(path.parent / name)
    for path in files:
        if path in claimed or path.suffix.lower() == ".json" or not is_data_candidate(path):
            continue
        sidecar = path.with_suffix(".json")
        pack_id = path.stem
        if sidecar in sidecars:
            pack_id = str(sidecars[sidecar].get("pack_id") or pack_id)
        problem = None
        if path.suffix.lower() not in PACK_FILE_SUFFIXES:
            problem = f"not a pack file format this pipeline reads ({', '.join(PACK_FILE_SUFFIXES)})"
        _add(catalog, PackSource(sanitize_cell_id(pack_id), "file", path, sidecar if sidecar in sidecars else None,
                                 problem=problem))
    for cell_id in cell_packs:
        _add(catalog, PackSource(sanitize_cell_id(cell_id), "cell", cell_id=cell_id))
    return catalog


def read_pack_file(source: PackSource) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(the file's frame, its sidecar as a dict or {}); PackFormatError names file and problem."""
    if source.problem:
        raise PackFormatError(source.path, source.problem)
    path = source.path
    try:
        if path.suffix.lower() == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path)
    except FileNotFoundError:
        raise PackFormatError(path, "file not found (moved or deleted since discovery)") from None
    except Exception as exc:  # any parser failure: say which file and why
        raise PackFormatError(path, f"cannot be read as {path.suffix.lstrip('.')}: {type(exc).__name__}: {exc}") from None
    if frame.empty:
        raise PackFormatError(path, "no data rows")
    sidecar = _read_sidecar(source.sidecar) if source.sidecar else None
    return frame, sidecar or {}


@dataclass(frozen=True)
class SourceLayout:
    """Which source columns the enabled models read, for one source kind."""

    time: str
    current: str
    channels: dict[str, Mapping]  # logical multi-column input -> mapping ({"pattern": ...} / {"columns": ...})
    singles: dict[str, str]  # other one-column inputs (e.g. soh) -> column


def source_layout(settings: TwinSettings, source_kind: str) -> SourceLayout:
    """The union of the enabled models' input mappings for a source kind; every logical input
    must be mapped the same way by every model that reads it (one stored telemetry serves all)."""
    mappings: dict[str, Any] = {}
    owners: dict[str, str] = {}
    multi_column: set[str] = set()
    classes = settings.model_classes()
    for name in enabled_models(settings):
        inputs = classes[name].manifest.inputs
        for logical, mapping in settings.models[name].inputs.get(source_kind, {}).items():
            if mapping is None:
                continue
            if logical in mappings and mappings[logical] != mapping:
                raise TwinSettingsError(
                    f"{settings.files[-1]}: models.{name}.inputs.{source_kind}.{logical}: maps {logical!r} to "
                    f"{mapping!r} but model {owners[logical]!r} maps it to {mappings[logical]!r}; one pack "
                    "telemetry table serves every model, so they must agree"
                )
            mappings[logical], owners[logical] = mapping, name
            if inputs[logical].kind == "columns":
                multi_column.add(logical)
    for logical in ("time", "current"):
        if logical not in mappings:
            raise TwinSettingsError(f"{settings.files[0]}: sources.{source_kind}.{logical}: not mapped by any enabled model")
    channels = {k: v for k, v in mappings.items() if k in multi_column}
    singles = {k: v for k, v in mappings.items() if k not in multi_column and k not in ("time", "current")}
    return SourceLayout(mappings["time"], mappings["current"], channels, singles)


def _channel_ids(columns: list[str], mapping: Mapping) -> dict[str, str]:
    """source column -> id for one multi-column mapping."""
    if "pattern" in mapping:
        regex = re.compile(mapping["pattern"])
        found = {}
        for column in columns:
            match = regex.search(column)
            if match:
                found[column] = match.group(1) if regex.groups else column
        return found
    selected = mapping["columns"]
    pairs = selected.items() if isinstance(selected, Mapping) else ((c, c) for c in selected)
    return {column: str(cid) for cid, column in pairs if column in columns}


def _numeric(frame: pd.DataFrame, column: str, where) -> np.ndarray:
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() & frame[column].notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise PackFormatError(where, f"column {column!r} is not numeric (data row {row}: {frame[column].iloc[row]!r})")
    return values.to_numpy(dtype="float64")


def telemetry_long(frame: pd.DataFrame, layout: SourceLayout, pack_id: str, where,
                   keep_unmapped: bool = True) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The pack frame in the long layout, and facts about it (cells, sensors, ignored columns).

    Mapped columns must be numeric; unmapped numeric columns are kept as channels of quantity
    "unmapped" when `keep_unmapped` (a pack file: nothing is dropped) and left out otherwise (a
    cell's validated samples stay in their own table). Unmapped text columns are listed in
    `ignored_columns`. Time must not go backwards.
    """
    columns = [str(c) for c in frame.columns]
    frame = frame.set_axis(columns, axis=1).reset_index(drop=True)
    timestamp = None
    if TIMESTAMP_COLUMN in columns:
        try:
            timestamp = pd.to_datetime(frame[TIMESTAMP_COLUMN], utc=True)
        except (ValueError, TypeError) as exc:
            raise PackFormatError(where, f"column {TIMESTAMP_COLUMN!r} is not a timestamp: {exc}") from None
    if layout.time in columns:
        time_s = _numeric(frame, layout.time, where)
    elif timestamp is not None:
        time_s = (timestamp - timestamp.iloc[0]).dt.total_seconds().to_numpy()
    else:
        raise PackFormatError(where, f"no time column {layout.time!r} (settings: time) and no {TIMESTAMP_COLUMN!r} column")
    if layout.current not in columns:
        raise PackFormatError(where, f"no current column {layout.current!r} (settings: current); columns: {', '.join(columns)}")
    current = _numeric(frame, layout.current, where)
    if np.isnan(time_s).any():
        raise PackFormatError(where, f"time is missing in data row {int(np.flatnonzero(np.isnan(time_s))[0])}")
    backwards = np.flatnonzero(np.diff(time_s) < 0)
    if len(backwards):
        row = int(backwards[0]) + 1
        raise PackFormatError(where, f"time goes backwards at data row {row} ({time_s[row - 1]} -> {time_s[row]} s)")

    taken = {layout.time, layout.current, TIMESTAMP_COLUMN}
    channels: list[tuple[str, str, str]] = []  # (source column, quantity, id)
    for logical, mapping in layout.channels.items():
        for column, cid in _channel_ids([c for c in columns if c not in taken], mapping).items():
            channels.append((column, logical, cid))
            taken.add(column)
    if not any(q == "cell_voltages" for _, q, _ in channels):
        raise PackFormatError(where, f"no cell voltage column matches the settings' cell_voltages mapping "
                              f"{layout.channels.get('cell_voltages')!r}; columns: {', '.join(columns)}")
    for logical, column in layout.singles.items():
        if column in columns and column not in taken:
            channels.append((column, logical, logical))
            taken.add(column)
    ignored = []
    for column in columns:
        if column in taken:
            continue
        if keep_unmapped and pd.api.types.is_numeric_dtype(frame[column]):
            channels.append((column, UNMAPPED, column))
        elif keep_unmapped:
            ignored.append(column)
    n, k = len(frame), len(channels)
    values = np.column_stack([_numeric(frame, c, where) for c, _, _ in channels]) if k else np.empty((n, 0))
    long = pd.DataFrame({
        "pack_id": pack_id,
        "sample": np.repeat(np.arange(n, dtype="int64"), k),
        "timestamp": np.repeat(timestamp.to_numpy(), k) if timestamp is not None else pd.NaT,
        "time_s": np.repeat(time_s, k),
        "current_a": np.repeat(current, k),
        "channel": np.tile([c for c, _, _ in channels], n),
        "quantity": np.tile([q for _, q, _ in channels], n),
        "channel_id": np.tile([i for _, _, i in channels], n),
        "value": values.ravel(),
    }, columns=LONG_COLUMNS)
    if timestamp is None:
        long["timestamp"] = pd.Series(pd.NaT, index=long.index, dtype="datetime64[ns, UTC]")
    facts = {
        "samples": n,
        "cells": sorted(i for _, q, i in channels if q == "cell_voltages"),
        "temperature_sensors": sorted(i for _, q, i in channels if q == "temperatures"),
        "channels": k,
        "unmapped_channels": sorted(c for c, q, _ in channels if q == UNMAPPED),
        "ignored_columns": ignored,
        "time_s_range": [float(time_s[0]), float(time_s[-1])],
        "start": None if timestamp is None else timestamp.iloc[0].isoformat(),
    }
    return long, facts


def telemetry_wide(long: pd.DataFrame, layout: SourceLayout) -> pd.DataFrame:
    """One pack's long telemetry back in the source's columns, indexed by sample (the frame the
    models read through the settings' mapping)."""
    if long.empty:
        return pd.DataFrame(columns=[layout.time, layout.current]).rename_axis("sample")
    order = list(pd.unique(long["channel"]))  # stored order = the file's column order
    values = long.pivot(index="sample", columns="channel", values="value").reindex(columns=order)
    per_sample = long.drop_duplicates("sample").set_index("sample").sort_index()
    wide = pd.DataFrame({layout.time: per_sample["time_s"], layout.current: per_sample["current_a"]})
    if per_sample["timestamp"].notna().any():
        wide[TIMESTAMP_COLUMN] = per_sample["timestamp"]
    return wide.join(values).rename_axis(index="sample", columns=None)


def pack_parameters(sidecar: Mapping[str, Any]) -> dict[str, Any]:
    """Run parameters for the twin models from a pack's metadata (what the pack *is*): its
    chemistry and nominal cell capacity, where known."""
    parameters = {}
    chemistry = sidecar.get("chemistry")
    if isinstance(chemistry, str) and chemistry.strip():
        parameters["chemistry"] = chemistry.strip().upper()
    capacity = sidecar.get("nominal_capacity_ah")
    if capacity is not None and not pd.isna(capacity):
        parameters["nominal_capacity_ah"] = float(capacity)
    return parameters


# The demo: small simulated packs of different chemistries, generated on first use (seeded, so
# every machine gets the same data without committing it).
DEMO_PACKS = (
    dict(pack_id="demo_nmc_12s", chemistry="NMC", n_cells=12, duration_h=24.0, seed=501),
    dict(pack_id="demo_lfp_8s", chemistry="LFP", n_cells=8, duration_h=48.0, seed=502),
)
DEMO_SAMPLE_PERIOD_S = 10.0  # with the 30 s default debounce, pack_sim's spikes stay below it


def ensure_demo_packs(demo_dir: Path) -> Path:
    """The folder of demo pack files, generating them (pack_sim) if they are not there yet."""
    from battery_pipeline.science.twin.pack_sim import simulate_pack, write_pack

    demo_dir = Path(demo_dir)
    if demo_dir.is_dir() and any(demo_dir.glob("*.json")):
        return demo_dir
    demo_dir.parent.mkdir(parents=True, exist_ok=True)
    # Staging folder, renamed into place: a half-written demo is never discovered.
    staging = Path(tempfile.mkdtemp(prefix=f".{demo_dir.name}-staging-", dir=demo_dir.parent))
    try:
        for spec in DEMO_PACKS:
            write_pack(simulate_pack(sample_period_s=DEMO_SAMPLE_PERIOD_S, **spec), staging)
        staging.chmod(0o755)  # mkdtemp makes it private; the demo is for everyone
        if demo_dir.is_dir() and not any(demo_dir.iterdir()):
            demo_dir.rmdir()
        os.replace(staging, demo_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return demo_dir
