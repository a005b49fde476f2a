"""Two runs of the same cell partition started at the same moment, in two processes, end in
exactly the state one run leaves: no duplicate rows, no lock error surfacing as a failure.

This is the harsh case: each run has its own Dagster instance, so the `duckdb` pool (one slot
per instance, which queues the steps of runs sharing an instance) does not separate them. What
keeps them apart is DuckDB's file lock - a second process cannot open the file while the first
has it open - with dagster-duckdb's connection retry (up to 10 attempts, exponential backoff),
and one transaction per write (`Warehouse.replace_partitions` deletes and re-inserts the
partition together), so whichever run commits last leaves a complete partition, identical to the
other's because both read the same file. Both runs succeed; neither fails by design.
"""

from __future__ import annotations

import json

import dagster as dg
import duckdb

from battery_pipeline_tests.pipeline.test_ingest_pipeline import register, run_partition
from battery_pipeline_tests.reliability import faults
from battery_pipeline_tests.reliability.children import Child
from battery_pipeline_tests.reliability.test_killed_runs import KEY, long_test, write_cell

ROWS = 40_000  # writes long enough for the two runs' steps to meet at the lock


def test_two_simultaneous_runs_of_one_partition_end_as_one_run(tmp_path):
    frame = long_test(ROWS)
    frame.loc[[10, 500, 9000], "voltage_v"] = 9.9  # something to quarantine too
    data = write_cell(tmp_path / "incoming", frame)
    database = tmp_path / "warehouse.duckdb"
    racers = [Child("race", {"database": str(database), "data": str(data), "key": KEY}) for _ in range(2)]
    try:
        for racer in racers:
            racer.expect("READY")
        for racer in racers:  # both are imported and waiting: release them together
            racer.send("go")
        results = [json.loads(racer.expect("RESULT")) for racer in racers]
        errors = [racer.finish() for racer in racers]
    finally:
        for racer in racers:
            racer.kill()
    for result, error in zip(results, errors):
        assert result == {"success": True, "failures": []}, error[-3000:]
        assert "could not set lock" not in error.lower() and "conflicting lock" not in error.lower()

    # Reference: one run alone, on a fresh warehouse.
    reference = tmp_path / "reference.duckdb"
    with dg.instance_for_test() as instance:
        register(instance, data)
        assert run_partition(instance, data, reference, KEY).success
    assert faults.partition_digests(str(database), KEY) == faults.partition_digests(str(reference), KEY)
    with duckdb.connect(str(database), read_only=True) as conn:
        raw, valid, quarantined, copies = conn.execute(
            """
            SELECT (SELECT count(*) FROM raw_samples), (SELECT count(*) FROM validated_samples),
                   (SELECT count(*) FROM quarantined_samples),
                   (SELECT count(*) FROM (SELECT source_row FROM raw_samples GROUP BY ALL HAVING count(*) > 1))
            """
        ).fetchone()
    assert raw == ROWS == valid + quarantined and quarantined == 3 and copies == 0
