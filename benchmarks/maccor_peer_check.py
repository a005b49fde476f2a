"""Peer check of the Maccor readers: battery-data-toolkit on the raw export, cellpy's `maccor_txt`
model "two" on the MacTest exports, and each file's own columns, on the zoo files.

The peers are not project dependencies: they run in scratch venvs, in a subprocess::

    python3.11 -m venv /tmp/peers-pec && /tmp/peers-pec/bin/pip install cellpy beep
    python3.11 -m venv /tmp/peers-battdat && /tmp/peers-battdat/bin/pip install battery-data-toolkit
    .venv/bin/python benchmarks/maccor_peer_check.py [--repeat N]

Printed per file, both readers in the same run: rows, rows/s (peer_timing: best of --repeat reads
after an untimed one), cycles, the per-cycle charge/discharge capacity of ours against the peer's
and against the file's own columns, and the largest relative difference. What is compared:
  - battery-data-toolkit (`battdat.io.maccor.MACCORReader().read_file`) reads only `Test (Min)`,
    `Amps`, `Volts`, `State`, `Cyc#`: it outputs no capacity, so capacity is checked against the
    file's `Amp-hr` only. Its cycle numbers start at 0 (Cyc# - min), as the file's do.
  - cellpy 1.0.3 (`cellpy.get(path, instrument="maccor_txt", model="two")`, the KIT/SIMBA model;
    `decimal="."` for maccor_002.txt, whose numbers use a point) - two known faults of that release
    are said in the printout: its `remove_empty_lines` opens the file with the platform encoding, so
    the 0xFF padding of maccor_002.txt raises UnicodeDecodeError on Linux (cellpy #560); this check
    swaps in the fix (UTF-8, errors="replace"), which only strips blank lines. And under pandas 2.3
    its state splitter's chained `Series.update` writes nothing, so its `current`,
    `charge_capacity` and `discharge_capacity` come out 0; its `test_time` is the file's minutes
    labelled seconds. cellpy drops a last row with more NaNs than the one before (the truncated
    last line of maccor_two.txt); we keep it for validation to quarantine.
  - the file's own columns (computed here from the text, not by our reader): per cycle (`Cyc#` /
    `Cycle C`) and state (C / D), the sum over steps of each step's last `Amp-hr` / `Cap. [Ah]`
    (both counters restart at every step).
  - ours: max `capacity_ah` per cycle and step type.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from battery_pipeline.science.readers.maccor import MaccorTextReader  # noqa: E402
from battery_pipeline.science.readers.maccor_mactest import MaccorMacTestReader  # noqa: E402
from benchmarks.peer_timing import best_seconds, run_peer_script  # noqa: E402

ZOO = Path("/work/shared/datasets/cycler_zoo")
# (file, our reader, peer, where the file's columns start, its cycle / state / step / Ah columns, decimal)
FILES = [
    (ZOO / "maccor_raw/maccor_example.001", MaccorTextReader, "battdat", 1, ("Cyc#", "State", "Step", "Amp-hr"), "."),
    (ZOO / "maccor_txt/maccor_two.txt", MaccorMacTestReader, "cellpy", 13, ("Cycle C", "Md", "Step", "Cap. [Ah]"), ","),
    (ZOO / "maccor_txt/maccor_002.txt", MaccorMacTestReader, "cellpy", 13, ("Cycle C", "Md", "Step", "Cap. [Ah]"), "."),
]
PEER_PYTHON = {"cellpy": Path("/tmp/peers-pec/bin/python"), "battdat": Path("/tmp/peers-battdat/bin/python")}
PEER_FAULTS = {
    ("cellpy", "maccor_two.txt"): "cellpy labels TestTime (minutes) as seconds; drops the truncated last row",
    ("cellpy", "maccor_002.txt"): (
        "cellpy is wrong here: current and capacities all 0 (its state splitter writes nothing under "
        "pandas 2.3), TestTime (minutes) labelled seconds, and it needs the #560 encoding fix to open "
        "the file at all - capacity checked against the file's own columns instead"
    ),
    ("battdat", "maccor_example.001"): "battery-data-toolkit outputs no capacity: checked against the file's Amp-hr",
}

PEER_SCRIPT = r"""
import json, logging, shutil, sys, tempfile, warnings
warnings.simplefilter("ignore")
logging.disable(logging.CRITICAL)
peer, path, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
scratch = tempfile.mkdtemp()
tempfile.tempdir = scratch  # cellpy copies the file and writes its cleaned copy here: removed below
try:
    if peer == "cellpy":
        import pathlib, uuid
        import cellpy
        from cellpy.readers.instruments.processors import pre_processors

        def remove_empty_lines(filename, *args, **kwargs):  # cellpy #560's fix: a stated encoding
            filename = pathlib.Path(filename)
            out = filename.parent / (str(uuid.uuid4()) + ".txt")
            with open(filename, encoding="utf-8", errors="replace") as src, open(out, "w") as dst:
                for line in src:
                    if line.strip():
                        dst.write(line.strip() + "\n")
            return out

        pre_processors.remove_empty_lines = remove_empty_lines
        options = {"model": "two"}
        if path.endswith("maccor_002.txt"):
            options["decimal"] = "."
        elapsed, cell = best_seconds(lambda: cellpy.get(path, instrument="maccor_txt", **options), repeat)
        raw = cell.data.raw
        cycle = "cycle_index"
        per_cycle = raw.groupby(cycle)[["charge_capacity", "discharge_capacity"]].max().fillna(0.0)
        # cellpy's capacity unit is Ah in raw (its raw_units)
        cycles = [{"cycle": int(c), "charge": float(r["charge_capacity"]), "discharge": float(r["discharge_capacity"])}
                  for c, r in per_cycle.iterrows()]
    else:
        from battdat.io.maccor import MACCORReader
        elapsed, raw = best_seconds(lambda: MACCORReader().read_file(path), repeat)
        cycle = "cycle_number"
        cycles = None
    print(json.dumps({"rows": int(len(raw)), "seconds": elapsed, "cycles": int(raw[cycle].nunique()),
                      "per_cycle": cycles}))
