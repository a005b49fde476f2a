"""Ingest benchmark: canonical Parquet -> canonical frame -> validation -> DuckDB, >= 20 M samples.

    python benchmarks/ingest.py [--samples 20000000] [--workers 2] [--keep DIR]

What is timed, per cell file, as the cell batch step (`assets/cell_pipeline.py`) does it: in
`--workers` worker processes (at the cell batch's lower priority, `batch_workers`), detect the
format by content, read with the reader, validate (pandera on the screen's suspects + physical
rules + the seed's gap and outlier rules); the frames come back to the parent through shared
memory (`batch_workers.pack`), which holds the DuckDB writer (one connection for the run,
`Warehouse.session`) and stores raw rows, quarantined rows and sample flags with
`Warehouse.replace_partitions` while the workers go on with the next cells (validated samples are
the warehouse's view of those: stored once, not twice).

Prints the git commit measured, samples/s for the whole run and per stage, and peak memory (max
RSS of the parent and of the busiest worker, the most bytes of results waiting in shared memory,
and their sum). Per stage both its wall time (in the
worker, or in the parent for storing) and its CPU time (process_time: all its threads, DuckDB's included): on a shared machine wall
time also counts waiting for a core, CPU time is what the stage costs per core. Generating the
dataset, and the one-off pandera set-up of a process's first validation (done in the parent
before the workers fork), are not timed.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from battery_pipeline import batch_workers  # noqa: E402
from battery_pipeline.provenance import short_code_version  # noqa: E402
from battery_pipeline.resources import Warehouse  # noqa: E402
from battery_pipeline.science import synth  # noqa: E402
from battery_pipeline.science.readers import detect_format  # noqa: E402
from battery_pipeline.science.validation import CellLimits, validate_samples  # noqa: E402

def read_and_validate(path_text: str) -> dict:
    """In a worker, as `science.cell_chain` does it in the cell batch's workers: detect, read,
    validate; the frames go back to the storing process."""
    path = Path(path_text)
    timings, cpu = {}, {}
    started, cpu_started = time.perf_counter(), time.process_time()
    reader = detect_format(path)
    result = reader.read([path], path.stem)
    timings["read"] = time.perf_counter() - started
    cpu["read"] = time.process_time() - cpu_started
    samples = result.samples

    started, cpu_started = time.perf_counter(), time.process_time()
    limits = CellLimits.from_record(
        {"voltage_min_v": 2.0, "voltage_max_v": 4.2, "nominal_capacity_ah": 3.0, "max_abs_current_a": None}
    )
    validated = validate_samples(samples, limits)
    timings["validate"] = time.perf_counter() - started
    cpu["validate"] = time.process_time() - cpu_started
    return {
        "key": path.stem,
        "rows": len(samples),
        "samples": samples,
        "valid": validated.valid,
        "quarantined": validated.quarantined,
        "flags": validated.flags,
        "timings": timings,
        "cpu": cpu,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def as_completed_bounded(work, items: list, workers: int, folder: str, shared_peak: list):
    """`work(item)` in `workers` forked processes as the cell batch runs them: at lower priority
    than this storing process, at most two items per worker in flight (so results waiting in
    shared memory stay bounded), results packed into shared memory; unpacked here in the order
    they finish."""
    remaining = list(reversed(items))
    pending: set = set()
    context = mp.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=batch_workers.lower_priority) as pool:
        while remaining or pending:
            while remaining and len(pending) < 2 * workers:
                pending.add(pool.submit(batch_workers.packed_call, work, folder, remaining.pop()))
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                shared_peak[0] = max(shared_peak[0], sum(f.stat().st_size for f in Path(folder).iterdir()))
                yield batch_workers.unpack(future.result())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=20_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cells", type=int, default=20, help="cells the samples are spread over")
    parser.add_argument("--no-store", action="store_true", help="read and validate only (no DuckDB)")
    parser.add_argument("--keep", help="write the generated files and warehouse here instead of a temp dir")
    args = parser.parse_args()
    print(f"measured commit: {short_code_version()}")

    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    files = sorted(workdir.glob("*.parquet"))
    if not files:
        started = time.perf_counter()
        for frame in synth.iter_benchmark_frames(args.samples, n_cells=args.cells):
            cell = str(frame["cell_id"].iloc[0])
            path = workdir / f"{cell}.parquet"
            synth.write_samples_parquet(frame, path)
            files.append(path)
        print(f"generated {len(files)} cell files in {time.perf_counter() - started:.1f} s (not timed)")
    database = str(workdir / "warehouse.duckdb")
    Path(database).unlink(missing_ok=True)

    # A process's first validation sets pandera up (~0.3 s, once per process, not per sample):
    # done here once, so the forked workers measure throughput.
    warm = synth.iter_benchmark_frames(20_000, n_cells=1)
    validate_samples(next(warm), CellLimits(voltage_min_v=2.0, voltage_max_v=4.2))
    started = time.perf_counter()
    results = []
    warehouse = Warehouse(database=database)
    # As the cell batch step stores them: one process holds the DuckDB writer (one connection for
    # the run) and stores each cell's frames as they come back, while the workers go on
    shared_peak = [0]  # bytes of results waiting in shared memory, at its highest
    with batch_workers.SharedFolder() as folder, warehouse.session():
        for result in as_completed_bounded(read_and_validate, [str(f) for f in files], args.workers, folder, shared_peak):
            store_started, store_cpu = time.perf_counter(), time.process_time()
            samples, valid, quarantined, flags = (result.pop(k) for k in ("samples", "valid", "quarantined", "flags"))
            result["quarantined"] = len(quarantined)
            if not args.no_store:
                warehouse.replace_partitions({"raw_samples": samples}, "cell_id", result["key"])
                warehouse.replace_partitions(
                    {"validated_samples": valid, "quarantined_samples": quarantined, "sample_flags": flags},
                    "cell_id", result["key"],
                )
            result["timings"]["store"] = time.perf_counter() - store_started
            result["cpu"]["store"] = time.process_time() - store_cpu  # DuckDB's own threads included
            results.append(result)
    elapsed = time.perf_counter() - started

    rows = sum(r["rows"] for r in results)
    stage = {k: sum(r["timings"][k] for r in results) for k in ("read", "validate", "store")}
    cpu = {k: sum(r["cpu"][k] for r in results) for k in ("read", "validate", "store")}
    worker_peak = max(r["peak_rss_mb"] for r in results)
    parent_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"cells: {len(files)}, samples: {rows:,}, quarantined: {sum(r['quarantined'] for r in results):,}")
    print(f"workers: {args.workers}; wall time {elapsed:.2f} s")
    what = "read + validate" if args.no_store else "read + validate + store in DuckDB"
    print(f"end-to-end ({what}): {rows / elapsed / 1e6:.2f} M samples/s")
    for name in ("read", "validate") if args.no_store else ("read", "validate", "store"):
        print(
            f"  {name:<9} {stage[name]:7.2f} s of stage time ({rows / stage[name] / 1e6:6.2f} M samples/s), "
            f"{cpu[name]:6.2f} s of CPU ({rows / cpu[name] / 1e6:6.2f} M samples/s per core)"
        )
    shared_mb = shared_peak[0] / 2**20
    print(
        f"peak memory: busiest worker {worker_peak:.0f} MB, parent {parent_peak:.0f} MB, results waiting in shared "
        f"memory {shared_mb:.0f} MB; all {args.workers} workers + parent + shared <= "
        f"{worker_peak * args.workers + parent_peak + shared_mb:.0f} MB"
    )


if __name__ == "__main__":
    main()
