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

from battery_pipeline.checks.twin_quality import CHECKS_BY_MODEL

GUARDS = ("data", "features", "models", "documentation")


@dataclass(frozen=True)
class Rule:
    check: str
    assets: tuple[str, ...]
    guards: str
    blocking: bool
    rule: str
    runs_in: str  # the function that evaluates it


def _estimators_except_dummy() -> tuple[str, ...]:
    from battery_pipeline.assets.models import MODEL_ASSETS, TASKS

    return tuple(n for task in TASKS for n in MODEL_ASSETS[task] if n != f"{task}_dummy_model")


def _all_model_assets() -> tuple[str, ...]:
    from battery_pipeline.assets.models import MODEL_ASSETS, TASKS

    return tuple(n for task in TASKS for n in MODEL_ASSETS[task])


def rules() -> list[Rule]:
    dq, fq, mq, tq, dc = (
        "checks.data_quality", "checks.feature_quality", "checks.model_quality", "checks.twin_quality", "checks.documentation",
    )
    training_sets = ("soh_training_set", "rul_training_set")
    listed = [
        Rule("raw_schema_conformance", ("raw_samples",), "data", True, "the reader produced exactly the canonical columns and types", f"{dq}.frame_shape_check"),
        Rule("schema_conformance", ("validated_samples",), "data", True, "every validated row satisfies the pandera schema (types, bounds)", f"{dq}.schema_conformance_check"),
        Rule("row_accounting", ("validated_samples",), "data", True, "nothing lost: raw = validated + quarantined, on what is stored", f"{dq}.row_accounting_check"),
        Rule("no_duplicate_samples", ("validated_samples",), "data", True, "no two validated samples share (cell, cycle, time)", f"{dq}.no_duplicates_check"),
        Rule("cycle_numbers_continuous", ("validated_samples",), "data", False, "no gap in the cycle numbers (a missing file or cycle)", f"{dq}.cycle_continuity_check"),
        Rule("quarantine_rate", ("quarantined_samples",), "data", False, "warns when over 5 % of a cell's samples are quarantined", f"{dq}.quarantine_rate_check"),
        Rule("incomplete_cycles_quarantined", ("validated_samples",), "data", True, "seed rule: a cycle with over 10 % of its samples missing is quarantined whole", f"{dq}.incomplete_cycles_quarantined_check"),
        Rule("interpolation_marked", ("validated_samples",), "data", True, "seed rule: gaps under 5 samples are interpolated, and every filled value is marked in sample_flags", f"{dq}.interpolation_marked_check"),
        Rule("outliers_kept", ("validated_samples",), "data", False, "seed rule: 3-sigma outliers are flagged in sample_flags and kept, never dropped", f"{dq}.outliers_kept_check"),
        Rule("telemetry_row_accounting", ("telemetry",), "data", True, "every telemetry sample and channel of the source is stored", f"{tq}.telemetry_row_accounting_check"),
        Rule("features_finite", ("cycle_features",), "features", True, "no infinite feature; some cycle has a discharge capacity", f"{fq}.features_finite_check"),
        Rule("one_row_per_cycle", ("cycle_features",), "features", True, "exactly one feature row per (cell, cycle)", f"{fq}.one_row_per_cycle_check"),
        Rule("capacity_plausible", ("cycle_features",), "features", True, "discharge capacity within 0.3-1.3 x rated (error if the median is off)", f"{fq}.capacity_plausible_check"),
        Rule("efficiencies_physical", ("cycle_features",), "features", False, "coulombic and energy efficiency physically possible", f"{fq}.efficiencies_physical_check"),
        Rule("labels_consistent", ("cycle_labels",), "features", True, "SOH, end of life and RUL agree with each other and the capacities", f"{fq}.labels_consistent_check"),
        Rule("no_label_leakage", ("cycle_labels",), "features", True, "no label or same-cycle capacity among the SOH features", f"{fq}.no_label_leakage_check"),
        Rule("split_disjoint", training_sets, "models", True, "no cell in two of train / validation / test", f"{mq}.split_disjoint_check"),
        Rule("no_feature_leakage", training_sets, "models", True, "no label (for SOH no same-cycle capacity) among the model inputs", f"{mq}.no_feature_leakage_check"),
        Rule("interval_coverage", _all_model_assets(), "models", False, "prediction intervals cover the test truths near their nominal rate", f"{mq}.interval_coverage_check"),
        Rule("beats_dummy", _estimators_except_dummy(), "models", False, "test error below the dummy baseline's on the same cells", f"{mq}.beats_dummy_check"),
        Rule("reproducible", _all_model_assets(), "models", False, "retraining with the same data, code, parameters and seed gives the same metrics", f"{mq}.reproducible_check"),
        Rule("promotion_gate", ("promoted_soh_model", "promoted_rul_model"), "models", True, "a model scores cells only if it beats the dummy and keeps up with the promoted one", f"{mq}.promotion_gate_check"),
        *(
            Rule(check.name, (model,), "models", check.blocking, check.description, f"{tq}.CHECKS_BY_MODEL[{model!r}]")
            for model, checks in CHECKS_BY_MODEL.items()
            for check in checks
        ),
        Rule("model_card_complete", ("model_cards",), "documentation", True, "every section of every model card has content", f"{mq}.model_card_complete_check"),
        Rule("data_card_complete", ("data_cards",), "documentation", True, "every dataset's card has every section, a licence and a citation", f"{dc}.data_card_complete_check"),
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
