"""Pack faults across the fleet (group `fault_report`, `fault_report_job`): what
`pack_fault_diagnosis` found in every stored pack, and how well it finds faults at these packs'
configurations.

The science is `science.twin.fault_evaluation`; here we read the warehouse, record and check.

* `pack_fault_report`: one row per pack in `pack_fault_summary` (cells, open faults by kind, the
  kinds its data could not test). A self-test simulates packs at the fleet's own chemistries,
  sample periods and sizes (one per fault kind and one fault-free, per configuration), diagnoses
  them and a naive threshold baseline, and measures precision, recall and detection delay per
  kind. Figures in `results/pack_faults_results.json`, the card in
  `reports/pack_fault_diagnosis_card.md`.
"""


import json
from datetime import datetime, timezone

import dagster as dg
import numpy as np
import pandas as pd

from battery_pipeline.checks import anomaly_quality
from battery_pipeline.checks.governance import check_spec
from battery_pipeline.checks.outcomes import not_evaluated
from battery_pipeline.provenance import code_version
from battery_pipeline.resources import WAREHOUSE_POOL, ModelStore, Warehouse

FAULT_REPORT_GROUP = "fault_report"
FAULT_REPORT = "pack_fault_report"
SUMMARY_TABLE = "pack_fault_summary"
RESULTS_FILE = "pack_faults_results.json"
CARD_FILE = "pack_fault_diagnosis_card.md"
KNOWN_CHEMISTRIES = ("NMC", "NCA", "LFP", "LCO")  # pack_sim's cell models
MIN_FLEET_CELLS = 3  # the diagnosis compares a cell with the others' median
MAX_SELF_TEST_CELLS = 32


class FaultReportConfig(dg.Config):
    self_test_hours: float = 24.0  # length of each simulated pack
    max_configurations: int = 4  # distinct (chemistry, sample period, cells) of the fleet tested


def _table(warehouse: Warehouse, name: str, columns: list[str]) -> pd.DataFrame:
    return warehouse.query(f"SELECT * FROM {name}") if warehouse.table_exists(name) else pd.DataFrame(columns=columns)


def fleet_configurations(packs: pd.DataFrame, limit: int) -> tuple[list[tuple[str, float, int]], dict[str, str]]:
    """(chemistry, sample period, cells) of the stored packs, most common first, and the packs
    whose configuration the simulator cannot stand in for (or only partly), with why."""
    configs: dict[tuple[str, float, int], int] = {}
    untestable = {}
    for row in packs.itertuples():
        chemistry = str(row.chemistry or "").upper()
        if chemistry not in KNOWN_CHEMISTRIES:
            untestable[row.pack_id] = f"chemistry {row.chemistry!r} has no cell model in pack_sim"
            continue
        if int(row.n_cells) < MIN_FLEET_CELLS:
            untestable[row.pack_id] = (f"{row.n_cells} cell(s): without a fleet only the stuck-reading test applies, and the "
                                       "self-test measures the fleet comparisons")
            continue
        period = float(row.duration_h) * 3600.0 / max(int(row.samples) - 1, 1)
        # the simulator's sample periods: 1 s or 10 s, the nearer on a log scale
        period = 1.0 if period < 10 ** 0.5 else 10.0
        cells = min(int(row.n_cells), MAX_SELF_TEST_CELLS)
        if cells < int(row.n_cells):
            untestable[row.pack_id] = f"{row.n_cells} cells, self-tested as {cells} (runtime)"
        key = (chemistry, period, cells)
        configs[key] = configs.get(key, 0) + 1
    ordered = sorted(configs, key=lambda k: -configs[k])
    return ordered[:limit], untestable


