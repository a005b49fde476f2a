"""Beyond one machine, proven on one: PostgreSQL (Dagster's instance and DuckLake's catalog), a
Dask scheduler and two worker processes, the demo fleet's 8 cells backfilled through the cluster
into DuckLake as `battery-pipeline run` does it (runs of 2 cells, launched at once), then checked
against the embedded DuckDB run of the same files; a worker killed in the middle of a step; and
the same cells as an asset backfill that Dagster's daemon splits and launches, as the UI's does.

Every process here is a real server or the project's own command: the CLI runs as a subprocess
with the cluster's environment (executor, warehouse and instance are chosen at import, from the
environment, as on every host of a deployment). Without PostgreSQL the module is skipped with the
reason, unless CI is set (`.ci/run` installs it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from battery_pipeline.local_cluster import create_database, dask_cluster

CELLS_PER_RUN = 2
# Tables a cell run writes, and the columns that name a sample, a cycle or a cell in each.
CELL_TABLES = {
    "cells": ["cell_id"],
    "raw_samples": ["cell_id", "source_file", "source_row"],
    "validated_samples": ["cell_id", "source_file", "source_row"],
    "quarantined_samples": ["cell_id", "source_file", "source_row", "reason_code"],
    "cycle_features": ["cell_id", "cycle_number"],
    "cycle_labels": ["cell_id", "cycle_number"],
}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> tuple[Path, list[str]]:
    """The demo fleet's 8 simulated cells (the project's simulator), as files in a data folder."""
    from battery_pipeline.science.demo import ensure_demo_fleet
    from battery_pipeline.science.sources import discover

    folder = ensure_demo_fleet(tmp_path_factory.mktemp("fleet"))
    keys = list(discover([folder]).keys())
    assert len(keys) >= 8, keys
    return folder, keys


def common_env(root: Path, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATTERY_PIPELINE_", "DAGSTER_", "DASK_"))}
    env.update(
        BATTERY_PIPELINE_DATA_DIRS=str(data_dir),
        BATTERY_PIPELINE_DEMO_DIR=str(root / "demo"),
        BATTERY_PIPELINE_PACK_DIRS=str(root / "packs"),
        BATTERY_PIPELINE_DEMO_PACK_DIR=str(root / "demo_packs"),
        BATTERY_PIPELINE_MODEL_DIR=str(root / "models"),
        BATTERY_PIPELINE_RESULTS_DIR=str(root / "results"),
        BATTERY_PIPELINE_REPORTS_DIR=str(root / "reports"),
        DAGSTER_HOME=str(root / "dagster_home"),
    )
    (root / "dagster_home").mkdir(parents=True, exist_ok=True)
    return env


@pytest.fixture(scope="module")
def deployment(postgres, fleet, tmp_path_factory):
    """The cluster's environment (what every host of the deployment is given) and the cluster."""
    root = tmp_path_factory.mktemp("cluster")
    lake_catalog = create_database(postgres, "cluster_lake")
    env = common_env(root, fleet[0])
    env.update(
        BATTERY_PIPELINE_DAGSTER_PG_URL=create_database(postgres, "cluster_dagster").replace("postgresql://", "postgresql+psycopg2://"),
        BATTERY_PIPELINE_WAREHOUSE="ducklake",
        BATTERY_PIPELINE_DUCKLAKE_CATALOG=lake_catalog,
        BATTERY_PIPELINE_DUCKLAKE_DATA_PATH=str(root / "lake"),
        BATTERY_PIPELINE_CELLS_PER_RUN=str(CELLS_PER_RUN),
    )
    with dask_cluster(2, env, root / "dask") as cluster:
        yield {**env, "BATTERY_PIPELINE_DASK_SCHEDULER": cluster.address}, cluster


def run_cli(env: dict[str, str], keys: list[str], **popen) -> subprocess.Popen:
    command = [sys.executable, "-m", "battery_pipeline.cli", "run", *[a for k in keys for a in ("--partition", k)]]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def finished(process: subprocess.Popen, timeout: float = 600) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output
    return output


@pytest.fixture(scope="module")
def embedded_tables(fleet, tmp_path_factory) -> dict[str, pd.DataFrame]:
    """The same cells through the default setup: one DuckDB file, steps in the run's process."""
    root = tmp_path_factory.mktemp("embedded")
    env = common_env(root, fleet[0])
    env["BATTERY_PIPELINE_DUCKDB"] = str(root / "warehouse.duckdb")
    finished(run_cli(env, fleet[1]))
    with duckdb.connect(env["BATTERY_PIPELINE_DUCKDB"], read_only=True) as conn:
        return {table: conn.execute(f"SELECT * FROM {table}").df() for table in CELL_TABLES}


