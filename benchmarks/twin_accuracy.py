"""Digital-twin accuracy: simulated packs against pack_sim's ground truth, and SOC on real drive
cycles. Not a test: prints figures (a table, or --json).

    PYTHONPATH=. python benchmarks/twin_accuracy.py [--json] [--hours 72] [--lfp-seeds 4 1 2 3]
                                                    [--soc-param ocv_voltage_sigma_v=0.01 ...]

Simulated (per chemistry, 12 cells, 10 s sampling, the committed twin settings):
  eq-cycles relative error (max over samples, relative to the final value);
  SOC error of the model's SOC output at the end of every simulated rest of >= 30 min (the rest
  anchors), max and median over rests x cells; the median stated uncertainty (soc_sigma) there
  and the median anchor weight after the first anchor (the share of the OCV value, 0..1);
  imbalance: max error of the per-cell SOC offsets at the rests;
  alerts found / missed / false against the injected excursions (spikes must not alert).

Real (Panasonic 18650PF drive cycles at 25 degC, .mat; each starts right after a full charge,
the Ah counter at 0): reference SOC(t) = 1 + Ah(t) / 2.9 Ah (the cycler's own Ah counter over the
rated capacity). Two ways of running soc_ocv_estimation (chemistry NCA, 2.9 Ah):
  "known start"  initial_soc = 1.0, coulomb counting (the files have no 30 min rest to anchor on);
  "OCV anchor"   no start SOC: anchored at the 5 min rest that ends each file (rest_min_duration_s
                 = 300) through the NCA OCV table and counted back: the figure that measures the
                 OCV table and the relaxation after 5 min, not the current integration.
Errors: max and RMSE of |SOC - reference| over all samples; the error at the anchor and the
model's stated 1-sigma uncertainty there. `--soc-param` overrides soc_ocv_estimation parameters
everywhere (sensitivity runs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from battery_pipeline.science.twin.pack_sim import simulate_pack
from battery_pipeline.science.twin.rests import true_runs
from battery_pipeline.science.twin.runner import run_models
from battery_pipeline.science.twin.settings import DEFAULT_SETTINGS_FILE, load_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
CHEMISTRIES = (("NMC", 1), ("NCA", 3), ("LCO", 5), ("LFP", 4))
LFP_SEED = 4
PANASONIC_CAPACITY_AH = 2.9


def simulated_figures(chemistry: str, seed: int, hours: float, settings, soc_params: dict | None = None) -> dict:
    sim = simulate_pack(chemistry=chemistry, seed=seed, duration_h=hours)
    parameters = {"chemistry": chemistry, "nominal_capacity_ah": sim.pack["nominal_capacity_ah"],
                  "min_duration_s": sim.pack["min_alert_duration_s"], **(soc_params or {})}
    out = run_models(sim.telemetry, settings, "pack_telemetry", parameters=parameters)
    eq = out["eq_cycles"]["eq_cycles"].to_numpy()
    truth_eq = sim.truth["eq_cycles_measured"].to_numpy()
    soc_out = out["soc_ocv_estimation"]
    soc = soc_out["soc_cells"]
    _, rest_ends = true_runs(sim.truth["in_long_rest"].to_numpy())
    true_soc = sim.truth[[f"soc_{c}" for c in soc.columns]].to_numpy()
    soc_error = np.abs(soc.to_numpy() - true_soc)[rest_ends].ravel()
    weights = soc_out["anchors"]
    later = weights[weights.end_time_s > weights.end_time_s.min()].weight
    cells = out["imbalance_analysis"]["cell_soc"]
    truth = sim.truth.set_index("time_s")
    true_offset = np.array([truth.at[t, f"soc_{c}"] - truth.at[t, "soc_mean"] for t, c in zip(cells.end_time_s, cells.cell)])
    key = ["cell", "kind", "start_time_s", "end_time_s"]
    found = set(map(tuple, out["voltage_monitor"]["alerts"][key].to_numpy().tolist()))
    injected = set(map(tuple, sim.alerts[key].to_numpy().tolist()))
    return {
        "chemistry": chemistry, "seed": seed, "eq_cycles": float(truth_eq[-1]),
        "eq_rel_error": float(np.max(np.abs(eq - truth_eq)) / truth_eq[-1]),
        "rests_30min": len(rest_ends), "anchors": int(soc_out["rest_anchor"].sum()),
        "soc_err_max_%": 100 * float(soc_error.max()), "soc_err_median_%": 100 * float(np.median(soc_error)),
        "soc_sigma_median_%": 100 * float(np.median(soc_out["soc_sigma"].to_numpy()[rest_ends])),
        "anchor_weight_median": float(later.median()) if len(later) else float("nan"),
        "offset_err_max_%": 100 * float(np.abs(cells.soc_offset.to_numpy() - true_offset).max()),
        "mean_confidence": float(cells.confidence.mean()),
        "alerts_found": len(found & injected), "alerts_missed": len(injected - found), "alerts_false": len(found - injected),
    }


def panasonic_files(datasets: Path) -> list[Path]:
    return sorted((datasets / "panasonic_18650pf" / "25degC" / "Drive cycles").glob("*.mat"))


def real_soc_figures(path: Path, settings, soc_params: dict | None = None) -> list[dict]:
    import scipy.io

    meas = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)["meas"]
    frame = pd.DataFrame({"time_s": np.asarray(meas.Time, float), "current_a": np.asarray(meas.Current, float),
                          "voltage_v": np.asarray(meas.Voltage, float),
                          "temperature_c": np.asarray(meas.Battery_Temp_degC, float)})
    reference = 1.0 + np.asarray(meas.Ah, float) / PANASONIC_CAPACITY_AH
    rows = []
    for label, extra in (("known start", {"initial_soc": 1.0}), ("OCV anchor", {"initial_soc": None, "rest_min_duration_s": 300.0})):
        parameters = {"chemistry": "NCA", "nominal_capacity_ah": PANASONIC_CAPACITY_AH, **(soc_params or {}), **extra}
        only_soc = _only(settings, "soc_ocv_estimation")
        out = run_models(frame, only_soc, "single_cell", parameters=parameters)["soc_ocv_estimation"]
        soc = out["soc_cells"].iloc[:, 0].to_numpy()
        error = np.abs(soc - reference)
        anchors = np.flatnonzero(out["rest_anchor"].to_numpy())
        rows.append({
            "file": path.name.split(" ", 1)[1].replace("_Pan18650PF.mat", ""), "mode": label,
            "hours": round(frame.time_s.iloc[-1] / 3600, 2), "end_soc_ref_%": round(100 * reference[-1], 1),
            "soc_err_max_%": 100 * float(np.nanmax(error)), "soc_err_rmse_%": 100 * float(np.sqrt(np.nanmean(error ** 2))),
            "anchor_err_%": 100 * float(error[anchors].max()) if len(anchors) else None,
            "anchor_sigma_%": 100 * float(out["soc_sigma"].iloc[anchors, 0].max()) if len(anchors) else None,
        })
    return rows


def _only(settings, name: str):
    """The settings with one model enabled (the others need inputs a single cell lacks)."""
    from dataclasses import replace

    models = {n: replace(ms, enabled=(n == name)) for n, ms in settings.models.items()}
    return replace(settings, models=models)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--hours", type=float, default=72.0, help="simulated pack duration (default 72 h)")
    parser.add_argument("--lfp-seeds", type=int, nargs="+", default=[LFP_SEED],
                        help=f"simulator seeds of the LFP packs (default {LFP_SEED}); the plateau makes LFP the one to check on several")
    parser.add_argument("--soc-param", action="append", default=[], metavar="NAME=VALUE",
                        help="override a soc_ocv_estimation parameter (JSON value), e.g. ocv_voltage_sigma_v=0.01")
    args = parser.parse_args(argv)
    soc_params = {}
    for item in args.soc_param:
        name, _, value = item.partition("=")
        soc_params[name] = json.loads(value)
    settings = load_settings(DEFAULT_SETTINGS_FILE, with_local=False)
    packs = [(c, s) for c, s in CHEMISTRIES if c != "LFP"] + [("LFP", s) for s in args.lfp_seeds]
    simulated = pd.DataFrame([simulated_figures(c, s, args.hours, settings, soc_params) for c, s in packs])
    datasets = Path(os.environ.get("BATTERY_DATASETS", REPO_ROOT.parent / "shared" / "datasets"))
    files = panasonic_files(datasets)
    real = pd.DataFrame([row for f in files for row in real_soc_figures(f, settings, soc_params)])
    if args.json:
        print(json.dumps({"simulated": simulated.to_dict("records"), "real_panasonic_18650pf": real.to_dict("records")},
                         indent=1, default=float))
        return 0
    pd.set_option("display.width", 200)
    print(f"Simulated packs ({args.hours:g} h, 12 cells, 10 s):")
    print(simulated.round({"eq_cycles": 2, "soc_err_max_%": 2, "soc_err_median_%": 2, "soc_sigma_median_%": 2,
                           "anchor_weight_median": 2, "offset_err_max_%": 2, "mean_confidence": 3}).to_string(index=False))
    if real.empty:
        print(f"\n(real data: no Panasonic drive cycles under {datasets})")
        return 0
    print(f"\nPanasonic 18650PF drive cycles, 25 degC (reference SOC = 1 + Ah / {PANASONIC_CAPACITY_AH} Ah):")
    print(real.round(2).to_string(index=False))
    for mode, group in real.groupby("mode", sort=False):
        print(f"  {mode}: max {group['soc_err_max_%'].max():.2f} %, mean RMSE {group['soc_err_rmse_%'].mean():.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
