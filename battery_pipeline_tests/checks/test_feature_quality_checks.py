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
    assert not feature_quality.features_finite_check(features().assign(discharge_capacity_ah=np.nan)).passed


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
