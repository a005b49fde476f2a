"""Peer check of the Arbin .res reader: cellpy's `arbin_res` loader on the same zoo file.

cellpy (MIT) is not a project dependency: it runs in a scratch venv, in a subprocess, so its pins
never meet ours. On Linux cellpy reads .res with mdbtools' `mdb-export` (as we do), so the
scratch venv needs nothing but cellpy itself::

    python3.11 -m venv /tmp/peers-cellpy && /tmp/peers-cellpy/bin/pip install cellpy
    .venv/bin/python benchmarks/arbin_res_peer_check.py [--repeat N] [--peer-python PATH]

Printed, both readers in the same run: rows, rows/s, cycles, and per cycle the charge/discharge
capacity of each side with the largest difference (Ah and %). Timing: each side first imports
and reads the file once untimed, then the best of --repeat timed reads counts, so import and
first-read costs count for neither. What is compared:
  - cellpy: `cellpy.get(path, instrument="arbin_res", auto_summary=False)`, its raw frame
    (`cycle_index`, `charge_capacity` / `discharge_capacity` in Ah per data point). Timed without
    the summary, because the summary is work we do not do in the reader; the default
    `cellpy.get` (with summary) is timed too and printed for reference.
  - ours: `ArbinResReader.read`, the whole canonical frame (step typing, re-based capacity,
    the description from Global_Table); per cycle: max `capacity_ah` per step type.
  Cycles are paired by number: both keep Arbin's 1-based `Cycle_Index`.
Result on the zoo file (cellpy 1.0.3): same rows and cycles, per-cycle capacity within 1.8e-9 Ah
(1e-4 %). The residue is charge the counter gathers on rows we type rest, e.g. cycle 10's 38 ms
step 14 at 0.66 uA after the charge step: below the rest threshold, so it carries no capacity.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from battery_pipeline.science.readers.arbin_res import ArbinResReader  # noqa: E402
from benchmarks.peer_timing import best_seconds, run_peer_script  # noqa: E402

ZOO = Path("/work/shared/datasets/cycler_zoo")
FILES = [ZOO / "arbin_res/20160805_test001_45_cc_01.res"]
PEER_PYTHONS = (Path("/tmp/peers-cellpy/bin/python"), Path("/tmp/peers-pec/bin/python"))

PEER_SCRIPT = r"""
import json, logging, sys, warnings
warnings.simplefilter("ignore")
logging.disable(logging.CRITICAL)
path, repeat = sys.argv[1], int(sys.argv[2])
import cellpy

