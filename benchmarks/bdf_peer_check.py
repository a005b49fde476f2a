"""Compare our BDF readers with the `batterydf` reference reader (the "peer") on the zoo's BDF files.

Run with the project's python:  .venv/bin/python benchmarks/bdf_peer_check.py
The peer is not a project dependency: it runs in scratch venvs (subprocess), by default
  /tmp/peers-bdf       `pip install batterydf pandas pyarrow` (PyPI release)
  /tmp/peers-bdf-head  the spec repository's HEAD, if present (optional; newer ontology)
Override with --peer PYTHON (repeatable).

Per file it prints our rows/s and the peer's rows/s measured in this run (best of --repeat
reads each, same files, same machine), rows, cycles, and the largest per-cycle capacity
difference: our capacity_ah (per cycle and direction, max) against the Ah integrated from the
peer's columns (trapezoid per cycle, direction by the sign of the interval's mean current, a
single-sample time glitch bridged as our reader does). Where the peer gives no cycle column our
cycle numbers are used for its rows (row counts are checked equal first). It then writes our
export of every file (write_bdf, parquet + csv) and reads it with each peer.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from battery_pipeline.science.bdf_export import write_bdf  # noqa: E402
from battery_pipeline.science.readers import detect_format  # noqa: E402

ZOO = Path("/work/shared/datasets/cycler_zoo")
DEFAULT_PEERS = ("/tmp/peers-bdf/bin/python", "/tmp/peers-bdf-head/bin/python")

# Runs inside the peer's venv: read each file, time it, hand back the columns we compare.
PEER_SCRIPT = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
import bdf
files, repeat = json.loads(sys.argv[1]), int(sys.argv[2])
out = {}
for f in files:
    try:
        best = None
        for _ in range(repeat):
            t0 = time.perf_counter()
            result = bdf.read(f)
            elapsed = time.perf_counter() - t0
            best = elapsed if best is None else min(best, elapsed)
        df = result[0] if isinstance(result, tuple) else result
        if hasattr(df, "to_pandas"):
            df = df.to_pandas()
        keep = [c for c in ("Test Time / s", "Current / A", "Cycle Count / 1") if c in df.columns]
        report = None
        try:
            report = bdf.validate(df, report=True, raise_on_error=False)
            report = {k: report[k] for k in ("ok", "missing") if isinstance(report, dict) and k in report} or str(report)[:200]
        except Exception as exc:  # validation API differs between releases
            report = f"validate failed: {type(exc).__name__}: {exc}"[:200]
        out[f] = {"seconds": best, "rows": len(df), "columns": [str(c) for c in df.columns],
                  "data": {c: df[c].astype(float).tolist() for c in keep}, "validate": report}
    except Exception as exc:
        out[f] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
print(json.dumps(out))
"""


def integrate_per_cycle(time_s: np.ndarray, current: np.ndarray, cycle: np.ndarray) -> pd.DataFrame:
    """Ah per cycle and direction from raw columns (independent of both readers)."""
    t = np.asarray(time_s, dtype="float64").copy()
    glitch = np.flatnonzero(np.diff(t) < 0) + 1
    t[glitch] = t[glitch - 1]
    i_mid = 0.5 * (current[1:] + current[:-1])
    dq = i_mid * np.diff(t) / 3600.0
    same = cycle[1:] == cycle[:-1]
    frame = pd.DataFrame({"cycle": cycle[1:], "charge": np.where(same & (dq > 0), dq, 0.0),
                          "discharge": np.where(same & (dq < 0), -dq, 0.0)})
    return frame.groupby("cycle")[["charge", "discharge"]].sum()


def ours_per_cycle(samples: pd.DataFrame) -> pd.DataFrame:
    table = samples[samples["step_type"] != "rest"].groupby(["cycle_number", "step_type"], observed=True)["capacity_ah"].max()
    return table.unstack().reindex(columns=["charge", "discharge"]).fillna(0.0)


def max_relative_difference(ours: pd.DataFrame, peer: pd.DataFrame) -> tuple[float, str]:
    """Largest |ours - peer| / max(ours, peer) over cycles and directions carrying > 1 % of the
    file's largest per-cycle capacity (tiny fragments at cycle edges say nothing)."""
    joined = ours.join(peer, lsuffix="_ours", rsuffix="_peer", how="outer").fillna(0.0)
    scale = float(joined.to_numpy().max()) or 1.0
    worst, where = 0.0, "-"
    for direction in ("charge", "discharge"):
        a, b = joined[f"{direction}_ours"], joined[f"{direction}_peer"]
        big = np.maximum(a, b) > 0.01 * scale
        if big.any():
            rel = (np.abs(a - b) / np.maximum(a, b))[big]
            if rel.max() > worst:
                worst, where = float(rel.max()), f"{direction} cycle {rel.idxmax()}"
    return worst, where


