"""available_energy: E(SOC) = capacity x SOH x integral of OCV, per cell and pack."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from battery_pipeline.science.twin.base import column_name
from battery_pipeline.science.twin.ocv import CHEMISTRIES, ocv_table
from battery_pipeline_tests.science.twin.twin_data import model


def soc_frame(**cells) -> pd.DataFrame:
    return pd.DataFrame({column_name("soc", cid): np.asarray(v, dtype=float) for cid, v in cells.items()})


@pytest.mark.parametrize("chemistry", CHEMISTRIES)
def test_energy_is_zero_when_empty_increasing_and_the_ocv_integral(chemistry):
    soc = np.linspace(0.0, 1.0, 101)
    out = model("available_energy", chemistry=chemistry, nominal_capacity_ah=3.0).process(soc_frame(c1=soc))
    energy = out["energy_cells_wh"]["c1"].to_numpy()
    assert energy[0] == 0.0
    assert np.all(np.diff(energy) > 0)
    table = ocv_table(chemistry, 25.0)
    # The table is linear between its own knots (0.005 apart), so the trapezoid over them is exact.
    full = 3.0 * np.trapezoid(table.ocv_v, table.soc)
    assert energy[-1] == pytest.approx(full, rel=1e-12)
    # Full: capacity x mean OCV over the window, between capacity x OCV(0) and capacity x OCV(1).
    assert 3.0 * table.ocv(0.0) < energy[-1] < 3.0 * table.ocv(1.0)
    to_half = table.soc <= 0.5
    half = 3.0 * np.trapezoid(table.ocv_v[to_half], table.soc[to_half])
    assert energy[50] == pytest.approx(half, rel=1e-12)


def test_soh_scales_energy_and_the_pack_is_the_sum_unless_a_cell_is_unknown():
    frame = soc_frame(c1=[0.5, 0.5, 0.5], c2=[0.8, 0.8, np.nan])
    frame["soh"] = [1.0, 0.8, 0.8]
    out = model("available_energy", chemistry="NMC", nominal_capacity_ah=2.0).process(frame)
    cells, pack = out["energy_cells_wh"], out["energy_pack_wh"]
    assert cells["c1"].iloc[1] == pytest.approx(0.8 * cells["c1"].iloc[0])
    assert pack.iloc[0] == pytest.approx(cells.iloc[0].sum())
    assert np.isnan(cells["c2"].iloc[2]) and np.isnan(pack.iloc[2])
    # NMC at 2 Ah, half full: about 2 Ah x 0.5 x ~3.5 V.
    assert 3.0 < cells["c1"].iloc[0] < 4.0
