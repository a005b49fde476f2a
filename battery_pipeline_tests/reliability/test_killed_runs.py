"""A run killed (SIGKILL) in the middle of a warehouse write leaves the warehouse consistent.

Each scenario is a real write in a child process (`faults.py`): a Dagster materialization of a
cell partition, or `Warehouse.replace_table` / `append_rows`. The child stops *inside* the write's
transaction - after the new rows are written, before the commit - and the parent kills it with
SIGKILL there (deterministically, see `faults.py`). Then the warehouse must open, hold exactly
what it held before the killed write (old complete state, compared by row digests), with the row
accounting raw = validated + quarantined intact, and re-running the write must succeed.

All children start together (module fixture) so their start-up overlaps; each test then kills
and inspects its own.
"""

from __future__ import annotations

import json

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest

from battery_pipeline.resources import Warehouse
from battery_pipeline_tests.fixtures import cycling_frame
from battery_pipeline_tests.pipeline.test_ingest_pipeline import register, run_partition, table_counts
from battery_pipeline_tests.reliability import faults
from battery_pipeline_tests.reliability.children import Child

KEY = "cell"
# Larger than DuckDB's row group (122 880 rows), so the killed insert has written blocks to the
# database file before its commit: the case a non-transactional write would leave half done.
LARGE_ROWS = 160_000
# The fixture cell states no chemistry, so its window is lithium's envelope (0-5 V): a margin of
# -0.9 V puts the top at 4.1 V, below the cell's 4.2 V charge, so these rules quarantine rows.
STRICTER_VALIDATION = {"ops": {"cell_pipeline": {"config": {"voltage_margin_high_v": -0.9}}}}


