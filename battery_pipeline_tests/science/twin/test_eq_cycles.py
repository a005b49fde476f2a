"""eq_cycles: exact throughput for piecewise-constant current, both hold conventions, incremental."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from battery_pipeline_tests.science.twin.twin_data import logical_frame, model

# Hand example, 2 Ah cell. Samples at 0, 600, 1800, 2400, 4200 s; currents -2, -1, +1, +3, 0 A.
TIME = [0.0, 600.0, 1800.0, 2400.0, 4200.0]
CURRENT = [-2.0, -1.0, 1.0, 3.0, 0.0]


def test_backward_hold_discharge_throughput_by_hand():
    # Backward: I[k] flowed during (t[k-1], t[k]]. Discharge Ah per interval:
    # (0,600]: 1 A x 600 s = 1/6 Ah; (600,1800]: charge; (1800,2400]: charge; (2400,4200]: 0.
    out = model("eq_cycles", nominal_capacity_ah=2.0).process(logical_frame(TIME, CURRENT))
    expected = np.array([0.0, 1 / 6, 1 / 6, 1 / 6, 1 / 6]) / 2.0
    np.testing.assert_allclose(out["eq_cycles"].to_numpy(), expected, rtol=0, atol=1e-12)


def test_forward_hold_discharge_throughput_by_hand():
    # Forward: I[k] holds over [t[k], t[k+1]): 2 A x 600 s + 1 A x 1200 s = 2/3 Ah discharged.
    out = model("eq_cycles", nominal_capacity_ah=2.0, current_hold="forward").process(logical_frame(TIME, CURRENT))
    expected = np.array([0.0, 1 / 3, 2 / 3, 2 / 3, 2 / 3]) / 2.0
    np.testing.assert_allclose(out["eq_cycles"].to_numpy(), expected, rtol=0, atol=1e-12)


def test_mean_throughput_with_efficiency_and_soh_by_hand():
    # Forward hold, mean mode, eta 0.9, SOH 0.8 (Q = 1.6 Ah):
    # discharged 2/3 Ah; charged 1 A x 600 s + 3 A x 1800 s = 1/6 + 3/2 = 5/3 Ah.
    params = dict(nominal_capacity_ah=2.0, soh=0.8, throughput="mean", coulombic_efficiency=0.9,
                  current_hold="forward")
    out = model("eq_cycles", **params).process(logical_frame(TIME, CURRENT))["eq_cycles"].to_numpy()
    q = 1.6
    expected = np.array([
        0.0,
        (1 / 3) / (2 * q),
        (2 / 3) / (2 * q),
        (2 / 3 + 0.9 * 1 / 6) / (2 * q),
        (2 / 3 + 0.9 * 5 / 3) / (2 * q),
    ])
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)


def test_full_cycle_counts_one_in_mean_mode_whatever_the_efficiency():
    # Discharge Q, then charge Q/eta (what a cell with coulombic efficiency eta needs to refill).
    eta, q = 0.95, 3.0
    time_s = [0.0, 3600.0, 3600.0 + 3600.0 / eta]
    current = [0.0, -q, q]
    out = model("eq_cycles", nominal_capacity_ah=q, throughput="mean", coulombic_efficiency=eta)
    assert out.process(logical_frame(time_s, current))["eq_cycles"].iloc[-1] == pytest.approx(1.0, abs=1e-12)


def test_soh_input_per_sample_overrides_the_parameter():
    # Backward hold: each interval is counted against the SOH reported with it; NaN keeps the last.
    frame = logical_frame([0.0, 3600.0, 7200.0, 10800.0], [0.0, -1.0, -1.0, -1.0], soh=[1.0, 0.5, np.nan, 1.0])
    out = model("eq_cycles", nominal_capacity_ah=1.0, soh=0.9).process(frame)["eq_cycles"].to_numpy()
    np.testing.assert_allclose(out, [0.0, 2.0, 4.0, 5.0], atol=1e-12)


def test_gaps_longer_than_max_gap_integrate_nothing():
    frame = logical_frame([0.0, 10.0, 20.0, 7220.0, 7230.0], [0.0, -1.0, -1.0, -1.0, -1.0])
    out = model("eq_cycles", nominal_capacity_ah=1.0, max_gap_s=600.0).process(frame)["eq_cycles"].to_numpy()
    np.testing.assert_allclose(out * 3600.0, [0.0, 10.0, 20.0, 20.0, 30.0], atol=1e-9)


def test_time_going_backwards_is_refused():
    with pytest.raises(ValueError, match="time goes backwards"):
        model("eq_cycles", nominal_capacity_ah=1.0).process(logical_frame([0.0, 10.0, 5.0], [0.0, -1.0, -1.0]))


@settings(max_examples=60, deadline=None)
@given(
    currents=st.lists(st.floats(-50, 50, allow_nan=False), min_size=2, max_size=60),
    steps=st.lists(st.floats(0.0, 900.0, allow_nan=False), min_size=60, max_size=60),
    split=st.integers(1, 59),
    hold=st.sampled_from(["backward", "forward"]),
    throughput=st.sampled_from(["discharge", "mean"]),
)
def test_non_decreasing_and_incremental_equals_full(currents, steps, split, hold, throughput):
    n = len(currents)
    time_s = np.cumsum(steps[:n])
    frame = logical_frame(time_s, currents)
    params = dict(nominal_capacity_ah=2.5, current_hold=hold, throughput=throughput, initial_value=12.5,
                  coulombic_efficiency=0.98)
    full = model("eq_cycles", **params).process(frame)["eq_cycles"].to_numpy()
    assert np.all(np.diff(full) >= 0)
    assert full[0] == 12.5
    split = min(split, n - 1)
    first = model("eq_cycles", **params)
    head = first.process(frame.iloc[:split])["eq_cycles"].to_numpy()
    second = model("eq_cycles", **params)
    tail = second.process(frame.iloc[split:], state=first.last_state)["eq_cycles"].to_numpy()
    np.testing.assert_array_equal(np.concatenate([head, tail]), full)
    assert second.last_state["eq_cycles"] == full[-1]
