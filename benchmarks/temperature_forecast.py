"""Cell temperature forecast 60 s / 300 s ahead on the real drive cycles (issue 17, item 3).

Runs `science.ml.thermal.evaluate` on every drive cycle with measured temperature in the
datasets folder (Panasonic 18650PF 25 degC drive cycles; LG HG2 drive and pause cycles),
leave-one-file-out within each cell, and prints per dataset and horizon the held-out RMSE and
maximum absolute error (degC) of persistence, the one- and two-state lumped models and the
hybrid (two-state model + gradient boosting on its residual), the fitted parameters per cell
(all files of the cell) and the excluded files. Every figure comes from this run.

    .venv/bin/python benchmarks/temperature_forecast.py [--datasets DIR] [--step 1] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from battery_pipeline.science.ml import thermal  # noqa: E402

MODELS = ("persistence", "physics_one_state", "physics_two_state", "hybrid")


def _table(result: dict) -> str:
    head = f"{'dataset':<18} {'h s':>4} {'files':>5} {'n':>7}  " + "  ".join(f"{m[:17]:>17}" for m in MODELS)
    lines = [head, f"{'':<18} {'':>4} {'':>5} {'':>7}  " + "  ".join(f"{'RMSE / max degC':>17}" for _ in MODELS)]
    for row in result["metrics"]:
        cells = "  ".join(f"{row[m]['rmse_c']:>8.3f} / {row[m]['max_abs_error_c']:<6.2f}" for m in MODELS)
        lines.append(f"{row['dataset']:<18} {row['horizon_s']:>4} {row['files']:>5} {row['n']:>7}  {cells}")
    return "\n".join(lines)


def _parameters(result: dict) -> str:
    lines = []
    for cell, fits in result["cells_fitted_on_all_files"].items():
        one, two = fits["physics_one_state"], fits["physics_two_state"]
        r = one["resistance"]
        lines.append(f"{cell} ({len(fits['files'])} files)")
        lines.append(f"  R(T) from voltage: R_25C = {r['resistance_ohm_at_25c'] * 1e3:.1f} mohm, B = {r['activation_k']:.0f} K "
                     f"({r['windows']} windows, T {r['temperature_range_c'][0]:.1f}..{r['temperature_range_c'][1]:.1f} degC)")
        lines.append(f"  one state: C = {one['heat_capacity_j_per_k']:.1f} J/K, R_th = {one['thermal_resistance_k_per_w']:.2f} K/W, "
                     f"dU/dT = {one['entropic_v_per_k'] * 1e3:+.3f} mV/K, tau = {one['time_constants_s'][0]:.0f} s")
        lines.append(f"  two states: C_core = {two['heat_capacity_j_per_k']:.1f} J/K, C_surface = {two['surface_heat_capacity_j_per_k']:.1f} J/K, "
                     f"R_core-surface = {two['core_surface_resistance_k_per_w']:.2f} K/W, R_surface-ambient = "
                     f"{two['thermal_resistance_k_per_w']:.2f} K/W, dU/dT = {two['entropic_v_per_k'] * 1e3:+.3f} mV/K, "
                     f"tau = {', '.join(f'{t:.0f}' for t in two['time_constants_s'])} s")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path,
                        default=Path(os.environ.get("BATTERY_DATASETS", ROOT.parent / "shared" / "datasets")))
    parser.add_argument("--step", type=float, default=thermal.DEFAULT_STEP_S, help="resampling step, s")
    parser.add_argument("--json", type=Path, help="write the full result dict here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    cycles = thermal.load_drive_cycles(args.datasets, step_s=args.step)
    loaded = time.perf_counter()
    result = thermal.evaluate(cycles)
    done = time.perf_counter()
    print(f"{len(cycles)} files read and resampled to {args.step:g} s in {loaded - started:.1f} s; "
          f"evaluated in {done - loaded:.1f} s")
    print("held-out files, leave one file out per cell; forecast points pooled over the held-out files\n")
    print(_table(result))
    print("\nfitted on all files of each cell:")
    print(_parameters(result))
    for f in result["files"]:
        if f["notes"]:
            print(f"note {f['file_id']}: {'; '.join(f['notes'])}")
    for f in result["excluded_files"]:
        print(f"excluded {f['file_id']}: {f['reason']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
