"""Compare our BioLogic .mpt reader with the GPL-3.0 peers yadg (.mpt) and galvani (.mpr).

The peers are never imported here: they run in a scratch venv (not a project dependency) through
a subprocess, and hand back plain JSON. Per file it prints our rows/s and the peer's rows/s
measured in the same run (best of REPEATS reads each), rows, cycles, the largest per-cycle
charge/discharge capacity difference, and the largest sample-level differences.

    python3 -m venv /tmp/peers-biologic
    /tmp/peers-biologic/bin/pip install yadg galvani pandas
    .venv/bin/python benchmarks/biologic_peer_check.py [--datasets DIR] [--peer-python PY]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from battery_pipeline.science.readers.biologic_mpt import BiologicMptReader  # noqa: E402

REPEATS = 3
PAIRS = [
    # (our .mpt, peer, peer's input)
    ("cycler_zoo/biologic_mpt/gcpl.pr_182.1.mpt", "yadg", "cycler_zoo/biologic_mpt/gcpl.pr_182.1.mpt"),
    ("cycler_zoo/biologic_mpt/Sample_data_biologic_no_header.mpt", "yadg",
     "cycler_zoo/biologic_mpt/Sample_data_biologic_no_header.mpt"),
    ("cycler_zoo/biologic_mpt/gcpl.pr_182.1.mpt", "galvani", "cycler_zoo/biologic_mpr/gcpl.pr_182.1.mpr"),
]

# Per-cycle capacity from a peer's own columns, run inside the peer venv (this check's and
# biologic_mpr_peer_check's): EC-Lab's signed per-half-cycle counter, charge = max,
# discharge = -min of each half cycle, summed per cycle.
PER_CYCLE_SOURCE = r"""
def per_cycle(cycle, half, q_mah):
    out = {}
    for c, h in sorted(set(zip(cycle.tolist(), half.tolist()))):
        rows = (cycle == c) & (half == h)
        for direction, value in (("charge", q_mah[rows].max()), ("discharge", -q_mah[rows].min())):
            if value > 1e-9:
                key = f"{int(c)}:{direction}"
                out[key] = out.get(key, 0.0) + float(value) / 1000
    return out
"""

PEER_SCRIPT = PER_CYCLE_SOURCE + r"""
import json, sys, time, warnings
import numpy as np
warnings.filterwarnings("ignore")
peer, path, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])

def read_yadg():
    from yadg.extractors.eclab.mpt import extract_from_path
    ds = extract_from_path(path, encoding="windows-1252", locale="en_US", timezone="UTC").to_dataset()
    return ds

def read_galvani():
    from galvani import BioLogic
    return BioLogic.MPRfile(path)

reader = {"yadg": read_yadg, "galvani": read_galvani}[peer]
try:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        data = reader()
        best = min(best, time.perf_counter() - start)
except Exception as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
    sys.exit(0)

if peer == "yadg":
    col = lambda k: np.asarray(data[k].values, dtype="float64")
    units = {k: data[k].attrs.get("units") for k in data.data_vars if "uncertainty" not in k}
    cycle, half = col("cycle number"), col("half cycle")
    result = {"time_s": col("time").tolist(), "voltage_v": col("Ewe").tolist(),
              "current_a": (col("<I>") / 1000).tolist(), "cycle": cycle.tolist(), "units": units,
              "cycle_source": "yadg 'cycle number'"}
    q = col("Q charge or discharge")
else:
    names = data.data.dtype.names
    col = lambda k: np.asarray(data.data[k], dtype="float64")
    half = col("half cycle")
    cycle = np.floor(half / 2)  # the .mpr has no cycle column (checked against the .mpt below)
    result = {"time_s": col("time/s").tolist(), "voltage_v": col("Ewe/V").tolist(),
              "current_a": None, "cycle": cycle.tolist(), "columns": list(names),
              "cycle_source": "half cycle // 2 (no cycle number in the .mpr)"}
    q = col("Q charge/discharge/mA.h")
