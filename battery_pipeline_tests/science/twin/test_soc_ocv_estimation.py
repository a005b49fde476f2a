"""soc_ocv_estimation on hand-built data: anchors at long rests, counting between and before."""

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


def cell_voltages(time_s, current, soc, temperature_c=25.0):
    """OCV plus an overpotential that relaxes with a 5-min time constant once the current stops."""
    table = ocv_table("NMC", temperature_c)
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


def test_initial_soc_governs_before_the_first_anchor():
    out, soc = run(initial_soc=0.5)
    est = out["soc_cells"].to_numpy()
    counted_to_36 = soc[:36, 0] - soc[0, 0]
    np.testing.assert_allclose(est[:36, 0], 0.5 + counted_to_36, atol=1e-12)
    np.testing.assert_allclose(est[36:], soc[36:], atol=5e-4)  # the rest's anchor governs from its start


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
