"""`battery-pipeline`: run the main job on the data folders from a shell, or open the UI.

    battery-pipeline run        register every cell found, run `cell_pipeline_job` over all of
                                them in one batched run, print a summary (uses the demo fleet
                                when no data is present); then train, promote and report
                                (`train_models_job`) and score every cell in one run
                                (`score_cells_job`) for each task with enough cells
                                (`splits.MIN_TRAINING_CELLS`; otherwise it says so and skips),
                                fit the frozen cycle-life models when cohort cells are present
                                (`cycle_life_job`),
                                run every pack (`pack_pipeline_job`: the pack folders' packs, and
                                the demo packs only with the demo fleet), write data cards and
                                the audit log (`governance_job`)
    battery-pipeline ui         start `dagster dev` on this project (webserver + daemon)
    battery-pipeline demo DIR   write the demo fleet to DIR

Runs go through a persistent Dagster instance in $DAGSTER_HOME (default `.dagster_home/` in the
project) as runs of the code location (`run_job`), so they appear in the UI afterwards under their
job, with their logs, metadata and check results. The terminal shows progress and warnings only.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from battery_pipeline.resources import PROJECT_ROOT

DAGSTER_YAML = """\
# Written by battery-pipeline. Every step that opens the DuckDB warehouse runs in the `duckdb`
# pool; one slot means no two steps (of any run) ever contend for DuckDB's single-writer lock.
concurrency:
  pools:
    granularity: op
    default_limit: 1
telemetry:
  enabled: false
"""


# Beyond one machine: with this variable set, a new DAGSTER_HOME keeps runs, event logs,
# schedule and sensor state in Postgres, which a webserver, daemons and run workers on several
# machines can share. Only the instance moves; the warehouse stays behind `resources.Warehouse`.
POSTGRES_URL_ENV = "BATTERY_PIPELINE_DAGSTER_PG_URL"
# The event log's class keeps connections and batches commits (`instance_storage`); runs and
# schedules are Dagster's own Postgres classes.
POSTGRES_STORAGE_YAML = f"""\
run_storage:
  module: dagster_postgres.run_storage
  class: PostgresRunStorage
  config:
    postgres_url:
      env: {POSTGRES_URL_ENV}
event_log_storage:
  module: battery_pipeline.instance_storage
  class: PooledPostgresEventLogStorage
  config:
    postgres_url:
      env: {POSTGRES_URL_ENV}
schedule_storage:
  module: dagster_postgres.schedule_storage
  class: PostgresScheduleStorage
  config:
    postgres_url:
      env: {POSTGRES_URL_ENV}
"""


# Otherwise Dagster's SQLite files, written through kept connections and batched commits
# (`instance_storage`: an event cost 20-30 ms on fresh connections, a cell about 27 events).
SQLITE_EVENT_LOG_YAML = """\
event_log_storage:
  module: battery_pipeline.instance_storage
  class: PooledSqliteEventLogStorage
