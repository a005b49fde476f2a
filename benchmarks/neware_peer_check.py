"""Peer check of the Neware readers against NewareNDA (scratch venv, not a project dependency).

Run: .venv/bin/python benchmarks/neware_peer_check.py [--repeat N]
  (needs python3.11 -m venv /tmp/peers-neware && /tmp/peers-neware/bin/pip install NewareNDA)
Per file: our rows/s and the peer's rows/s in the same run (peer_timing: best of N reads after
an untimed one), rows, cycles, and the largest per-cycle charge/discharge capacity difference
(Ah) between us and the peer.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from battery_pipeline.science.readers import detect_format  # noqa: E402
from benchmarks.peer_timing import PEER_PRELUDE, best_seconds  # noqa: E402

ZOO = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cycler_zoo"
PEER_PYTHON = "/tmp/peers-neware/bin/python"
# The peer computes per-cycle capacity the same way from its own frame: sum per cycle of each
# step's last |Charge/Discharge_Capacity(mAh)|.
PEER_SCRIPT = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
import NewareNDA
path, repeat = sys.argv[1], int(sys.argv[2])
elapsed, df = best_seconds(lambda: NewareNDA.read(path), repeat)
out = {"rows": len(df), "seconds": elapsed, "cycles": int(df.Cycle.nunique())}
for col, key in (("Charge_Capacity(mAh)", "charge"), ("Discharge_Capacity(mAh)", "discharge")):
    last = df[df[col].abs() > 0].groupby(["Cycle", "Step"])[col].last().abs() / 1000
    out[key] = {str(k): float(v) for k, v in last.groupby(level=0).sum().items()}
print(json.dumps(out))
"""


def ours(path: Path, repeat: int) -> dict:
    reader = detect_format(path)
    elapsed, samples = best_seconds(lambda: reader.read([path], "peer").samples, repeat)
    out = {"rows": len(samples), "seconds": elapsed, "cycles": int(samples.cycle_number.nunique())}
    for kind in ("charge", "discharge"):
        q = samples[samples.step_type == kind].groupby("cycle_number")["capacity_ah"].max()
        out[kind] = {str(k): float(v) for k, v in q.items()}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    files = sorted(ZOO.glob("neware_nda/*.nda")) + sorted(ZOO.glob("neware_ndax/*.ndax"))
    print(f"{'file':58s} {'ours rows/s':>12s} {'peer rows/s':>12s} {'rows o/p':>15s} {'cycles o/p':>10s} {'max dQ Ah':>10s}")
    for path in files:
        mine = ours(path, args.repeat)
        done = subprocess.run([PEER_PYTHON, "-c", PEER_PRELUDE + PEER_SCRIPT, str(path), str(args.repeat)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{path.name:58s} peer failed: {done.stderr.strip().splitlines()[-1]}")
            continue
        peer = json.loads(done.stdout)
        diffs = [abs(mine[k].get(c, 0.0) - peer[k].get(c, 0.0)) for k in ("charge", "discharge")
                 for c in set(mine[k]) | set(peer[k])]
        print(f"{path.name[:58]:58s} {mine['rows'] / mine['seconds']:12.0f} {peer['rows'] / peer['seconds']:12.0f} "
              f"{mine['rows']:>7d}/{peer['rows']:<7d} {mine['cycles']:>4d}/{peer['cycles']:<5d} {max(diffs, default=0.0):10.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
