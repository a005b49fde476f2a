"""Where steps run, configured here for every job: in the run's own process (default), or on the
workers of a Dask cluster (`BATTERY_PIPELINE_DASK_SCHEDULER=tcp://host:8786`).

On a cluster, each step of a run is a Dask task on whichever worker is free, on any host that has
the project installed and reaches the Dagster instance (PostgreSQL) and the warehouse (DuckLake:
catalog in PostgreSQL, data on storage every host sees). A backfill of cells becomes several runs
(`cells_per_run`), so steps of different cells run on different workers at once.

Why not dagster-dask's executor as it is (0.29.27). Its tasks are named `<job>.<step>`, and Dask
treats a submitted key it already holds as the same task: two runs of `cell_pipeline_job` on one
cluster at once would share one step, the second run receiving the first one's events. Its
workers also rebuild the job from the run's op selection, which drops an asset selection (a run
of some assets of a step would run all of them), and it submits every step up front, so a step
whose upstream failed still runs. `DaskClusterExecutor` keeps dagster-dask's executor and its
cluster model and drives the steps with Dagster's own plan machinery instead (as the multiprocess
and Celery executors do): one task per step, keyed by run and step, submitted once its inputs
exist, with retries, skips, pools and interrupts handled as Dagster handles them.

A worker lost in the middle of a step (its process killed, its host gone): the Dask scheduler
sees the connection drop and runs the task again on another worker, up to the scheduler's
`distributed.scheduler.allowed-failures` (3 by default); beyond that the step fails with
`KilledWorker` and the run fails naming it. Every warehouse write is one transaction, so a step
run twice leaves one copy of each row.
"""

from __future__ import annotations

import os
import pickle
import socket
import sys
import time
from collections.abc import Iterator

import dagster as dg
from dagster import _check as check
from dagster._core.errors import DagsterSubprocessError
from dagster._core.events import DagsterEvent, EngineEventData
from dagster._core.execution.api import create_execution_plan, execute_plan
from dagster._core.execution.context.system import PlanOrchestrationContext
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.execution.retries import RetryMode, get_retries_config
from dagster._core.instance import DagsterInstance
from dagster._utils.error import serializable_error_info_from_exc_info
from dagster_dask.executor import DaskExecutor, get_dask_resource_requirements

DASK_SCHEDULER_ENV = "BATTERY_PIPELINE_DASK_SCHEDULER"
CELLS_PER_RUN_ENV = "BATTERY_PIPELINE_CELLS_PER_RUN"
# Cells per run of a backfill on a cluster: each run is one step on one worker, so a batch must be
# large enough to pay a step's fixed cost (about 1 s) and small enough to spread over the workers.
DEFAULT_CELLS_PER_RUN = 25
# How often the run looks at its steps' futures (the step's own work is seconds to minutes).
POLL_SECONDS = 0.05


def dask_scheduler() -> str | None:
    return os.environ.get(DASK_SCHEDULER_ENV) or None


def cells_per_run() -> int | None:
    """Cells per run of a backfill, or None: all cells in one run (no cluster: the run's own
    process computes them in parallel)."""
    raw = os.environ.get(CELLS_PER_RUN_ENV)
    if raw:
        value = int(raw)
        if value < 1:
            raise ValueError(f"{CELLS_PER_RUN_ENV}={raw!r}: expected a whole number of cells >= 1")
        return value
    return DEFAULT_CELLS_PER_RUN if dask_scheduler() else None


def cell_backfill_policy() -> dg.BackfillPolicy:
    """One run for a whole backfill of cells, or runs of `cells_per_run` cells on a cluster."""
    per_run = cells_per_run()
    return dg.BackfillPolicy.single_run() if per_run is None else dg.BackfillPolicy.multi_run(per_run)


def dask_worker():
    """The Dask worker this code runs on, or None (not on a worker, or Dask not installed)."""
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):
        return None


def default_step_processes() -> int:
    """Processes a step computes its cells in: one per core, but one on a Dask worker, where the
    cluster already runs a worker per core (`dask worker --nworkers <cores> --nthreads 1`)."""
    return 1 if dask_worker() is not None else os.cpu_count() or 1


def writer_threads(compute_processes: int) -> int | None:
    """DuckDB threads for the process storing a step's cells while `compute_processes` worker
    processes compute the next ones: the cores they leave, at least one (None, DuckDB's own
    default of every core, when the cells are computed in the writer's own process). DuckDB 1.5
    spends about twice the CPU on an insert with two threads as with one (a batch's cycle
    features: 80 -> 39 ms), taken from the workers on a machine they keep busy."""
    if compute_processes <= 1:
        return None
    return max(1, (os.cpu_count() or 1) - compute_processes)


def worker_label() -> str:
    """Which worker this code runs on: the Dask worker's address, else host and process."""
    worker = dask_worker()
    return worker.address if worker is not None else f"{socket.gethostname()}:{os.getpid()}"


