"""Each model-governance rule, called directly on a clean and a dirty input; and the promotion
decision on constructed registries."""

import math

import pandas as pd

from battery_pipeline.assets.models import promotion_decision, with_quick_budget
from battery_pipeline.checks import model_quality
from battery_pipeline.science.ml.registry import make_estimator


def split_rows(assignments: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame([{"cell_id": c, "split": s} for c, s in assignments.items() for _ in range(3)])


def test_split_disjoint_passes_per_cell_splits_and_fails_shared_cells():
    clean = split_rows({"a": "train", "b": "train", "c": "validation", "d": "test"})
    assert model_quality.split_disjoint_check(clean, "soh_training_set").passed
    leaky = pd.concat([clean, pd.DataFrame([{"cell_id": "a", "split": "test"}])])
    result = model_quality.split_disjoint_check(leaky, "soh_training_set")
    assert not result.passed and "a" in result.description
    no_train = split_rows({"c": "validation", "d": "test"})
    assert not model_quality.split_disjoint_check(no_train, "soh_training_set").passed
    typo = split_rows({"a": "train", "d": "tset"})
    assert not model_quality.split_disjoint_check(typo, "soh_training_set").passed


def test_no_feature_leakage_blocks_labels_and_same_cycle_capacity():
    assert model_quality.no_feature_leakage_check("soh", ["charge_capacity_ah", "cc_charge_time_s"], "x").passed
    assert not model_quality.no_feature_leakage_check("soh", ["cc_charge_time_s", "discharge_capacity_ah"], "x").passed
    assert not model_quality.no_feature_leakage_check("soh", ["soh"], "x").passed
    # RUL forecasts from the history, the current capacity and SOH included, never the future
    assert model_quality.no_feature_leakage_check("rul", ["discharge_capacity_ah", "soh"], "x").passed
    assert not model_quality.no_feature_leakage_check("rul", ["soh", "eol_cycle"], "x").passed


def test_beats_dummy_and_interval_coverage_warn():
    assert model_quality.beats_dummy_check(0.01, 0.05, "rmse", "m").passed
    worse = model_quality.beats_dummy_check(0.06, 0.05, "rmse", "m")
    assert not worse.passed and worse.severity.value == "WARN"
    assert not model_quality.beats_dummy_check(math.nan, 0.05, "rmse", "m").passed
    assert model_quality.interval_coverage_check(0.86, 0.9, "m").passed
    assert not model_quality.interval_coverage_check(0.5, 0.9, "m").passed
    assert not model_quality.interval_coverage_check(math.nan, 0.9, "m").passed


def test_model_card_complete_needs_every_section_with_text():
    sections = ("Intended use", "Metrics")
    assert model_quality.model_card_complete_check({"m": {"Intended use": "x", "Metrics": "y"}}, sections, "c").passed
    result = model_quality.model_card_complete_check({"m": {"Intended use": "x", "Metrics": " "}}, sections, "c")
    assert not result.passed and result.metadata["missing_sections"].value == {"m": ["Metrics"]}
    assert not model_quality.model_card_complete_check({}, sections, "c").passed


def registry(*rows) -> pd.DataFrame:
    columns = ["model_id", "model_name", "estimator", "cv_error", "validation_error", "test_error", "dummy_test_error"]
    return pd.DataFrame(rows, columns=columns)


CANDIDATES = registry(
    ("d", "soh_dummy_model", "dummy", 0.05, 0.05, 0.05, 0.05),
    ("rf", "soh_random_forest_model", "random_forest", 0.013, 0.008, 0.015, 0.05),
    ("ridge", "soh_ridge_model", "ridge", 0.010, 0.012, 0.020, 0.05),
)


def test_promotion_ranks_by_the_cross_validated_error_and_passes_the_gate_first_time():
    decision = promotion_decision(CANDIDATES, previous=None, tolerance=0.05)
    # the error over held-out training cells selects, not one validation cell, not the test cells
    assert decision["passed"] and decision["model_id"] == "ridge"
    assert decision["selected_by"].startswith("cv_error")
    assert list(decision["ranking"]) == ["soh_ridge_model", "soh_random_forest_model"]


def test_registry_rows_without_a_cross_validated_error_are_ranked_by_validation():
    old = CANDIDATES.assign(cv_error=float("nan"))
    decision = promotion_decision(old, previous=None, tolerance=0.05)
    assert decision["model_id"] == "rf" and decision["selected_by"].startswith("validation_error")
    older = old.drop(columns=["cv_error"])
    assert promotion_decision(older, previous=None, tolerance=0.05)["model_id"] == "rf"


def test_promotion_gate_rejects_a_candidate_worse_than_the_promoted_model():
    decision = promotion_decision(CANDIDATES, previous={"model_id": "old", "test_error": 0.015}, tolerance=0.05)
    assert not decision["passed"] and "worse than" in "; ".join(decision["reasons"])
    within = promotion_decision(CANDIDATES, previous={"model_id": "old", "test_error": 0.0195}, tolerance=0.05)
    assert within["passed"]


def test_promotion_gate_rejects_a_candidate_that_loses_to_the_dummy():
    losing = registry(("d", "soh_dummy_model", "dummy", 0.05, 0.05, 0.05, 0.05), ("bad", "soh_linear_model", "linear", 0.04, 0.04, 0.07, 0.05))
    decision = promotion_decision(losing, previous=None, tolerance=0.05)
    assert not decision["passed"] and decision["model_id"] == "bad"
    only_dummy = promotion_decision(losing.iloc[:1], previous=None, tolerance=0.05)
    assert not only_dummy["passed"] and only_dummy["model_id"] is None


def test_quick_budget_caps_nested_iteration_parameters():
    conformal = with_quick_budget(make_estimator("gradient_boosting", "soh", intervals=True))
    assert conformal.get_params()["estimator__max_iter"] == 30
    lstm = with_quick_budget(make_estimator("lstm", "soh"))
    assert lstm.max_epochs == 3 and lstm.hidden_size == 32  # only iteration-like parameters change


def test_reproducible_compares_the_stored_artifact_always_and_the_earlier_training_when_there_is_one():
    metrics = {"test": {"rmse": 0.01, "r2": float("nan")}, "train": {"rmse": 0.005}}
    same = {"test": {"rmse": 0.01, "r2": float("nan")}, "train": {"rmse": 0.005}}
    drift = {"test": {"rmse": 0.011, "r2": float("nan")}, "train": {"rmse": 0.005}}
    # first training: judged on the reloaded artifact, never passed for want of a comparison
    first = model_quality.reproducible_check(None, metrics, same, "m")
    assert first.passed and first.metadata["compared_with_earlier_training"].value is False
    assert not model_quality.reproducible_check(None, metrics, drift, "m").passed  # the artifact differs
    assert model_quality.reproducible_check(metrics, same, same, "m").passed
    drifted = model_quality.reproducible_check(metrics, drift, drift, "m")
    assert not drifted.passed and "retraining" in drifted.description