def lake_tables(env: dict[str, str]) -> dict[str, pd.DataFrame]:
    from battery_pipeline.resources import Warehouse

    warehouse = Warehouse(
        backend="ducklake",
        ducklake_catalog=env["BATTERY_PIPELINE_DUCKLAKE_CATALOG"],
        ducklake_data_path=env["BATTERY_PIPELINE_DUCKLAKE_DATA_PATH"],
    )
    return {table: warehouse.query(f"SELECT * FROM {table}") for table in CELL_TABLES}


def assert_every_row_once(tables: dict[str, pd.DataFrame], keys: list[str]) -> None:
    for table, key_columns in CELL_TABLES.items():
        duplicated = tables[table].duplicated(key_columns)
        assert not duplicated.any(), f"{table}: {int(duplicated.sum())} duplicate rows"
    counts = {t: tables[t].groupby("cell_id").size() for t in ("raw_samples", "validated_samples", "quarantined_samples")}
    for key in keys:
        raw, valid, quarantined = (int(counts[t].get(key, 0)) for t in counts)
        assert raw > 0 and raw == valid + quarantined, (key, raw, valid, quarantined)


def assert_once_each_and_as_embedded(tables: dict, embedded_tables: dict, keys: list[str]) -> None:
    assert_every_row_once(tables, keys)
    for table, key_columns in CELL_TABLES.items():
        pd.testing.assert_frame_equal(
            comparable(tables[table], key_columns), comparable(embedded_tables[table], key_columns), check_dtype=False, obj=table
        )


def comparable(frame: pd.DataFrame, key_columns: list[str]) -> pd.DataFrame:
    """Rows in key order, without the columns that name a run or a moment (these differ between
    any two runs of the same files)."""
    varying = [c for c in frame.columns if c.endswith(("_at", "run_id")) or c in ("registered", "code_version")]
    return frame.drop(columns=varying).sort_values(key_columns, kind="stable").reset_index(drop=True)


@contextmanager
def instance(env: dict[str, str]):
    """The deployment's Dagster instance (Postgres), its settings read from the environment only
    while it is open, so the rest of the test session keeps its own."""
    from dagster import DagsterInstance

    names = ("DAGSTER_HOME", "BATTERY_PIPELINE_DAGSTER_PG_URL")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({name: env[name] for name in names})
    try:
        with DagsterInstance.from_config(env["DAGSTER_HOME"]) as dagster_instance:
            yield dagster_instance
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def cell_runs(dagster_instance) -> list:
    from dagster import RunsFilter

    return dagster_instance.get_runs(RunsFilter(job_name="cell_pipeline_job"))


def step_placements(dagster_instance, run_id: str) -> tuple[float, float, set[str]]:
    """(start, end) of the run's cell step and the workers that stored its cells."""
    from dagster import DagsterEventType

    (step,) = dagster_instance.get_run_step_stats(run_id)
    workers = set()
    for record in dagster_instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records:
        stored_by = record.event_log_entry.asset_materialization.metadata.get("stored_by")
        if stored_by is not None:
            workers.add(stored_by.value)
    return step.start_time, step.end_time, workers


def test_a_backfill_on_two_workers_into_ducklake_equals_the_embedded_run(deployment, fleet, embedded_tables):
    env, cluster = deployment
    _, keys = fleet
    output = finished(run_cli(env, keys))
    assert f"{len(keys) // CELLS_PER_RUN} runs of up to {CELLS_PER_RUN} cells each, on the Dask cluster" in output, output

    with instance(env) as dagster_instance:
        runs = cell_runs(dagster_instance)
        assert len(runs) == len(keys) // CELLS_PER_RUN and all(run.is_success for run in runs), [r.status for r in runs]
        placements = [step_placements(dagster_instance, run.run_id) for run in runs]
    with cluster.client() as client:
        workers = set(client.scheduler_info()["workers"])
    # every batch was stored by one of the cluster's workers, never by the launching process
    assert all(len(stored) == 1 and stored <= workers for _, _, stored in placements), (placements, workers)
    # steps of different cells ran at the same time on different workers
    overlapping = [
        (a, b) for i, a in enumerate(placements) for b in placements[i + 1:]
        if a[2] != b[2] and a[0] < b[1] and b[0] < a[1]
    ]
    assert overlapping, placements

    assert_once_each_and_as_embedded(lake_tables(env), embedded_tables, keys)


