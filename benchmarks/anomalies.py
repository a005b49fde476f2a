"""Per-cycle anomaly detection on real cells: what it flags as the data is, and what it finds
when known anomalies are added to those same cycles.

    python benchmarks/anomalies.py [--datasets ../shared/datasets] [--json F]

What runs: every cell of `nasa_pcoe/`, `calce_cs2/` and `xjtu_features/` through the cell chain
the assets run (`cell_chain`: registry, reader, features with cycle classes), then
`anomalies.score_cycles` (the `cycle_anomalies` asset's science) per dataset, then
`anomalies.injection_test` (the `anomalies_beat_baseline` check's self-test, 3 rounds).

Prints per dataset: cycles, full cycles scored, cycles flagged (warning / critical) per 1,000
scored and by signal, the largest flags with their reasons; and per signal of the self-test:
recall, precision (new flags only), F1 against the blind per-cell 3-robust-SD baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from battery_pipeline.provenance import short_code_version  # noqa: E402
from battery_pipeline.science.anomalies import anomaly_summary, injection_test, score_cycles  # noqa: E402
from battery_pipeline.science.cell_chain import CellTask, compute_cell  # noqa: E402
from battery_pipeline.science.sources import discover  # noqa: E402

DATASETS = ("nasa_pcoe", "calce_cs2", "xjtu_features")
STAGES = ("cells", "raw", "validated", "features")


def features_of(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    features, cells, skipped = [], [], []
    for source in discover([folder]):
        outcome = compute_cell(CellTask(source, STAGES))
        if not outcome.ok:
            skipped.append(f"{source.partition_key}: {outcome.failed_stage}: {str(outcome.error)[:120]}")
            continue
        features.append(outcome.tables["cycle_features"])
        cells.append(outcome.tables["cells"])
    return pd.concat(features, ignore_index=True), pd.concat(cells, ignore_index=True), skipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=str(ROOT.parent / "shared" / "datasets"))
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    print(f"measured commit: {short_code_version()}")
    figures = {"commit": short_code_version(), "datasets": {}}
    for name in DATASETS:
        started = time.perf_counter()
        features, cells, skipped = features_of(Path(args.datasets) / name)
        chain_s = time.perf_counter() - started
        started = time.perf_counter()
        scores = score_cycles(features, cells)
        score_s = time.perf_counter() - started
        summary = anomaly_summary(scores)
        test = injection_test(features, cells, seed=0, rounds=3)
        per_k = {s: 1000 * n / max(summary["scored"], 1) for s, n in summary["by_severity"].items() if s != "none"}
        print(f"\n== {name}: {summary['cells']} cells, {summary['cycles']} cycles, {summary['scored']} full cycles scored "
              f"(chain {chain_s:.1f} s, scoring {score_s:.2f} s){'; not read: ' + '; '.join(skipped) if skipped else ''}")
        print(f"   flagged as the data is: {summary['by_severity']['warning']} warning ({per_k['warning']:.1f} per 1,000), "
              f"{summary['by_severity']['critical']} critical ({per_k['critical']:.1f} per 1,000); by signal {summary['by_signal']}; "
              f"{summary['cells_flagged']} of {summary['cells']} cells")
        top = scores.loc[scores["severity"] != "none"].nlargest(3, "anomaly_score")
        for row in top.itertuples():
            print(f"   {row.cell_id} cycle {row.cycle_number} ({row.severity}, {row.anomaly_score:.1f}): {row.reason[:220]}")
        print("   self-test (known anomalies added): signal  injected  recall  precision  F1  | baseline recall  precision  F1")
        for signal, r in test.items():
            if isinstance(r, dict) and "f1" in r:
                p = f"{r['precision']:.0%}" if r["precision"] is not None else "-"
                bp = f"{r['baseline_precision']:.0%}" if r["baseline_precision"] is not None else "-"
                print(f"   {signal:>12} {r['injected']:>8} {r['recall']:>7.0%} {p:>10} {r['f1']:>5.2f} | {r['baseline_recall']:>15.0%} "
                      f"{bp:>10} {r['baseline_f1']:>4.2f}")
        figures["datasets"][name] = {"summary": summary, "per_1000_scored": per_k, "self_test": test, "skipped": skipped,
                                     "scoring_s": score_s}
    print(f"\nsizes injected: {figures['datasets'][DATASETS[0]]['self_test']['injected_sizes']}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
