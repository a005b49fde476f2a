"""SOH and RUL metrics on examples worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from battery_pipeline.science.ml.metrics import interval_metrics, regression_metrics, rul_metrics, soh_metrics


def test_soh_metrics_by_hand():
    true = [0.90, 0.95, 1.00, 0.80]
    pred = [0.93, 0.94, 0.96, 0.90]  # errors +0.03, -0.01, -0.04, +0.10
    m = soh_metrics(true, pred)
    assert m["n"] == 4
    assert m["mae"] == pytest.approx((0.03 + 0.01 + 0.04 + 0.10) / 4)
    assert m["rmse"] == pytest.approx(math.sqrt((0.0009 + 0.0001 + 0.0016 + 0.01) / 4))
    assert m["max_error"] == pytest.approx(0.10)
    # mean of true = 0.9125; SS_tot = 0.000156 + 0.001406 + 0.007656 + 0.012656 = 0.021875
    assert m["r2"] == pytest.approx(1 - 0.0126 / 0.021875)
    assert m["mape_percent"] == pytest.approx(100 * np.mean([0.03 / 0.90, 0.01 / 0.95, 0.04 / 1.00, 0.10 / 0.80]))
    # |error| <= 0.03: the first (exactly 0.03 in decimal) and the second
    assert m["within_3_points"] == 0.5
    assert m["within_5_points"] == 0.75


def test_interval_metrics_and_soh_with_intervals():
    true = [1.0, 2.0, 3.0, 4.0]
    lower = [0.5, 2.0, 3.5, 3.0]
    upper = [1.5, 2.5, 4.0, 4.0]
    result = interval_metrics(true, lower, upper)
    assert result == {"coverage": 0.75, "mean_interval_width": pytest.approx((1 + 0.5 + 0.5 + 1) / 4)}
    assert soh_metrics(true, true, lower, upper)["coverage"] == 0.75
    with pytest.raises(ValueError, match="lower > upper"):
        interval_metrics([1.0], [2.0], [1.5])
    with pytest.raises(ValueError, match="both"):
        soh_metrics(true, true, lower=lower)


def test_rul_metrics_by_hand():
    true = [100, 50, 0, 20]
    pred = [110, 40, 5, 23]
    m = rul_metrics(true, pred)
    assert m["rmse_cycles"] == pytest.approx(math.sqrt((100 + 100 + 25 + 9) / 4))
    assert m["mae_cycles"] == pytest.approx(7.0)
    assert m["n_relative"] == 3  # RUL 0 has no relative error
    assert m["mape_percent"] == pytest.approx(100 * (0.10 + 0.20 + 0.15) / 3)
    # within 15 %: 100 -> 110 (10 %) yes, 50 -> 40 (20 %) no, 20 -> 23 (exactly 15 %) yes
    assert m["within_15_percent"] == pytest.approx(2 / 3)
    assert m["early_rate"] == 0.25  # only 50 -> 40 predicts end of life too soon
    assert m["late_rate"] == 0.75
    exact = rul_metrics([10, 20], [10, 20])
    assert exact["early_rate"] == exact["late_rate"] == 0.0 and exact["rmse_cycles"] == 0.0


def test_edge_cases():
    empty = soh_metrics([], [])
    assert empty["n"] == 0 and math.isnan(empty["rmse"]) and math.isnan(empty["within_3_points"])
    assert math.isnan(regression_metrics([1.0, 1.0], [1.0, 2.0])["r2"])  # constant truth
    with pytest.raises(ValueError, match="finite"):
        soh_metrics([1.0, np.nan], [1.0, 1.0])
    with pytest.raises(ValueError, match="values"):
        rul_metrics([1, 2, 3], [1, 2])
    assert all(isinstance(v, float) for v in rul_metrics([3, 4], [4, 3]).values())
