"""Each feature and label rule, called directly on a clean and a dirty input."""

import numpy as np
import pandas as pd

from battery_pipeline.checks import feature_quality


def features(n: int = 50) -> pd.DataFrame:
    cycles = np.arange(1, n + 1)
    capacity = 2.0 - 0.004 * cycles
    return pd.DataFrame(
        {
            "cell_id": "c",
            "cycle_number": cycles,
            "discharge_capacity_ah": capacity,
            "coulombic_efficiency": np.full(n, 0.998),
            "energy_efficiency": np.full(n, 0.93),
        }
    )


def test_features_finite():
    assert feature_quality.features_finite_check(features()).passed
    dirty = features()
    dirty.loc[4, "energy_efficiency"] = np.inf
    result = feature_quality.features_finite_check(dirty)
    assert not result.passed and result.metadata["infinite_values"].value == {"energy_efficiency": 1}
    assert result.description == "infinite values in energy_efficiency (1)"
    charge_only = feature_quality.features_finite_check(features().assign(discharge_capacity_ah=np.nan))
    assert not charge_only.passed
    assert "has a discharge capacity" in charge_only.description and "infinite" not in charge_only.description


def test_capacity_plausible_warns_on_outliers_and_errors_on_wrong_scale():
    assert feature_quality.capacity_plausible_check(features(), 2.0).passed
    one_partial = features()
    one_partial.loc[0, "discharge_capacity_ah"] = 0.1
    result = feature_quality.capacity_plausible_check(one_partial, 2.0)
    assert not result.passed and result.severity.value == "WARN"
    wrong_units = feature_quality.capacity_plausible_check(features().assign(discharge_capacity_ah=lambda f: f.discharge_capacity_ah * 1000), 2.0)
    assert not wrong_units.passed and wrong_units.severity.value == "ERROR"


def test_efficiencies_physical():
    assert feature_quality.efficiencies_physical_check(features()).passed
    dirty = features()
    dirty.loc[3, "coulombic_efficiency"] = 1.3
    assert not feature_quality.efficiencies_physical_check(dirty).passed


def test_one_row_per_cycle():
    assert feature_quality.one_row_per_cycle_check(features()).passed
    dirty = pd.concat([features(), features().iloc[[7]]])
    assert not feature_quality.one_row_per_cycle_check(dirty).passed


def test_labels_consistent_and_leakage():
    labels = pd.DataFrame({"cell_id": "c", "cycle_number": [1, 2], "censored": [False, False], "eol_cycle": [10, 10]})
    assert feature_quality.labels_consistent_check([], labels).passed
    assert not feature_quality.labels_consistent_check(["rul jumps at cycle 2"], labels).passed
    forbidden = {"soh", "rul_cycles", "discharge_capacity_ah"}
    assert feature_quality.no_label_leakage_check(["charge_voltage_mean_v", "cycle_number"], forbidden).passed
    leaked = feature_quality.no_label_leakage_check(["charge_voltage_mean_v", "discharge_capacity_ah"], forbidden)
    assert not leaked.passed and leaked.metadata["leaked"].value == ["discharge_capacity_ah"]


def _not_evaluated(result) -> bool:
    return (not result.passed) and result.severity.value == "WARN" and "not_evaluated" in result.metadata


def test_a_check_that_cannot_evaluate_fails_at_warn_with_the_reason():
    """Never Passed when there was nothing to judge (issue 13: capacity_plausible said Passed while
    its metadata said it was skipped)."""
    from battery_pipeline.checks import data_quality

    no_rating = feature_quality.capacity_plausible_check(features(), None, nominal_source="unknown")
    assert _not_evaluated(no_rating) and "no rated capacity" in no_rating.metadata["not_evaluated"].value
    no_full = feature_quality.capacity_plausible_check(features().assign(cycle_class="partial"), 2.0)
    assert _not_evaluated(no_full)
    open_cycles = feature_quality.efficiencies_physical_check(features().assign(cycle_class="formation"))
    assert _not_evaluated(open_cycles)
    assert _not_evaluated(data_quality.quarantine_rate_check(0, pd.DataFrame(columns=["reason_code"]), 0.05))
    assert _not_evaluated(data_quality.cycle_continuity_check(pd.Series([], dtype="int64")))


def test_efficiency_rules_exempt_the_first_and_partial_cycles_and_judge_the_rest():
    frame = features().assign(cycle_class="full")
    frame.loc[0, ["cycle_class", "coulombic_efficiency"]] = ["formation", 1.49]  # started part-charged
    assert feature_quality.efficiencies_physical_check(frame).passed
    frame.loc[5, "coulombic_efficiency"] = 1.3  # a full cycle cannot give back more than it took
    assert not feature_quality.efficiencies_physical_check(frame).passed


def test_initial_soh_band_fails_out_of_band_and_warns_without_a_reference():
    from battery_pipeline.science.labels import compute_labels

    cycles = pd.DataFrame({"cell_id": "c", "cycle_number": range(1, 11), "discharge_capacity_ah": 1.1})
    band = (0.85, 1.10)
    assert feature_quality.initial_soh_in_band_check(compute_labels(cycles, 1.1), band).passed
    wrong = feature_quality.initial_soh_in_band_check(compute_labels(cycles, 2.0), band)  # 0.55 of "rated"
    assert not wrong.passed and wrong.severity.value == "ERROR"
    unlabelled = compute_labels(cycles.head(2), 1.1)
    assert _not_evaluated(feature_quality.initial_soh_in_band_check(unlabelled, band))


def test_cycles_classified_warns_when_too_few_full_cycles_are_left():
    from battery_pipeline.science.cycle_classes import CYCLE_CLASSES

    frame = features(4).assign(cycle_class=["formation", "diagnostic", "diagnostic", "partial"], cycle_class_reason="x")
    result = feature_quality.cycles_classified_check(frame, CYCLE_CLASSES, 3)
    assert not result.passed and result.metadata["comparable_full_cycles"].value == 0
    assert feature_quality.cycles_classified_check(features().assign(cycle_class="full", cycle_class_reason="x"), CYCLE_CLASSES, 3).passed
