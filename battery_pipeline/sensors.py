"""Sensors: cycler and pack files dropped into the data folders start the runs of their partitions
(`incoming_files_sensor`); a cell's successful run re-runs the twin of its one-cell pack
(`cell_packs_sensor`, at the end of this module).

What is watched: the `SourceCatalog`'s data folders (`BATTERY_PIPELINE_DATA_DIRS`, default
`data/incoming`) for cells and the `PackSourceCatalog`'s pack folders (`BATTERY_PIPELINE_PACK_DIRS`,
default `data/packs`) for packs. The demo fleet and demo packs the catalogs fall back to are never
watched: an empty folder requests nothing. Files map to partitions through the discovery the assets
use (`science.sources.discover`, `science.twin.packs.discover_packs`), so a cell made of several
files (CALCE's weekly exports) is one `cells` partition and one run. Besides its data files, a
partition's content includes what the run also reads: a cell's `.cell.json` sidecars and reader
companions (Arbin's `<stem>_Metadata.csv`), a pack's `<stem>.json` sidecar.

Cells whose content is new or changed run `cell_pipeline_job` as one batched run per contiguous
range of the `cells` partition order (a burst of new files, added in one evaluation, is one range
and one run; its run key hashes every member's content); each pack runs `pack_pipeline_job`. New
partitions are added to `cells` / `packs` through the result's dynamic-partition requests.
Predictions follow by declarative automation (automation.py).

Stable files only. A file is taken when (a) its size and modification time are exactly those the
previous evaluation recorded, and (b) it was last modified at least `min_file_age_seconds` ago
(default 30 s, env `BATTERY_PIPELINE_SENSOR_MIN_FILE_AGE_S`). A new file therefore waits at least
one sensor interval (default 30 s, env `BATTERY_PIPELINE_SENSOR_INTERVAL_S`) and the minimum age;
a partition is taken only when all its files are stable. A writer that pauses longer than that
mid-file cannot be told apart from a finished one: copy tools that write under a temporary name
(`.part`, `.tmp`, leading dot) and rename at the end are safe, discovery skips those names.

Content, not timestamps, decides what runs. Each stable file's sha256 (first 16 hex digits) is
kept in the cursor and recomputed only when its size or modification time changes; a partition's
content hash combines its files' names and hashes. A partition runs when that hash differs from
the one it last ran with: touching or re-copying an identical file runs nothing, an edited file
runs its partition again. The run key is `<cells|packs>:<partition>:<content hash>`, so Dagster
itself also refuses a second run of the same content (e.g. after a lost cursor). An edit that
keeps both the size and the nanosecond modification time is not seen.

Unreadable files: the sensor never opens a file except to hash it and never raises for one. A file
no reader recognises, or one that cannot be opened, is still registered and its partition run:
the run fails on that partition alone with the reader's message (e.g. "unknown format", "cannot
open file (Permission denied)"), visible in the UI, and the sensor logs a warning. An unopenable
file is retried on every evaluation and runs again once it can be read.

The cursor (stored by Dagster with the sensor's state, so it survives restarts) is compact JSON:
{"v": 1, "files": {path: [size, mtime_ns, hash or null]}, "ran": {"cells"|"packs": {key: hash}}}.
Files and partitions that disappeared are dropped from it. Source files are only ever read.
"""

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from battery_pipeline.jobs import cell_pipeline_job, pack_pipeline_job
from battery_pipeline.executors import cells_per_run
from battery_pipeline.partitions import batch_ranges
from battery_pipeline.pack_resources import PackSourceCatalog
from battery_pipeline.partitions import cell_partitions, pack_partitions
from battery_pipeline.resources import SourceCatalog
from battery_pipeline.science import sources as cell_sources
from battery_pipeline.science.readers import readers_by_priority
from battery_pipeline.science.twin import packs as pack_sources

SENSOR_NAME = "incoming_files_sensor"
CURSOR_VERSION = 1
HASH_DIGITS = 16  # 64 bits: ample to tell one version of a file from the next, compact in the cursor
# Hashing stops for this evaluation after this many bytes (at least one file is always hashed):
# a folder of large files is taken over several evaluations instead of outlasting the tick timeout.
DEFAULT_HASH_BUDGET_BYTES = 1 << 30
UNOPENABLE = "unopenable"
JOB_FOR_KIND = {cell_partitions.name: cell_pipeline_job.name, pack_partitions.name: pack_pipeline_job.name}


