"""Fleet benchmark: N simulated cells through the real Dagster path, on a fresh instance and warehouse.

    python benchmarks/fleet.py --cells N [--samples-per-cell 20000] [--keep DIR] [--postgres URL]

What runs: the project's simulator writes N cells of about `--samples-per-cell` samples each
(canonical Parquet, ~400 cycles; generation is not timed); a fresh DAGSTER_HOME (our dagster.yaml,
SQLite storage, or Postgres with `--postgres`) and a fresh DuckDB warehouse; the cells are
registered as `cells` partitions and materialized as `battery-pipeline run` and a UI backfill of
the range do it: one run of `cell_pipeline_job` over the partition range (single-run backfill
policy), its cells computed in worker processes (one per core) and stored stage by stage
(ingest, validation, features, labels).

Prints: cells/min and samples/s over the run's wall time; the run's wall time beside the cells'
compute (the sum of each cell's stage times, measured in the workers, from the materialization
metadata), and the step's own time; peak memory (max RSS of this process, which runs the step, and
of the largest worker). Run it for several N to see how the cost grows.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PRIMARY_ASSETS = ("cells", "raw_samples", "validated_samples", "cycle_features", "cycle_labels")


def generate(directory: Path, n_cells: int, samples_per_cell: int) -> list[Path]:
    from battery_pipeline.science import synth

    files = sorted(directory.glob("*.parquet"))
    if len(files) == n_cells:
        return files
    for stale in files:
        stale.unlink()
    started = time.perf_counter()
    files = []
    for frame in synth.iter_benchmark_frames(n_cells * samples_per_cell, n_cells=n_cells):
        path = directory / f"{frame['cell_id'].iloc[0]}.parquet"
        synth.write_samples_parquet(frame, path)
        files.append(path)
    print(f"generated {len(files)} cells in {time.perf_counter() - started:.1f} s (not timed)")
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument("--samples-per-cell", type=int, default=20_000)
    parser.add_argument("--keep", help="folder for the generated cells (reused when it holds N cells)")
    parser.add_argument("--postgres", help="a postgresql+psycopg2:// URL for the Dagster instance (default: SQLite)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    cells_dir = Path(args.keep) if args.keep else work / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    # The environment before the project is imported: every resource reads its folders from it.
    os.environ.update(
        DAGSTER_HOME=str(work / "dagster_home"),
        BATTERY_PIPELINE_DATA_DIRS=str(cells_dir),
        BATTERY_PIPELINE_DUCKDB=str(work / "warehouse.duckdb"),
        BATTERY_PIPELINE_MODEL_DIR=str(work / "models"),
        BATTERY_PIPELINE_RESULTS_DIR=str(work / "results"),
        BATTERY_PIPELINE_REPORTS_DIR=str(work / "reports"),
    )
    if args.postgres:
        os.environ["BATTERY_PIPELINE_DAGSTER_PG_URL"] = args.postgres
    from battery_pipeline.provenance import short_code_version

    print(f"measured commit: {short_code_version()}; {os.cpu_count()} cores; instance: {'Postgres' if args.postgres else 'SQLite'}")
    files = generate(cells_dir, args.cells, args.samples_per_cell)

    from dagster import DagsterEventType, DagsterInstance

    from battery_pipeline import cli
    from battery_pipeline.partitions import cell_partitions
    from battery_pipeline.resources import SourceCatalog

    cli.ensure_dagster_home()
    instance = DagsterInstance.get()
    keys = SourceCatalog().discover().keys()
    instance.add_dynamic_partitions(cell_partitions.name, keys)

    started = time.perf_counter()
    outcomes = cli.run_cells(instance, list(keys))
    wall = time.perf_counter() - started
    failed = [k for k, (ok, *_) in outcomes.items() if not ok]
    (run_id,) = {run_id for _, run_id, _ in outcomes.values()}

    run_stats = instance.get_run_stats(run_id)
    (step,) = instance.get_run_step_stats(run_id)
    compute, samples = 0.0, 0
    for record in instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records:
        materialization = record.event_log_entry.asset_materialization
        metadata = materialization.metadata
        if materialization.asset_key.to_user_string() in PRIMARY_ASSETS and "compute_seconds" in metadata:
            compute += float(metadata["compute_seconds"].value)
        if materialization.asset_key.to_user_string() == "raw_samples":
            samples += int(metadata["dagster/row_count"].value)
    run_wall = run_stats.end_time - run_stats.start_time
    parent_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    print(f"cells: {len(files)} ({len(failed)} failed), samples: {samples:,}")
    print(f"run {run_id[:8]}: wall {run_wall:.1f} s (launch to end {wall:.1f} s), step {step.end_time - step.start_time:.1f} s")
    print(f"  {len(files) / run_wall * 60:.0f} cells/min, {samples / run_wall / 1e6:.2f} M samples/s")
    print(f"  cells' compute {compute:.1f} s in the workers ({compute / len(files):.3f} s per cell); "
          f"wall / compute {run_wall / compute:.2f}")
    print(f"peak memory: step process {parent_mb:.0f} MB, largest worker {worker_mb:.0f} MB, sum {parent_mb + worker_mb:.0f} MB")


if __name__ == "__main__":
    main()
