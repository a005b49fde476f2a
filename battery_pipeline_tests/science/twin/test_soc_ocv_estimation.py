"""soc_ocv_estimation on hand-built data: anchors at long rests, their weights (fusion with the
count), the averaged rest voltage, counting between and before."""

from __future__ import annotations

import numpy as np
import pytest

from battery_pipeline.science.twin.ocv import ocv_table
from battery_pipeline_tests.science.twin.twin_data import logical_frame, model

DT = 60.0
Q = 2.0


def profile():
    """(time, current, true SOC of two cells) for: rest 5 min, discharge 30 min at 2 A, rest 40 min,
    charge 20 min at 1 A, rest 10 min (too short), discharge 15 min at 1 A. Backward hold."""
    segments = [(5, 0.0), (30, -2.0), (40, 0.0), (20, 1.0), (10, 0.0), (15, -1.0)]
    current = np.concatenate([[0.0]] + [np.full(n, i) for n, i in segments])
    time_s = np.arange(len(current)) * DT
    counted = np.cumsum(current) * DT / (3600.0 * Q)
    soc = np.array([0.80, 0.74])[None, :] + counted[:, None]
    return time_s, current, soc


def cell_voltages(time_s, current, soc, temperature_c=25.0, chemistry="NMC"):
    """OCV plus an overpotential that relaxes with a 5-min time constant once the current stops."""
    table = ocv_table(chemistry, temperature_c)
    since_current = np.zeros(len(current))
    for k in range(1, len(current)):
        since_current[k] = 0.0 if current[k] != 0 else since_current[k - 1] + DT
    last_current = np.maximum.accumulate(np.where(current != 0, np.arange(len(current)), 0))
    overpotential = 0.03 * current[last_current] * np.exp(-since_current / 300.0)
    return {f"cell_{i + 1:02d}": table.ocv(soc[:, i]) + overpotential for i in range(soc.shape[1])}


def run(temperature_c=25.0, mapped_temperature=True, **params):
    time_s, current, soc = profile()
    temps = {"t1": temperature_c} if mapped_temperature else None
    frame = logical_frame(time_s, current, cell_voltages(time_s, current, soc, temperature_c), temps)
    out = model("soc_ocv_estimation", chemistry="NMC", nominal_capacity_ah=Q, **params).process(frame)
    return out, soc


def test_one_anchor_at_the_end_of_the_long_rest_only():
    out, soc = run()
    anchors = np.flatnonzero(out["rest_anchor"].to_numpy())
    # Samples 0..5 rest 5 min (too short), 6..35 discharge, 36..75 rest (40 min: anchor at 75),
    # 76..95 charge, 96..105 rest 10 min (too short), 106..120 discharge.
    assert anchors.tolist() == [75]
    ocv = out["ocv_v"]
    assert ocv.notna().sum().tolist() == [1, 1]
    # After 40 min the 5-min overpotential is 0.03 V x 2 x e^-7.8 ~ 2.5e-5 V: the anchor is the OCV.
    np.testing.assert_allclose(out["soc_cells"].to_numpy()[75], soc[75], atol=5e-4)


def test_counting_forward_and_backward_from_the_anchor_matches_the_truth():
    out, soc = run()
    est = out["soc_cells"].to_numpy()
    # Capacity is exact here, so counting adds no error: every sample within the anchor's error.
    np.testing.assert_allclose(est, soc, atol=5e-4)
    np.testing.assert_allclose(out["soc_pack"].to_numpy(), soc.mean(axis=1), atol=5e-4)
    assert list(out["soc_cells"].columns) == ["cell_01", "cell_02"]


