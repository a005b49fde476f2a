"""How the environment picks where steps run and how a backfill of cells is split into runs."""

from __future__ import annotations

import pytest

from battery_pipeline import executors
from battery_pipeline.partitions import batch_ranges


def test_ranges_are_split_at_the_cluster_batch_size():
    ordered = [f"c{i}" for i in range(7)]
    assert [m for _, _, m in batch_ranges(ordered, ordered, 3)] == [["c0", "c1", "c2"], ["c3", "c4", "c5"], ["c6"]]
    # a gap still ends a range, and no range is longer than the size
    assert [m for _, _, m in batch_ranges(ordered, ["c0", "c1", "c3", "c4", "c5", "c6"], 2)] == [
        ["c0", "c1"], ["c3", "c4"], ["c5", "c6"]]
    assert [m for _, _, m in batch_ranges(ordered, ordered)] == [ordered]


def test_without_a_cluster_a_backfill_is_one_run_in_the_runs_process(monkeypatch):
    monkeypatch.delenv(executors.DASK_SCHEDULER_ENV, raising=False)
    monkeypatch.delenv(executors.CELLS_PER_RUN_ENV, raising=False)
    assert executors.cells_per_run() is None
    assert executors.cell_backfill_policy().max_partitions_per_run is None
    assert executors.step_executor().name == "in_process"


def test_on_a_cluster_runs_of_cells_per_run_go_to_the_dask_executor(monkeypatch):
    monkeypatch.setenv(executors.DASK_SCHEDULER_ENV, "tcp://10.0.0.5:8786")
    monkeypatch.setenv("BATTERY_PIPELINE_WAREHOUSE", "ducklake")
    monkeypatch.delenv(executors.CELLS_PER_RUN_ENV, raising=False)
    assert executors.cells_per_run() == executors.DEFAULT_CELLS_PER_RUN
    monkeypatch.setenv(executors.CELLS_PER_RUN_ENV, "40")
    assert executors.cell_backfill_policy().max_partitions_per_run == 40
    executor = executors.step_executor()
    assert executor.name == "dask_cluster" and executor.config_schema  # configured with the address


def test_a_cluster_with_the_embedded_file_or_a_bad_batch_size_is_refused_by_name(monkeypatch):
    monkeypatch.setenv(executors.DASK_SCHEDULER_ENV, "tcp://10.0.0.5:8786")
    monkeypatch.setenv("BATTERY_PIPELINE_WAREHOUSE", "duckdb")
    with pytest.raises(ValueError, match="set BATTERY_PIPELINE_WAREHOUSE=ducklake"):
        executors.step_executor()
    monkeypatch.setenv(executors.CELLS_PER_RUN_ENV, "0")
    with pytest.raises(ValueError, match="BATTERY_PIPELINE_CELLS_PER_RUN='0'"):
        executors.cells_per_run()


def test_a_run_names_the_catalog_variable_never_its_password(monkeypatch):
    from battery_pipeline.resources import environment_run_config

    monkeypatch.setenv("BATTERY_PIPELINE_WAREHOUSE", "ducklake")
    monkeypatch.setenv("BATTERY_PIPELINE_DUCKLAKE_CATALOG", "postgresql://lab:secret@db:5432/lake")
    config = environment_run_config()["resources"]["warehouse"]["config"]
    assert config["ducklake_catalog"] == {"env": "BATTERY_PIPELINE_DUCKLAKE_CATALOG"} and config["backend"] == "ducklake"
    assert "secret" not in repr(environment_run_config())
