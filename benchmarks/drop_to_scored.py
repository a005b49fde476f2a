"""Drop to scored: how long a new cycler file takes to become SOH and RUL predictions under `make ui`.

    python benchmarks/drop_to_scored.py [--keep DIR]

What runs, all in a temporary folder (or DIR): `battery-pipeline run` on the demo fleet (cells,
training, promotion: the models a lab would have), then `dagster dev` (webserver + daemon, as
`make ui` starts it) on that instance; a new simulated cell (the project's simulator, a seed the
demo does not use) is renamed into the incoming folder. Then, from the instance's own records:

* dropped -> requested: the incoming-files sensor's wait (one evaluation to see the file, one to
  see it unchanged, and the minimum file age: 30 s by default);
* requested -> cell stored: the `cell_pipeline_job` run the sensor launched;
* cell stored -> scored: the predictions automation sensor's tick and the scoring run.

The issue's target is the time from the sensor seeing the file stable (its run request) to both
`soh_predictions` and `rul_predictions` being materialized for the cell.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TIMEOUT_S = 600


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait(what: str, probe, timeout_s: float = TIMEOUT_S, every_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(every_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", help="work folder (default: a temporary one)")
    parser.add_argument("--reuse", action="store_true", help="the --keep folder already holds the trained demo: skip that run")
    args = parser.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="drop-to-scored-"))
    env = {
        **os.environ,
        "DAGSTER_HOME": str(root / "dagster_home"),
        "BATTERY_PIPELINE_DUCKDB": str(root / "warehouse.duckdb"),
        "BATTERY_PIPELINE_DATA_DIRS": str(root / "incoming"),
        "BATTERY_PIPELINE_DEMO_DIR": str(root / "demo"),
        "BATTERY_PIPELINE_PACK_DIRS": str(root / "packs"),
        "BATTERY_PIPELINE_DEMO_PACK_DIR": str(root / "demo_packs"),
        "BATTERY_PIPELINE_MODEL_DIR": str(root / "models"),
        "BATTERY_PIPELINE_RESULTS_DIR": str(root / "results"),
        "BATTERY_PIPELINE_REPORTS_DIR": str(root / "reports"),
    }
    os.environ.update(env)
    (root / "incoming").mkdir(parents=True, exist_ok=True)
    from battery_pipeline.provenance import short_code_version

    print(f"measured commit: {short_code_version()}; work folder {root}")
    started = time.perf_counter()
    if not args.reuse:
        subprocess.run([sys.executable, "-m", "battery_pipeline.cli", "run"], env=env, cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        print(f"battery-pipeline run on the demo fleet (models trained and promoted): {time.perf_counter() - started:.0f} s")
    for stale in (root / "incoming").iterdir():  # a previous drop
        stale.unlink()

    port = free_port()
    with (root / "dagster_dev.log").open("wb") as log:
        dev = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-w", str(ROOT / "workspace.yaml"), "-p", str(port), "-h", "127.0.0.1"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    try:
        wait("the webserver", lambda: _http_ok(f"http://127.0.0.1:{port}/server_info"), 180)
        from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, RunsFilter

        from battery_pipeline.science import synth
        from battery_pipeline.science.sources import discover

        instance = DagsterInstance.get()
        # a cell the demo fleet does not have (the simulator's 9th cell: the demo has 8), written
        # aside and renamed in whole
        fleet = synth.generate_fleet(n_cells=9)
        staging = root / "staging"
        synth.write_fleet(fleet, staging)
        name = sorted(p.stem for p in staging.glob("*.parquet"))[-1]
        for path in staging.glob(f"{name}.*"):
            path.rename(root / "incoming" / path.name)
        (key,) = discover([root / "incoming"]).keys()
        dropped = time.time()

        def cell_run():
            runs = instance.get_runs(RunsFilter(job_name="cell_pipeline_job", tags={"dagster/partition": key}))
            return runs[0] if runs else None

        run = wait("the sensor's cell_pipeline_job run", cell_run)
        requested = instance.get_run_record_by_id(run.run_id).create_timestamp.timestamp()
        wait("the cell run to finish", lambda: instance.get_run_by_id(run.run_id).is_finished)
        stats = instance.get_run_stats(run.run_id)

        def scored(asset: str):
            def probe():
                records = instance.fetch_materializations(
                    AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[key]), limit=1
                ).records
                return records[0].timestamp if records and records[0].timestamp > dropped else None
            return probe

        soh = wait("soh_predictions of the new cell", scored("soh_predictions"))
        rul = wait("rul_predictions of the new cell", scored("rul_predictions"))
        print(f"cell {key}: run {run.run_id[:8]} {'succeeded' if instance.get_run_by_id(run.run_id).is_success else 'FAILED'}")
        print(f"  dropped -> run requested (sensor sees it stable): {requested - dropped:.1f} s")
        print(f"  requested -> cell stored (run end): {stats.end_time - requested:.1f} s "
              f"(run start {stats.start_time - requested:.1f} s after the request, {stats.end_time - stats.start_time:.1f} s running)")
        print(f"  cell stored -> soh / rul predictions: {soh - stats.end_time:.1f} / {rul - stats.end_time:.1f} s")
        print(f"  stable -> scored: {max(soh, rul) - requested:.1f} s (target: at most 90 s)")
    finally:
        os.killpg(dev.pid, signal.SIGTERM)
        try:
            dev.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


if __name__ == "__main__":
    main()
