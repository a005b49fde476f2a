"""The per-cell assets as one step: `cells` -> `raw_samples` -> `validated_samples` ->
`cycle_features` -> `cycle_labels` (and their sibling tables), for one cell or a batch of cells.

Why one step. A run of five steps, each in its own process importing the whole stack while the
one-slot DuckDB pool lets only one of them run anyway, cost about 35 s for 5 s of work per cell.
One step per run, and one run per batch of cells (a single-run backfill policy: a UI backfill, a
sensor burst or `battery-pipeline run` over many cells is one run), leaves the time to the work:
* the cells of a batch are computed in worker processes (`science.cell_chain.compute_cell`, a
  forkserver pool, one worker per core), one cell per task, and described there too (metadata
  and the checks that judge the computed tables: `compute_and_describe`);
* this process, which holds the DuckDB writer, stores the results stage by stage for a group of
  cells at a time: one DELETE + INSERT per table per group (`FLUSH_ROWS` / `FLUSH_CELLS`), not
  one transaction per cell, while a thread pulls the next finished cells (`Ahead`);
* after validation's write, its checks read back what was stored (one query per kind for the
  group, `validation.read_back_validation`); each stage's events go into one transaction of the
  instance's event log where it offers one (`batched_event_writes`).

Per-cell isolation holds inside the batch. A cell whose file cannot be read, or whose stage
fails, or whose blocking check fails (ERROR severity), stops at that stage: nothing later is
stored for it and the other cells go on. Materializations and check results are logged per cell
partition, so the UI shows every cell's metadata and checks as before; at the end the step fails
if any cell failed, naming each cell, its stage and the reason, which marks exactly those
partitions failed in the UI (materialized cells stay materialized).

Selecting a subset of the assets runs the stages from the first selected one to the last; a
stage writes all its tables together (validated and quarantined rows must agree), so its
siblings are reported materialized too. A stage that does not start from the files reads its
inputs from the warehouse.
"""


import contextlib
import functools
import math
import multiprocessing
import queue
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluationTargetMaterializationData

from battery_pipeline import batch_workers, executors
from battery_pipeline.assets import features as feature_assets
from battery_pipeline.assets import ingest, validation
from battery_pipeline.assets.metadata import StageReport
from battery_pipeline.lineage import lineage_metadata, partition_hashes
from battery_pipeline.partitions import cell_partitions
from battery_pipeline.resources import WAREHOUSE_POOL, SourceCatalog, Warehouse
from battery_pipeline.science.cell_chain import (
    STAGE_READS,
    STAGE_TABLES,
    STAGES,
    CellOutcome,
    CellTask,
    compute_cell,
    stage_inputs,
)

CELL_SPECS = (
    *ingest.CELLS_SPECS,
    *ingest.RAW_SPECS,
    *validation.VALIDATED_SPECS,
    *feature_assets.FEATURES_SPECS,
    *feature_assets.LABELS_SPECS,
)
CELL_CHECKS = (*ingest.RAW_CHECKS, *validation.VALIDATED_CHECKS, *feature_assets.FEATURES_CHECKS, *feature_assets.LABELS_CHECKS)
CHECKS_BY_NAME = {spec.name: spec for spec in CELL_CHECKS}
STAGE_OF_ASSET = {table: stage for stage, tables in STAGE_TABLES.items() for table in tables}

# A group of finished cells is stored once it holds this many rows or cells (few transactions,
# memory bounded by the group, not by the batch), or once its first cell has waited this long (the
# UI and the terminal see progress, and a killed run loses little).
FLUSH_ROWS = 2_000_000
FLUSH_CELLS = 200
FLUSH_SECONDS = 10.0
# Matplotlib costs 0.1-0.3 s a figure; beyond this many cells a run draws none (the tables hold
# the same data, and the UI's per-cell runs draw them).
PLOT_CELLS = 20


