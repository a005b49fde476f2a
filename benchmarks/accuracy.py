"""SOH / RUL accuracy of the model zoo on real cycler data, with the science layer only (no Dagster).

    python benchmarks/accuracy.py [--models a,b] [--lstm-epochs 100] [--json PATH] [--cache DIR]

Data ($BATTERY_DATASETS or ../shared/datasets, see its README):
  * NASA PCoE B0005/6/7 (.mat, 2.0 Ah): SOH from the file's own Capacity (label settings:
    capacity_source "source", end of life at 1.4 Ah); only cycles with a real discharge
    (> 0.5 x nominal; the others hold only the spike that opens a charge);
  * CALCE CS2_33..38, whichever exist (Arbin .xlsx, 1.1 Ah): defaults (SOH vs nominal, EOL 80 %);
  * XJTU (55 cells, summary tables only): the reader's cycle_summary is the feature table.
Per-cell feature/label tables are cached as parquet (`--cache`, default a temp folder), keyed
by a hash of the feature/label code, so reruns skip the slow .xlsx / .mat reads.

Experiments, every estimator against the dummy (mean of the training targets):
  1. SOH, leave-one-cell-out on NASA;  2. SOH, leave-one-cell-out on CALCE;
  3. SOH on XJTU, split_cells(seed 0): fit on train + validation, score on test;
  4. RUL (cycles), leave-one-cell-out on NASA and on CALCE (uncensored rows, rul_cycles >= 0).
LOCO figures pool the held-out predictions of all folds, then take RMSE / MAE.
No tuning on test cells: every hyperparameter is the registry's default, fixed a priori, except
what `selected_forest` chooses itself (its features, by leave-one-cell-out on the training cells
of each fold only). SOH features are `features.soh_feature_columns`: no same-cycle capacity, no
summary of the full discharge, no test clock (features.SOH_LEAKAGE_COLUMNS / SOH_CLOCK_COLUMNS).
Targets: SOH RMSE <= 0.02 (NASA LOCO), <= 0.012 (XJTU); RUL RMSE >= 2x better than dummy (CALCE).
Options of `selected_forest` that were measured on these splits and are not adopted (nested
family choice forest / linear trend / trend + residual forest, causal start-relative and
trailing-mean columns): figures in the docstring of battery_pipeline/science/ml/selection.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from battery_pipeline.science.features import FeatureConfig, compute_cycle_features  # noqa: E402
from battery_pipeline.science.labels import compute_labels, label_config_for, with_source_capacity  # noqa: E402
from battery_pipeline.science.ml.datasets import rul_dataset, soh_dataset  # noqa: E402
from battery_pipeline.science.ml.metrics import rul_metrics, soh_metrics  # noqa: E402
from battery_pipeline.science.ml.registry import ESTIMATORS, fit_on, make_estimator, predict_on  # noqa: E402
from battery_pipeline.science.ml.splits import leave_one_cell_out, split_cells  # noqa: E402
from battery_pipeline.science.readers import detect_format  # noqa: E402
from battery_pipeline.science.validation import CellLimits, validate_samples  # noqa: E402

NASA_CELLS = ("B0005", "B0006", "B0007")
CALCE_CELLS = ("CS2_33", "CS2_34", "CS2_35", "CS2_36", "CS2_37", "CS2_38")
NOMINAL_AH = {"nasa": 2.0, "calce": 1.1}
LABEL_SETTINGS = ROOT / "data" / "label_settings.json"
TARGETS = {"nasa_soh": 0.02, "xjtu_soh": 0.012, "calce_rul_ratio": 2.0}


def datasets_root() -> Path:
    return Path(os.environ.get("BATTERY_DATASETS") or ROOT.parent / "shared" / "datasets")


def _validated(result) -> pd.DataFrame:
    cell = result.cell
    limits = CellLimits(cell.voltage_min_v, cell.voltage_max_v, cell.nominal_capacity_ah, cell.max_abs_current_a)
    return validate_samples(result.samples, limits).valid


def _sample_cell(dataset: str, paths: list[Path], cell_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Features and labels of one cell read from samples (NASA, CALCE)."""
    reader = detect_format(paths[0])
    paths = sorted(paths, key=reader.file_order)
    result = reader.read(paths, cell_id)
    nominal = NOMINAL_AH[dataset]
    feats = compute_cycle_features(
        _validated(result),
        nominal_capacity_ah=nominal,
        impedance=result.impedance,
        config=FeatureConfig(step_end_logging=reader.logs_step_end),
    )
    config = label_config_for(result.cell.dataset, LABEL_SETTINGS)
    cycles = feats
    if dataset == "nasa":
        # Only cycles holding a discharge operation
        feats = feats[feats["discharge_capacity_ah"] > 0.5 * nominal].reset_index(drop=True)
    if config.capacity_source == "source":  # NASA: labels on the file's Capacity, as the pipeline
        cycles = with_source_capacity(feats, result.cycle_summary)
    return feats, compute_labels(cycles, nominal, config)