def default_min_file_age_seconds() -> float:
    return float(os.environ.get("BATTERY_PIPELINE_SENSOR_MIN_FILE_AGE_S", "30"))


def default_interval_seconds() -> int:
    return int(os.environ.get("BATTERY_PIPELINE_SENSOR_INTERVAL_S", "30"))


@dataclass(frozen=True)
class WatchedPartition:
    """One partition and every file whose content its run reads."""

    kind: str  # the dynamic partitions definition: "cells" or "packs"
    key: str
    files: tuple[Path, ...]
    problem: str | None = None  # discovery's reason why the run will fail


def watched_cells(roots: list[Path]) -> list[WatchedPartition]:
    catalog = cell_sources.discover(roots)
    companions = _companions_by_folder(roots)
    watched = []
    for source in catalog:
        extra = [*cell_sources.sidecar_paths(source)]
        for path in source.files:
            # A companion describes the data file whose name it extends (Arbin: <stem>_Metadata.csv).
            extra += [c for c in companions.get(path.parent, []) if c.name.lower().startswith(path.stem.lower())]
        files = tuple(dict.fromkeys([*source.files, *extra]))
        watched.append(WatchedPartition(cell_partitions.name, source.partition_key, files, source.problem))
    return watched


def _companions_by_folder(roots: list[Path]) -> dict[Path, list[Path]]:
    readers = readers_by_priority()
    found: dict[Path, list[Path]] = {}
    for path in cell_sources.iter_data_files(roots):
        if any(reader.is_companion(path) for reader in readers):
            found.setdefault(path.parent, []).append(path)
    return found


def watched_packs(roots: list[Path]) -> list[WatchedPartition]:
    # Cells run as one-cell packs (twin_cells) are not files: they are left to their own jobs.
    catalog = pack_sources.discover_packs(roots)
    return [
        WatchedPartition(pack_partitions.name, s.pack_id, tuple(p for p in (s.path, s.sidecar) if p), s.problem)
        for s in catalog
    ]


@dataclass
class IncomingCursor:
    files: dict[str, list] = field(default_factory=dict)  # path -> [size, mtime_ns, hash | None]
    ran: dict[str, dict[str, str]] = field(default_factory=dict)  # kind -> partition -> content hash

    @classmethod
    def parse(cls, raw: str | None) -> "IncomingCursor":
        """The stored cursor; an empty one if there is none or it is not ours (a fresh start)."""
        if not raw:
            return cls()
        try:
            data = json.loads(raw)
        except ValueError:
            return cls()
        if not isinstance(data, dict) or data.get("v") != CURSOR_VERSION:
            return cls()
        return cls(files=dict(data.get("files") or {}), ran={k: dict(v) for k, v in (data.get("ran") or {}).items()})

    def serialize(self) -> str:
        payload = {"v": CURSOR_VERSION, "files": self.files, "ran": self.ran}
        return json.dumps(payload, separators=(",", ":"), sort_keys=True)


def content_hash(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()[:HASH_DIGITS]


def partition_hash(partition: WatchedPartition, file_hashes: dict[str, str]) -> str:
    # File names, not full paths: moving the data folder does not make its content new.
    items = sorted((p.name, file_hashes[str(p)]) for p in partition.files)
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:HASH_DIGITS]


@dataclass
class Evaluation:
    requests: list[tuple[WatchedPartition, str, str]]  # (partition, content hash, "new" | "changed")
    waiting: list[str]  # partitions with a file not stable yet
    cursor: IncomingCursor