result.update({"rows": len(half), "seconds": best, "capacity": per_cycle(cycle, half, q)})
print(json.dumps(result))
"""


def our_read(path: Path) -> tuple[dict, float]:
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        samples = BiologicMptReader.read([path], "peer_check").samples
        best = min(best, time.perf_counter() - start)
    moving = samples[samples["step_type"] != "rest"]
    capacity = {
        f"{cycle}:{direction}": float(value)
        for (cycle, direction), value in moving.groupby(["cycle_number", "step_type"], observed=True)["capacity_ah"]
        .max()
        .items()
    }
    return {
        "rows": len(samples),
        "time_s": samples["time_s"].to_numpy(),
        "voltage_v": samples["voltage_v"].to_numpy(),
        "current_a": samples["current_a"].to_numpy(),
        "cycle": samples["cycle_number"].to_numpy(),
        "capacity": capacity,
    }, best


def peer_read(peer_python: str, peer: str, path: Path) -> dict:
    completed = subprocess.run(
        [peer_python, "-c", PEER_SCRIPT, peer, str(path), str(REPEATS)],
        capture_output=True, text=True, check=False, timeout=600,
    )
    if completed.returncode != 0 or not completed.stdout.strip():
        return {"error": f"peer process failed: {completed.stderr.strip()[-400:]}"}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def max_abs_diff(a, b) -> str:
    if a is None or b is None or len(a) != len(b):
        return "n/a"
    return f"{np.nanmax(np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float))):.3g}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_root = Path(os.environ.get("BATTERY_DATASETS", REPO_ROOT.parent / "shared" / "datasets"))
    parser.add_argument("--datasets", type=Path, default=default_root)
    parser.add_argument("--peer-python", default="/tmp/peers-biologic/bin/python")
    args = parser.parse_args()
    if not Path(args.peer_python).exists():
        print(f"peer venv python not found at {args.peer_python}; see this script's docstring")
        return 2
    for ours_rel, peer, peer_rel in PAIRS:
        ours_path, peer_path = args.datasets / ours_rel, args.datasets / peer_rel
        ours, our_seconds = our_read(ours_path)
        theirs = peer_read(args.peer_python, peer, peer_path)
        print(f"\n== {ours_path.name} (ours) vs {peer} on {peer_path.name}")
        print(f"  ours : {ours['rows']} rows, {ours['rows'] / our_seconds:,.0f} rows/s, "
              f"{len(np.unique(ours['cycle']))} cycles")
        if "error" in theirs:
            print(f"  {peer}: cannot read it: {theirs['error']}")
            continue
        print(f"  {peer}: {theirs['rows']} rows, {theirs['rows'] / theirs['seconds']:,.0f} rows/s, "
              f"{len(np.unique(theirs['cycle']))} cycles ({theirs['cycle_source']})")
        keys = sorted(set(ours["capacity"]) | set(theirs["capacity"]), key=lambda k: (int(k.split(':')[0]), k))
        worst_ah, worst_rel = 0.0, 0.0
        for key in keys:
            a, b = ours["capacity"].get(key), theirs["capacity"].get(key)
            if a is None or b is None:
                print(f"  capacity {key}: only in {'ours' if b is None else peer}")
                continue
            worst_ah = max(worst_ah, abs(a - b))
            worst_rel = max(worst_rel, abs(a - b) / b)
        print(f"  per-cycle capacities compared: {len(keys)}; max difference {worst_ah:.3g} Ah "
              f"({100 * worst_rel:.4f} %)")
        print("  per cycle (Ah) ours / peer: " + ", ".join(
            f"{k} {ours['capacity'].get(k, float('nan')):.6g}/{theirs['capacity'].get(k, float('nan')):.6g}"
            for k in keys))
        print(f"  max |diff| time_s {max_abs_diff(ours['time_s'], theirs['time_s'])}, "
              f"voltage_v {max_abs_diff(ours['voltage_v'], theirs['voltage_v'])}, "
              f"current_a {max_abs_diff(ours['current_a'], theirs['current_a'])}, "
              f"cycle {max_abs_diff(ours['cycle'], theirs['cycle'])}")
        if peer == "galvani":
            print(f"  galvani .mpr columns: {theirs['columns']}")
        if peer == "yadg":
            print(f"  yadg units: {theirs['units']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