def _xjtu_cell(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    reader = detect_format(path)
    result = reader.read([path], f"xjtu_{path.stem}")
    feats = result.cycle_summary.drop(columns=["source_file", "source_row"], errors="ignore")
    nominal = result.cell.nominal_capacity_ah
    config = label_config_for(result.cell.dataset, LABEL_SETTINGS)
    if not (nominal and np.isfinite(nominal)):  # no datasheet capacity: SOH against the first cycles
        config = dataclasses.replace(config, soh_reference="initial")
        nominal = None
    return feats, compute_labels(feats, nominal, config)


def _code_version() -> str:
    """Short hash of the code that makes the cached tables: a changed feature stales the cache."""
    digest = hashlib.sha256()
    for module in ("features.py", "labels.py", "validation.py"):
        digest.update((ROOT / "battery_pipeline" / "science" / module).read_bytes())
    digest.update(LABEL_SETTINGS.read_bytes())
    return digest.hexdigest()[:10]


def load(dataset: str, cache: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All cells of a dataset (features, labels), through the parquet cache."""
    root = datasets_root()
    if dataset == "nasa":
        jobs = [(c, lambda c=c: _sample_cell("nasa", [root / "nasa_pcoe" / f"{c}.mat"], c)) for c in NASA_CELLS]
    elif dataset == "calce":
        present = [c for c in CALCE_CELLS if (root / "calce_cs2" / c).is_dir()]
        jobs = [
            (c, lambda c=c: _sample_cell("calce", sorted((root / "calce_cs2" / c).glob("*.xlsx")), c))
            for c in present
        ]
    else:
        jobs = [(p.stem, lambda p=p: _xjtu_cell(p)) for p in sorted((root / "xjtu_features").glob("*.csv"))]
    feats, labels = [], []
    version = _code_version()
    for name, make in jobs:
        f_path = cache / f"{dataset}_{name}_{version}_features.parquet"
        l_path = cache / f"{dataset}_{name}_{version}_labels.parquet"
        if f_path.exists() and l_path.exists():
            f, lab = pd.read_parquet(f_path), pd.read_parquet(l_path)
        else:
            f, lab = make()
            f.to_parquet(f_path)
            lab.to_parquet(l_path)
        feats.append(f)
        labels.append(lab)
    return pd.concat(feats, ignore_index=True), pd.concat(labels, ignore_index=True)


def _make(name: str, task: str, lstm_epochs: int):
    # The LSTM's epochs are the one knob worth exposing: its training dominates the runtime.
    overrides = {"max_epochs": lstm_epochs} if name == "lstm" else {}
    return make_estimator(name, task, seed=0, intervals=False, **overrides)


def evaluate(task: str, feats, labels, splits, models, lstm_epochs) -> dict[str, dict]:
    """Pooled held-out metrics per model over `splits` ((train cells, test cells) pairs)."""
    build = soh_dataset if task == "soh" else rul_dataset
    score = soh_metrics if task == "soh" else rul_metrics
    out = {}
    for name in models:
        started = time.perf_counter()
        truth, preds = [], []
        for train, test in splits:
            # train_cells: columns empty on the training cells are dropped, as in production
            table = build(feats, labels, train_cells=train)
            test_table = table.subset(test)
            if len(test_table) == 0:
                continue
            try:
                model = fit_on(_make(name, task, lstm_epochs), table.subset(train))
            except ValueError as error:  # an estimator that cannot train on these cells: reported, not fatal
                out[name] = {"skipped": str(error)}
                break
            truth.append(test_table.y.to_numpy())
            preds.append(predict_on(model, test_table))
        if name in out:
            continue
        m = score(np.concatenate(truth), np.concatenate(preds))
        m["seconds"] = time.perf_counter() - started
        out[name] = m
    return out


def print_table(title: str, results: dict[str, dict], task: str, target: str) -> None:
    rmse_key, mae_key = ("rmse", "mae") if task == "soh" else ("rmse_cycles", "mae_cycles")
    unit = "" if task == "soh" else " (cycles)"
    dummy = results.get("dummy", {}).get(rmse_key, float("nan"))
    print(f"\n{title}")
    print(f"  {'model':<18} {'RMSE' + unit:>16} {'MAE' + unit:>16} {'RMSE/dummy':>11} {'n':>7} {'time s':>8}")
    fmt = "{:16.4f}" if task == "soh" else "{:16.1f}"
    for name, m in results.items():
        if "skipped" in m:
            print(f"  {name:<18} skipped: {m['skipped']}")
            continue
        print(
            f"  {name:<18} {fmt.format(m[rmse_key])} {fmt.format(m[mae_key])} "
            f"{m[rmse_key] / dummy:11.3f} {int(m['n']):7d} {m['seconds']:8.1f}"
        )
    print(f"  target: {target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=None, help="comma-separated registry names (default: all per-cycle)")
    parser.add_argument("--lstm-epochs", type=int, default=100)
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "battery_accuracy_cache")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=RuntimeWarning)  # all-NaN slices in the features

    per_cycle = [n for n, s in ESTIMATORS.items() if "soh" in s.tasks]  # skips the severson_* entries
    models = args.models.split(",") if args.models else per_cycle
    if "dummy" not in models:
        models = ["dummy", *models]  # every ratio is against it
    args.cache.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    data = {}
    for dataset in ("nasa", "calce", "xjtu"):
        t0 = time.perf_counter()
        feats, labels = load(dataset, args.cache)
        data[dataset] = (feats, labels)
        cells = sorted(feats["cell_id"].astype(str).unique())
        shown = ", ".join(cells) if len(cells) <= 8 else f"{cells[0]} .. {cells[-1]}"
        print(
            f"{dataset}: {len(cells)} cells ({shown}), {len(feats):,} cycles, "
            f"{int((~labels['censored'].astype(bool)).groupby(labels['cell_id']).first().sum())} uncensored; "
            f"loaded in {time.perf_counter() - t0:.1f} s"
        )
    absent = [c for c in CALCE_CELLS if c not in set(data["calce"][0]["cell_id"].astype(str))]
    if absent:
        print(f"calce: absent from the datasets folder: {', '.join(absent)}")

    def loco(dataset):
        cells = data[dataset][0]["cell_id"].astype(str)
        return [(s.train, s.test) for s in leave_one_cell_out(cells)]

    xjtu_split = split_cells(data["xjtu"][0]["cell_id"].astype(str), seed=0)
    # no early stopping / tuning here, so validation cells join the training set
    xjtu = [(xjtu_split.train + xjtu_split.validation, xjtu_split.test)]

    figures = {}
    experiments = [
        ("nasa_soh_loco", "soh", "nasa", loco("nasa"), "1. SOH, NASA B0005/6/7, leave-one-cell-out",
         f"RMSE <= {TARGETS['nasa_soh']}"),
        ("calce_soh_loco", "soh", "calce", loco("calce"), "2. SOH, CALCE CS2, leave-one-cell-out", "(none)"),
        ("xjtu_soh_split", "soh", "xjtu", xjtu,
         f"3. SOH, XJTU, split_cells seed 0: {len(xjtu[0][0])} train cells, {len(xjtu[0][1])} test cells",
         f"RMSE <= {TARGETS['xjtu_soh']}"),
        ("nasa_rul_loco", "rul", "nasa", loco("nasa"), "4a. RUL, NASA, leave-one-cell-out", "(none)"),
        ("calce_rul_loco", "rul", "calce", loco("calce"), "4b. RUL, CALCE, leave-one-cell-out",
         f"RMSE <= dummy / {TARGETS['calce_rul_ratio']:g}"),
    ]
    for key, task, dataset, splits, title, target in experiments:
        feats, labels = data[dataset]
        results = evaluate(task, feats, labels, splits, models, args.lstm_epochs)
        figures[key] = results
        print_table(title, results, task, target)

    print("\ntargets")
    rows = [
        ("SOH RMSE NASA LOCO <= 0.02", figures["nasa_soh_loco"], "rmse", lambda v, d: v <= TARGETS["nasa_soh"]),
        ("SOH RMSE XJTU <= 0.012", figures["xjtu_soh_split"], "rmse", lambda v, d: v <= TARGETS["xjtu_soh"]),
        ("RUL CALCE >= 2x better than dummy", figures["calce_rul_loco"], "rmse_cycles",
         lambda v, d: d / v >= TARGETS["calce_rul_ratio"]),
    ]
    for label, results, key, ok in rows:
        results = {n: m for n, m in results.items() if "skipped" not in m}
        dummy = results["dummy"][key]
        best = min((n for n in results if n != "dummy"), key=lambda n: results[n][key], default=None)
        met = [n for n in results if n != "dummy" and ok(results[n][key], dummy)]
        if best is None:
            print(f"  {label}: no model besides the dummy")
            continue
        print(
            f"  {label}: best {best} {results[best][key]:.4g} ({dummy / results[best][key]:.2f}x better than dummy); "
            f"met by: {', '.join(met) if met else 'none'}"
        )
    total = time.perf_counter() - started
    print(f"\ntotal runtime {total:.0f} s (lstm epochs {args.lstm_epochs})")
    if args.json:
        args.json.write_text(
            json.dumps({"lstm_epochs": args.lstm_epochs, "runtime_s": total, "figures": figures}, indent=1, default=float)
        )
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