def run_step_on_worker(packed_arguments: bytes) -> list[DagsterEvent]:
    """On a Dask worker: execute the steps of the run's plan (the job as the run selected it,
    asset selection included) and return their events, which are also in the instance already.

    The arguments come pickled: Dask looks inside tuples for tasks to run first, and Dagster's
    records (the run, the known state) refuse to be iterated."""
    recon_job, dagster_run, run_config, step_keys, instance_ref, known_state = pickle.loads(packed_arguments)
    with DagsterInstance.from_ref(instance_ref) as instance:
        plan = create_execution_plan(recon_job, run_config=run_config, step_keys_to_execute=list(step_keys), known_state=known_state)
        return list(execute_plan(plan, recon_job, instance, dagster_run, run_config=run_config))


class DaskClusterExecutor(DaskExecutor):
    """dagster-dask's executor on an existing cluster, its steps driven by Dagster's plan."""

    def __init__(self, address: str, retries: RetryMode):
        super().__init__("existing", {"address": address})
        self.address = address
        self._retries = retries

    @property
    def retries(self) -> RetryMode:
        return self._retries

    def execute(self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan) -> Iterator[DagsterEvent]:
        import distributed

        check.invariant(plan_context.instance.is_persistent, "steps on a Dask cluster need a persistent Dagster instance")
        run = plan_context.dagster_run
        recon_job = plan_context.reconstructable_job  # the run's subset: asset selection included
        instance_ref = plan_context.instance.get_ref()
        yield DagsterEvent.engine_event(
            plan_context,
            f"Executing steps on the Dask cluster at {self.address}",
            EngineEventData({"dask_scheduler": dg.MetadataValue.text(self.address)}),
        )
        futures: dict[str, distributed.Future] = {}
        errors: dict[str, object] = {}
        with distributed.Client(self.address, set_as_default=False) as client, InstanceConcurrencyContext(
            plan_context.instance, run
        ) as concurrency, execution_plan.start(retry_mode=self.retries, instance_concurrency_context=concurrency) as active:
            stopping = False
            while (not active.is_complete and not stopping) or futures:
                if active.check_for_interrupts():
                    yield DagsterEvent.engine_event(
                        plan_context, "Dask executor: termination requested, cancelling the steps on the cluster",
                        EngineEventData.interrupted(list(futures)),
                    )
                    stopping = True
                    active.mark_interrupted()
                    client.cancel(list(futures.values()))
                for key, future in list(futures.items()):
                    if not future.done():
                        continue
                    del futures[key]
                    step_context = plan_context.for_step(active.get_step_by_key(key))
                    try:
                        events = future.result()
                    except Exception:  # noqa: BLE001 - the worker function raised, or its workers kept dying
                        error = serializable_error_info_from_exc_info(sys.exc_info())
                        yield DagsterEvent.engine_event(
                            step_context,
                            f"Dask task of step {key} failed on the cluster: {error.cls_name}: {error.message.strip()}",
                            EngineEventData.engine_error(error),
                        )
                        failure = self.log_failure_or_retry_event_after_error(step_context, error, active.get_known_state())
                        active.handle_event(failure)
                        yield failure
                        if failure.is_step_failure:
                            errors[key] = error
                        events = []
                    for event in events:
                        yield event
                        active.handle_event(event)
                    active.verify_complete(plan_context, key)
                yield from active.plan_events_iterator(plan_context)
                if not stopping:
                    for step in active.get_steps_to_execute():
                        yield DagsterEvent.engine_event(
                            plan_context.for_step(step), f"Submitting step {step.key} to the Dask cluster", EngineEventData()
                        )
                        arguments = (recon_job, run, plan_context.run_config, [step.key], instance_ref, active.get_known_state())
                        futures[step.key] = client.submit(
                            run_step_on_worker,
                            pickle.dumps(arguments),
                            key=f"{step.key}-{run.run_id}-{time.monotonic_ns()}",  # unique per run and attempt
                            pure=False,
                            resources=get_dask_resource_requirements(step.tags),
                        )
                    yield from active.concurrency_event_iterator(plan_context)
                if futures and not any(future.done() for future in futures.values()):
                    time.sleep(POLL_SECONDS)
        if errors:
            raise DagsterSubprocessError(
                "steps failed on the Dask cluster:\n" + "\n".join(f"[{key}]: {error.to_string()}" for key, error in errors.items()),
                subprocess_error_infos=list(errors.values()),
            )


@dg.executor(
    name="dask_cluster",
    config_schema={
        "address": dg.Field(dg.StringSource, description="The Dask scheduler, e.g. tcp://10.0.0.5:8786"),
        "retries": get_retries_config(),
    },
    requirements=dg.multiple_process_executor_requirements(),
)
def dask_cluster_executor(init_context: dg.InitExecutorContext) -> DaskClusterExecutor:
    config = init_context.executor_config
    return DaskClusterExecutor(config["address"], RetryMode.from_config(config["retries"]) or RetryMode.ENABLED)


def step_executor() -> dg.ExecutorDefinition:
    """The executor of every job: the run's own process, or the Dask cluster that the
    environment names (then the warehouse must take concurrent writers)."""
    address = dask_scheduler()
    if address is None:
        return dg.in_process_executor
    from battery_pipeline.resources import default_backend

    if default_backend() != "ducklake":
        raise ValueError(
            f"{DASK_SCHEDULER_ENV} is set, but the warehouse is one DuckDB file, which takes one writer on one "
            "machine: set BATTERY_PIPELINE_WAREHOUSE=ducklake (with its catalog and data path) for steps on a cluster"
        )
    return dask_cluster_executor.configured({"address": address}, name="dask_cluster")