def test_initial_soc_governs_before_the_first_anchor_and_is_fused_with_it():
    # A start SOC 0.3 off the truth: with a wide stated uncertainty the anchor takes over; with the
    # default 0.05 it is fused by inverse variance, the anchor still weighing ~99.8 %.
    out, soc = run(initial_soc=0.5, initial_soc_sigma=1.0)
    est = out["soc_cells"].to_numpy()
    counted_to_36 = soc[:36, 0] - soc[0, 0]
    np.testing.assert_allclose(est[:36, 0], 0.5 + counted_to_36, atol=1e-12)
    np.testing.assert_allclose(est[36:], soc[36:], atol=5e-4)  # the rest's anchor governs from its start
    out, soc = run(initial_soc=0.5)
    anchor = out["anchors"].iloc[0]
    # Prior: 0.05 plus counting over 30 min at 2 A (1 Ah) and 75 min of offset, on 2 Ah.
    counted_sigma = np.hypot(0.05, 0.03 * 1.0 / Q + 0.01 * 75 / 60 / Q)
    assert anchor.counted_sigma == pytest.approx(counted_sigma, rel=1e-9)
    assert anchor.counted_soc == pytest.approx(0.5 + soc[75, 0] - soc[0, 0], abs=1e-12)
    weight = counted_sigma ** 2 / (counted_sigma ** 2 + anchor.ocv_sigma ** 2)
    assert anchor.weight == pytest.approx(weight, rel=1e-9) and 0.99 < weight < 1.0
    assert anchor.soc == pytest.approx(anchor.counted_soc + weight * (anchor.ocv_soc - anchor.counted_soc), abs=1e-12)
    assert anchor.soc_sigma == pytest.approx(np.sqrt((1 - weight) * counted_sigma ** 2), rel=1e-9)


def test_without_a_long_rest_soc_is_unknown_unless_initial_soc_is_given():
    out, _ = run(rest_min_duration_s=3 * 3600.0)
    assert not out["rest_anchor"].any()
    assert out["soc_cells"].isna().all().all()
    out, soc = run(rest_min_duration_s=3 * 3600.0, initial_soc=0.8)
    np.testing.assert_allclose(out["soc_cells"].to_numpy()[:, 0], soc[:, 0], atol=1e-12)


def test_the_rest_temperature_selects_the_ocv_table():
    # Voltages made with the 0 degC table: read at the measured 0 degC, SOC is right; read at the
    # default 25 degC (no temperature mapped), it is off by the tables' difference.
    at_zero, soc = run(temperature_c=0.0)
    np.testing.assert_allclose(at_zero["soc_cells"].to_numpy()[75], soc[75], atol=5e-4)
    unmapped, _ = run(temperature_c=0.0, mapped_temperature=False)
    assert np.abs(unmapped["soc_cells"].to_numpy()[75] - soc[75]).max() > 0.01


def test_soc_is_clipped_to_the_unit_interval():
    # A capacity far too small makes counting overshoot; the estimate stays a valid SOC.
    time_s, current, soc = profile()
    frame = logical_frame(time_s, current, cell_voltages(time_s, current, soc))
    out = model("soc_ocv_estimation", chemistry="NMC", nominal_capacity_ah=0.2).process(frame)
    values = out["soc_cells"].to_numpy()
    assert values.max() == 1.0 and values.min() >= 0.0


def test_unknown_chemistry_is_refused_by_the_parameter_check():
    with pytest.raises(ValueError, match="'NiMH' is not one of LFP, NMC, NCA, LCO"):
        model("soc_ocv_estimation", chemistry="NiMH", nominal_capacity_ah=1.0)


def lfp_profile():
    """Two LFP cells, 60 s sampling: rest 40 min at the steep top of the curve (SOC 0.96/0.94),
    discharge 30 min at 2 A (half of a 2 Ah cell), rest 40 min on the plateau, discharge 10 min."""
    segments = [(40, 0.0), (30, -2.0), (40, 0.0), (10, -1.0)]
    current = np.concatenate([[0.0]] + [np.full(n, i) for n, i in segments])
    time_s = np.arange(len(current)) * DT
    soc = np.array([0.96, 0.94])[None, :] + (np.cumsum(current) * DT / (3600.0 * Q))[:, None]
    return time_s, current, soc


def run_lfp(plateau_error_v=0.0, chemistry="LFP", **params):
    time_s, current, soc = lfp_profile()
    cells = cell_voltages(time_s, current, soc, chemistry=chemistry)
    cells["cell_01"][71:111] += plateau_error_v  # the second rest (samples 71..110) reads off
    frame = logical_frame(time_s, current, cells, {"t1": 25.0})
    out = model("soc_ocv_estimation", chemistry=chemistry, nominal_capacity_ah=Q, **params).process(frame)
    return out, soc


