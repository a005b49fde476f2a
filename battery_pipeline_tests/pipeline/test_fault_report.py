"""Which packs the fault self-test can stand in for, and what it says of the others."""

import pandas as pd

from battery_pipeline.assets.fault_report import fleet_configurations, summary_rows


def test_configurations_come_from_the_fleet_and_the_rest_says_why():
    packs = pd.DataFrame({"pack_id": ["a", "b", "c", "d", "e"], "chemistry": ["NMC", "LFP", "XYZ", "nmc", "NMC"],
                          "n_cells": [12, 1, 8, 96, 12], "samples": [8641, 1000, 100, 86401, 17281],
                          "duration_h": [24, 1, 1, 24, 48]})
    configs, untestable = fleet_configurations(packs, limit=4)
    assert configs == [("NMC", 10.0, 12), ("NMC", 1.0, 32)]  # the 12-cell 10 s configuration twice: first
    assert "without a fleet" in untestable["b"] and "no cell model" in untestable["c"]
    assert untestable["d"] == "96 cells, self-tested as 32 (runtime)"
    assert fleet_configurations(packs, limit=1)[0] == [("NMC", 10.0, 12)]


def test_summary_counts_open_faults_and_says_what_was_not_testable():
    packs = pd.DataFrame({"pack_id": ["p1", "p2", "p3"], "n_cells": [8, 8, 1]})
    alerts = pd.DataFrame({"pack_id": ["p1", "p1"], "cell": ["cell_01", "cell_02"], "kind": ["loose_connection", "voltage_sensor_stuck"],
                           "severity": ["warning", "info"], "active_at_end": [True, False]})
    evaluability = pd.DataFrame({"pack_id": ["p1", "p3", "p3"], "kind": ["internal_short", "internal_short", "voltage_sensor_stuck"],
                                 "evaluable": [True, False, True]})
    summary = summary_rows(packs, alerts, evaluability).set_index("pack_id")
    assert summary.loc["p1", "open_faults"] == 1 and summary.loc["p1", "worst_open_severity"] == "warning"
    assert summary.loc["p1", "not_evaluable"] == "none"
    assert summary.loc["p2", "not_evaluable"] == "not diagnosed yet"
    assert summary.loc["p3", "not_evaluable"] == "internal_short"