class CellPipelineConfig(validation.ValidationConfig):
    """The validation rules (Launchpad), and how many worker processes compute a batch."""

    workers: int = 0  # 0: one per core (one on a Dask worker: the cluster runs one per core); 1: in the step's process


def selected_stages(asset_names: set[str]) -> tuple[str, ...]:
    """The stages from the first selected asset's to the last's."""
    indices = [STAGES.index(STAGE_OF_ASSET[name]) for name in asset_names if name in STAGE_OF_ASSET]
    return STAGES[min(indices): max(indices) + 1] if indices else ()


with warnings.catch_warnings():
    # backfill_policy is a beta parameter in dagster 1.13; the single-run policy is what batches rely on
    warnings.simplefilter("ignore", dg.BetaWarning)
    _cell_pipeline_decorator = dg.multi_asset(
        name="cell_pipeline",
        specs=CELL_SPECS,
        check_specs=CELL_CHECKS,
        partitions_def=cell_partitions,
        can_subset=True,
        pool=WAREHOUSE_POOL,
        backfill_policy=executors.cell_backfill_policy(),
        description="Every per-cell asset of a cell or a batch of cells in one step: files -> registry, raw, validated, features, labels.",
        )


@_cell_pipeline_decorator
def cell_pipeline(context: dg.AssetExecutionContext, config: CellPipelineConfig, catalog: SourceCatalog, warehouse: Warehouse):
    stages = selected_stages({key.to_user_string() for key in context.selected_asset_keys})
    keys = list(context.partition_keys)
    sources = catalog.discover()
    batch = CellBatch(context, config, warehouse, stages, sources, plots=len(keys) <= PLOT_CELLS)
    tasks = []
    for key in keys:
        try:
            tasks.append(CellTask(sources[key], stages, config.rules(), feature_assets.LABEL_SETTINGS_FILE,
                                  feature_settings=feature_assets.FEATURE_SETTINGS_FILE))
        except KeyError as exc:
            batch.fail(key, stages[0], f"cell partition {key!r} has no source files any more: {exc}")
    workers = min(config.workers or executors.default_step_processes(), len(tasks))
    context.log.info(
        f"{len(keys)} cell(s), stages {', '.join(stages)}, {max(workers, 1)} worker process(es), on {batch.worker}"
    )
    with warehouse.session():
        group: list[CellOutcome] = []
        compute = functools.partial(compute_and_describe, plots=batch.plots)
        outcomes = Ahead(computed(tasks, workers, batch.with_inputs, compute), FLUSH_ROWS)
        for outcome in outcomes:
            if not group:
                opened = time.perf_counter()
            group.append(outcome)
            if _group_full(group) or time.perf_counter() - opened >= FLUSH_SECONDS:
                # DuckDB gets the cores the workers leave while they compute (its threads beside
                # them cost CPU the cells need), every core when the workers wait for this store
                with warehouse.threads(None if outcomes.backlogged else executors.writer_threads(workers)):
                    yield from batch.store(group)
                group = []
        yield from batch.store(group)
    batch.finish()


def _group_full(group: list[CellOutcome]) -> bool:
    return sum(_rows(outcome) for outcome in group) >= FLUSH_ROWS or len(group) >= FLUSH_CELLS


# Stages whose checks judge the computed tables: described in the worker, beside the compute.
# Validation's checks read back what was stored, so the storing process describes it.
WORKER_DESCRIBED = ("cells", "raw", "features", "labels")


def compute_and_describe(task: CellTask, plots: bool) -> CellOutcome:
    """In the worker: the cell's chain (`science.cell_chain.compute_cell`), then the metadata and
    check results of its completed stages in `WORKER_DESCRIBED`; the storing process then only
    adds lineage and compute time. (This balances the batch: the storing process was the
    bottleneck.)"""
    outcome = compute_cell(task)
    for stage in outcome.completed:
        if stage in WORKER_DESCRIBED:
            outcome.reports[stage] = describe_computed(stage, task.source, outcome, plots)
    _text_as_categories(outcome)
    return outcome