def long_test(rows: int) -> pd.DataFrame:
    """`rows` canonical samples: the fixtures' 80-sample cycle repeated, time and cycle running on."""
    cycle = cycling_frame(n_cycles=1)
    repeats = -(-rows // len(cycle))
    frame = pd.concat([cycle] * repeats, ignore_index=True).head(rows)
    index = np.arange(len(frame))
    frame["cycle_number"] = index // len(cycle)
    frame["time_s"] = (index + 1) * 30.0
    return frame


def write_cell(folder, frame: pd.DataFrame):
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(folder / f"{KEY}.parquet", index=False)
    return folder


@pytest.fixture(scope="module")
def children(tmp_path_factory):
    root = tmp_path_factory.mktemp("killed")
    small = write_cell(root / "small", cycling_frame(n_cycles=3))
    large = write_cell(root / "large", long_test(LARGE_ROWS))
    started = {
        # inside raw_samples' transaction (raw, impedance and summaries replaced), before COMMIT
        "raw": Child("killed_partition_write", {
            "database": str(root / "raw.duckdb"), "key": KEY, "first_data": str(small),
            "second_data": str(large), "pause_before": r"^COMMIT", "pause_after": r'INSERT INTO "raw_sample_values"',
        }),
        # inside validated_samples' transaction: quarantined rows deleted and not yet re-inserted,
        # flags not replaced, the cell not yet marked validated again (the view's
        # `validated_cells`) - the most partial state there is
        "validated": Child("killed_partition_write", {
            "database": str(root / "validated.duckdb"), "key": KEY, "first_data": str(small),
            "second_data": str(small), "second_run_config": STRICTER_VALIDATION,
            "pause_before": r'INSERT INTO "quarantined_samples"', "pause_after": r'DELETE FROM "quarantined_samples"',
        }),
        "tables": Child("killed_table_writes", {"database": str(root / "tables.duckdb"), "rows": LARGE_ROWS}),
    }
    yield root, started
    for child in started.values():
        child.kill()


def kill_inside_write(child: Child, pauses: int = 1) -> dict:
    before = json.loads(child.expect("SNAPSHOT"))
    for _ in range(pauses):
        child.expect("PAUSED", unless="WROTE")
    assert child.kill() == -9
    return before


def assert_opens_with(database: str, key: str, before: dict) -> dict:
    # Opening read-write replays DuckDB's WAL; a checkpoint writes the recovered state back.
    with duckdb.connect(database) as conn:
        conn.execute("CHECKPOINT")
    after = faults.partition_digests(database, key)
    assert after == before, "the killed write left a partial or new state visible"
    raw, valid, quarantined = (after[t][0] for t in ("raw_samples", "validated_samples", "quarantined_samples"))
    assert raw == valid + quarantined > 0
    return after


def rerun(database, data_dir, run_config=None):
    with dg.instance_for_test() as instance:
        register(instance, data_dir)
        result = run_partition(instance, data_dir, database, KEY, run_config)
    assert result.success
    accounting = [e for e in result.get_asset_check_evaluations() if e.check_name == "row_accounting"]
    assert accounting and accounting[0].passed
    return result


def test_killed_raw_samples_write_leaves_the_old_partition_and_rerun_succeeds(children):
    root, started = children
    before = kill_inside_write(started["raw"])
    assert before["raw_samples"][0] == 240
    assert_opens_with(str(root / "raw.duckdb"), KEY, before)

    rerun(root / "raw.duckdb", root / "large")
    counts = {t: table_counts(root / "raw.duckdb", t).get(KEY, 0) for t in faults.TABLES}
    assert counts["raw_samples"] == LARGE_ROWS == counts["validated_samples"] + counts["quarantined_samples"]
    with duckdb.connect(str(root / "raw.duckdb"), read_only=True) as conn:
        copies = conn.execute(
            "SELECT count(*) FROM (SELECT source_row FROM raw_samples GROUP BY ALL HAVING count(*) > 1)"
        ).fetchone()[0]
    assert copies == 0


def test_killed_validation_write_leaves_the_old_split_and_rerun_succeeds(children):
    root, started = children
    before = kill_inside_write(started["validated"])
    assert before["quarantined_samples"][0] == 0  # the default rules accept the clean cell
    assert_opens_with(str(root / "validated.duckdb"), KEY, before)

    # The interrupted run's rules, now to completion: they quarantine rows, so the killed
    # transaction really had a different split to write.
    rerun(root / "validated.duckdb", root / "small", STRICTER_VALIDATION)
    counts = {t: table_counts(root / "validated.duckdb", t).get(KEY, 0) for t in faults.TABLES}
    assert counts["quarantined_samples"] > 0
    assert counts["raw_samples"] == 240 == counts["validated_samples"] + counts["quarantined_samples"]


def test_killed_replace_table_and_append_rows_leave_the_old_tables_and_rerun_succeeds(children):
    root, started = children
    database = str(root / "tables.duckdb")
    tables = ["training_rows", "current_model", "model_promotions"]
    before = kill_inside_write(started["tables"], pauses=2)  # both writers stopped before COMMIT
    with duckdb.connect(database) as conn:
        conn.execute("CHECKPOINT")
        columns = [r[0] for r in conn.execute("DESCRIBE training_rows").fetchall()]
        current = conn.execute("SELECT model_id FROM current_model").fetchall()
    assert faults.whole_table_digests(database, tables) == before
    assert columns == ["cell_id", "soh"] and current == [("m1",)]  # old layout, old decision

    warehouse = Warehouse(database=database)
    warehouse.replace_table("training_rows", pd.DataFrame({"cell_id": ["c"], "soh": [0.8], "cycle": [1]}))
    warehouse.append_rows(
        "model_promotions",
        pd.DataFrame({"model_name": ["soh"], "model_id": ["m2"]}),
        then=('UPDATE "current_model" SET model_id = ? WHERE model_name = ?', ["m2", "soh"]),
    )
    assert warehouse.query("SELECT count(*) AS n FROM training_rows")["n"].iloc[0] == 1
    assert list(warehouse.query("SELECT model_id FROM model_promotions ORDER BY rowid")["model_id"]) == ["m1", "m2"]
    assert warehouse.query("SELECT model_id FROM current_model")["model_id"].iloc[0] == "m2"
