"""Peer check of the Basytec reader against PyProBE's Basytec importer on the same file.

PyProBE (PyPI `PyProBE-Data`, BSD-3-Clause) is not a project dependency: it runs in a scratch
venv, in a subprocess, so its polars/pydantic pins never meet ours::

    python3.11 -m venv /tmp/peers-basytec && /tmp/peers-basytec/bin/pip install PyProBE-Data
    .venv/bin/python benchmarks/basytec_peer_check.py [--file F] [--repeat N] [--rows N]

Printed, both readers in the same run: rows, rows/s (peer_timing: best of --repeat reads after an
untimed one), cycles, and the
largest per-cycle charge/discharge capacity difference. What is compared, and why it may differ:
  - PyProBE maps `~Time[*]`, `I[*]`, `U[*]`, `Ah[*]` (net Ah since the start), `Line` -> Step and,
    without cycle details, starts a new cycle where Step decreases (`filters.get_cycle_column`).
    We use Basytec's `Cyc-Count`. So per-cycle capacities are paired in order of the cycles that
    move charge, and the cycle counts are printed side by side, not asserted equal.
  - PyProBE's per-cycle capacity here: positive increments of `Capacity [Ah]` on rows with I > 0
    (charge), negative ones on rows with I < 0 (discharge); ours: max `capacity_ah` per cycle
    and step type.
`--rows N` tiles the file's data rows (time shifted) into a larger temporary file for a
throughput figure that is not dominated by start-up cost; capacities are then not meaningful.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from battery_pipeline.science.readers.basytec import BasytecTxtReader  # noqa: E402
from benchmarks.peer_timing import PEER_PRELUDE, best_seconds  # noqa: E402

DEFAULT_FILE = Path("/work/shared/datasets/cycler_zoo/basytec_txt/sample_data_basytec.txt")
PEER_PYTHON = Path("/tmp/peers-basytec/bin/python")

PEER_SCRIPT = r"""
import json, sys, tempfile, time, warnings
from pathlib import Path
import polars as pl
from pyprobe.cyclers.basytec import Basytec

path, repeat = sys.argv[1], int(sys.argv[2])
out = Path(tempfile.mkdtemp()) / "peer.parquet"  # never next to the (read-only) input
warnings.simplefilter("ignore")
elapsed, frame = best_seconds(
    lambda: Basytec(input_data_path=path, output_data_path=str(out), overwrite_existing=True).get_pyprobe_dataframe(),
    repeat,
)
# PyProBE's default cycle rule (filters.get_cycle_column without cycle details)
frame = frame.with_columns(
    (pl.col("Step").cast(pl.Int64) - pl.col("Step").cast(pl.Int64).shift() < 0).fill_null(False).cum_sum().alias("Cycle"),
    pl.col("Capacity [Ah]").diff().fill_null(0.0).alias("dQ"),
)
per_cycle = (
    frame.group_by("Cycle", maintain_order=True)
    .agg(
        pl.col("dQ").filter((pl.col("Current [A]") > 0) & (pl.col("dQ") > 0)).sum().alias("charge"),
        (-pl.col("dQ").filter((pl.col("Current [A]") < 0) & (pl.col("dQ") < 0))).sum().alias("discharge"),
    )
    .to_dicts()
)
print(json.dumps({"rows": frame.height, "seconds": elapsed, "cycles": frame["Cycle"].n_unique(),
                  "per_cycle": per_cycle, "columns": frame.columns}))
"""


def tiled_copy(path: Path, rows: int, folder: Path) -> Path:
    """The file's header plus its data rows repeated (time shifted) up to `rows` rows."""
    lines = path.read_text(encoding="utf-8").splitlines()
    column_row = max(i for i, line in enumerate(lines) if line.startswith("~"))
    data = [line.split("\t") for line in lines[column_row + 1 :] if line.strip()]
    span = float(data[-1][0]) + 1.0
    out = list(lines[: column_row + 1])
    for k in range(rows):
        fields = list(data[k % len(data)])
        fields[0] = repr(float(fields[0]) + span * (k // len(data)))
        out.append("\t".join(fields))
    target = folder / f"tiled_{rows}.txt"
    target.write_text("\n".join(out) + "\n", encoding="utf-8")
    return target


def ours(path: Path, repeat: int) -> dict:
    elapsed, samples = best_seconds(lambda: BasytecTxtReader.read([path], "peer_check").samples, repeat)
    moving = samples[samples["step_type"] != "rest"]
    per_cycle = (
        moving.groupby(["cycle_number", "step_type"], observed=True)["capacity_ah"].max().unstack(fill_value=0.0)
    )
    cycles = [
        {"cycle": int(c), "charge": float(r.get("charge", 0.0)), "discharge": float(r.get("discharge", 0.0))}
        for c, r in per_cycle.iterrows()
    ]
    return {"rows": len(samples), "seconds": elapsed, "cycles": int(samples["cycle_number"].nunique()), "per_cycle": cycles}


def peer(path: Path, repeat: int) -> dict:
    if not PEER_PYTHON.exists():
        raise SystemExit(f"peer venv missing: {PEER_PYTHON} (see the module docstring)")
    done = subprocess.run([str(PEER_PYTHON), "-c", PEER_PRELUDE + PEER_SCRIPT, str(path), str(repeat)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"PyProBE failed on {path.name}:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--rows", type=int, default=0, help="also time a tiled copy with this many rows")
    args = parser.parse_args()

    runs = [(args.file, True)]
    folder = Path(tempfile.mkdtemp())
    if args.rows:
        runs.append((tiled_copy(args.file, args.rows, folder), False))
    for path, compare_capacity in runs:
        a, b = ours(path, args.repeat if compare_capacity else 3), peer(path, args.repeat if compare_capacity else 3)
        print(f"file: {path.name}")
        for name, r in (("battery_pipeline", a), ("PyProBE", b)):
            print(f"  {name:17s} rows {r['rows']:>9,d}  rows/s {r['rows'] / r['seconds']:>12,.0f}  cycles {r['cycles']}")
        if not compare_capacity:
            continue
        moved_a = [c for c in a["per_cycle"] if c["charge"] > 0 or c["discharge"] > 0]
        moved_b = [c for c in b["per_cycle"] if c["charge"] > 0 or c["discharge"] > 0]
        print(f"  cycles moving charge: ours {len(moved_a)}, PyProBE {len(moved_b)} (paired in order)")
        worst = 0.0
        for x, y in zip(moved_a, moved_b):
            for direction in ("charge", "discharge"):
                diff = abs(x[direction] - y[direction])
                rel = diff / max(abs(y[direction]), 1e-15) if y[direction] else (0.0 if not diff else float("inf"))
                worst = max(worst, rel)
                print(f"    ours cycle {x['cycle']} / PyProBE cycle {y['Cycle']} {direction:9s}: "
                      f"{x[direction]:.9f} Ah vs {y[direction]:.9f} Ah (|diff| {diff:.2e} Ah)")
        print(f"  max per-cycle capacity difference: {worst:.4%}")


if __name__ == "__main__":
    main()