def _text_as_categories(outcome: CellOutcome) -> None:
    """The text columns of the sample tables as categoricals, in place (the validation result
    shares these frames): a few distinct values per cell (its id, step types, file names), so
    they cross to the storing process per distinct value, not per row, and DuckDB inserts them
    from Arrow dictionaries about twice as fast as from Python strings."""
    for frame in outcome.tables.values():
        if len(frame) >= 1000:
            for name in frame.columns[frame.dtypes == object]:
                frame[name] = frame[name].astype("category")


def describe_computed(stage: str, source, outcome: CellOutcome, plots: bool) -> StageReport:
    if stage == "cells":
        return ingest.describe_cells(outcome.tables["cells"])
    if stage == "raw":
        return ingest.describe_raw(source, outcome)
    if stage == "features":
        return feature_assets.describe_features(outcome.key, outcome, outcome.record, plots=plots)
    return feature_assets.describe_labels(outcome, outcome.record, outcome.feature_columns)


def computed(tasks: list[CellTask], workers: int, prepare, compute) -> Iterator[CellOutcome]:
    """Each task's `compute(prepare(task))` as it finishes: in this process with one worker, else in a forkserver
    pool with at most two tasks per worker in flight (memory stays bounded by the group), the
    results handed back through shared memory (`batch_workers`). When a
    worker dies (a crash in native code), the cells in flight fail with that reason, since any of
    them may have caused it, and a new pool computes the rest."""
    if workers <= 1:
        for task in tasks:
            yield compute(prepare(task))
        return
    remaining = list(reversed(tasks))
    with batch_workers.SharedFolder() as folder:
        while remaining:
            with _pool(workers) as pool:
                pending, broken = {}, None
                while (remaining or pending) and broken is None:
                    while remaining and len(pending) < 2 * workers:
                        task = remaining.pop()
                        pending[pool.submit(batch_workers.packed_call, compute, folder, prepare(task))] = task
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        try:
                            outcome = batch_workers.unpack(future.result())
                        except BrokenProcessPool as exc:
                            broken = exc
                            continue
                        del pending[future]
                        yield outcome
                for task in pending.values():
                    lost = CellOutcome(task.source.partition_key)
                    lost.failed_stage = task.stages[0]
                    lost.error = f"a worker process died while this cell was in flight ({broken}); run the cell again to retry"
                    yield lost


class Ahead:
    """`outcomes`, pulled by a thread of its own up to `max_rows` rows ahead of the consumer: the
    workers compute the next group while this process stores the last one (pulling is what
    hands them new tasks), and memory stays bounded by about two groups.

    `backlogged`: the puller is waiting for the consumer (`max_rows` rows are ready), i.e. the
    consumer's storing, not the workers' computing, holds the step back."""

    def __init__(self, outcomes: Iterator[CellOutcome], max_rows: int):
        self._outcomes, self._max_rows = outcomes, max_rows
        self._state = {"rows": 0, "stop": False}

    @property
    def backlogged(self) -> bool:
        return self._state["rows"] >= self._max_rows

    def __iter__(self) -> Iterator[CellOutcome]:
        outcomes, max_rows, state = self._outcomes, self._max_rows, self._state
        finished = object()
        ready: queue.Queue = queue.Queue()
        budget = threading.Condition()

        def pull() -> None:
            try:
                for outcome in outcomes:
                    rows = _rows(outcome)
                    with budget:
                        budget.wait_for(lambda: state["stop"] or state["rows"] < max_rows)
                        if state["stop"]:
                            return
                        state["rows"] += rows
                    ready.put(outcome)
            except BaseException as exc:  # re-raised in the consumer
                ready.put(exc)
            finally:
                outcomes.close()  # a consumer that stopped early: the pool finishes its tasks in flight and shuts down
                ready.put(finished)

        puller = threading.Thread(target=pull, name="cell-outcomes", daemon=True)
        puller.start()
        try:
            while (item := ready.get()) is not finished:
                if isinstance(item, BaseException):
                    raise item
                with budget:
                    state["rows"] -= _rows(item)
                    budget.notify()
                yield item
        finally:
            with budget:
                state["stop"] = True
                budget.notify()
            puller.join()