finally:
    shutil.rmtree(scratch, ignore_errors=True)
"""


def ours(path: Path, reader, repeat: int) -> dict:
    elapsed, samples = best_seconds(lambda: reader.read([path], "peer_check").samples, repeat)
    per_cycle = samples.groupby(["cycle_number", "step_type"], observed=True)["capacity_ah"].max().unstack()
    cycles = [
        {"cycle": int(c), "charge": float(r.get("charge", 0.0) or 0.0), "discharge": float(r.get("discharge", 0.0) or 0.0)}
        for c, r in per_cycle.fillna(0.0).iterrows()
    ]
    return {"rows": len(samples), "seconds": elapsed, "cycles": int(samples["cycle_number"].nunique()), "per_cycle": cycles}


def from_file_columns(path: Path, skiprows: int, columns: tuple[str, str, str, str], decimal: str) -> dict:
    """Per-cycle capacity straight from the export's own columns, independent of our reader."""
    cycle, state, step, ah = columns
    raw = pd.read_csv(path, sep="\t", skiprows=skiprows, usecols=list(columns), encoding="latin-1",
                      decimal=decimal, dtype={state: str}, index_col=False)  # data lines may end in a tab
    raw = raw.dropna(subset=[cycle, step])
    raw[ah] = pd.to_numeric(raw[ah], errors="coerce")
    step_run = (raw[[cycle, step, state]] != raw[[cycle, step, state]].shift()).any(axis=1).cumsum()
    per_step = raw.groupby(step_run).agg(cycle=(cycle, "first"), state=(state, "first"), ah=(ah, "max"))
    per_cycle = per_step.groupby(["cycle", "state"])["ah"].sum().unstack()
    out = []
    for c in sorted(raw[cycle].unique()):
        row = per_cycle.loc[c] if c in per_cycle.index else pd.Series(dtype=float)
        out.append({"cycle": int(c), "charge": float(row.get("C", 0.0) or 0.0), "discharge": float(row.get("D", 0.0) or 0.0)})
    return {"rows": int(len(raw)), "cycles": int(raw[cycle].nunique()), "per_cycle": out}


def compare(label: str, a: list[dict], b: list[dict]) -> float:
    """Print per-cycle capacities paired by cycle number; the largest relative difference."""
    worst = 0.0
    by_cycle = {c["cycle"]: c for c in b}
    for x in a:
        y = by_cycle.get(x["cycle"])
        if y is None:
            print(f"    cycle {x['cycle']}: not in {label}")
            worst = float("inf")
            continue
        for direction in ("charge", "discharge"):
            diff = abs(x[direction] - y[direction])
            rel = diff / abs(y[direction]) if y[direction] else (0.0 if not diff else float("inf"))
            worst = max(worst, rel)
            print(f"    cycle {x['cycle']} {direction:9s}: ours {x[direction]:.9f} Ah vs {label} {y[direction]:.9f} Ah "
                  f"(|diff| {diff:.2e} Ah)")
    return worst


def peer(name: str, path: Path, repeat: int) -> dict:
    python = PEER_PYTHON[name]
    if not python.exists():
        return {"error": f"peer venv missing: {python} (see the module docstring)"}
    return run_peer_script(python, PEER_SCRIPT, name, path, repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for path, reader, peer_name, skiprows, columns, decimal in FILES:
        a, b = ours(path, reader, args.repeat), peer(peer_name, path, args.repeat)
        own = from_file_columns(path, skiprows, columns, decimal)
        print(f"file: {path.name}")
        print(f"  battery_pipeline  rows {a['rows']:>9,d}  rows/s {a['rows'] / a['seconds']:>12,.0f}  cycles {a['cycles']}")
        if "error" in b:
            print(f"  {peer_name} cannot read it: {b['error']}")
        else:
            print(f"  {peer_name:17s} rows {b['rows']:>9,d}  rows/s {b['rows'] / b['seconds']:>12,.0f}  cycles {b['cycles']}")
        print(f"  file's columns    rows {own['rows']:>9,d}  cycles {own['cycles']}")
        fault = PEER_FAULTS.get((peer_name, path.name))
        if fault:
            print(f"  note: {fault}")
        if "error" not in b and b["per_cycle"] is not None:
            worst = compare(peer_name, a["per_cycle"], b["per_cycle"])
            verdict = " (the peer is wrong here, see the note)" if fault and "wrong" in fault else ""
            print(f"  max per-cycle capacity difference vs {peer_name}: {worst:.4%}{verdict}")
        worst = compare("file", a["per_cycle"], own["per_cycle"])
        print(f"  max per-cycle capacity difference vs the file's columns: {worst:.4%}")


if __name__ == "__main__":
    main()
