"""Fleet benchmark: N simulated cells through the real Dagster path, on a fresh instance and warehouse.

    python benchmarks/fleet.py --cells N [--samples-per-cell 20000] [--keep DIR] [--postgres URL]
    python benchmarks/fleet.py --cells N --warehouse ducklake --workers K [--cells-per-run M]

What runs: the project's simulator writes N cells of about `--samples-per-cell` samples each
(canonical Parquet, ~400 cycles; generation is not timed); a fresh DAGSTER_HOME (our dagster.yaml,
SQLite storage, or Postgres with `--postgres`) and a fresh DuckDB warehouse; the cells are
registered as `cells` partitions and materialized as `battery-pipeline run` and a UI backfill of
the range do it: one run of `cell_pipeline_job` over the partition range (single-run backfill
policy), its cells computed in worker processes (one per core) and stored stage by stage
(ingest, validation, features, labels).

With `--warehouse ducklake --workers K`: a throwaway PostgreSQL server (Dagster's instance and
DuckLake's catalog; `battery_pipeline.local_cluster`), the lake's Parquet under the work folder, and
a Dask scheduler with K worker processes (one thread each); `battery-pipeline run`'s path then
launches runs of `--cells-per-run` cells at once (default: the cells split evenly over 2K runs),
each run's one step on a worker. The workers import the project before the clock starts (a
running cluster's workers are warm); the figure is the wall time from the first run's creation to
the last run's end.

Prints: cells/min and samples/s over the run's wall time; the run's wall time beside the cells'
compute (the sum of each cell's stage times, measured in the workers, from the materialization
metadata), and the step's own time; peak memory (max RSS of this process, which runs the step, and
of the largest worker). Run it for several N to see how the cost grows.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import resource
import sys
import tempfile
import time
from contextlib import contextmanager
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
    parser.add_argument("--warehouse", choices=("duckdb", "ducklake"), default="duckdb")
    parser.add_argument("--workers", type=int, default=2, help="Dask workers (with --warehouse ducklake)")
    parser.add_argument("--cells-per-run", type=int, help="cells per run on the cluster (default: N / (2 x workers))")
    parser.add_argument("--pin-cores", action="store_true",
                        help="worker i on core i only, as on one-core hosts (PostgreSQL, the scheduler and the runs float)")
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
    if args.warehouse == "ducklake":
        with cluster_environment(work, args) as cluster:
            measure(args, work, cells_dir, cluster)
    else:
        measure(args, work, cells_dir, None)


@contextmanager
def cluster_environment(work: Path, args):
    """PostgreSQL and a Dask cluster of `args.workers` workers, the environment set for both."""
    from battery_pipeline.local_cluster import create_database, dask_cluster, postgres_server

    with postgres_server() as server:
        os.environ.update(
            BATTERY_PIPELINE_DAGSTER_PG_URL=create_database(server, "dagster").replace("postgresql://", "postgresql+psycopg2://"),
            BATTERY_PIPELINE_WAREHOUSE="ducklake",
            BATTERY_PIPELINE_DUCKLAKE_CATALOG=create_database(server, "lake"),
            BATTERY_PIPELINE_DUCKLAKE_DATA_PATH=str(work / "lake"),
            BATTERY_PIPELINE_CELLS_PER_RUN=str(args.cells_per_run or max(1, math.ceil(args.cells / (2 * args.workers)))),
        )
        (work / "dagster_home").mkdir(parents=True, exist_ok=True)
        with dask_cluster(args.workers, dict(os.environ), work / "dask", args.pin_cores) as cluster:
            os.environ["BATTERY_PIPELINE_DASK_SCHEDULER"] = cluster.address
            with cluster.client() as client:  # warm workers, as a running cluster's are
                client.run(importlib.import_module, "battery_pipeline.definitions")
            yield cluster


def measure(args, work: Path, cells_dir: Path, cluster) -> None:
    from battery_pipeline.provenance import short_code_version

    instance_kind = "Postgres" if os.environ.get("BATTERY_PIPELINE_DAGSTER_PG_URL") else "SQLite"
    where = f"DuckLake, {args.workers} Dask worker(s){' pinned to a core each' if args.pin_cores else ''}, " \
        f"{os.environ['BATTERY_PIPELINE_CELLS_PER_RUN']} cells per run" \
        if cluster else "DuckDB file, steps in the run's process"
    print(f"measured commit: {short_code_version()}; {os.cpu_count()} cores; instance: {instance_kind}; warehouse: {where}")
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
    run_ids = sorted({run_id for _, run_id, _ in outcomes.values()})

    compute, samples, run_walls, steps = 0.0, 0, [], []
    for run_id in run_ids:
        run_stats = instance.get_run_stats(run_id)
        run_walls.append((run_stats.start_time, run_stats.end_time))
        steps += [(s.start_time, s.end_time) for s in instance.get_run_step_stats(run_id)]
        for record in instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records:
            materialization = record.event_log_entry.asset_materialization
            metadata = materialization.metadata
            if materialization.asset_key.to_user_string() in PRIMARY_ASSETS and "compute_seconds" in metadata:
                compute += float(metadata["compute_seconds"].value)
            if materialization.asset_key.to_user_string() == "raw_samples":
                samples += int(metadata["dagster/row_count"].value)
    run_wall = max(end for _, end in run_walls) - min(start for start, _ in run_walls)
    parent_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    print(f"cells: {len(files)} ({len(failed)} failed), samples: {samples:,}")
    if len(run_ids) == 1:
        (step,) = steps
        print(f"run {run_ids[0][:8]}: wall {run_wall:.1f} s (launch to end {wall:.1f} s), step {step[1] - step[0]:.1f} s")
    else:
        print(f"{len(run_ids)} runs: first start to last end {run_wall:.1f} s (first launch to last end {wall:.1f} s); "
              f"steps {min(e - s for s, e in steps):.1f}-{max(e - s for s, e in steps):.1f} s")
    print(f"  {len(files) / wall * 60:.0f} cells/min from the launch, {len(files) / run_wall * 60:.0f} over the runs' wall; "
          f"{samples / run_wall / 1e6:.2f} M samples/s")
    print(f"  cells' compute {compute:.1f} s in the workers ({compute / len(files):.3f} s per cell); "
          f"wall / compute {run_wall / compute:.2f}")
    print(f"peak memory: this process {parent_mb:.0f} MB, largest child {worker_mb:.0f} MB"
          + ("" if cluster else f", sum {parent_mb + worker_mb:.0f} MB"))


if __name__ == "__main__":
    main()