def test_an_anchor_on_a_flat_curve_weighs_less_than_the_counting_it_corrects():
    out, soc = run_lfp(plateau_error_v=0.003)
    anchors = out["anchors"].set_index(["end_time_s", "cell"])
    t1, t2 = sorted(out["anchors"].end_time_s.unique())
    steep, flat = anchors.loc[(t1, "cell_01")], anchors.loc[(t2, "cell_01")]
    # No estimate before the first anchor: it is taken whole, with the uncertainty its slope gives.
    assert steep.weight == 1.0 and np.isnan(steep.counted_soc)
    assert steep.soc_sigma == pytest.approx(0.002 / steep.ocv_slope_v, rel=1e-9) and steep.soc_sigma < 0.005
    # On the plateau 3 mV are ~5 % SOC: the anchor's share is small, the estimate stays close.
    raw_error = abs(flat.ocv_soc - soc[110, 0])
    assert raw_error > 0.03 and flat.ocv_sigma > 0.02 and flat.weight < 0.5
    assert abs(out["soc_cells"]["cell_01"].iloc[110] - soc[110, 0]) < 0.5 * raw_error
    assert flat.soc_sigma > steep.soc_sigma
    # The uncertainty grows with the Ah counted after an anchor and shrinks at the next one.
    sigma = out["soc_sigma"]["cell_01"].to_numpy()
    assert np.all(np.diff(sigma[40:71]) > 0) and sigma[110] < sigma[109]


def test_the_same_voltage_error_on_a_sloped_curve_is_trusted():
    # NMC at mid SOC (~0.8 V per unit SOC): 3 mV cost under 0.5 % SOC, and the anchor weighs ~1.
    out, soc = run_lfp(plateau_error_v=0.003, chemistry="NMC")
    second = out["anchors"].iloc[2]
    assert second.cell == "cell_01" and second.weight > 0.95 and second.ocv_sigma < 0.005
    assert abs(second.soc - soc[110, 0]) < 0.005


def test_the_rest_voltage_is_the_mean_over_the_rests_tail():
    time_s, current, soc = lfp_profile()
    cells = cell_voltages(time_s, current, soc, chemistry="LFP")
    # +-2 mV alternating sensor noise: cancels in the mean of an even number of readings.
    cells["cell_02"] = cells["cell_02"] + 0.002 * (-1.0) ** np.arange(len(time_s))
    frame = logical_frame(time_s, current, cells)
    averaged = model("soc_ocv_estimation", chemistry="LFP", nominal_capacity_ah=Q, ocv_average_s=300.0).process(frame)
    last = model("soc_ocv_estimation", chemistry="LFP", nominal_capacity_ah=Q, ocv_average_s=0.0).process(frame)
    at = 110  # end of the second rest; the window is its last 300 s: samples 105..110
    assert averaged["ocv_v"]["cell_02"].iloc[at] == pytest.approx(cells["cell_02"][105:111].mean(), abs=1e-12)
    assert last["ocv_v"]["cell_02"].iloc[at] == cells["cell_02"][at]
    # The mean is the noiseless voltage to within the (tiny) relaxation left over those 5 minutes.
    noiseless = cell_voltages(time_s, current, soc, chemistry="LFP")["cell_02"]
    assert abs(averaged["ocv_v"]["cell_02"].iloc[at] - noiseless[at]) < 1e-4


def test_the_average_never_reaches_back_beyond_the_last_sixth_of_the_rest():
    time_s, current, soc = lfp_profile()
    cells = cell_voltages(time_s, current, soc, chemistry="LFP")
    frame = logical_frame(time_s, current, cells)
    out = model("soc_ocv_estimation", chemistry="LFP", nominal_capacity_ah=Q, ocv_average_s=3600.0).process(frame)
    # Second rest: current stopped at t(70) = 4200 s, last sample t(110) = 6600 s: 2400 s, a sixth is 400 s.
    window = cells["cell_01"][(time_s >= 6600 - 400) & (np.arange(len(time_s)) <= 110)]
    assert len(window) == 7
    assert out["ocv_v"]["cell_01"].iloc[110] == pytest.approx(window.mean(), abs=1e-12)


def test_a_cell_without_a_reading_in_a_rest_carries_its_count():
    time_s, current, soc = lfp_profile()
    cells = cell_voltages(time_s, current, soc, chemistry="LFP")
    cells["cell_02"][71:111] = np.nan
    frame = logical_frame(time_s, current, cells)
    out = model("soc_ocv_estimation", chemistry="LFP", nominal_capacity_ah=Q).process(frame)
    row = out["anchors"].iloc[3]
    assert row.cell == "cell_02" and row.weight == 0.0 and np.isnan(row.ocv_v)
    assert row.soc == pytest.approx(row.counted_soc, abs=1e-12) and row.soc_sigma == pytest.approx(row.counted_sigma)
    est = out["soc_cells"]["cell_02"].to_numpy()
    assert est[110] - est[40] == pytest.approx(soc[110, 1] - soc[40, 1], abs=1e-12)
