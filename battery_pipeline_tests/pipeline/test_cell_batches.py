"""Batches of cells in one run (assets/cell_pipeline.py): what lands, what fails, what the UI sees.

A batch is one run over a range of `cells` partitions, its cells computed in worker processes and
stored a stage at a time for the whole group. Per-cell isolation must survive that: one unreadable
file fails its own partition, every other cell lands with its own materializations and check
results, and the rows equal those of one-cell runs.
"""

from __future__ import annotations

import dagster as dg
import duckdb
import pandas as pd
import pytest

from battery_pipeline.assets.cell_pipeline import CELL_SPECS, cell_pipeline
from battery_pipeline.partitions import cell_partitions
from battery_pipeline.resources import SourceCatalog, Warehouse
from battery_pipeline.science.sources import discover
from battery_pipeline_tests.fixtures import cycling_frame, write_csv

TABLES = ("raw_samples", "validated_samples", "quarantined_samples", "cycle_features", "cycle_labels")


def batch(instance, data, database, keys, workers: int):
    tags = {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}
    return dg.materialize(
        [cell_pipeline],
        instance=instance,
        tags=tags,
        run_config={"ops": {"cell_pipeline": {"config": {"workers": workers}}}},
        resources={
            "warehouse": Warehouse(database=str(database)),
            "catalog": SourceCatalog(data_dirs=[str(data)], use_demo_when_empty=False),
        },
        raise_on_error=False,
    )


@pytest.fixture
def fleet(tmp_path):
    data = tmp_path / "incoming"
    for i, cycles in enumerate((4, 5, 6)):
        write_csv(data, f"cell_{i}.csv", cycling_frame(n_cycles=cycles, balanced=True))
    (data / "cell_1b.csv").write_bytes(bytes(range(256)) * 8)  # no reader knows it
    return data


@pytest.fixture(params=["dagster's sqlite event log", "pooled sqlite event log"])
def instance(request, tmp_path):
    overrides = {}
    if request.param.startswith("pooled"):  # what `battery-pipeline` configures (instance_storage.py)
        overrides["event_log_storage"] = {
            "module": "battery_pipeline.instance_storage",
            "class": "PooledSqliteEventLogStorage",
            "config": {"base_dir": str(tmp_path / "event_logs")},
        }
    with dg.instance_for_test(overrides=overrides) as instance:
        yield instance


def rows(database, table: str, key: str) -> pd.DataFrame:
    with duckdb.connect(str(database), read_only=True) as conn:
        return conn.execute(f"SELECT * EXCLUDE (cell_id) FROM {table} WHERE cell_id = ? ORDER BY ALL", [key]).df()


def test_one_bad_file_fails_its_own_cell_and_every_other_cell_of_the_batch_lands(tmp_path, fleet, instance):
    keys = discover([fleet]).keys()
    instance.add_dynamic_partitions(cell_partitions.name, keys)
    bad = "cell_1b"
    good = [k for k in keys if k != bad]
    result = batch(instance, fleet, tmp_path / "w.duckdb", keys, workers=2)

    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    failed = failure.step_failure_data.user_failure_data.metadata["failed_cells"].value
    assert list(failed) == [bad] and "cell_1b.csv" in failed[bad] and "unknown format" in failed[bad]

    # the UI's partition status: every asset materialized for the good cells, failed for the bad one
    for spec in CELL_SPECS:
        status = instance.get_status_by_partition(spec.key, keys, cell_partitions)
        assert {k for k, s in status.items() if s == dg.AssetPartitionStatus.MATERIALIZED} == set(good), spec.key
        assert status[bad] == dg.AssetPartitionStatus.FAILED, spec.key

    # check results per cell partition, each naming the materialization it checked
    history = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("validated_samples"), "row_accounting"), limit=10
    )
    history = [r for r in history if r.partition is not None]  # not the range's planned record
    assert sorted(r.partition for r in history) == sorted(good)
    assert all(r.evaluation.passed and r.evaluation.target_materialization_data for r in history)

    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as conn:
        counts = conn.execute(
            """SELECT r.cell_id, r.n, coalesce(v.n, 0) + coalesce(q.n, 0)
               FROM (SELECT cell_id, count(*) n FROM raw_samples GROUP BY 1) r
               LEFT JOIN (SELECT cell_id, count(*) n FROM validated_samples GROUP BY 1) v USING (cell_id)
               LEFT JOIN (SELECT cell_id, count(*) n FROM quarantined_samples GROUP BY 1) q USING (cell_id)"""
        ).fetchall()
        labelled = {row[0] for row in conn.execute("SELECT DISTINCT cell_id FROM cycle_labels").fetchall()}
    assert sorted(c for c, _, _ in counts) == sorted(good) and all(raw == kept for _, raw, kept in counts)
    assert labelled == set(good)


def test_a_batch_in_worker_processes_stores_what_one_cell_runs_store(tmp_path, fleet):
    (fleet / "cell_1b.csv").unlink()
    with dg.instance_for_test() as instance:
        keys = discover([fleet]).keys()
        instance.add_dynamic_partitions(cell_partitions.name, keys)
        assert batch(instance, fleet, tmp_path / "batch.duckdb", keys, workers=2).success
        for key in keys:
            assert batch(instance, fleet, tmp_path / "single.duckdb", [key], workers=1).success
    for key in keys:
        for table in TABLES:
            pd.testing.assert_frame_equal(rows(tmp_path / "batch.duckdb", table, key), rows(tmp_path / "single.duckdb", table, key))


def test_the_outcomes_pulled_ahead_arrive_in_order_errors_reach_the_consumer_and_an_early_stop_ends_the_puller():
    from battery_pipeline.assets.cell_pipeline import Ahead
    from battery_pipeline.science.cell_chain import CellOutcome

    def outcomes(n, fail_at=None):
        for i in range(n):
            if i == fail_at:
                raise RuntimeError("worker pool broke")
            yield CellOutcome(f"cell_{i}", tables={"raw_samples": pd.DataFrame({"x": range(10)})})

    assert [o.key for o in Ahead(outcomes(5), max_rows=15)] == [f"cell_{i}" for i in range(5)]
    with pytest.raises(RuntimeError, match="worker pool broke"):
        list(Ahead(outcomes(5, fail_at=3), max_rows=15))
    source = outcomes(100)
    for outcome in Ahead(source, max_rows=10):
        break  # the consumer stops: the generator's close joins the puller, which closes the source
    assert outcome.key == "cell_0"
    assert next(source, None) is None
