"""Open-circuit energy above empty, per cell and pack, from SOC and the OCV table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from battery_pipeline.science.twin.base import TwinModel, input_columns, register_model, soh_per_sample
from battery_pipeline.science.twin.rests import table_at

GRID_POINTS = 2001


def ocv_energy_curve(chemistry: str, temperature_c: float) -> tuple[np.ndarray, np.ndarray]:
    """(SOC grid, integral of OCV from 0 to each grid SOC) in V x unit SOC."""
    grid = np.linspace(0.0, 1.0, GRID_POINTS)
    ocv = table_at(chemistry, temperature_c).ocv(grid)
    steps = 0.5 * (ocv[1:] + ocv[:-1]) * np.diff(grid)
    return grid, np.concatenate(([0.0], np.cumsum(steps)))


@register_model("available_energy")
class AvailableEnergy(TwinModel):
    def process(self, data, state=None):
        p = self.params
        soc = input_columns(data, "soc")
        grid, integral = ocv_energy_curve(p["chemistry"], p["temperature_c"])
        capacity_ah = p["nominal_capacity_ah"] * soh_per_sample(data, p["soh"])
        values = soc.to_numpy(dtype="float64")
        # np.interp maps NaN to NaN, so unknown SOC stays unknown energy.
        energy = np.interp(np.clip(values, 0.0, 1.0), grid, integral) * capacity_ah[:, None]
        cells = pd.DataFrame(energy, index=data.index, columns=soc.columns)
        pack = cells.sum(axis=1, min_count=cells.shape[1]).where(~cells.isna().any(axis=1))
        return {"energy_cells_wh": cells, "energy_pack_wh": pack.rename("energy_pack_wh")}