def evaluate(
    partitions: list[WatchedPartition],
    cursor: IncomingCursor,
    now: float,
    min_file_age_seconds: float,
    hash_budget_bytes: int = DEFAULT_HASH_BUDGET_BYTES,
) -> Evaluation:
    """Which partitions to run now, and the next cursor (pure but for reading the files)."""
    files: dict[str, list] = {}
    stable: dict[str, str] = {}
    budget, hashed_any = hash_budget_bytes, False
    for path in dict.fromkeys(p for part in partitions for p in part.files):
        name = str(path)
        try:
            stat = path.stat()
        except OSError:  # vanished (or renamed) since discovery: its partition waits
            continue
        seen = cursor.files.get(name)
        if not seen or seen[0] != stat.st_size or seen[1] != stat.st_mtime_ns:
            files[name] = [stat.st_size, stat.st_mtime_ns, None]  # first sight or still changing
            continue
        digest = seen[2]
        if digest is None:
            if now - stat.st_mtime < min_file_age_seconds or (hashed_any and budget <= 0):
                files[name] = seen
                continue
            try:
                digest = content_hash(path)
            except OSError:
                # Registered anyway, so that its run fails with the reader's message; not cached,
                # so that the file runs again once it can be read.
                files[name] = [stat.st_size, stat.st_mtime_ns, None]
                stable[name] = f"{UNOPENABLE}:{stat.st_size}:{stat.st_mtime_ns}"
                continue
            budget -= stat.st_size
            hashed_any = True
        files[name] = [stat.st_size, stat.st_mtime_ns, digest]
        stable[name] = digest

    requests, waiting = [], []
    ran: dict[str, dict[str, str]] = {}
    for part in sorted(partitions, key=lambda p: (p.kind, p.key)):
        previous = cursor.ran.get(part.kind, {}).get(part.key)
        if previous is not None:
            ran.setdefault(part.kind, {})[part.key] = previous
        if not all(str(p) in stable for p in part.files):
            waiting.append(f"{part.kind}/{part.key}")
            continue
        digest = partition_hash(part, stable)
        if digest != previous:
            requests.append((part, digest, "new" if previous is None else "changed"))
            ran.setdefault(part.kind, {})[part.key] = digest
    return Evaluation(requests, waiting, IncomingCursor(files=files, ran=ran))


