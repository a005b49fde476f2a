"""Per-cycle anomaly scores over every cell (group `anomalies`).

The science is `science.anomalies`; here we read the warehouse, store, record and check.

* `cycle_anomalies`: one row per cycle of `cycle_features`: the anomaly score of every full cycle
  against the cell's own trend and its fleet, the severity, the signal and the reason in words;
  the other cycles with why they were not scored. A self-test injects known anomalies into the
  fleet's own cycles and measures the detector against a blind baseline
  (`anomalies_beat_baseline`). Figures in `results/cycle_anomalies_results.json`, the card in
  `reports/anomaly_detection_card.md`. Automated (`automation.ANOMALIES_CONDITION`): rescored when
  a cell's features change.
"""


import json
from datetime import datetime, timezone

import dagster as dg
import pandas as pd

from battery_pipeline.checks import anomaly_quality
from battery_pipeline.checks.governance import check_spec
from battery_pipeline.provenance import code_version
from battery_pipeline.resources import WAREHOUSE_POOL, ModelStore, Warehouse
from battery_pipeline.science.anomalies import (
    SIGNALS,
    AnomalyConfig,
    anomaly_summary,
    causality_probe,
    injection_test,
    score_cycles,
)

ANOMALIES_GROUP = "anomalies"
CYCLE_ANOMALIES = "cycle_anomalies"
RESULTS_FILE = "cycle_anomalies_results.json"
CARD_FILE = "anomaly_detection_card.md"


class CycleAnomalyConfig(dg.Config):
    warning_z: float = 5.0  # robust SDs from a reference for a warning
    critical_z: float = 10.0
    trend_window: int = 5  # previous full cycles the cell's own trend is the median of
    min_fleet_cells: int = 4  # other comparable cells at the same cycles for a fleet comparison
    self_test_rounds: int = 3


def _science_config(config: CycleAnomalyConfig) -> AnomalyConfig:
    return AnomalyConfig(warning_z=config.warning_z, critical_z=config.critical_z, trend_window=config.trend_window,
                         min_fleet_cells=config.min_fleet_cells)


