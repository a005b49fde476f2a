"""Early-life cycle life on Severson et al.'s 41 training cells: does the pipeline reproduce Table 1?

    python benchmarks/cycle_life.py [--datasets ../shared/datasets] [--extra-folder DIR ...]

What runs: every file of `severson_qdlin/` through the cell chain the assets run (`cell_chain`:
registry, reader, features, labels), then `datasets.cycle_life_dataset` (the stated cycle lives of
`train_cycle_lives.csv`), then `cycle_life.fit_frozen` for each feature set the arrays carry
(variance, discharge; the full model needs charge time, temperature and resistance, which only
raw data has). `--extra-folder` scores further folders of arrays (e.g. the paper's test splits,
if you have them) with the frozen models, never fitting on them.

Prints, per model: training RMSE against the paper's (103 / 76 cycles; the target is within
10 %), leave-one-cell-out RMSE, the dummy baseline's, the interval's width and its held-out
coverage; and for extra folders the RMSE on cells the models never saw.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from battery_pipeline.provenance import short_code_version  # noqa: E402
from battery_pipeline.science.cell_chain import STAGES, CellTask, compute_cell  # noqa: E402
from battery_pipeline.science.ml import cycle_life  # noqa: E402
from battery_pipeline.science.ml.datasets import cycle_life_dataset  # noqa: E402
from battery_pipeline.science.ml.severson import severson_features  # noqa: E402
from battery_pipeline.science.sources import discover  # noqa: E402

LABEL_SETTINGS = ROOT / "data" / "label_settings.json"


def run_chain(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(cycle_features, cycle_labels, cells) of every cell under `folder`, as the assets compute them."""
    features, labels, cells = [], [], []
    for source in discover([folder]):
        outcome = compute_cell(CellTask(source, STAGES, label_settings=LABEL_SETTINGS))
        if not outcome.ok:
            raise SystemExit(f"{source.partition_key}: {outcome.failed_stage} failed: {outcome.error}")
        features.append(outcome.tables["cycle_features"])
        labels.append(outcome.tables["cycle_labels"])
        cells.append(outcome.tables["cells"])
    return (pd.concat(features, ignore_index=True), pd.concat(labels, ignore_index=True), pd.concat(cells, ignore_index=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=str(ROOT.parent / "shared" / "datasets"))
    parser.add_argument("--extra-folder", action="append", default=[], help="arrays to score with the frozen models")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    folder = Path(args.datasets) / "severson_qdlin"
    print(f"measured commit: {short_code_version()}; cohort: {folder}")
    started = time.perf_counter()
    features, labels, cells = run_chain(folder)
    print(f"{cells['cell_id'].nunique()} cells through the chain in {time.perf_counter() - started:.1f} s")
    table = cycle_life_dataset(features, labels, cells=cells)
    print(f"cycle-life table: {len(table.y)} cells, lives {table.y.min():.0f}-{table.y.max():.0f} cycles (stated in train_cycle_lives.csv)")
    figures = {"commit": short_code_version(), "cells": len(table.y), "models": {}}
    fits = {}
    for feature_set in ("variance", "discharge", "full"):
        missing = cycle_life.missing_features(table, feature_set)
        if missing:
            print(f"\n{feature_set}: not fitted, the arrays carry no {', '.join(missing)}")
            figures["models"][feature_set] = {"not_fitted": f"no cell has {missing}"}
            continue
        started = time.perf_counter()
        fit = cycle_life.fit_frozen(table, feature_set)
        fits[feature_set] = fit
        s = fit.summary()
        figures["models"][feature_set] = s
        verdict = "within 10 %" if abs(s["train_rmse_vs_paper"]) <= 0.10 else "NOT within 10 %"
        print(
            f"\n{feature_set} ({len(fit.features)} feature(s), fit + {len(fit.cells)} leave-one-out refits in {time.perf_counter() - started:.1f} s)\n"
            f"  training RMSE {s['train_rmse_cycles']:.1f} cycles; paper {s['paper_train_rmse_cycles']:.0f} ({s['train_rmse_vs_paper']:+.1%}, {verdict})\n"
            f"  leave-one-cell-out RMSE {s['loo_rmse_cycles']:.1f} cycles; dummy {s['dummy_train_rmse_cycles']:.1f} (training), {s['dummy_loo_rmse_cycles']:.1f} (leave-one-out)\n"
            f"  {s['interval_coverage_target']:.0%} interval: x/ {s['interval_factor']:.3f}; held-out coverage {s['loo_interval_coverage']:.1%}"
        )
    domain = cycle_life.cohort_domain(cells)
    for extra in args.extra_folder:
        e_features, e_labels, e_cells = run_chain(Path(extra))
        e_table = cycle_life_dataset(e_features, e_labels, cells=e_cells)
        per_cell = severson_features(e_features).loc[e_table.cell_id]
        records = e_cells.set_index("cell_id")
        for feature_set, fit in fits.items():
            prediction = fit.model.predict(per_cell)
            lower, upper = fit.interval(prediction)
            truth = e_table.y.to_numpy()
            rmse = float(np.sqrt(np.mean((prediction - truth) ** 2)))
            inside = float(np.mean((truth >= lower) & (truth <= upper)))
            statuses = pd.Series([cycle_life.applicability(per_cell.loc[c], records.loc[c], fit.feature_range, domain)[0] for c in per_cell.index])
            print(f"  {extra}: {feature_set} RMSE {rmse:.1f} cycles on {len(truth)} unseen cells; interval coverage {inside:.1%}; "
                  f"domain {statuses.value_counts().to_dict()}")
            figures["models"][feature_set].setdefault("unseen", {})[str(extra)] = {"rmse_cycles": rmse, "cells": len(truth), "interval_coverage": inside}
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
