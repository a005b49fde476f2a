"""imbalance_analysis: SOC offsets at rests, confidence from the OCV slope, weakest cell, trend."""

from __future__ import annotations

import numpy as np
import pytest

from battery_pipeline.science.twin.ocv import ocv_table
from battery_pipeline_tests.science.twin.twin_data import logical_frame, model
from battery_pipeline.science.twin.models.imbalance_analysis.model import soc_confidence


def daily_rests(chemistry, socs_per_day):
    """One 1-h rest a day (two samples an hour apart, I = 0), then a discharge sample that ends it.
    socs_per_day: (days, cells) true SOC during each day's rest."""
    table = ocv_table(chemistry, 25.0)
    times, currents, volts = [], [], []
    for day, socs in enumerate(np.asarray(socs_per_day)):
        base = day * 86400.0
        for dt, current in ((0.0, 0.0), (3600.0, 0.0), (3660.0, -1.0)):
            times.append(base + dt)
            currents.append(current)
            volts.append(table.ocv(socs) - (0.02 if current else 0.0))
    volts = np.array(volts)
    cells = {f"cell_{i + 1:02d}": volts[:, i] for i in range(volts.shape[1])}
    return logical_frame(times, currents, cells)


def test_offsets_weakest_strongest_and_voltage_spread():
    socs = np.array([[0.60, 0.55, 0.63], [0.50, 0.45, 0.53]])
    frame = daily_rests("NMC", socs)
    out = model("imbalance_analysis", chemistry="NMC").process(frame)
    rests, cells, summary = out["rests"], out["cell_soc"], out["summary"].iloc[0]
    assert len(rests) == 2 and len(cells) == 6
    expected = (socs - socs.mean(axis=1, keepdims=True)).ravel()
    np.testing.assert_allclose(cells.soc_offset.to_numpy(), expected, atol=1e-3)
    np.testing.assert_allclose(rests.soc_spread.to_numpy(), [0.08, 0.08], atol=1e-3)
    assert rests.weakest_cell.tolist() == ["cell_02", "cell_02"]
    assert rests.strongest_cell.tolist() == ["cell_03", "cell_03"]
    assert (summary.weakest_cell, summary.strongest_cell) == ("cell_02", "cell_03")
    assert summary.soc_offset_weakest == pytest.approx(0.55 - (0.60 + 0.55 + 0.63) / 3, abs=1e-3)
    v = frame.filter(like="cell_voltages").to_numpy()
    np.testing.assert_allclose(out["voltage_spread_v"].to_numpy(), v.max(axis=1) - v.min(axis=1))


def test_trend_of_the_soc_spread_per_day():
    # The spread grows by 1 % SOC a day: cell_02 loses 0.01 a day relative to the others.
    days = np.arange(5)
    socs = np.stack([np.full(5, 0.6), 0.6 - 0.01 * days, np.full(5, 0.6)], axis=1)
    out = model("imbalance_analysis", chemistry="NMC").process(daily_rests("NMC", socs))
    summary = out["summary"].iloc[0]
    assert summary.n_rests == 5 and summary.n_confident_rests == 5
    assert summary.soc_spread_trend_per_day == pytest.approx(0.01, abs=1e-3)
    assert summary.last_soc_spread == pytest.approx(0.04, abs=1e-3)


def test_confidence_is_in_the_unit_interval_and_low_on_the_lfp_plateau():
    nmc, lfp = ocv_table("NMC", 25.0), ocv_table("LFP", 25.0)
    soc = np.linspace(0, 1, 201)
    for table in (nmc, lfp):
        c = soc_confidence(table.slope(soc), 0.002, 0.01)
        assert np.all((c > 0) & (c <= 1))
    # Mid-SOC: LFP's plateau hides SOC in millivolts; NMC's slope does not.
    assert soc_confidence(lfp.slope(0.5), 0.002, 0.01) < 0.3 < 0.8 < soc_confidence(nmc.slope(0.5), 0.002, 0.01)
    # The formula: confidence 0.5 exactly where sigma_V / slope equals the resolution.
    assert soc_confidence(np.array([0.2]), 0.002, 0.01)[0] == pytest.approx(0.5)

    socs = [[0.5, 0.52, 0.48]]
    on_nmc = model("imbalance_analysis", chemistry="NMC").process(daily_rests("NMC", socs))["rests"]
    on_lfp = model("imbalance_analysis", chemistry="LFP").process(daily_rests("LFP", socs))["rests"]
    assert 0 <= on_lfp.confidence.iloc[0] < on_nmc.confidence.iloc[0] <= 1


def test_without_confident_rests_the_summary_names_no_cell():
    socs = [[0.5, 0.52, 0.48]]
    out = model("imbalance_analysis", chemistry="LFP", min_confidence=0.99).process(daily_rests("LFP", socs))
    summary = out["summary"].iloc[0]
    assert summary.n_rests == 1 and summary.n_confident_rests == 0
    assert summary.weakest_cell is None and np.isnan(summary.soc_spread_trend_per_day)


def test_missing_readings_fall_back_to_the_cells_last_reading_in_the_rest():
    socs = np.array([[0.60, 0.55, 0.63]])
    frame = daily_rests("NMC", socs)
    frame.loc[1, "cell_voltages:cell_02"] = np.nan  # the rest's last reading of cell_02 is lost
    frame.loc[2, ["cell_voltages:cell_01", "cell_voltages:cell_02", "cell_voltages:cell_03"]] = np.nan
    out = model("imbalance_analysis", chemistry="NMC").process(frame)
    cells = out["cell_soc"].set_index("cell")
    assert cells.soc.to_numpy() == pytest.approx(socs[0], abs=1e-3)  # cell_02 from the rest's first sample
    assert np.isnan(out["voltage_spread_v"].iloc[2])  # no reading at all: spread unknown