def summary_rows(packs: pd.DataFrame, alerts: pd.DataFrame, evaluability: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for row in packs.itertuples():
        mine = alerts[alerts["pack_id"] == row.pack_id] if len(alerts) else alerts
        open_ = mine[mine["active_at_end"].astype(bool)] if len(mine) else mine
        ev = evaluability[evaluability["pack_id"] == row.pack_id] if len(evaluability) else evaluability
        rows.append({"pack_id": row.pack_id, "n_cells": row.n_cells, "faults": len(mine), "open_faults": len(open_),
                     "open_by_kind": json.dumps(open_["kind"].value_counts().to_dict() if len(open_) else {}),
                     "worst_open_severity": (max(open_["severity"], key=["info", "warning", "critical"].index) if len(open_) else None),
                     "not_evaluable": (", ".join(ev.loc[~ev["evaluable"].astype(bool), "kind"]) or "none") if len(ev) else "not diagnosed yet"})
    return pd.DataFrame(rows, columns=["pack_id", "n_cells", "faults", "open_faults", "open_by_kind", "worst_open_severity", "not_evaluable"])


def card_markdown(summary: pd.DataFrame, per_kind: pd.DataFrame, detection: pd.DataFrame, configs, untestable, hours) -> str:
    lines = ["# Card: pack fault diagnosis (`pack_fault_diagnosis`)", ""]
    lines += ["## Intended use",
              "Tell a cell fault (soft internal short) from a sensor fault (voltage offset, stuck reading) and a connection "
              "fault (resistance step) in a series pack's telemetry, with the evidence; a warning to act on, not a shutdown.", ""]
    lines += ["## Data",
              f"{len(summary)} stored pack(s), {int(summary['open_faults'].sum()) if len(summary) else 0} open fault(s); "
              f"packs with open faults: {', '.join(summary.loc[summary['open_faults'] > 0, 'pack_id']) or 'none'}. "
              f"Packs the self-test could not stand in for: {json.dumps(untestable) if untestable else 'none'}.", ""]
    lines += ["## Method",
              "Rest voltages fitted as OCV(coulomb-counted SOC + the fleet's common part + a ramp) + a step: a ramp is a short, "
              "a step alone an offset; identical readings while the fleet moves are a stuck sensor; the voltage jump per amp "
              "at current steps, less the fleet median's, rising and staying is a loose connection. Thresholds: 6 standard "
              "errors (noise estimated from the data) plus a stated minimum size. The rules: the model's README.", ""]
    lines += ["## Self-test at this fleet's configurations",
              f"Configurations (chemistry, sample period, cells): {', '.join(f'{c} {p:g} s {n} cells' for c, p, n in configs)}; "
              f"{hours:g} h packs, one per fault kind and one fault-free per configuration.", "",
              "| kind | faults | precision | recall | misclassified | median delay (h) | p90 delay (h) |", "|---|---|---|---|---|---|---|"]
    for r in per_kind.itertuples():
        lines.append(f"| {r.kind} | {r.faults} | {r.precision:.2f} | {r.recall:.2f} | {r.misclassified} | {r.delay_median_h:.2f} | {r.delay_p90_h:.2f} |")
    lines += ["", "Kind-blind, against the baseline (a cell > 30 mV from the pack median for 60 s):", "",
              "| detector | alerts | recall | precision | F1 | false alerts per fault-free pack-day |", "|---|---|---|---|---|---|"]
    for r in detection.itertuples():
        lines.append(f"| {r.detector} | {r.alerts} | {r.recall:.2f} | {r.precision:.2f} | {r.f1:.2f} | {r.false_alerts_per_clean_pack_day:.2f} |")
    lines += ["", "## Limitations",
              "Offsets, shorts and loose connections need at least 3 cells; a short or offset also needs several rests of "
              "10 min or more, so detection comes hours after onset. A fault present from the first sample is only caught "
              "as a short's ramp. On LFP's flat OCV a short is weak in voltage. Passive balancing drains a cell like a soft "
              "short. The thresholds are not yet checked on real multi-cell BMS logs.", ""]
    return "\n".join(lines) + "\n"


@dg.asset(
    name=FAULT_REPORT,
    deps=["packs", "pack_fault_diagnosis"],
    group_name=FAULT_REPORT_GROUP,
    pool=WAREHOUSE_POOL,
    kinds={"duckdb", "markdown"},
    description=(
        "Pack faults across the fleet: open faults per pack, the kinds each pack's data could not test, and a self-test "
        "of the diagnosis at the fleet's own configurations beside a threshold baseline; results JSON and card."
    ),
    check_specs=[check_spec("pack_faults_beat_baseline", FAULT_REPORT), check_spec("fault_detection_causal", FAULT_REPORT),
                 check_spec("pack_fault_card_complete", FAULT_REPORT)],
)
def pack_fault_report(context: dg.AssetExecutionContext, config: FaultReportConfig, warehouse: Warehouse, model_store: ModelStore):
    from battery_pipeline.science.twin import fault_evaluation
    from battery_pipeline.science.twin.settings import load_settings

    packs = _table(warehouse, "packs", ["pack_id", "chemistry", "n_cells", "samples", "duration_h"])
    alerts = _table(warehouse, "fault_alerts", ["pack_id", "cell", "kind", "severity", "active_at_end"])
    evaluability = _table(warehouse, "fault_evaluability", ["pack_id", "kind", "evaluable"])
    summary = summary_rows(packs, alerts, evaluability)
    warehouse.replace_table(SUMMARY_TABLE, summary)
    configs, untestable = fleet_configurations(packs, config.max_configurations)
    if not configs:
        reason = f"no stored pack of a chemistry pack_sim models ({', '.join(KNOWN_CHEMISTRIES)}): {untestable or 'no packs'}"
        yield dg.MaterializeResult(metadata={"dagster/row_count": len(summary), "self_test": reason})
        for name in ("pack_faults_beat_baseline", "fault_detection_causal", "pack_fault_card_complete"):
            yield not_evaluated(name, FAULT_REPORT, reason)
        return
    settings = load_settings()
    sim_packs, sim_alerts = fault_evaluation.simulated_runs(configs, config.self_test_hours, settings)
    probes = fault_evaluation.truncation_probe(sim_packs, sim_alerts, settings, config.self_test_hours)
    per_kind = fault_evaluation.per_kind_table(sim_packs, sim_alerts)
    detection = fault_evaluation.detection_table(sim_packs, sim_alerts)
    card = card_markdown(summary, per_kind, detection, configs, untestable, config.self_test_hours)
    card_path = model_store.write_report(CARD_FILE, card)
    results_path = model_store.write_result(RESULTS_FILE, {
        "generated_at": datetime.now(timezone.utc).isoformat(), "code_version": code_version(),
        "config": json.loads(config.model_dump_json()), "fleet": summary.to_dict("records"),
        "self_test": {"configurations": [list(c) for c in configs], "hours": config.self_test_hours,
                      "per_kind": per_kind.replace({np.nan: None}).to_dict("records"),
                      "detection_vs_baseline": detection.to_dict("records"), "untestable_packs": untestable,
                      "truncation_probes": probes},
    })
    yield dg.MaterializeResult(metadata={
        "dagster/row_count": len(summary),
        "open_faults": int(summary["open_faults"].sum()) if len(summary) else 0,
        "packs_with_open_faults": dg.MetadataValue.json(summary.loc[summary["open_faults"] > 0, "pack_id"].tolist()),
        "self_test_per_kind": dg.MetadataValue.md(per_kind.to_markdown(index=False, floatfmt=".3g")),
        "detection_vs_baseline": dg.MetadataValue.md(detection.to_markdown(index=False, floatfmt=".3g")),
        "results": dg.MetadataValue.path(str(results_path)),
        "card": dg.MetadataValue.path(str(card_path)),
    })
    yield anomaly_quality.pack_faults_beat_baseline_check(detection, FAULT_REPORT)
    yield anomaly_quality.fault_detection_causal_check(probes, FAULT_REPORT)
    yield anomaly_quality.pack_fault_card_complete_check(card, FAULT_REPORT)
