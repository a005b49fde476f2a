"""Each twin rule, called directly on a clean and a dirty input."""

import numpy as np
import pandas as pd

from battery_pipeline.checks import twin_quality


def test_telemetry_row_accounting():
    assert twin_quality.telemetry_row_accounting_check(100, 100, 15, 1500).passed
    assert not twin_quality.telemetry_row_accounting_check(100, 99, 15, 1485).passed  # a row lost
    assert not twin_quality.telemetry_row_accounting_check(100, 100, 15, 1499).passed  # a value lost


def test_soc_within_bounds_counts_unknown_and_fails_outside():
    cells = pd.DataFrame({"c1": [0.5, 0.6, np.nan], "c2": [0.4, 0.5, 0.55]})
    pack = cells.mean(axis=1)
    clean = twin_quality.soc_within_bounds_check(cells, pack)
    assert clean.passed and clean.metadata["unknown_cell_values"].value == 1
    dirty = cells.copy()
    dirty.loc[1, "c2"] = 1.02
    result = twin_quality.soc_within_bounds_check(dirty, dirty.mean(axis=1))
    assert not result.passed and result.metadata["samples_outside_0_1"].value == 1
    assert not twin_quality.soc_within_bounds_check(cells, pack.where(pack.index != 0, -0.01)).passed


def test_eq_cycles_non_decreasing():
    assert twin_quality.eq_cycles_non_decreasing_check(pd.Series([0.0, 0.0, 0.1, 0.3])).passed
    result = twin_quality.eq_cycles_non_decreasing_check(pd.Series([0.0, 0.2, 0.1, 0.3]))
    assert not result.passed and result.metadata["decreases"].value == 1
    assert not twin_quality.eq_cycles_non_decreasing_check(pd.Series([0.0, np.nan, 0.3])).passed


def alerts() -> pd.DataFrame:
    return pd.DataFrame({"cell": ["cell_01", "cell_03"], "kind": ["over_voltage", "under_voltage"],
                         "severity": ["warning", "critical"], "start_time_s": [100.0, 900.0],
                         "end_time_s": [160.0, 900.0], "extreme_v": [4.25, 2.41]})


def test_alerts_complete():
    assert twin_quality.alerts_complete_check(alerts()).passed
    assert twin_quality.alerts_complete_check(alerts().iloc[:0]).passed  # no alerts is complete
    missing = alerts()
    missing.loc[1, "severity"] = None
    assert not twin_quality.alerts_complete_check(missing).passed
    backwards = alerts()
    backwards.loc[0, "end_time_s"] = 99.0
    assert twin_quality.alerts_complete_check(backwards).metadata["end_before_start"].value == 1
    assert not twin_quality.alerts_complete_check(alerts().drop(columns=["extreme_v"])).passed


def test_imbalance_confidence_within_bounds():
    rests = pd.DataFrame({"end_time_s": [3600.0, 7200.0], "confidence": [0.9, 0.2]})
    cells = pd.DataFrame({"end_time_s": [3600.0] * 2, "cell": ["a", "b"], "confidence": [0.95, 0.9]})
    assert twin_quality.imbalance_confidence_check(rests, cells).passed
    assert not twin_quality.imbalance_confidence_check(rests.assign(confidence=[0.9, 1.2]), cells).passed
    assert not twin_quality.imbalance_confidence_check(rests, cells.assign(confidence=[0.5, np.nan])).passed


def test_checks_are_attached_to_models_that_exist():
    from battery_pipeline.science.twin.registry import discover_models

    models = discover_models()
    for name, checks in twin_quality.CHECKS_BY_MODEL.items():
        assert name in models, f"checks for unknown model {name!r}"
        assert checks


def test_fault_detection_causal_fails_on_a_detection_that_needed_later_data():
    from battery_pipeline.checks.anomaly_quality import fault_detection_causal_check

    good = {"pack": "p", "kind": "loose_connection", "cell": "cell_01", "detected_time_s": 100.0, "found_again": True, "detected_again_s": 100.0}
    assert fault_detection_causal_check([good], "pack_fault_report").passed
    late = {**good, "detected_again_s": 160.0}
    lost = {**good, "kind": "internal_short", "found_again": False, "detected_again_s": None}
    result = fault_detection_causal_check([good, late, lost], "pack_fault_report")
    assert not result.passed and "needed data after their detection time" in result.description
    assert not fault_detection_causal_check([], "pack_fault_report").passed  # not evaluated is not a pass