seconds, cell = best_seconds(lambda: cellpy.get(path, instrument="arbin_res", auto_summary=False), repeat)
seconds_with_summary, _ = best_seconds(lambda: cellpy.get(path, instrument="arbin_res"), repeat)
raw = cell.data.raw
grouped = raw.groupby("cycle_index")[["charge_capacity", "discharge_capacity"]]
low, high, last = grouped.min(), grouped.max(), grouped.last()
print(json.dumps({
    "version": cellpy.__version__, "rows": int(len(raw)), "seconds": seconds,
    "seconds_with_summary": seconds_with_summary, "cycles": int(raw["cycle_index"].nunique()),
    "per_cycle": [{"cycle": int(c),
                   **{f"{k}_{stat}": float(frame.loc[c, f"{k}_capacity"])
                      for k in ("charge", "discharge") for stat, frame in (("min", low), ("max", high), ("last", last))}}
                  for c in high.index],
}))
"""


def ours(path: Path, repeat: int) -> dict:
    seconds, samples = best_seconds(lambda: ArbinResReader.read([path], "peer_check").samples, repeat)
    moving = samples[samples["step_type"] != "rest"]
    per_cycle = moving.groupby(["cycle_number", "step_type"], observed=True)["capacity_ah"].max().unstack(fill_value=0.0)
    cycles = {
        int(c): {"charge": float(r.get("charge", 0.0)), "discharge": float(r.get("discharge", 0.0))}
        for c, r in per_cycle.iterrows()
    }
    return {"rows": len(samples), "seconds": seconds, "cycles": int(samples["cycle_number"].nunique()), "per_cycle": cycles}


def peer(python: Path, path: Path, repeat: int) -> dict:
    return run_peer_script(python, PEER_SCRIPT, path, repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--peer-python", type=Path, default=None, help="python of a venv with cellpy")
    args = parser.parse_args()
    python = args.peer_python or next((p for p in PEER_PYTHONS if p.exists()), None)
    if python is None or not python.exists():
        raise SystemExit(f"no peer venv with cellpy found ({', '.join(map(str, PEER_PYTHONS))}; see the module docstring)")
    for path in FILES:
        a, b = ours(path, args.repeat), peer(python, path, args.repeat)
        print(f"file: {path.name}")
        if "error" in b:
            print(f"  battery_pipeline  rows {a['rows']:>9,d}  rows/s {a['rows'] / a['seconds']:>12,.0f}  cycles {a['cycles']}")
            print(f"  cellpy cannot read it: {b['error']}")
            continue
        print(f"  battery_pipeline  rows {a['rows']:>9,d}  rows/s {a['rows'] / a['seconds']:>12,.0f}  cycles {a['cycles']}")
        print(f"  cellpy {b['version']:10s} rows {b['rows']:>9,d}  rows/s {b['rows'] / b['seconds']:>12,.0f}  cycles {b['cycles']}"
              f"  (with its summary: rows/s {b['rows'] / b['seconds_with_summary']:,.0f})")
        # Per cycle from cellpy's raw counters: Arbin's counters count up within a cycle and may
        # start non-zero, so max - min and max (= last) are the candidates. On this file the
        # counters reset at every cycle start and never drop within a cycle (last == max, printed),
        # but the first logged point of a cycle already holds up to 2e-9 Ah of discharge: that is
        # real charge, passed between the (unlogged) cycle start and the first point (cycle 2:
        # 0.052 s x 0.152 mA = 2.2e-9 Ah against 1.35e-9 Ah logged). max - min would drop it, so
        # the cycle's capacity is the counter's max; max - min is printed for comparison.
        last_is_max = all(c[f"{k}_last"] == c[f"{k}_max"] for c in b["per_cycle"] for k in ("charge", "discharge"))
        largest_start = max(c[f"{k}_min"] for c in b["per_cycle"] for k in ("charge", "discharge"))
        print(f"  cellpy raw counters: last == max in every cycle: {last_is_max}; largest value at a cycle's first point: {largest_start:.2e} Ah")
        worst_rel, worst_abs, worst_rel_span = 0.0, 0.0, 0.0
        for c in b["per_cycle"]:
            mine = a["per_cycle"].get(c["cycle"], {"charge": 0.0, "discharge": 0.0})
            for direction in ("charge", "discharge"):
                theirs = c[f"{direction}_max"]
                span = c[f"{direction}_max"] - c[f"{direction}_min"]
                diff = abs(mine[direction] - theirs)
                rel = diff / abs(theirs) if theirs else (0.0 if not diff else float("inf"))
                worst_rel, worst_abs = max(worst_rel, rel), max(worst_abs, diff)
                if span:
                    worst_rel_span = max(worst_rel_span, abs(mine[direction] - span) / span)
                print(f"    cycle {c['cycle']:>3d} {direction:9s}: ours {mine[direction]:.9f} Ah, cellpy max {theirs:.9f} Ah "
                      f"(|diff| {diff:.2e} Ah, {rel:.4%}; cellpy max - min {span:.9f} Ah)")
        unpaired = sorted(set(a["per_cycle"]) - {c["cycle"] for c in b["per_cycle"]})
        if unpaired:
            print(f"  cycles only in ours: {unpaired}")
        print(f"  max per-cycle capacity difference: {worst_abs:.3e} Ah, {worst_rel:.4%} "
              f"(against cellpy's max - min instead: {worst_rel_span:.4%})")


if __name__ == "__main__":
    main()
