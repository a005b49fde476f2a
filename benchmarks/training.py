"""Training time of the whole model zoo on the demo fleet: `train_models_job`, both tasks.

    python benchmarks/training.py [--warehouse PATH] [--work DIR] [--repeat 1] [--search]

What is timed: the whole `train_models_job` (every estimator of both tasks with its
cross-conformal folds and cross-validated error, the registry, promotion, metrics report and
model cards), run in process in a scratch Dagster instance on a copy of a warehouse whose
per-cell tables (cells, cycle_features, cycle_labels) hold the demo fleet. Printed: the job's
wall time, each step's seconds (from the run's event log), and per model the seconds its fit took
(cross-conformal fold models + refit, the sidecar's `training_seconds`) and its cross-validated
error took on top (`cv_seconds`), with its test error and interval coverage.

`--search` also times selected_forest's feature search alone, on each task's train cells: the
exhaustive search it ran before (every remaining feature scored per step by a 30-tree forest on
3,000 rows) against the defaults (a shortlist of 4 by the residual screen, 20 trees, 1,500 rows);
search = fit - the final forest's refit on the chosen features.

The warehouse: `--warehouse PATH` (copied, never written), or else `<work>/demo_warehouse.duckdb`,
built on the first run by `battery-pipeline run` on the demo fleet in a scratch environment
(about 15 minutes on 2 cores; not timed) and reused afterwards.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = Path(tempfile.gettempdir()) / "battery_training_benchmark"
ENVIRONMENT = {  # variable -> folder under the scratch directory (battery_pipeline/resources.py)
    "BATTERY_PIPELINE_DUCKDB": "warehouse.duckdb",
    "BATTERY_PIPELINE_MODEL_DIR": "models",
    "BATTERY_PIPELINE_RESULTS_DIR": "results",
    "BATTERY_PIPELINE_REPORTS_DIR": "reports",
    "BATTERY_PIPELINE_DEMO_DIR": "demo",
    "BATTERY_PIPELINE_DATA_DIRS": "empty",  # no user data: the demo fleet stands in
    "BATTERY_PIPELINE_PACK_DIRS": "empty",
    "DAGSTER_HOME": "dagster_home",
}


def scratch_environment(directory: Path) -> dict[str, str]:
    (directory / "empty").mkdir(parents=True, exist_ok=True)
    (directory / "dagster_home").mkdir(exist_ok=True)
    return {name: str(directory / leaf) for name, leaf in ENVIRONMENT.items()}


def demo_warehouse(work: Path) -> Path:
    """The demo fleet's per-cell tables, built once with the CLI in a scratch environment."""
    kept = work / "demo_warehouse.duckdb"
    if kept.exists():
        return kept
    build = work / "build"
    shutil.rmtree(build, ignore_errors=True)
    environment = {**os.environ, **scratch_environment(build)}
    print(f"building the demo fleet's warehouse in {build} (battery-pipeline run, once) ...", flush=True)
    subprocess.run([sys.executable, "-m", "battery_pipeline.cli", "run"], env=environment, cwd=ROOT, check=True)
    shutil.copy(environment["BATTERY_PIPELINE_DUCKDB"], kept)
    return kept