def run_peer(python: str, files: list[str], repeat: int) -> dict:
    done = subprocess.run([python, "-c", PEER_SCRIPT, json.dumps(files), str(repeat)],
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"peer {python} failed: {done.stderr[-1000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def peer_version(python: str) -> str:
    done = subprocess.run([python, "-c", "import importlib.metadata as m, bdf; print(m.version('batterydf'), bdf.__file__)"],
                          capture_output=True, text=True)
    return done.stdout.strip() or done.stderr.strip()[-200:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", action="append", help="python of a venv holding batterydf")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    peers = [p for p in (args.peer or DEFAULT_PEERS) if Path(p).exists()]
    if not peers:
        sys.exit("no peer venv found: python3 -m venv /tmp/peers-bdf && /tmp/peers-bdf/bin/pip install batterydf pandas pyarrow")
    files = sorted(str(p) for p in ZOO.glob("bdf_*/*") if p.is_file())

    ours: dict[str, dict] = {}
    for f in files:
        path = Path(f)
        reader = detect_format(path)
        best = None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            result = reader.read([path], "peer_check")
            elapsed = time.perf_counter() - t0
            best = elapsed if best is None else min(best, elapsed)
        ours[f] = {"reader": reader.format_name, "seconds": best, "samples": result.samples}

    export_dir = Path(tempfile.mkdtemp(prefix="bdf_export_"))
    exports: dict[str, str] = {}
    for f in files:
        for written in write_bdf(ours[f]["samples"], export_dir / Path(f).name.split(".")[0], Path(f).name.split(".")[0], csv=True):
            exports[str(written)] = Path(f).name

    for python in peers:
        print(f"\n=== peer {python}: batterydf {peer_version(python)}")
        peer = run_peer(python, files, args.repeat)
        header = f"{'file':<58} {'ours rows/s':>12} {'peer rows/s':>12} {'rows o/p':>13} {'cycles o/p':>10} {'max cap diff':>13}  where"
        print(header)
        for f in files:
            name = Path(f).name
            mine = ours[f]
            samples = mine["samples"]
            ours_rate = len(samples) / mine["seconds"]
            other = peer[f]
            if "error" in other:
                print(f"{name[:58]:<58} {ours_rate:>12,.0f} {'-':>12} {len(samples):>6}/{'-':<6} "
                      f"{samples['cycle_number'].nunique():>4}/{'-':<5} {'-':>13}  peer error: {other['error'][:120]}")
                continue
            peer_rate = other["rows"] / other["seconds"]
            data = other["data"]
            cycles_peer = "-"
            if "Cycle Count / 1" in data:
                cycle = np.asarray(data["Cycle Count / 1"]).astype("int64")
                cycles_peer = str(len(np.unique(cycle)))
            elif other["rows"] == len(samples):
                cycle = samples["cycle_number"].to_numpy()  # peer has none: align on our cycles
            else:
                cycle = np.zeros(other["rows"], dtype="int64")
            if "Current / A" in data and "Test Time / s" in data:
                peer_time, peer_current = np.asarray(data["Test Time / s"]), np.asarray(data["Current / A"])
                peer_caps = integrate_per_cycle(peer_time, peer_current, cycle)
                diff, where = max_relative_difference(ours_per_cycle(samples), peer_caps)
                diff_text = f"{100 * diff:.3f} %"
                if diff > 0.005:
                    # Say what explains it: the peer keeping a file's opposite sign, or its time unit.
                    flipped, flipped_where = max_relative_difference(
                        ours_per_cycle(samples), integrate_per_cycle(peer_time, -peer_current, cycle))
                    time_ratio = float(np.nanmax(samples["time_s"]) / np.nanmax(peer_time))
                    where += (f" (peer current negated: {100 * flipped:.3f} % at {flipped_where}; "
                              f"our/peer max time = {time_ratio:g})")
            else:
                diff_text, where = "-", "peer lacks time/current"
            print(f"{name[:58]:<58} {ours_rate:>12,.0f} {peer_rate:>12,.0f} {len(samples):>6}/{other['rows']:<6} "
                  f"{samples['cycle_number'].nunique():>4}/{cycles_peer:<5} {diff_text:>13}  {where}")
        print("\n  our exports read by the peer:")
        exported = run_peer(python, list(exports), 1)
        for f, other in exported.items():
            if "error" in other:
                print(f"    {Path(f).name}: REJECTED {other['error']}")
            else:
                print(f"    {Path(f).name}: {other['rows']} rows, columns {other['columns']}, validate {other['validate']}")


if __name__ == "__main__":
    main()
