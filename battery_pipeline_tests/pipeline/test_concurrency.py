"""Several partitions materialized at once, in separate processes, never hit DuckDB's lock.

Each process is a `battery-pipeline run --partition` (a `cell_pipeline_job` run executed in that
process) on one shared instance whose `duckdb` pool has one slot, so warehouse steps of different
runs queue instead of colliding.
"""

from __future__ import annotations

import os
import subprocess
import sys

import duckdb

from battery_pipeline.cli import instance_yaml
from battery_pipeline_tests.conftest import REPO_ROOT
from battery_pipeline_tests.fixtures import cycling_frame, write_csv

CELLS = {"alpha": 2, "bravo": 3, "charlie": 4, "delta": 5}


def test_concurrent_partitions_have_no_lock_errors_and_correct_counts(tmp_path):
    data = tmp_path / "incoming"
    for name, cycles in CELLS.items():
        write_csv(data, f"{name}.csv", cycling_frame(n_cycles=cycles))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(instance_yaml())
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "BATTERY_PIPELINE_DUCKDB": str(tmp_path / "warehouse.duckdb"),
        "BATTERY_PIPELINE_DATA_DIRS": str(data),
    }
    # Register partitions once, then start all runs at the same moment.
    subprocess.run(
        [sys.executable, "-c", "from dagster import DagsterInstance; i = DagsterInstance.get(); "
         f"i.add_dynamic_partitions('cells', {sorted(CELLS)!r})"],
        env=env, check=True, cwd=REPO_ROOT,
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "battery_pipeline.cli", "run", "--partition", name],
            env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for name in CELLS
    ]
    # a hang guard, not a timing assertion: generous, since a loaded 2-core CI machine is slow
    outputs = [p.communicate(timeout=1800)[0] for p in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output
        # DuckDB's words when a second process opens the file: "Could not set lock on file".
        assert "could not set lock" not in output.lower() and "conflicting lock" not in output.lower(), output
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
        raw = dict(conn.execute("SELECT cell_id, count(*) FROM raw_samples GROUP BY 1").fetchall())
        valid = dict(conn.execute("SELECT cell_id, count(*) FROM validated_samples GROUP BY 1").fetchall())
    expected = {name: cycles * 80 for name, cycles in CELLS.items()}
    assert raw == expected
    assert valid == expected