def _rows(outcome: CellOutcome) -> int:
    return sum(len(frame) for frame in outcome.tables.values())


def _pool(workers: int) -> ProcessPoolExecutor:
    # forkserver: workers fork from a clean process that imported this module (the science layer
    # and the describing code) once, not from this one (threads of the run, the DuckDB connection).
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["battery_pipeline.assets.cell_pipeline"])
    # below this process, which stores what they compute and is what the batch waits on
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=batch_workers.lower_priority)


class CellBatch:
    """Stores a run's cells group by group and logs what the UI shows of each."""

    def __init__(self, context, config: CellPipelineConfig, warehouse: Warehouse, stages: tuple[str, ...], sources, plots: bool):
        self.context, self.config, self.warehouse, self.stages, self.plots = context, config, warehouse, stages, plots
        self.worker = executors.worker_label()  # the host process (or Dask worker) that stores the batch
        self.sources = sources
        self.total = len(context.partition_keys)
        self.failures: dict[str, str] = {}
        self.succeeded: list[str] = []
        self.started = time.perf_counter()
        self.compute_seconds = 0.0

    def with_inputs(self, task: CellTask) -> CellTask:
        """The task with the stored tables its first stage reads, unless it starts at the files."""
        key = task.source.partition_key
        for table, columns in stage_inputs(task.stages):
            if self.warehouse.table_exists(table):
                task.inputs[table] = self.warehouse.read_partition(table, "cell_id", key, columns=columns)
        return task

    def fail(self, key: str, stage: str, reason: str) -> None:
        self.failures[key] = f"{stage}: {reason}"
        self.context.log.error(f"cell {key} failed at {stage}: {reason}")

    def store(self, group: list[CellOutcome]) -> Iterator[dg.AssetMaterialization | dg.AssetCheckEvaluation]:
        """Store the group stage by stage; yields each cell's materializations and check results
        as its stage is stored (yielded, not logged: they reach the event log now, and a step
        that then fails keeps them)."""
        if not group:
            return
        self.compute_seconds += sum(sum(o.seconds.values()) for o in group)
        alive = {o.key: o for o in group}
        for stage in self.stages:
            ready = [o for o in alive.values() if stage in o.completed]
            for outcome in [o for o in alive.values() if o.failed_stage == stage]:
                if outcome.error_trace:
                    self.context.log.error(f"cell {outcome.key}, stage {stage}:\n{outcome.error_trace}")
                self.fail(outcome.key, stage, outcome.error)
                del alive[outcome.key]
            if not ready:
                continue
            keys = [o.key for o in ready]
            reads = [table for table, _ in STAGE_READS[stage]]
            hashes = partition_hashes(self.warehouse, reads, "cell_id", keys) if reads else {}
            self.warehouse.replace_partitions(
                {table: [o.tables[table] for o in ready] for table in STAGE_TABLES[stage]}, "cell_id", keys
            )
            # the validation checks judge the stored rows: read back for the whole group at once
            stored = validation.read_back_validation(self.warehouse, keys) if stage == "validated" else {}
            reports = {o.key: self._describe(stage, o, hashes.get(o.key), stored.get(o.key)) for o in ready}
            for outcome in ready:  # what the stage cost this cell (in its worker), on each of its assets
                for metadata in reports[outcome.key].metadata.values():
                    metadata["compute_seconds"] = round(outcome.seconds[stage], 4)
                    metadata["stored_by"] = self.worker
            with batched_event_writes(self.context.instance):
                for key, report in reports.items():
                    for asset, metadata in report.metadata.items():
                        yield dg.AssetMaterialization(asset, partition=key, metadata=metadata)
                # (yielded events are stored before this generator resumes)
                targets = self._latest_materializations({r.check_name for rep in reports.values() for r in rep.checks}, keys)
                for key, report in reports.items():
                    evaluations, blocked = self._evaluations(key, report, targets)
                    yield from evaluations
                    if blocked:
                        self.fail(key, stage, blocked)
                        del alive[key]
        self.succeeded += list(alive)
        done = len(self.succeeded) + len(self.failures)
        elapsed = time.perf_counter() - self.started
        left = elapsed / done * (self.total - done) if done else math.nan
        self.context.log.info(
            f"cells {done}/{self.total} done ({len(self.failures)} failed), {elapsed:.0f} s elapsed, about {left:.0f} s left"
        )

    def _describe(self, stage: str, outcome: CellOutcome, input_hash: str | None, stored=None) -> StageReport:
        if stage == "validated":
            return validation.describe_validated(stored, outcome.validation, self.config, input_hash)
        report = outcome.reports.get(stage) or describe_computed(stage, self.sources[outcome.key], outcome, self.plots)
        if stage in ("features", "labels"):  # their inputs' lineage: the rows just stored
            for metadata in report.metadata.values():
                metadata.update(lineage_metadata(input_hash))
        return report

    def _latest_materializations(self, check_names: set[str], keys: list[str]) -> dict:
        """{(asset key, partition): target data} of each cell's latest materialization (the one
        just stored) of the assets these checks are on: a partitioned check result counts for the
        cell's current materialization only when it names that materialization (automation waits
        on it)."""
        targets = {}
        for asset_key in {CHECKS_BY_NAME[name].asset_key for name in check_names}:
            records = self.context.instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=keys), limit=len(keys)
            ).records  # newest first: the group's own, one per cell
            for record in records:
                targets.setdefault((asset_key, record.partition_key), AssetCheckEvaluationTargetMaterializationData(
                    storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp
                ))
        return targets

    def _evaluations(self, key: str, report: StageReport, targets: dict) -> tuple[list[dg.AssetCheckEvaluation], str | None]:
        """The stage's check results for the cell, each naming the materialization it checked;
        and the reason if a blocking check failed at ERROR severity (the cell then stops)."""
        evaluations, blocked = [], None
        for result in report.checks:
            spec = CHECKS_BY_NAME[result.check_name]
            evaluations.append(
                dg.AssetCheckEvaluation(
                    asset_key=spec.asset_key,
                    check_name=spec.name,
                    passed=result.passed,
                    metadata=result.metadata,
                    target_materialization_data=targets.get((spec.asset_key, key)),
                    severity=result.severity,
                    description=result.description,
                    blocking=spec.blocking,
                    partition=key,
                )
            )
            if spec.blocking and not result.passed and result.severity == dg.AssetCheckSeverity.ERROR and blocked is None:
                blocked = f"blocking check {spec.name} on {spec.asset_key.to_user_string()} failed: {result.description or ''}".strip()
        return evaluations, blocked

    def finish(self) -> None:
        elapsed = time.perf_counter() - self.started
        self.context.log.info(
            f"{len(self.succeeded)} of {self.total} cell(s) stored in {elapsed:.1f} s "
            f"({self.compute_seconds:.1f} s of cell compute)"
        )
        if self.failures:
            raise dg.Failure(
                description=f"{len(self.failures)} of {self.total} cell(s) failed: "
                + "; ".join(f"{key} ({reason})" for key, reason in self.failures.items()),
                metadata={"failed_cells": dg.MetadataValue.json(self.failures), "succeeded_cells": len(self.succeeded)},
                allow_retries=False,
            )


def batched_event_writes(instance):
    """One transaction for the events stored inside, where the instance's event log offers it
    (`instance_storage.PooledSqliteEventLogStorage`); otherwise each event as Dagster stores it.
    The step's yielded events are stored in this thread before the generator resumes, so they
    fall inside."""
    batched = getattr(instance.event_log_storage, "batched_writes", None)
    return batched() if batched else contextlib.nullcontext()