def cpu_seconds() -> float:
    """CPU seconds of this process and of its live child processes (the conformal folds' worker
    processes outlive a fit, so the OS has not added them to this process's children yet)."""
    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[1]) == os.getpid():  # ppid; then utime, stime at 11, 12
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def step_seconds(instance, run_id: str) -> dict[str, float]:
    """Seconds from each step's start to its success or failure, from the run's event log."""
    started, seconds = {}, {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or not entry.step_key:
            continue
        if event.event_type_value == "STEP_START":
            started[entry.step_key] = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and entry.step_key in started:
            seconds[entry.step_key] = entry.timestamp - started[entry.step_key]
    return seconds


def search_seconds(table, **params) -> tuple[float, list[str]]:
    """(seconds selected_forest's fit spent choosing features, the features chosen)."""
    from battery_pipeline.science.ml.registry import fit_on, make_estimator

    started = time.perf_counter()
    model = fit_on(make_estimator("selected_forest", table.task, **params), table)
    fit = time.perf_counter() - started
    started = time.perf_counter()
    model.model_.fit(table.X.to_numpy()[:, model.selected_features_], table.y.to_numpy())
    return fit - (time.perf_counter() - started), model.selected_names_


def compare_searches(tasks) -> None:
    from battery_pipeline.assets.models import load_training_table
    from battery_pipeline.resources import Warehouse
    from battery_pipeline.science.ml.forest import RandomForestBaseline

    before = {"max_candidates": None, "max_rows": 3000, "selection_estimator": RandomForestBaseline(n_estimators=30)}
    print("\nselected_forest's feature search, one fit on the train cells")
    print(f"  {'task':<5} {'before s':>9} {'now s':>7} {'ratio':>7}  features chosen before / now")
    for task in tasks:
        table, rows = load_training_table(Warehouse(), task)
        train = table.subset(sorted(rows.loc[rows["split"] == "train", "cell_id"].unique()))
        old, old_names = search_seconds(train, **before)
        new, new_names = search_seconds(train)
        print(f"  {task:<5} {old:9.1f} {new:7.1f} {old / new:6.1f}x  {old_names} / {new_names}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warehouse", type=Path, default=None, help="a demo-fleet warehouse to copy")
    parser.add_argument("--work", type=Path, default=WORK, help="where the built warehouse is kept")
    parser.add_argument("--repeat", type=int, default=1, help="time the job this many times")
    parser.add_argument("--search", action="store_true", help="also time selected_forest's search, before and now")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    source = args.warehouse or demo_warehouse(args.work)

    scratch = Path(tempfile.mkdtemp(prefix="training_", dir=args.work))
    os.environ.update(scratch_environment(scratch))  # before the resources read it
    sys.path.insert(0, str(ROOT))
    from dagster import DagsterInstance

    from battery_pipeline.assets.models import MODEL_ASSETS, TASKS
    from battery_pipeline.cli import QUIET_CONSOLE
    from battery_pipeline.definitions import defs
    from battery_pipeline.provenance import code_version
    from battery_pipeline.resources import ModelStore

    print(f"measured code: {code_version()}")

    job = defs.resolve_job_def("train_models_job")
    totals = []
    for attempt in range(args.repeat):
        shutil.copy(source, os.environ["BATTERY_PIPELINE_DUCKDB"])  # the same data each time
        with DagsterInstance.ephemeral() as instance:
            started, cpu = time.perf_counter(), cpu_seconds()
            result = job.execute_in_process(instance=instance, run_config=QUIET_CONSOLE, raise_on_error=False)
            totals.append(time.perf_counter() - started)
            cpu = cpu_seconds() - cpu
            steps = step_seconds(instance, result.run_id)
        # CPU seconds of this process and its workers, every thread: a figure that other load on
        # the machine moves much less than the wall time
        print(f"\nrun {attempt + 1}: train_models_job {'ok' if result.success else 'FAILED'} in {totals[-1]:.1f} s "
              f"wall, {cpu:.1f} s CPU ({len(steps)} steps, {sum(steps.values()):.1f} s in steps); load average "
              f"{os.getloadavg()[0]:.1f}")
        print(f"  {'step':<36} {'s':>7}")
        for key, value in sorted(steps.items(), key=lambda kv: -kv[1]):
            print(f"  {key:<36} {value:7.1f}")

    store = ModelStore()
    print(f"\n  {'model':<32} {'fit s':>7} {'cv s':>6} {'test error':>11} {'coverage':>9}")
    for task in TASKS:
        for name in MODEL_ASSETS[task]:
            model_id = store.current(name)
            if model_id is None:
                print(f"  {name:<32} not trained")
                continue
            record = store.sidecar(model_id)
            test = record["metrics"]["test"]
            print(f"  {name:<32} {record['training_seconds']:7.1f} {record['cv_seconds']:6.2f} "
                  f"{test.get(record['error_metric'], float('nan')):11.4f} {test.get('coverage', float('nan')):9.1%}")
    if args.search:
        compare_searches(TASKS)
    print(f"\ntrain_models_job: {', '.join(f'{t:.1f}' for t in totals)} s (best {min(totals):.1f} s); "
          f"{os.cpu_count()} cores; scratch {scratch}")


if __name__ == "__main__":
    main()
