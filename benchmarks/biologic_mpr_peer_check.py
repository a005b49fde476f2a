"""Compare our BioLogic .mpr reader with the GPL-3.0 peers galvani and yadg on the zoo .mpr files.

Our reader uses galvani (optional extra `biologic-mpr`) for the binary layout and adds the
canonical-frame conversion, so "galvani" here is galvani alone making its numpy record array, and
"yadg" is yadg's own .mpr extractor making its xarray DataTree. The peers run in a scratch venv
(not a project dependency) through a subprocess and hand back plain JSON. Every side is warmed up
(imports done, one untimed read) and then timed as the best of REPEATS reads, so import time
counts for none of them. Per file it prints rows, rows/s, cycles and the largest per-cycle
charge/discharge capacity difference of ours against each peer, the peers' capacities computed
from their own signed per-half-cycle `Q charge/discharge` column and `half cycle // 2` (a .mpr
stores no cycle number; the .mpt export's `cycle number` equals it, see biologic_mpr).

    python3.11 -m venv /tmp/peers-biologic
    /tmp/peers-biologic/bin/pip install yadg galvani pandas
    .venv/bin/python benchmarks/biologic_mpr_peer_check.py [--datasets DIR] [--peer-python PY]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path


REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from battery_pipeline.science.readers.biologic_mpr import BiologicMprReader  # noqa: E402
from benchmarks.biologic_peer_check import PER_CYCLE_SOURCE  # noqa: E402
from benchmarks.peer_timing import PEER_PRELUDE, best_seconds  # noqa: E402

REPEATS = 5
FILES = ["cycler_zoo/biologic_mpr/gcpl.pr_182.1.mpr", "cycler_zoo/biologic_mpr/GCPL-0.mpr"]
PEERS = ("galvani", "yadg")

# Runs inside the peer venv (with peer_timing's best_seconds and the shared per_cycle).
PEER_SCRIPT = PEER_PRELUDE + PER_CYCLE_SOURCE + r"""
import json, sys, warnings
import numpy as np
warnings.filterwarnings("ignore")
peer, path, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])

if peer == "galvani":
    from galvani.BioLogic import MPRfile
    read = lambda: MPRfile(path)
else:
    from yadg.extractors.eclab.mpr import extract_from_path
    read = lambda: extract_from_path(path, timezone="UTC")

try:
    best, data = best_seconds(read, repeats)
except Exception as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
    sys.exit(0)

if peer == "galvani":
    half = np.asarray(data.data["half cycle"], dtype="float64")
    q = np.asarray(data.data["Q charge/discharge/mA.h"], dtype="float64")
    unit = "mA.h"
else:
    ds = data.to_dataset()
    half = np.asarray(ds["half cycle"].values, dtype="float64")
    q = np.asarray(ds["Q charge or discharge"].values, dtype="float64")
    unit = ds["Q charge or discharge"].attrs.get("units")
cycle = np.floor(half / 2)
print(json.dumps({"rows": len(half), "seconds": best, "cycles": len(np.unique(cycle)),
                  "capacity": per_cycle(cycle, half, q), "q_unit": unit}))
"""


def our_read(path: Path) -> tuple[dict, float]:
    best, samples = best_seconds(lambda: BiologicMprReader.read([path], "peer_check").samples, REPEATS)
    moving = samples[samples["step_type"] != "rest"]
    capacity = {
        f"{cycle}:{direction}": float(value)
        for (cycle, direction), value in moving.groupby(["cycle_number", "step_type"], observed=True)["capacity_ah"]
        .max()
        .items()
    }
    return {"rows": len(samples), "cycles": samples["cycle_number"].nunique(), "capacity": capacity}, best


def peer_read(peer_python: str, peer: str, path: Path) -> dict:
    completed = subprocess.run(
        [peer_python, "-c", PEER_SCRIPT, peer, str(path), str(REPEATS)],
        capture_output=True, text=True, check=False, timeout=600,
    )
    if completed.returncode != 0 or not completed.stdout.strip():
        return {"error": f"peer process failed: {completed.stderr.strip()[-400:]}"}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def capacity_difference(ours: dict, theirs: dict) -> str:
    keys = set(ours) | set(theirs)
    if not keys:
        return "no charge/discharge on either side"
    only = sorted(k for k in keys if k not in ours or k not in theirs)
    if only:
        return f"cycles on one side only: {only}"
    worst_ah = max(abs(ours[k] - theirs[k]) for k in keys)
    worst_rel = max(abs(ours[k] - theirs[k]) / theirs[k] for k in keys)
    return f"{len(keys)} compared, max difference {worst_ah:.3g} Ah ({100 * worst_rel:.2g} %)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_root = Path(os.environ.get("BATTERY_DATASETS", REPO_ROOT.parent / "shared" / "datasets"))
    parser.add_argument("--datasets", type=Path, default=default_root)
    parser.add_argument("--peer-python", default="/tmp/peers-biologic/bin/python")
    args = parser.parse_args()
    if not Path(args.peer_python).exists():
        print(f"peer venv python not found at {args.peer_python}; see this script's docstring")
        return 2
    print(f"best of {REPEATS} warm reads per side; rows/s = rows / best time")
    print(f"{'file':<22} {'reader':<8} {'rows':>6} {'rows/s':>12} {'cycles':>6}  per-cycle capacity vs ours")
    for relative in FILES:
        path = args.datasets / relative
        ours, our_seconds = our_read(path)
        print(f"{path.name:<22} {'ours':<8} {ours['rows']:>6} {ours['rows'] / our_seconds:>12,.0f} "
              f"{ours['cycles']:>6}  -")
        for peer in PEERS:
            theirs = peer_read(args.peer_python, peer, path)
            if "error" in theirs:
                print(f"{path.name:<22} {peer:<8} cannot read it: {theirs['error']}")
                continue
            print(f"{path.name:<22} {peer:<8} {theirs['rows']:>6} {theirs['rows'] / theirs['seconds']:>12,.0f} "
                  f"{theirs['cycles']:>6}  {capacity_difference(ours['capacity'], theirs['capacity'])}"
                  + (f" (Q unit {theirs['q_unit']})" if peer == "yadg" else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