def card_markdown(summary: dict, self_test: dict, config: AnomalyConfig, fleets: dict[str, int]) -> str:
    """The anomaly detector's card: every section from what this run measured."""
    signals = "; ".join(f"{s.name}: `{'`, `'.join(s.columns)}`" + (" (rises only)" if s.direction > 0 else "") for s in SIGNALS)
    lines = ["# Card: per-cycle anomaly detection", ""]
    lines += ["## Intended use",
              "Point an engineer at the cycles of a cell that differ from its own recent trend or from comparable cells "
              "(capacity jumps, resistance spikes, temperature excursions, abnormal coulombic efficiency), with the reason. "
              "A flag is something to look at, not a diagnosis: it blocks nothing.", ""]
    lines += ["## Data",
              f"{summary['cycles']} cycles of {summary['cells']} cell(s) in `cycle_features`; {summary['scored']} full cycles scored, "
              f"{summary['compared']} compared with at least one reference. Fleets (cells per fleet): "
              + "; ".join(f"{k}: {v}" for k, v in sorted(fleets.items(), key=lambda kv: -kv[1])[:10]) + ".", ""]
    lines += ["## Method",
              f"Signals: {signals}. Own trend: the median of the previous {config.trend_window} full cycles carried along the "
              f"median slope of the previous {4 * config.trend_window}; residual over the cell's robust spread (floored at the "
              f"cycler's repeatability). Fleet: the other cells of the same stated dataset, chemistry, rated capacity and "
              f"discharge rate (+-{config.rate_tolerance:.0%}), at the same {config.fleet_bin_cycles}-cycle bin, at least "
              f"{config.min_fleet_cells} of them; a small-fleet t turned into the z of the same tail probability. Warning from "
              f"{config.warning_z:g}, critical from {config.critical_z:g} robust SD.", ""]
    overall = self_test.get("all")
    lines += ["## Self-test on this fleet"]
    if overall:
        lines += [f"Known anomalies added to this fleet's own full cycles ({self_test['rounds']} rounds, seed {self_test['seed']}; sizes "
                  + ", ".join(f"{k} {v}" for k, v in self_test["injected_sizes"].items()) + "), against a blind per-cell 3-robust-SD detector:", "",
                  "| signal | injected | recall | precision | F1 | baseline recall | baseline precision | baseline F1 | flagged as is | baseline flagged as is |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in self_test.items():
            if isinstance(r, dict) and "f1" in r:
                p = f"{r['precision']:.0%}" if r["precision"] is not None else "-"
                bp = f"{r['baseline_precision']:.0%}" if r["baseline_precision"] is not None else "-"
                lines.append(f"| {name} | {r['injected']} | {r['recall']:.0%} | {p} | {r['f1']:.2f} | {r['baseline_recall']:.0%} | {bp} | "
                             f"{r['baseline_f1']:.2f} | {r['clean_flags']} | {r['baseline_clean_flags']} |")
    else:
        lines.append("Not run: no cell has enough full cycles (30) to inject anomalies into.")
    lines += ["", "## Limitations",
              "Only full cycles are scored (partial, diagnostic and formation cycles differ by design). A cell's first "
              f"{config.min_history} full cycles have no own trend; a cell without stated rated capacity, or a source without "
              "discharge current (summary tables), has no fleet. Real data has real events (capacity recovery after a rest, "
              "check-ups logged as regular cycles) that are flagged as they should be; the self-test counts only new flags. "
              "Slow divergence from the fleet is flagged only once it stands out of the fleet's whole scatter.", ""]
    return "\n".join(lines) + "\n"


@dg.asset(
    name=CYCLE_ANOMALIES,
    deps=["cells", "cycle_features"],
    group_name=ANOMALIES_GROUP,
    pool=WAREHOUSE_POOL,
    kinds={"duckdb", "pandas"},
    description=(
        "Every cycle's anomaly score against the cell's own trend and its fleet (capacity, resistance, temperature, "
        "coulombic efficiency), severity and the reason in words; cycles not scored say why."
    ),
    check_specs=[check_spec("anomaly_rows_complete", CYCLE_ANOMALIES), check_spec("anomaly_scores_causal", CYCLE_ANOMALIES),
                 check_spec("no_critical_anomaly", CYCLE_ANOMALIES),
                 check_spec("anomalies_beat_baseline", CYCLE_ANOMALIES), check_spec("anomaly_card_complete", CYCLE_ANOMALIES)],
)
def cycle_anomalies(context: dg.AssetExecutionContext, config: CycleAnomalyConfig, warehouse: Warehouse, model_store: ModelStore):
    if not warehouse.table_exists("cycle_features"):
        raise dg.Failure(description="table cycle_features does not exist yet: run cell_pipeline_job for some cells first")
    features = warehouse.query("SELECT * FROM cycle_features ORDER BY cell_id, cycle_number")
    cells = warehouse.query("SELECT * FROM cells") if warehouse.table_exists("cells") else pd.DataFrame({"cell_id": []})
    science = _science_config(config)
    scores = score_cycles(features, cells, science)
    warehouse.replace_table(CYCLE_ANOMALIES, scores)
    summary = anomaly_summary(scores)
    self_test = injection_test(features, cells, science, seed=0, rounds=config.self_test_rounds)
    probe = causality_probe(features, cells, science)
    fleets = scores.groupby("fleet")["cell_id"].nunique().to_dict()
    card = card_markdown(summary, self_test, science, fleets)
    card_path = model_store.write_report(CARD_FILE, card)
    results_path = model_store.write_result(RESULTS_FILE, {
        "generated_at": datetime.now(timezone.utc).isoformat(), "code_version": code_version(),
        "config": json.loads(config.model_dump_json()), "summary": summary, "self_test": self_test,
        "fleets": fleets, "causality_probe": probe,
    })
    flagged = scores.loc[scores["severity"] != "none"].sort_values("anomaly_score", ascending=False)
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(scores),
            "scored_cycles": summary["scored"],
            "by_severity": dg.MetadataValue.json(summary["by_severity"]),
            "by_signal": dg.MetadataValue.json(summary["by_signal"]),
            "cells_flagged": summary["cells_flagged"],
            "self_test_f1": self_test["all"]["f1"] if "all" in self_test else "not run",
            "baseline_f1": self_test["all"]["baseline_f1"] if "all" in self_test else "not run",
            "results": dg.MetadataValue.path(str(results_path)),
            "card": dg.MetadataValue.path(str(card_path)),
            "top_anomalies": dg.MetadataValue.md(
                flagged[["cell_id", "cycle_number", "severity", "anomaly_score", "reason"]].head(20).to_markdown(index=False)
                if len(flagged) else "no cycle flagged"),
        }
    )
    yield anomaly_quality.anomaly_rows_complete_check(features, scores, CYCLE_ANOMALIES)
    yield anomaly_quality.anomaly_scores_causal_check(probe, CYCLE_ANOMALIES)
    yield anomaly_quality.no_critical_anomaly_check(scores, CYCLE_ANOMALIES)
    yield anomaly_quality.anomalies_beat_baseline_check(self_test, CYCLE_ANOMALIES)
    yield anomaly_quality.anomaly_card_complete_check(card, CYCLE_ANOMALIES)
