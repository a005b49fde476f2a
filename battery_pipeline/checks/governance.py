"""The governance rules in one list: what each check guards, whether it blocks, where it runs.

`RULES` is the map a person (and `battery_pipeline_tests/checks/test_governance.py`) reads: every
check of the code location is listed here under what it guards, and every listed check exists in
the definitions with the stated blocking flag; `rules_markdown()` renders it (shown in the UI as
metadata of `data_cards`, and in the README).

  data           a cell's samples: schema, bounds, nothing lost, duplicates, the seed's rules on
                 sampling gaps and outliers; pack telemetry
  features       per-cycle features and labels: finite, plausible, no label leakage
  models         training sets and models: split disjoint by cell, no leakage, beats the dummy,
                 intervals cover, promotion gate; digital-twin outputs
  documentation  model cards and data cards complete

Blocking checks stop downstream assets of the same run from materializing when they fail, so
consumers never see output that failed them.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from battery_pipeline.checks.twin_quality import CHECKS_BY_MODEL
from battery_pipeline.science.ml.registry import estimator_names

GUARDS = ("data", "features", "models", "documentation")
TASKS = ("soh", "rul")


@dataclass(frozen=True)
class Rule:
    check: str
    assets: tuple[str, ...]
    guards: str
    blocking: bool
    rule: str
    runs_in: str  # the function that evaluates it


@dataclass(frozen=True)
class CheckText:
    """What a check guards, whether it blocks, and its one line for the UI and the README."""

    guards: str
    blocking: bool
    rule: str
    runs_in: str


_DQ, _FQ, _MQ, _TQ, _DC, _AQ, _HQ = (
    "checks.data_quality", "checks.feature_quality", "checks.model_quality", "checks.twin_quality",
    "checks.documentation", "checks.anomaly_quality", "checks.thermal_quality",
)
# Every check of the code location except the twin models' own (those carry theirs in
# `twin_quality.CHECKS_BY_MODEL`). The asset modules declare their checks through `check_spec`,
# so the UI shows exactly this text and blocking flag.
CHECK_TEXTS: dict[str, CheckText] = {
    "raw_schema_conformance": CheckText("data", True, "the reader produced exactly the canonical columns and types", f"{_DQ}.frame_shape_check"),
    "schema_conformance": CheckText("data", True, "every validated row satisfies the pandera schema (types, bounds)", f"{_DQ}.schema_conformance_check"),
    "row_accounting": CheckText("data", True, "nothing lost: raw = validated + quarantined, on what is stored", f"{_DQ}.row_accounting_check"),
    "no_duplicate_samples": CheckText("data", True, "no two validated samples share (cell, cycle, time)", f"{_DQ}.no_duplicates_check"),
    "cycle_numbers_continuous": CheckText("data", False, "no gap in the cycle numbers (a missing file or cycle)", f"{_DQ}.cycle_continuity_check"),
    "quarantine_rate": CheckText("data", False, "warns when over 5 % of a cell's samples are quarantined", f"{_DQ}.quarantine_rate_check"),
    "incomplete_cycles_quarantined": CheckText("data", True, "seed rule: a cycle with over 10 % of its samples missing is quarantined whole", f"{_DQ}.incomplete_cycles_quarantined_check"),
    "interpolation_marked": CheckText("data", True, "seed rule: gaps under 5 samples are interpolated, and every filled value is marked in sample_flags", f"{_DQ}.interpolation_marked_check"),
    "outliers_kept": CheckText("data", False, "seed rule: 3-sigma outliers are flagged in sample_flags and kept, never dropped", f"{_DQ}.outliers_kept_check"),
    "telemetry_row_accounting": CheckText("data", True, "every telemetry sample and channel of the source is stored", f"{_TQ}.telemetry_row_accounting_check"),
    "features_finite": CheckText("features", True, "no infinite feature; some cycle has a discharge capacity", f"{_FQ}.features_finite_check"),
    "one_row_per_cycle": CheckText("features", True, "exactly one feature row per (cell, cycle)", f"{_FQ}.one_row_per_cycle_check"),
    "capacity_plausible": CheckText("features", True, "full-cycle discharge capacity within 0.3-1.3 x rated (error if the median is off); warns when no rated capacity is known", f"{_FQ}.capacity_plausible_check"),
    "efficiencies_physical": CheckText("features", False, "coulombic and energy efficiency physically possible on cycles that are not the first or rest-only", f"{_FQ}.efficiencies_physical_check"),
    "cycles_classified": CheckText("features", False, "every cycle has a class; warns when a cell has too few comparable full cycles to label", f"{_FQ}.cycles_classified_check"),
    "labels_consistent": CheckText("features", True, "SOH, end of life and RUL agree with each other, the capacities and the cycle classes", f"{_FQ}.labels_consistent_check"),
    "initial_soh_in_band": CheckText("features", True, "the cell's initial SOH against its stated reference lies in the band (default 0.85-1.10); else its labels stay out of training", f"{_FQ}.initial_soh_in_band_check"),
    "no_label_leakage": CheckText("features", True, "no label or same-cycle capacity among the SOH features", f"{_FQ}.no_label_leakage_check"),
    "split_disjoint": CheckText("models", True, "no cell in two of train / validation / test", f"{_MQ}.split_disjoint_check"),
    "no_feature_leakage": CheckText("models", True, "no label (for SOH no same-cycle capacity) among the model inputs", f"{_MQ}.no_feature_leakage_check"),
    "interval_coverage": CheckText("models", False, "prediction intervals cover the test truths near their nominal rate", f"{_MQ}.interval_coverage_check"),
    "beats_dummy": CheckText("models", False, "test error below the dummy baseline's on the same cells", f"{_MQ}.beats_dummy_check"),
    "reproducible": CheckText("models", False, "the stored artifact, reloaded, gives the reported metrics; a retraining with the same data, code, parameters and seed gives them too", f"{_MQ}.reproducible_check"),
    "promotion_gate": CheckText("models", True, "a model scores cells only if it beats the dummy and keeps up with the promoted one", f"{_MQ}.promotion_gate_check"),
    "cycle_life_no_leakage": CheckText("models", True, "cycle-life inputs come from cycles up to the late cycle (100) only, every training life lies beyond it, no label is an input", f"{_MQ}.cycle_life_no_leakage_check"),
    "cycle_life_beats_dummy": CheckText("models", False, "each frozen cycle-life model's leave-one-cell-out error below the dummy's", f"{_MQ}.cycle_life_beats_dummy_check"),
    "cycle_life_matches_paper": CheckText("models", False, "on Severson et al.'s 41 training cells, each model's training RMSE within 10 % of their Table 1 (not evaluated on another cohort)", f"{_MQ}.cycle_life_matches_paper_check"),
    "cycle_life_in_domain": CheckText("models", False, "warns when a scored cell lies outside the cycle-life model's domain (chemistry, rated capacity, feature range); its prediction is kept and marked", f"{_MQ}.cycle_life_in_domain_check"),
    "anomaly_rows_complete": CheckText("models", True, "one anomaly row per cycle of the features, a known severity, and a reason on every row (a cycle not scored says why)", f"{_AQ}.anomaly_rows_complete_check"),
    "anomaly_scores_causal": CheckText("models", True, "no leakage from later cycles: changing a cell's later cycles moves none of its earlier own-trend scores, probed on the data", f"{_AQ}.anomaly_scores_causal_check"),
    "no_critical_anomaly": CheckText("models", False, "warns when a cell has a critical anomaly (a cycle 10 robust SD from its own trend or its fleet), with the first reason per cell", f"{_AQ}.no_critical_anomaly_check"),
    "anomalies_beat_baseline": CheckText("models", False, "on the fleet's own cycles with known anomalies injected, the detector's F1 above a blind per-cell 3-robust-SD detector's", f"{_AQ}.anomalies_beat_baseline_check"),
    "anomaly_card_complete": CheckText("documentation", True, "every section of the anomaly-detection card has content", f"{_AQ}.anomaly_card_complete_check"),
    "pack_faults_beat_baseline": CheckText("models", False, "on packs simulated at the fleet's own configurations with known faults, the diagnosis's kind-blind F1 above a 30 mV / 60 s threshold baseline's", f"{_AQ}.pack_faults_beat_baseline_check"),
    "fault_detection_causal": CheckText("models", True, "no leakage from later telemetry: a self-test diagnosis, rerun on the telemetry cut at its detection time, is found again by then", f"{_AQ}.fault_detection_causal_check"),
    "pack_fault_card_complete": CheckText("documentation", True, "every section of the pack fault diagnosis card has content", f"{_AQ}.pack_fault_card_complete_check"),
    "thermal_split_by_file": CheckText("models", True, "temperature forecast: every fold holds one file out and never trains on it (split by file, never by row)", f"{_HQ}.thermal_split_by_file_check"),
    "thermal_no_future_temperature": CheckText("models", True, "temperature forecast: changing every temperature after t leaves the features and the physics forecast at t unchanged, probed on the data", f"{_HQ}.thermal_no_future_temperature_check"),
    "thermal_beats_persistence": CheckText("models", False, "temperature forecast: the hybrid's held-out RMSE below persistence's on every dataset and horizon", f"{_HQ}.thermal_beats_persistence_check"),
    "thermal_card_complete": CheckText("documentation", True, "every section of the temperature-forecast card has content", f"{_HQ}.thermal_card_complete_check"),
    "cycle_life_card_complete": CheckText("documentation", True, "every section of the cycle-life model card has content", f"{_MQ}.cycle_life_card_complete_check"),
    "model_card_complete": CheckText("documentation", True, "every section of every model card has content", f"{_MQ}.model_card_complete_check"),
    "data_card_complete": CheckText("documentation", True, "every dataset's card has every section, a licence and a citation", f"{_DC}.data_card_complete_check"),
}


def check_spec(name: str, asset: str, **kwargs) -> dg.AssetCheckSpec:
    """The AssetCheckSpec of a listed check: its blocking flag and description from `CHECK_TEXTS`."""
    text = CHECK_TEXTS[name]
    return dg.AssetCheckSpec(name, asset=asset, blocking=text.blocking, description=text.rule[0].upper() + text.rule[1:] + ".", **kwargs)


def _model_assets(task: str) -> list[str]:
    # the asset names of assets/models.py (`model_asset_name`), without importing the asset layer
    return [f"{task}_{name}_model" for name in estimator_names(task)]


def _assets_of(check: str) -> tuple[str, ...]:
    """Which assets carry a listed check."""
    every_model = tuple(a for task in TASKS for a in _model_assets(task))
    fixed = {
        "raw_schema_conformance": ("raw_samples",),
        "quarantine_rate": ("quarantined_samples",),
        "telemetry_row_accounting": ("telemetry",),
        "split_disjoint": ("soh_training_set", "rul_training_set"),
        "no_feature_leakage": ("soh_training_set", "rul_training_set"),
        "interval_coverage": every_model,
        "reproducible": every_model,
        "beats_dummy": tuple(a for a in every_model if not a.endswith("_dummy_model")),
        "promotion_gate": ("promoted_soh_model", "promoted_rul_model"),
        "model_card_complete": ("model_cards",),
        "data_card_complete": ("data_cards",),
        "cycle_life_no_leakage": ("cycle_life_training_set",),
        "cycle_life_beats_dummy": ("cycle_life_models",),
        "cycle_life_matches_paper": ("cycle_life_models",),
        "cycle_life_card_complete": ("cycle_life_models",),
        "cycle_life_in_domain": ("cycle_life_predictions",),
        "anomaly_rows_complete": ("cycle_anomalies",),
        "no_critical_anomaly": ("cycle_anomalies",),
        "anomaly_scores_causal": ("cycle_anomalies",),
        "anomalies_beat_baseline": ("cycle_anomalies",),
        "anomaly_card_complete": ("cycle_anomalies",),
        "pack_faults_beat_baseline": ("pack_fault_report",),
        "pack_fault_card_complete": ("pack_fault_report",),
        "fault_detection_causal": ("pack_fault_report",),
        **{name: ("temperature_forecast_models",) for name in ("thermal_split_by_file", "thermal_no_future_temperature",
                                                               "thermal_beats_persistence", "thermal_card_complete")},
    }
    if check in fixed:
        return fixed[check]
    guards = CHECK_TEXTS[check].guards
    if guards == "data":
        return ("validated_samples",)
    if check in ("labels_consistent", "initial_soh_in_band", "no_label_leakage"):
        return ("cycle_labels",)
    return ("cycle_features",)


def rules() -> list[Rule]:
    listed = [
        Rule(name, _assets_of(name), text.guards, text.blocking, text.rule, text.runs_in)
        for name, text in CHECK_TEXTS.items()
    ]
    listed += [
        Rule(check.name, (model,), "models", check.blocking, check.description, f"{_TQ}.CHECKS_BY_MODEL[{model!r}]")
        for model, checks in CHECKS_BY_MODEL.items()
        for check in checks
    ]
    return listed


def rules_markdown(rules_list: list[Rule] | None = None) -> str:
    rows = ["| guards | check | on | blocking | rule | runs in |", "|---|---|---|---|---|---|"]
    for guard in GUARDS:
        for r in (rules_list or rules()):
            if r.guards == guard:
                on = ", ".join(f"`{a}`" for a in r.assets[:3]) + (f" (+{len(r.assets) - 3} more)" if len(r.assets) > 3 else "")
                rows.append(f"| {guard} | `{r.check}` | {on} | {'yes' if r.blocking else 'no'} | {r.rule} | `{r.runs_in}` |")
    return "\n".join(rows)
