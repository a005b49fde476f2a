"""Peer check of the PEC and Novonix readers: cellpy's `pec_csv` loader and BEEP's NovonixDatapath
on the same zoo files.

cellpy (MIT) and BEEP (Apache-2.0) are not project dependencies: they run in a scratch venv, in a
subprocess, so their pins never meet ours::

    python3.11 -m venv /tmp/peers-pec && /tmp/peers-pec/bin/pip install cellpy beep
    .venv/bin/python benchmarks/pec_novonix_peer_check.py [--repeat N]

Printed per file, both readers in the same run: rows, rows/s (peer_timing: best of --repeat reads
after an untimed one), cycles, and the largest per-cycle charge/discharge capacity difference. What is
compared, and why it may differ:
  - cellpy (`cellpy.get(path, instrument="pec_csv")`) numbers PEC cycles from 1 (PEC's `Cycle`
    + 1; we keep PEC's 0-based `Cycle`) and gives `charge_capacity` / `discharge_capacity` per
    row in Ah; per cycle: their max. Cycles are paired in order.
  - BEEP (`NovonixDatapath.from_file`) fills `charge_capacity` on rows whose Novonix step code is
    a charge code and `discharge_capacity` on the others, rest (code 0) included, from the one
    `Capacity (Ah)` counter; per cycle: their max. Its cycle is Novonix's `Cycle Number`, as ours.
  - ours: max `capacity_ah` per cycle and step type.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from battery_pipeline.science.readers.novonix_csv import NovonixCsvReader  # noqa: E402
from battery_pipeline.science.readers.pec_csv import PecCsvReader  # noqa: E402
from benchmarks.peer_timing import best_seconds, run_peer_script  # noqa: E402

ZOO = Path("/work/shared/datasets/cycler_zoo")
FILES = [
    (ZOO / "pec_csv/pec.csv", PecCsvReader, "cellpy"),
    (ZOO / "pec_csv/Test25205.csv", PecCsvReader, "cellpy"),
    (ZOO / "novonix_csv/test_Nova_Form-CH01-01_short.csv", NovonixCsvReader, "beep"),
]
PEER_PYTHON = Path("/tmp/peers-pec/bin/python")

PEER_SCRIPT = r"""
import json, logging, sys, time, warnings
warnings.simplefilter("ignore")
logging.disable(logging.CRITICAL)
peer, path, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
if peer == "cellpy":
    import cellpy
    elapsed, cell = best_seconds(lambda: cellpy.get(path, instrument="pec_csv"), repeat)
    raw = cell.data.raw
    cycle, charge, discharge = "cycle_index", "charge_capacity", "discharge_capacity"
else:
    from beep.structure.novonix import NovonixDatapath
    elapsed, datapath = best_seconds(lambda: NovonixDatapath.from_file(path), repeat)
    raw = datapath.raw_data
    cycle, charge, discharge = "cycle_index", "charge_capacity", "discharge_capacity"
per_cycle = raw.groupby(cycle)[[charge, discharge]].max().fillna(0.0)
print(json.dumps({
    "rows": int(len(raw)), "seconds": elapsed, "cycles": int(raw[cycle].nunique()),
    "per_cycle": [{"cycle": int(c), "charge": float(r[charge]), "discharge": float(r[discharge])}
                  for c, r in per_cycle.iterrows()],
}))
"""


def ours(path: Path, reader, repeat: int) -> dict:
    elapsed, samples = best_seconds(lambda: reader.read([path], "peer_check").samples, repeat)
    moving = samples[samples["step_type"] != "rest"]
    per_cycle = moving.groupby(["cycle_number", "step_type"], observed=True)["capacity_ah"].max().unstack(fill_value=0.0)
    cycles = [
        {"cycle": int(c), "charge": float(r.get("charge", 0.0)), "discharge": float(r.get("discharge", 0.0))}
        for c, r in per_cycle.iterrows()
    ]
    return {"rows": len(samples), "seconds": elapsed, "cycles": int(samples["cycle_number"].nunique()), "per_cycle": cycles}


def peer(name: str, path: Path, repeat: int) -> dict:
    if not PEER_PYTHON.exists():
        raise SystemExit(f"peer venv missing: {PEER_PYTHON} (see the module docstring)")
    return run_peer_script(PEER_PYTHON, PEER_SCRIPT, name, path, repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for path, reader, peer_name in FILES:
        a, b = ours(path, reader, args.repeat), peer(peer_name, path, args.repeat)
        print(f"file: {path.name}")
        if "error" in b:
            print(f"  battery_pipeline  rows {a['rows']:>9,d}  rows/s {a['rows'] / a['seconds']:>12,.0f}  cycles {a['cycles']}")
            print(f"  {peer_name} cannot read it: {b['error']}")
            continue
        for name, r in (("battery_pipeline", a), (peer_name, b)):
            print(f"  {name:17s} rows {r['rows']:>9,d}  rows/s {r['rows'] / r['seconds']:>12,.0f}  cycles {r['cycles']}")
        moved_a = [c for c in a["per_cycle"] if c["charge"] > 0 or c["discharge"] > 0]
        moved_b = [c for c in b["per_cycle"] if c["charge"] > 0 or c["discharge"] > 0]
        print(f"  cycles moving charge: ours {len(moved_a)}, {peer_name} {len(moved_b)} (paired in order)")
        worst = 0.0
        for x, y in zip(moved_a, moved_b):
            for direction in ("charge", "discharge"):
                diff = abs(x[direction] - y[direction])
                rel = diff / abs(y[direction]) if y[direction] else (0.0 if not diff else float("inf"))
                worst = max(worst, rel)
                print(f"    ours cycle {x['cycle']} / {peer_name} cycle {y['cycle']} {direction:9s}: "
                      f"{x[direction]:.9f} Ah vs {y[direction]:.9f} Ah (|diff| {diff:.2e} Ah)")
        if len(moved_a) != len(moved_b):
            print(f"  unpaired: ours {moved_a[len(moved_b):]}, {peer_name} {moved_b[len(moved_a):]}")
        print(f"  max per-cycle capacity difference: {worst:.4%}")


if __name__ == "__main__":
    main()
