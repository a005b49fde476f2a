"""Checks of the per-cycle anomaly scores (`cycle_anomalies`) and of the pack fault alerts.

Only the cycles' integrity blocks (every cycle of the features has a row, and a row that is not
scored says why); what the scores find never blocks: an anomaly is something to look at, not a
reason to stop the pipeline.
"""

import dagster as dg
import pandas as pd

from battery_pipeline.checks.documentation import card_sections_check
from battery_pipeline.checks.outcomes import not_evaluated
from battery_pipeline.science.anomalies import SEVERITIES

ANOMALY_CARD_SECTIONS = ("Intended use", "Data", "Method", "Self-test on this fleet", "Limitations")


def anomaly_rows_complete_check(features: pd.DataFrame, scores: pd.DataFrame, asset: str) -> dg.AssetCheckResult:
    """Blocks: one score row per (cell, cycle) of the features, a known severity, a reason on every row."""
    keys = lambda f: set(zip(f["cell_id"].astype(str), f["cycle_number"].astype(int)))  # noqa: E731
    lost = keys(features) - keys(scores)
    extra = keys(scores) - keys(features)
    unknown = sorted(set(scores["severity"]) - set(SEVERITIES))
    silent = int((scores["reason"].fillna("").str.len() == 0).sum())
    passed = not lost and not extra and not unknown and silent == 0 and len(scores) == len(features)
    return dg.AssetCheckResult(
        check_name="anomaly_rows_complete",
        asset_key=asset,
        passed=passed,
        metadata={"feature_rows": len(features), "score_rows": len(scores), "lost": len(lost), "extra": len(extra),
                  "unknown_severities": unknown, "rows_without_reason": silent},
        description="every cycle scored or told why" if passed else
        f"{len(lost)} cycle(s) without a score row, {len(extra)} extra, {silent} without a reason, severities {unknown}",
    )


def no_critical_anomaly_check(scores: pd.DataFrame, asset: str) -> dg.AssetCheckResult:
    """Warns: a cell has a critical anomaly (listed with its first reason)."""
    critical = scores.loc[scores["severity"] == "critical"]
    firsts = critical.groupby("cell_id", sort=True).first()
    if scores["anomaly_score"].notna().sum() == 0:
        return not_evaluated("no_critical_anomaly", asset, "no cycle could be compared (no cell has enough full cycles or a fleet)")
    return dg.AssetCheckResult(
        check_name="no_critical_anomaly",
        asset_key=asset,
        passed=critical.empty,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"critical_cycles": len(critical), "cells": len(firsts),
                  "first_per_cell": dg.MetadataValue.json({c: f"cycle {r['cycle_number']}: {r['reason']}" for c, r in firsts.head(20).iterrows()})},
        description="no critical anomaly" if critical.empty else
        f"{len(critical)} critical cycle(s) in {len(firsts)} cell(s), e.g. {firsts.index[0]} cycle {firsts.iloc[0]['cycle_number']}: {firsts.iloc[0]['reason'][:300]}",
    )


def anomalies_beat_baseline_check(self_test: dict, asset: str) -> dg.AssetCheckResult:
    """Warns: on this fleet's own cycles with injected anomalies, the detector's F1 is not above the
    blind per-cell 3-SD baseline's."""
    overall = self_test.get("all")
    if not overall:
        return not_evaluated("anomalies_beat_baseline", asset, "no cell has enough full cycles to inject anomalies into")
    passed = overall["f1"] > overall["baseline_f1"]
    per_signal = {k: {m: v[m] for m in ("injected", "recall", "precision", "f1", "baseline_recall", "baseline_precision", "baseline_f1")}
                  for k, v in self_test.items() if isinstance(v, dict) and "f1" in v}
    return dg.AssetCheckResult(
        check_name="anomalies_beat_baseline",
        asset_key=asset,
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"per_signal": dg.MetadataValue.json(per_signal), "injected_sizes": dg.MetadataValue.json(self_test["injected_sizes"])},
        description=(f"F1 {overall['f1']:.2f} against the baseline's {overall['baseline_f1']:.2f} on {overall['injected']} injected anomalies "
                     f"(recall {overall['recall']:.0%}, precision {overall['precision'] or 0:.0%})"),
    )


def anomaly_card_complete_check(card: str, asset: str) -> dg.AssetCheckResult:
    """Blocks: the anomaly card has every section, each with content."""
    return card_sections_check("anomaly_card_complete", card, ANOMALY_CARD_SECTIONS, asset)


PACK_FAULT_CARD_SECTIONS = ("Intended use", "Data", "Method", "Self-test at this fleet's configurations", "Limitations")


def pack_faults_beat_baseline_check(detection: pd.DataFrame, asset: str) -> dg.AssetCheckResult:
    """Warns: on packs simulated at the fleet's configurations, the diagnosis's kind-blind F1 is not
    above the threshold baseline's (the diagnosis also names the kind; the baseline cannot)."""
    rows = detection.set_index("detector")
    ours, base = rows.loc["diagnosis"], rows.loc["baseline"]
    return dg.AssetCheckResult(
        check_name="pack_faults_beat_baseline",
        asset_key=asset,
        passed=bool(ours["f1"] > base["f1"]),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"detection": dg.MetadataValue.md(detection.to_markdown(index=False, floatfmt=".3g"))},
        description=(f"F1 {ours['f1']:.2f} (recall {ours['recall']:.0%}, precision {ours['precision']:.0%}) against the baseline's "
                     f"{base['f1']:.2f} (recall {base['recall']:.0%}, precision {base['precision']:.0%}) on {int(ours['faults'])} injected faults"),
    )


def pack_fault_card_complete_check(card: str, asset: str) -> dg.AssetCheckResult:
    """Blocks: the fault diagnosis card has every section, each with content."""
    return card_sections_check("pack_fault_card_complete", card, PACK_FAULT_CARD_SECTIONS, asset)


def anomaly_scores_causal_check(probe: dict, asset: str) -> dg.AssetCheckResult:
    """Blocks: changing a cell's later cycles moves none of its earlier own-trend scores."""
    if not probe["probed"]:
        return not_evaluated("anomaly_scores_causal", asset, "no cell has enough full cycles to probe (4 trend windows)")
    return dg.AssetCheckResult(
        check_name="anomaly_scores_causal",
        asset_key=asset,
        passed=not probe["moved"],
        metadata={"probed": dg.MetadataValue.json(probe["probed"]), "moved": dg.MetadataValue.json(probe["moved"])},
        description=(f"{len(probe['probed'])} cell(s) probed: later cycles changed, no earlier own-trend score moved"
                     if not probe["moved"] else f"earlier scores moved with later cycles: {probe['moved']}"),
    )


def fault_detection_causal_check(probes: list[dict], asset: str) -> dg.AssetCheckResult:
    """Blocks: a diagnosis cut off at its own detection time is found again, at or before that
    time (its detection needs no data from after it)."""
    if not probes:
        return not_evaluated("fault_detection_causal", asset, "the self-test found no fault to probe")
    late = [p for p in probes if not p["found_again"] or p["detected_again_s"] > p["detected_time_s"]]
    return dg.AssetCheckResult(
        check_name="fault_detection_causal",
        asset_key=asset,
        passed=not late,
        metadata={"probes": dg.MetadataValue.json(probes)},
        description=(f"{len(probes)} detection(s) ({', '.join(p['kind'] for p in probes)}) found again on the telemetry cut at their detection time"
                     if not late else f"needed data after their detection time: {late}"),
    )