def test_a_worker_killed_in_the_middle_of_a_step_is_retried_and_a_rerun_leaves_one_copy(deployment, fleet, embedded_tables):
    from dagster import DagsterEventType

    env, cluster = deployment
    _, keys = fleet
    env = {**env, "BATTERY_PIPELINE_CELLS_PER_RUN": str(len(keys))}  # one long step, on one worker
    with instance(env) as dagster_instance:
        before = {run.run_id for run in cell_runs(dagster_instance)}
        process = run_cli(env, keys)
        deadline = time.monotonic() + 300
        while True:  # until the new run's step has started on a worker
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()[0] if process.poll() is not None else "timeout"
            new = [run for run in cell_runs(dagster_instance) if run.run_id not in before]
            started = new and dagster_instance.get_records_for_run(new[0].run_id, of_type=DagsterEventType.STEP_START).records
            if started:
                break
            time.sleep(0.2)
        time.sleep(1.0)  # inside the step: reading and computing its cells
        with cluster.client() as client:
            busy = [address for address, tasks in client.processing().items() if any(str(t).startswith("cell_pipeline-") for t in tasks)]
            assert len(busy) == 1, client.processing()
            pid = client.run(os.getpid, workers=busy)[busy[0]]
        os.kill(pid, signal.SIGKILL)
        output = finished(process)
        run = dagster_instance.get_run_by_id(new[0].run_id)
        assert run.is_success, output
        _, _, stored_by = step_placements(dagster_instance, run.run_id)
        starts = dagster_instance.get_records_for_run(run.run_id, of_type=DagsterEventType.STEP_START).records
    # the step ran again, on a worker that was not the one killed
    assert busy[0] not in stored_by and len(starts) == 2, (busy, stored_by, len(starts))
    assert_every_row_once(lake_tables(env), keys)

    finished(run_cli(env, keys))  # and once more: still one copy of every row, equal to the embedded run
    assert_once_each_and_as_embedded(lake_tables(env), embedded_tables, keys)


def test_a_ui_backfill_through_the_daemon_becomes_runs_of_cells_per_run_on_the_workers(deployment, fleet, embedded_tables):
    """The path a user clicks: an asset backfill of the cells, which Dagster's daemon splits by
    the cell asset's multi-run policy and launches through the run launcher (a run worker per
    run, from the code location the daemon loads), each run's step on the cluster."""
    from dagster import AssetKey, RunsFilter
    from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
    from dagster._core.storage.tags import BACKFILL_ID_TAG

    from battery_pipeline.assets.cell_pipeline import CELL_SPECS
    from battery_pipeline.definitions import defs

    env, cluster = deployment
    _, keys = fleet
    repo = Path(__file__).resolve().parents[2]
    log = open(cluster.folder / "daemon.log", "wb")
    daemon = subprocess.Popen([sys.executable, "-m", "dagster._daemon", "run", "-w", str(repo / "workspace.yaml")], cwd=repo,
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with instance(env) as dagster_instance:
            backfill = PartitionBackfill.from_asset_partitions(
                backfill_id="clusterbackfill", asset_graph=defs.resolve_asset_graph(), partition_names=keys,
                asset_selection=[AssetKey(spec.key.path) for spec in CELL_SPECS], backfill_timestamp=time.time(), tags={},
                dynamic_partitions_store=dagster_instance, all_partitions=False, title="cluster test", description=None,
                run_config=None,
            )
            dagster_instance.add_backfill(backfill)
            deadline = time.monotonic() + 480
            while True:
                status = dagster_instance.get_backfill(backfill.backfill_id).status
                # (an asset backfill's runs are of the implicit asset job, with the definitions' executor)
                runs = dagster_instance.get_runs(RunsFilter(tags={BACKFILL_ID_TAG: backfill.backfill_id}))
                if status != BulkActionStatus.REQUESTED and all(r.is_finished for r in runs):
                    break
                assert daemon.poll() is None and time.monotonic() < deadline, (
                    status, [r.status for r in runs], (cluster.folder / "daemon.log").read_text()[-3000:])
                time.sleep(1.0)
            assert status == BulkActionStatus.COMPLETED_SUCCESS, status
            assert len(runs) == len(keys) // CELLS_PER_RUN and all(r.is_success for r in runs), [r.status for r in runs]
            placements = [step_placements(dagster_instance, r.run_id) for r in runs]
    finally:
        if daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGTERM)
            daemon.wait(timeout=60)
        log.close()
    with cluster.client() as client:
        workers = set(client.scheduler_info()["workers"])
    assert all(len(stored) == 1 and stored <= workers for _, _, stored in placements), (placements, workers)
    assert_once_each_and_as_embedded(lake_tables(env), embedded_tables, keys)
