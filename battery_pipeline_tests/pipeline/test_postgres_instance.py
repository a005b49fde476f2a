"""Beyond one machine: the same code with Dagster's instance storage in Postgres.

A throwaway PostgreSQL server (`local_cluster.postgres_server`: Debian's `postgresql` package,
which `.ci/run` installs when missing) runs in a temporary folder on a free port. With
$BATTERY_PIPELINE_DAGSTER_PG_URL set, `cli.ensure_dagster_home` writes a dagster.yaml whose runs,
event logs and schedule/sensor state live in that database; the cell job then runs as the CLI runs
it (a run of the code location, executed in this process, its events written to Postgres), the
governance job reads the event log back into `audit_log`, and the rows are read from Postgres itself.
Without the binaries the test is skipped with the reason, unless CI is set. As root, the server
runs as the `postgres` user (PostgreSQL refuses root).
"""

from __future__ import annotations

import os
import shutil

import duckdb
import pytest

from battery_pipeline import cli
from battery_pipeline.local_cluster import create_database
from battery_pipeline_tests.conftest import dataset_file

CELL_FILE = "cycler_samples/PredictionDiagnostics_000109_tztest.010"  # Maccor, 2165 rows, 4 cycles
CELL = "PredictionDiagnostics_000109_tztest.010"


@pytest.fixture(scope="module")
def postgres_url(postgres):
    return create_database(postgres, "dagster")  # libpq form, as psycopg2 takes it


def pg_query(url: str, sql: str) -> list[tuple]:
    import psycopg2

    with psycopg2.connect(url) as conn, conn.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall()


def test_the_cell_job_and_governance_run_on_a_postgres_instance(postgres_url, datasets, tmp_path, monkeypatch):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    shutil.copyfile(dataset_file(datasets, CELL_FILE), incoming / CELL)
    for name, path in {
        "DAGSTER_HOME": tmp_path / "dagster_home",
        "BATTERY_PIPELINE_DUCKDB": tmp_path / "warehouse.duckdb",
        "BATTERY_PIPELINE_DATA_DIRS": incoming,
        "BATTERY_PIPELINE_DEMO_DIR": tmp_path / "demo",
        "BATTERY_PIPELINE_PACK_DIRS": tmp_path / "packs",
        "BATTERY_PIPELINE_DEMO_PACK_DIR": tmp_path / "demo_packs",
        "BATTERY_PIPELINE_MODEL_DIR": tmp_path / "models",
        "BATTERY_PIPELINE_RESULTS_DIR": tmp_path / "results",
        "BATTERY_PIPELINE_REPORTS_DIR": tmp_path / "reports",
    }.items():
        monkeypatch.setenv(name, str(path))
    # SQLAlchemy (which Dagster hands the URL to) picks the driver from the scheme: psycopg2,
    # installed with dagster-postgres, must be named.
    monkeypatch.setenv(cli.POSTGRES_URL_ENV, postgres_url.replace("postgresql://", "postgresql+psycopg2://"))

    home = cli.ensure_dagster_home()
    assert cli.POSTGRES_STORAGE_YAML in (home / "dagster.yaml").read_text()

    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PooledPostgresEventLogStorage"
        instance.add_dynamic_partitions("cells", [CELL])
        ok, failure, _ = cli.run_job(instance, "cell_pipeline_job", tags={"dagster/partition": CELL})
        assert ok, failure
        ok, failure, _ = cli.run_job(instance, "governance_job")
        assert ok, failure
        runs = instance.get_runs()

    # What Dagster stored went to Postgres: both runs, the partition, the checks' evaluations.
    stored = dict(pg_query(postgres_url, "SELECT run_id, status FROM runs"))
    assert stored == {run.run_id: "SUCCESS" for run in runs} and len(stored) == 2, stored
    assert pg_query(postgres_url, "SELECT partition FROM dynamic_partitions WHERE partitions_def_name = 'cells'") == [(CELL,)]
    ((checks,),) = pg_query(postgres_url, "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_CHECK_EVALUATION'")
    assert checks >= 10, checks

    # The warehouse is unchanged by the move: DuckDB holds the cell, and the audit log the run.
    with duckdb.connect(os.environ["BATTERY_PIPELINE_DUCKDB"], read_only=True) as conn:
        raw, valid, quarantined = (
            conn.execute(f"SELECT count(*) FROM {table} WHERE cell_id = ?", [CELL]).fetchone()[0]
            for table in ("raw_samples", "validated_samples", "quarantined_samples")
        )
        audited = conn.execute("SELECT DISTINCT run_id, run_status FROM audit_log WHERE partition = ?", [CELL]).fetchall()
    assert raw == valid + quarantined > 0, (raw, valid, quarantined)
    cell_run = next(run.run_id for run in runs if run.job_name == "cell_pipeline_job")
    assert audited == [(cell_run, "SUCCESS")], audited