def build_incoming_files_sensor(
    *,
    name: str = SENSOR_NAME,
    min_file_age_seconds: float | None = None,
    minimum_interval_seconds: int | None = None,
    hash_budget_bytes: int = DEFAULT_HASH_BUDGET_BYTES,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> dg.SensorDefinition:
    """The incoming-files sensor; None means the environment's value (see the module docstring)."""
    min_age = default_min_file_age_seconds() if min_file_age_seconds is None else min_file_age_seconds

    @dg.sensor(
        name=name,
        jobs=[cell_pipeline_job, pack_pipeline_job],
        minimum_interval_seconds=minimum_interval_seconds or default_interval_seconds(),
        default_status=default_status,
        description=(
            "Runs cell_pipeline_job for each cell, pack_pipeline_job for each pack, whose files in the data "
            f"folders are new or changed in content, once unchanged for one evaluation and {min_age:g} s old."
        ),
    )
    def incoming_files(context: dg.SensorEvaluationContext, catalog: SourceCatalog, pack_catalog: PackSourceCatalog):
        partitions = watched_cells([Path(d) for d in catalog.data_dirs])
        partitions += watched_packs([Path(d) for d in pack_catalog.pack_dirs])
        result = evaluate(partitions, IncomingCursor.parse(context.cursor), time.time(), min_age, hash_budget_bytes)

        run_requests, new_keys, changed_cells = [], {}, {}
        for part, digest, trigger in result.requests:
            if part.problem:
                context.log.warning(f"{part.kind}/{part.key}: {part.problem}; its run will fail with this reason")
            context.log.info(f"{part.kind}/{part.key}: {trigger} content {digest} -> {JOB_FOR_KIND[part.kind]}")
            new_keys.setdefault(part.kind, []).append(part.key)
            if part.kind == cell_partitions.name:
                changed_cells[part.key] = (digest, trigger)
                continue
            run_requests.append(
                dg.RunRequest(
                    job_name=JOB_FOR_KIND[part.kind],
                    partition_key=part.key,
                    run_key=f"{part.kind}:{part.key}:{digest}",
                    tags={"battery_pipeline/content_hash": digest, "battery_pipeline/trigger": trigger},
                )
            )
        add_requests, ordered = [], {}
        for kind, keys in new_keys.items():
            known = context.instance.get_dynamic_partitions(kind)
            known_set = set(known)
            unknown = [k for k in keys if k not in known_set]
            ordered[kind] = [*known, *unknown]  # partitions added now come after the known ones, in this order
            if unknown:
                definition = cell_partitions if kind == cell_partitions.name else pack_partitions
                add_requests.append(definition.build_add_request(unknown))
        # Cells: one run per contiguous range of the partition order (a burst of new files is
        # one range: one batched run, see assets/cell_pipeline.py); on a cluster, ranges of at
        # most `cells_per_run` cells, whose runs' steps the workers take side by side.
        for first, last, members in batch_ranges(ordered.get(cell_partitions.name, []), list(changed_cells), cells_per_run()):
            if first == last:
                digest, trigger = changed_cells[first]
                run_requests.append(dg.RunRequest(
                    job_name=cell_pipeline_job.name, partition_key=first, run_key=f"cells:{first}:{digest}",
                    tags={"battery_pipeline/content_hash": digest, "battery_pipeline/trigger": trigger},
                ))
                continue
            digest = hashlib.sha256(json.dumps([(k, changed_cells[k][0]) for k in members]).encode()).hexdigest()[:HASH_DIGITS]
            triggers = [changed_cells[k][1] for k in members]
            run_requests.append(dg.RunRequest(
                job_name=cell_pipeline_job.name,
                run_key=f"cells:{first}..{last}:{digest}",
                tags={
                    "battery_pipeline/content_hash": digest,
                    "battery_pipeline/trigger": f"{triggers.count('new')} new, {triggers.count('changed')} changed cells",
                    "dagster/asset_partition_range_start": first,
                    "dagster/asset_partition_range_end": last,
                },
            ))
        skip = None
        if not run_requests:
            skip = "nothing new or changed"
            if result.waiting:
                skip += f"; waiting until stable: {', '.join(result.waiting[:10])}"
        return dg.SensorResult(
            run_requests=run_requests,
            dynamic_partitions_requests=add_requests,
            cursor=result.cursor.serialize(),
            skip_reason=skip,
        )

    return incoming_files


incoming_files_sensor = build_incoming_files_sensor()


CELL_PACKS_SENSOR_NAME = "cell_packs_sensor"


@dg.run_status_sensor(
    name=CELL_PACKS_SENSOR_NAME,
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[cell_pipeline_job],
    request_job=pack_pipeline_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "When cell_pipeline_job succeeds for a cell that runs as a one-cell pack ($BATTERY_PIPELINE_TWIN_CELLS), "
        "runs pack_pipeline_job for that pack: its twin follows the cell's new samples."
    ),
)
def cell_packs_sensor(context: dg.RunStatusSensorContext, pack_catalog: PackSourceCatalog):
    """A one-cell pack reads its cell's validated samples, which the incoming-files sensor knows
    nothing of; so the twin run waits for the cell run's success instead of a file. One request per
    one-cell pack of the successful cell run (a batch covers several cells; run key
    `cell_packs:<pack>:<cell run id>`); the `packs` partition is added when it is missing."""
    cells = run_cells(context.instance, context.dagster_run.tags)
    twins = [c for c in cells if c in pack_catalog.twin_cells]
    if not twins:
        return dg.SkipReason(f"no cell of the run ({', '.join(cells) or 'none'}) runs as a one-cell pack")
    packs = [cell_sources.sanitize_cell_id(c) for c in twins]  # the pack keys discover_packs gives cells
    known = set(context.instance.get_dynamic_partitions(pack_partitions.name))
    unknown = [p for p in packs if p not in known]
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                partition_key=pack,
                run_key=f"cell_packs:{pack}:{context.dagster_run.run_id}",
                tags={"battery_pipeline/trigger": f"cell run {context.dagster_run.run_id}"},
            )
            for pack in packs
        ],
        dynamic_partitions_requests=[pack_partitions.build_add_request(unknown)] if unknown else [],
    )


def run_cells(instance, tags) -> list[str]:
    """The cell partitions a run covered: its partition, or every key of its partition range."""
    if "dagster/partition" in tags:
        return [tags["dagster/partition"]]
    first, last = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
    if first is None or last is None:
        return []
    ordered = instance.get_dynamic_partitions(cell_partitions.name)
    if first not in ordered or last not in ordered:
        return []
    return ordered[ordered.index(first): ordered.index(last) + 1]
