"""SOC per cell from relaxed voltage at rests plus coulomb counting (method: README.md)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from battery_pipeline.science.twin.base import (
    TwinModel,
    held_increments,
    input_columns,
    mean_temperature,
    register_model,
    soh_per_sample,
)
from battery_pipeline.science.twin.rests import detect_rests, rest_cell_soc


def counted_soc(data: pd.DataFrame, params: dict) -> np.ndarray:
    """Cumulative SOC change at each sample since the first (sample and hold, eta on charge)."""
    current = np.nan_to_num(data["current"].to_numpy(dtype="float64"), nan=0.0)
    capacity_as = 3600.0 * params["nominal_capacity_ah"] * soh_per_sample(data, params["soh"])
    stored = np.where(current > 0, params["coulombic_efficiency"] * current, current)
    steps = held_increments(data["time"].to_numpy(dtype="float64"), stored / capacity_as,
                            params["current_hold"], params["max_gap_s"])
    return np.cumsum(steps)


@register_model("soc_ocv_estimation")
class SocOcvEstimation(TwinModel):
    def process(self, data, state=None):
        p = self.params
        cells = input_columns(data, "cell_voltages")
        n = len(data)
        counted = counted_soc(data, p)
        temperature = mean_temperature(data, p["default_temperature_c"])
        rests = detect_rests(data["time"].to_numpy(dtype="float64"), data["current"].to_numpy(dtype="float64"),
                             p["rest_current_a"], p["rest_min_duration_s"], p["current_hold"])
        ocv_at_rest, soc_at_rest, _ = rest_cell_soc(rests, cells, temperature, p["chemistry"])

        ends = rests["end"].to_numpy()
        # Anchor governing each sample: the last rest that has begun by then.
        governing = np.searchsorted(rests["start"].to_numpy(), np.arange(n), side="right") - 1
        soc = np.full((n, cells.shape[1]), np.nan)
        if len(rests):
            anchored = governing >= 0
            # Before the first rest: the first anchor counted backwards, unless initial_soc is set.
            use = np.where(anchored, governing, 0)
            soc[:] = soc_at_rest.to_numpy()[use] + (counted - counted[ends[use]])[:, None]
            if p["initial_soc"] is not None:
                soc[~anchored] = p["initial_soc"] + counted[~anchored, None]
        elif p["initial_soc"] is not None:
            soc[:] = p["initial_soc"] + counted[:, None]
        soc = np.clip(soc, 0.0, 1.0)

        anchor = np.zeros(n, dtype=bool)
        anchor[ends] = True
        ocv = np.full((n, cells.shape[1]), np.nan)
        ocv[ends] = ocv_at_rest.to_numpy()
        soc_cells = pd.DataFrame(soc, index=data.index, columns=cells.columns)
        return {
            "soc_cells": soc_cells,
            "soc_pack": soc_cells.mean(axis=1).rename("soc_pack"),
            "ocv_v": pd.DataFrame(ocv, index=data.index, columns=cells.columns),
            "rest_anchor": pd.Series(anchor, index=data.index, name="rest_anchor"),
        }