"""


def instance_yaml() -> str:
    """The dagster.yaml we write: the pool, plus Postgres storage when $BATTERY_PIPELINE_DAGSTER_PG_URL
    is set, else the pooled SQLite event log."""
    return DAGSTER_YAML + (POSTGRES_STORAGE_YAML if os.environ.get(POSTGRES_URL_ENV) else SQLITE_EVENT_LOG_YAML)


# The full event log of every run is in the UI; the terminal shows warnings and errors only.
QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def ensure_dagster_home() -> Path:
    """$DAGSTER_HOME (default `.dagster_home/` in the project) with our dagster.yaml
    (`instance_yaml`); an existing dagster.yaml is the user's and is kept, unless it is exactly
    what an earlier version wrote (then it gains the pooled event log: same files)."""
    from battery_pipeline import instance_tuning

    home = Path(os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / ".dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    instance_tuning.install()
    config = home / "dagster.yaml"
    if not config.exists() or (config.read_text() == DAGSTER_YAML and not os.environ.get(POSTGRES_URL_ENV)):
        config.write_text(instance_yaml())
    return home


def run_all(
    data_dirs: list[str] | None = None,
    demo_dir: str | None = None,
    only: list[str] | None = None,
    pack_dirs: list[str] | None = None,
) -> int:
    """Register every cell partition and run the main job over them (or over `only`) in one run
    per contiguous range of partitions, then models, scoring, packs and governance.

    Returns the number of failed cells and runs.
    """
    ensure_dagster_home()
    # Environment, not arguments: the step processes of every job read the same folders.
    for variable, folders in (("BATTERY_PIPELINE_DATA_DIRS", data_dirs), ("BATTERY_PIPELINE_PACK_DIRS", pack_dirs)):
        if folders:
            os.environ[variable] = os.pathsep.join(str(Path(d).resolve()) for d in folders)
    if demo_dir:
        os.environ["BATTERY_PIPELINE_DEMO_DIR"] = str(Path(demo_dir).resolve())

    from dagster import DagsterInstance

    from battery_pipeline.partitions import cell_partitions
    from battery_pipeline.resources import SourceCatalog, Warehouse

    catalog = SourceCatalog()
    roots = catalog.roots()
    demo_fleet = roots != [Path(d) for d in catalog.data_dirs]  # no data found: the demo fleet stands in
    print(f"data folders: {[str(r) for r in roots]}" + (" (the demo fleet: no data files found)" if demo_fleet else ""))
    sources = catalog.discover()
    instance = DagsterInstance.get()
    known = set(instance.get_dynamic_partitions(cell_partitions.name))
    new = [k for k in sources.keys() if k not in known]
    if new:
        instance.add_dynamic_partitions(cell_partitions.name, new)
    print(f"{len(sources)} cell source(s), {len(new)} new partition(s); warehouse {Warehouse().location}")

    selected = list(sources.keys()) if not only else [k for k in sources.keys() if k in only]
    unknown = sorted(set(only or []) - set(sources.keys()))
    if unknown:
        print(f"unknown partition(s) {unknown}; known: {sources.keys()}")
        return len(unknown)
    outcomes = run_cells(instance, selected)
    print_summary(outcomes)
    failed = sum(1 for ok, *_ in outcomes.values() if not ok)
    print(
        f"\n{len(outcomes) - failed} of {len(outcomes)} cell(s) succeeded. Browse runs, assets and checks "
        f"with `make ui` (http://127.0.0.1:3000); DAGSTER_HOME={os.environ['DAGSTER_HOME']}"
    )
    if not only:  # --partition names cells; models and packs run with the full run
        succeeded = [key for key, outcome in outcomes.items() if outcome[0]]
        failed += run_models(instance, succeeded)
        failed += run_cycle_life(instance)
        failed += run_anomalies(instance) if succeeded else 0
        failed += run_packs(instance, demo_fleet)
        failed += run_governance(instance)
    return failed


def run_cycle_life(instance) -> int:
    """The frozen early-life cycle-life models and every cell's prediction (`cycle_life_job`),
    when the warehouse holds cells of the cohort (Severson's training cells by default)."""
    import re

    from battery_pipeline.assets.cycle_life import CycleLifeConfig, PREDICTIONS, RESULTS_FILE
    from battery_pipeline.resources import ModelStore, Warehouse

    pattern = CycleLifeConfig().cohort_pattern
    warehouse = Warehouse()
    cells = warehouse.query("SELECT cell_id FROM cells")["cell_id"] if warehouse.table_exists("cells") else []
    cohort = [c for c in cells if re.search(pattern, str(c))]
    if not cohort:
        print(f"\ncycle_life_job not launched: no cell matches the cohort {pattern!r} (Severson's training cells: README, Early-life cycle life)")
        return 0
    ok, text, _ = run_job(instance, "cycle_life_job")
    print(f"\ncycle_life_job {'ok' if ok else 'FAILED: ' + text}: {len(cohort)} cohort cell(s); "
          f"figures in {ModelStore().results_dir}/{RESULTS_FILE}, every scored cell in {PREDICTIONS}")
    return 0 if ok else 1


def run_anomalies(instance) -> int:
    """Every cycle's anomaly score against its cell's trend and its fleet (`anomalies_job`)."""
    from battery_pipeline.assets.anomalies import CARD_FILE, CYCLE_ANOMALIES
    from battery_pipeline.resources import ModelStore

    ok, text, _ = run_job(instance, "anomalies_job")
    print(f"\nanomalies_job {'ok' if ok else 'FAILED: ' + text}: every cycle in {CYCLE_ANOMALIES}, "
          f"the card in {ModelStore().reports_dir}/{CARD_FILE}")
    return 0 if ok else 1


def run_governance(instance) -> int:
    """Data cards and the audit trail of everything this command ran (`governance_job`)."""
    from battery_pipeline.resources import ModelStore

    ok, text, _ = run_job(instance, "governance_job")
    print(f"\ngovernance_job {'ok' if ok else 'FAILED: ' + text}: data cards in {ModelStore().reports_dir}/data_cards/, "
          "every run above in the audit_log table")
    return 0 if ok else 1


LOCATION_NAME = "battery_pipeline"  # workspace.yaml's location_name
REPOSITORY_NAME = "__repository__"  # the repository Dagster makes of a Definitions object


def create_job_run(instance, name: str, tags: dict | None = None, assets: list[str] | None = None, resources: dict | None = None):
    """A run of a job of the code location, created (not started): it carries the origin
    `dagster dev` gives its own runs (workspace.yaml's module and location name), so it is listed
    under its job, on the timeline and in asset lineage, and can be re-executed from the UI. Its
    resources use the folders of the environment now (`environment_run_config`, with `resources`
    overrides per resource). Returns (reconstructable job, run)."""
    from dagster import AssetKey
    from dagster._core.definitions.reconstruct import ReconstructableRepository
    from dagster._core.remote_origin import ManagedGrpcPythonEnvCodeLocationOrigin, RemoteRepositoryOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    from battery_pipeline.definitions import defs
    from battery_pipeline.resources import environment_run_config

    module = "battery_pipeline.definitions"
    recon_job = ReconstructableRepository.for_module(module, "defs", working_directory=str(PROJECT_ROOT)).get_reconstructable_job(name)
    job_def = defs.resolve_job_def(name)
    selection = None if assets is None else frozenset(AssetKey(a) for a in assets)
    if selection is not None:
        recon_job, job_def = recon_job.get_subset(asset_selection=selection), job_def.get_subset(asset_selection=selection)
    location = ManagedGrpcPythonEnvCodeLocationOrigin(
        LoadableTargetOrigin(executable_path=sys.executable, module_name=module, working_directory=str(PROJECT_ROOT)),
        location_name=LOCATION_NAME,
    )
    run = instance.create_run_for_job(
        job_def,
        run_config={**QUIET_CONSOLE, **environment_run_config(**(resources or {}))},
        tags=tags or {},
        asset_selection=selection,
        remote_job_origin=RemoteRepositoryOrigin(location, REPOSITORY_NAME).get_job_origin(name),
        job_code_origin=recon_job.get_python_origin(),
    )
    return recon_job, run


def run_job(
    instance, name: str, tags: dict | None = None, assets: list[str] | None = None, progress=None, resources: dict | None = None
) -> tuple[bool, str, str]:
    """Run a job of the code location in this process (`create_job_run`); `progress` sees every
    event. Returns (success, failure text, run id)."""
    from dagster._core.execution.api import execute_run_iterator

    recon_job, run = create_job_run(instance, name, tags, assets, resources)
    failure = ""
    for event in execute_run_iterator(recon_job, run, instance):
        if progress is not None:
            progress(event)
        failure = failure or _failure_text(event)
    success = instance.get_run_by_id(run.run_id).is_success
    return success, failure, run.run_id


def run_cells(instance, keys: list[str]) -> dict:
    """`cell_pipeline_job` for the cells: one run per contiguous range of the `cells` partitions
    (one run for all of them unless `--partition` picks scattered ones), or, on a Dask cluster,
    runs of `executors.cells_per_run()` cells each, all launched at once so that their steps run
    on the cluster's workers side by side. Per cell: (ok, run id, failure reason)."""
    from battery_pipeline.executors import cells_per_run, dask_scheduler
    from battery_pipeline.partitions import batch_ranges, cell_partitions

    batches = [members for _, _, members in batch_ranges(instance.get_dynamic_partitions(cell_partitions.name), keys, cells_per_run())]
    if dask_scheduler() and len(batches) > 1:
        return _run_cell_batches_at_once(instance, batches)
    results = [_run_cell_batch(instance, members) for members in batches]
    return {key: outcome for batch in results for key, outcome in batch.items()}


# Runs of one `battery-pipeline run` in flight at once on a cluster (the rest wait their turn).
MAX_CONCURRENT_RUNS = 16


def _run_cell_batches_at_once(instance, batches: list[list[str]]) -> dict:
    """Each batch's run in a run worker process of its own, up to MAX_CONCURRENT_RUNS at a time:
    the runs only hand their steps to the cluster and wait, but Dagster's execution is not
    thread-safe (runs in threads of one process deadlocked on its logging), so each gets a
    process. Forked from this one where the platform forks: it has imported the project already,
    where `dagster api execute_run` (what Dagster's run launcher starts) imports it again, about
    3 s of CPU a run beside the workers."""
    started = time.perf_counter()
    pending = [(members, *create_job_run(instance, "cell_pipeline_job", range_tags(members[0], members[-1]))) for members in batches]
    print(f"  {len(pending)} runs of up to {max(len(b) for b in batches)} cells each, on the Dask cluster")
    running: dict[str, tuple[list[str], object]] = {}
    outcomes: dict[str, tuple] = {}
    while pending or running:
        while pending and len(running) < MAX_CONCURRENT_RUNS:
            members, recon_job, run = pending.pop(0)
            running[run.run_id] = (members, _start_run_worker(instance, recon_job, run))
        for run_id, (members, process) in list(running.items()):
            if process.poll() is None:
                continue
            del running[run_id]
            outcomes.update(cell_outcomes(members, run_id, *run_outcome(instance, run_id)))
            print(f"  run {run_id[:8]}: {sum(outcomes[k][0] for k in members)} of {len(members)} cell(s) ok, "
                  f"{time.perf_counter() - started:.1f} s from the first launch")
        time.sleep(0.2)
    return outcomes


class _ForkedRunWorker:
    """A forked process executing one created run; `poll()` as a Popen's."""

    def __init__(self, recon_job, run_id: str):
        import multiprocessing

        self.process = multiprocessing.get_context("fork").Process(target=_execute_created_run, args=(recon_job, run_id))
        self.process.start()

    def poll(self) -> int | None:
        return None if self.process.is_alive() else self.process.exitcode


def _execute_created_run(recon_job, run_id: str) -> None:
    from dagster import DagsterInstance
    from dagster._core.execution.api import execute_run

    with DagsterInstance.get() as instance:  # its own connections, not the parent's
        execute_run(recon_job, instance.get_run_by_id(run_id), instance)


def _start_run_worker(instance, recon_job, run):
    import multiprocessing

    if "fork" in multiprocessing.get_all_start_methods():
        return _ForkedRunWorker(recon_job, run.run_id)
    from dagster._grpc.types import ExecuteRunArgs
    from dagster._serdes import serialize_value

    args = ExecuteRunArgs(job_origin=run.job_code_origin, run_id=run.run_id, instance_ref=instance.get_ref())
    return subprocess.Popen([sys.executable, "-m", "dagster", "api", "execute_run", serialize_value(args)], stdout=subprocess.DEVNULL)


def run_outcome(instance, run_id: str) -> tuple[bool, str, dict]:
    """A finished run, from the instance: (success, failure text, {cell: reason} of the cells its
    batch step names as failed)."""
    from dagster import DagsterEventType

    run = instance.get_run_by_id(run_id)
    text, failed = "", {}
    for entry in instance.all_logs(run_id, of_type={DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE}):
        event = entry.dagster_event
        text = text or _failure_text(event)
        failed.update(failed_cells(event) or {})
    return run is not None and run.is_success, text or (f"run ended {run.status.value}" if run else "run not found"), failed


def _run_cell_batch(instance, members: list[str]) -> dict:
    first, last = members[0], members[-1]
    label = f"cells {first}..{last}" if first != last else f"cell {first}"
    progress = Progress(label, len(members), lambda event: _materialized(event) == "cycle_labels")
    ok, text, run_id = run_job(instance, "cell_pipeline_job", range_tags(first, last), progress=progress)
    progress.close()
    outcomes = cell_outcomes(members, run_id, ok, text, progress.failed_cells)
    print(f"  run {run_id[:8]}: {sum(outcomes[k][0] for k in members)} of {len(members)} cell(s) ok in {progress.elapsed():.1f} s")
    return outcomes


def _materialized(event) -> str | None:
    """The asset an event materializes, else None."""
    return event.asset_key.to_user_string() if event.is_step_materialization else None


def failed_cells(event) -> dict | None:
    """{cell: reason} that a cell batch's step failure names, else None."""
    if event.is_step_failure and event.step_failure_data.user_failure_data:
        cells = event.step_failure_data.user_failure_data.metadata.get("failed_cells")
        if cells is not None:
            return dict(cells.value)
    return None


def cell_outcomes(members: list[str], run_id: str, ok: bool, text: str, failed: dict) -> dict:
    """Per cell of a batch run: (ok, run id, failure reason). A failed run that names no cell
    failed all of them."""
    return {
        key: (False, run_id, failed.get(key, text)) if key in failed or (not ok and not failed) else (True, run_id, "")
        for key in members
    }


class Progress:
    """A progress line for a run: items done of the total (`counts(event)` says whether an event
    completes one), time elapsed and left; and the failed cells a batch's failure lists."""

    def __init__(self, label: str, total: int, counts):
        self.label, self.total, self.counts = label, total, counts
        self.done, self.failed_cells, self.started = 0, {}, time.perf_counter()
        self.tty = sys.stdout.isatty()
        self._shown = -1

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def __call__(self, event) -> None:
        self.done += bool(self.counts(event))
        failed = failed_cells(event)
        if failed is not None:
            self.failed_cells = failed
        self.show()

    def show(self, final: bool = False) -> None:
        if self.done == self._shown and not final:
            return
        # on a terminal one line rewritten in place; in a log, a line per tenth
        if not self.tty and not final and self.done * 10 // max(self.total, 1) == self._shown * 10 // max(self.total, 1):
            return
        self._shown = self.done
        elapsed = self.elapsed()
        left = f", about {elapsed / self.done * (self.total - self.done):.0f} s left" if 0 < self.done < self.total else ""
        line = f"  {self.label}: {self.done}/{self.total} done, {elapsed:.0f} s{left}"
        print(("\r" + line.ljust(78)) if self.tty else line, end="" if self.tty and not final else "\n", flush=True)

    def close(self) -> None:
        self.show(final=True)


def run_models(instance, cells: list[str]) -> int:
    """Train, register and promote every model on the cells' features (`train_models_job`), then
    score each cell with the promoted models (`score_cells_job`); returns the failed runs.

    Only for the tasks with enough cells (`models.training_shortfalls`): a task without them is
    skipped with the reason, and with no task left neither job is launched. Too few cells is
    what the data is, not a failure.
    """
    from battery_pipeline.assets.models import MODEL_ASSETS
    from battery_pipeline.partitions import batch_ranges, cell_partitions
    from battery_pipeline.resources import ModelStore, Warehouse

    tasks = trainable_tasks(Warehouse())
    if not tasks:
        print("  train_models_job and score_cells_job not launched: no model is trained or scores a cell")
        return 0
    train_assets, score_assets = task_selection("train_models_job", tasks), task_selection("score_cells_job", tasks)
    print(f"\nTraining every {' and '.join(t.upper() for t in tasks)} model on all cells (train_models_job) ...")
    models = {name for task in tasks for name in MODEL_ASSETS[task]}
    progress = Progress("models trained", len(models), lambda event: _materialized(event) in models)
    ok, text, _ = run_job(instance, "train_models_job", assets=train_assets, progress=progress)
    progress.close()
    print(f"  train_models_job {'ok' if ok else 'FAILED: ' + text} ({progress.elapsed():.0f} s)")
    if not ok:
        return 1
    print_model_summary()
    print(f"  metrics: {ModelStore().results_dir}/soh_results.json, rul_results.json; model cards: {ModelStore().reports_dir}/model_cards/")
    failed = 0
    for first, last, members in batch_ranges(instance.get_dynamic_partitions(cell_partitions.name), cells):
        ok, text, _ = run_job(instance, "score_cells_job", range_tags(first, last), assets=score_assets)
        failed += 0 if ok else len(members)
        if not ok:
            print(f"  scoring {first}..{last} FAILED: {text}")
    print(f"  scored {len(cells) - failed} of {len(cells)} cell(s) with the promoted models (soh_predictions, rul_predictions)")
    return failed


def range_tags(first: str, last: str) -> dict:
    """The tags of a run over the partitions first..last (one partition when they are equal)."""
    if first == last:
        return {"dagster/partition": first}
    return {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}


def trainable_tasks(warehouse) -> list[str]:
    """The tasks with enough cells to train on; prints why each other task is skipped."""
    from battery_pipeline.assets.models import TASKS, training_shortfalls

    if not all(warehouse.table_exists(t) for t in ("cycle_features", "cycle_labels")):
        print("\nTraining skipped: no cell has features and labels yet")
        return []
    shortfalls = training_shortfalls(warehouse)
    for reason in filter(None, shortfalls.values()):
        print(f"\n{reason}")
    return [task for task in TASKS if not shortfalls[task]]


def task_selection(job: str, tasks: list[str]) -> list[str] | None:
    """The job's assets without those of the tasks left out; None (the whole job) with every task."""
    from battery_pipeline.assets.models import TASKS, task_assets
    from battery_pipeline.definitions import defs

    if set(tasks) == set(TASKS):
        return None
    left_out = {name for task in set(TASKS) - set(tasks) for name in task_assets(task)}
    keys = defs.resolve_job_def(job).asset_layer.selected_asset_keys
    return sorted(key.to_user_string() for key in keys if key.to_user_string() not in left_out)


def print_model_summary() -> None:
    from battery_pipeline.resources import Warehouse

    models = Warehouse().query(
        """
        SELECT task, model_name, round(cv_error, 4) AS cv_error, round(validation_error, 4) AS validation_error,
               round(test_error, 4) AS test_error, round(dummy_test_error, 4) AS dummy_test_error,
               clipped_predictions AS clipped, promoted
        FROM model_registry WHERE current ORDER BY task, cv_error
        """
    )
    print("  current models (errors: SOH RMSE as a fraction, RUL RMSE in cycles; cv = out of fold over the")
    print("  training cells, which ranks them for promotion; test = unseen cells; clipped = predictions")
    print("  moved into the physical range):")
    print("    " + models.to_string(index=False).replace("\n", "\n    "))


def run_packs(instance, demo_fleet: bool) -> int:
    """Register every pack found, run `pack_pipeline_job` for each, print one line per pack;
    returns the number of failed runs. The demo packs stand in for empty pack folders only with
    the demo fleet: with the user's cells, only the user's packs run (none if there are none)."""
    from battery_pipeline.pack_resources import PackSourceCatalog
    from battery_pipeline.partitions import pack_partitions

    catalog = PackSourceCatalog(use_demo_when_empty=demo_fleet)
    packs = catalog.discover()
    known = set(instance.get_dynamic_partitions(pack_partitions.name))
    instance.add_dynamic_partitions(pack_partitions.name, [k for k in packs.keys() if k not in known])
    print(f"\n{len(packs)} pack(s) in {[str(r) for r in catalog.roots()]}" + (
        ":" if len(packs) else " (pack folders: --pack-dir or BATTERY_PIPELINE_PACK_DIRS; demo packs only with the demo fleet)"
    ))
    failed = 0
    for key in packs.keys():
        ok, text, _ = run_job(
            instance, "pack_pipeline_job", {"dagster/partition": key}, resources={"pack_catalog": {"use_demo_when_empty": demo_fleet}}
        )
        failed += not ok
        print(f"  {key:<40} {'ok' if ok else 'FAILED':<6} {pack_summary(key) if ok else text}")
    if len(packs):
        from battery_pipeline.assets.fault_report import CARD_FILE
        from battery_pipeline.resources import ModelStore

        ok, text, _ = run_job(instance, "fault_report_job")
        failed += not ok
        print(f"\nfault_report_job {'ok' if ok else 'FAILED: ' + text}: open faults per pack in pack_fault_summary, "
              f"the diagnosis's self-test in {ModelStore().reports_dir}/{CARD_FILE}")
    return failed


def pack_summary(key: str) -> str:
    """Cells, samples and the latest twin figures of one pack, from the warehouse."""
    from battery_pipeline.resources import Warehouse

    warehouse = Warehouse()
    facts = [warehouse.query("SELECT n_cells || ' cells, ' || samples || ' samples' FROM packs WHERE pack_id = ?", [key])]
    figures = {
        "equivalent_cycles": "SELECT round(max(eq_cycles), 2) || ' eq. cycles' FROM equivalent_cycles WHERE pack_id = ?",
        "soc_estimates": "SELECT 'SOC ' || round(100 * arg_max(soc_pack, sample)) || ' %' FROM soc_estimates WHERE pack_id = ?",
        "voltage_alerts": "SELECT count(*) || ' voltage alert(s)' FROM voltage_alerts WHERE pack_id = ?",
        "fault_alerts": "SELECT count(*) FILTER (WHERE active_at_end) || ' open fault(s)' FROM fault_alerts WHERE pack_id = ?",
    }
    facts += [warehouse.query(sql, [key]) for table, sql in figures.items() if warehouse.table_exists(table)]
    return ", ".join(str(f.iloc[0, 0]) for f in facts if len(f) and f.iloc[0, 0] is not None)


def _failure_text(event) -> str:
    """The user-facing reason of a step failure event, else ''."""
    if not event.is_step_failure or not event.step_failure_data:
        return ""
    if event.step_failure_data.user_failure_data:
        return event.step_failure_data.user_failure_data.description or ""
    error = event.step_failure_data.error
    if error is None:
        return ""
    while error.cause is not None:  # the user code's exception, not Dagster's wrapper
        error = error.cause
    return f"{event.step_key}: {error.message.strip().splitlines()[-1]}"


def print_summary(outcomes: dict) -> None:
    from battery_pipeline.resources import Warehouse

    warehouse = Warehouse()
    tables = [t for t in ("raw_samples", "validated_samples", "quarantined_samples", "cells") if warehouse.table_exists(t)]
    if len(tables) < 4:
        print("\n(no summary: the warehouse tables do not exist yet)")
        return
    summary = warehouse.query(
        """
        WITH raw AS (SELECT cell_id, count(*) AS raw_rows, count(DISTINCT cycle_number) AS cycles
                     FROM raw_samples GROUP BY cell_id),
             valid AS (SELECT cell_id, count(*) AS validated FROM validated_samples GROUP BY cell_id),
             quarantine AS (SELECT cell_id, count(*) AS quarantined,
                                   string_agg(DISTINCT reason_code, ',') AS reasons
                            FROM quarantined_samples GROUP BY cell_id)
        SELECT c.cell_id, c.source_format AS format, c.chemistry, c.nominal_capacity_ah AS ah,
               coalesce(raw.raw_rows, 0) AS raw_rows, coalesce(raw.cycles, 0) AS cycles,
               coalesce(valid.validated, 0) AS validated, coalesce(quarantine.quarantined, 0) AS quarantined,
               coalesce(quarantine.reasons, '') AS reasons
        FROM cells c LEFT JOIN raw USING (cell_id) LEFT JOIN valid USING (cell_id)
             LEFT JOIN quarantine USING (cell_id)
        ORDER BY c.cell_id
        """
    )
    if warehouse.table_exists("cycle_labels"):
        labels = warehouse.query(
            """
            SELECT cell_id, count(soh) AS soh_cycles,
                   round(arg_max(soh, cycle_number) FILTER (WHERE soh IS NOT NULL), 3) AS last_soh,
                   any_value(soh_reference) AS soh_vs, any_value(eol_cycle) AS eol_cycle,
                   bool_or(censored) AS censored, any_value(label_status) AS labels
            FROM cycle_labels GROUP BY cell_id
            """
        )
        summary = summary.merge(labels, on="cell_id", how="left")
    print("\nSummary (from the warehouse):")
    print(summary.to_string(index=False))
    if warehouse.table_exists("cycle_labels"):
        withheld = warehouse.query(
            "SELECT cell_id, any_value(label_status) AS status, any_value(label_note) AS note FROM cycle_labels "
            "GROUP BY cell_id HAVING any_value(label_status) <> 'labelled' ORDER BY cell_id"
        )
        if len(withheld):
            print("\nCells whose labels are withheld from training:")
            for row in withheld.itertuples():
                print(f"  {row.cell_id} ({row.status}): {row.note}")
    failed = {k: v[2] for k, v in outcomes.items() if not v[0]}
    if failed:
        print("\nFailed partitions:")
        for key, text in failed.items():
            print(f"  {key}: {text}")


def export_bdf(directory: Path, cells: list[str] | None, csv: bool, warehouse=None) -> int:
    """Write each validated cell's samples (or the `cells` asked for) as Battery Data Format
    files in `directory`; 1 if a cell asked for has no validated samples."""
    from battery_pipeline.resources import Warehouse
    from battery_pipeline.science.bdf_export import write_bdf

    warehouse = warehouse or Warehouse()
    validated = (
        warehouse.query("SELECT cell_id FROM validated_cells ORDER BY cell_id")["cell_id"].tolist()
        if warehouse.table_exists("validated_cells") else []
    )
    wanted = cells or validated
    missing = [c for c in wanted if c not in validated]
    if missing:
        print(f"no validated samples in {warehouse.location} for: {', '.join(missing)} (materialize validated_samples first)")
        return 1
    if not wanted:
        print(f"no validated cells in {warehouse.location}: nothing to export")
        return 1
    for cell in wanted:
        samples = warehouse.read_partition("validated_samples", "cell_id", cell)
        written = write_bdf(samples, directory, cell, csv=csv)
        print(f"  {cell}: {len(samples):,} validated samples -> {', '.join(str(p) for p in written)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="battery-pipeline", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the main job for every cell found")
    run.add_argument("--data-dir", action="append", help="data folder (repeatable); default data/incoming")
    run.add_argument("--demo-dir", help="where the demo fleet lives (default data/demo)")
    run.add_argument("--pack-dir", action="append", help="pack telemetry folder (repeatable); default data/packs")
    run.add_argument("--partition", action="append", help="run only this cell partition (repeatable)")
    commands.add_parser("ui", help="start dagster dev (webserver + daemon)")
    demo = commands.add_parser("demo", help="write the demo fleet")
    demo.add_argument("directory")
    export = commands.add_parser("export", help="write validated samples as Battery Data Format files")
    export.add_argument("--bdf", required=True, type=Path, metavar="DIR", help="folder for the .bdf.parquet files")
    export.add_argument("--cell", action="append", help="export only this cell (repeatable); default every validated cell")
    export.add_argument("--csv", action="store_true", help="also write .bdf.csv")
    args = parser.parse_args(argv)

    if args.command == "run":
        return 1 if run_all(args.data_dir, args.demo_dir, args.partition, args.pack_dir) else 0
    if args.command == "ui":
        ensure_dagster_home()
        workspace = PROJECT_ROOT / "workspace.yaml"
        return subprocess.call([sys.executable, "-m", "dagster", "dev", "-w", str(workspace)], cwd=PROJECT_ROOT)
    if args.command == "demo":
        from battery_pipeline.science.demo import ensure_demo_fleet

        print(ensure_demo_fleet(Path(args.directory)))
        return 0
    if args.command == "export":
        return export_bdf(args.bdf, args.cell, args.csv)
    return 2


if __name__ == "__main__":
    sys.exit(main())
