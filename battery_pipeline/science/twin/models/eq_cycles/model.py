"""Equivalent full cycles from charge throughput (convention and integration: README.md)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from battery_pipeline.science.twin.base import TwinModel, held_increments, register_model, soh_per_sample


@register_model("eq_cycles")
class EqCycles(TwinModel):
    def cycle_rate(self, current_a, capacity_ah):
        """Equivalent cycles per second while `current_a` flows in a cell of `capacity_ah`."""
        p = self.params
        current_a = np.asarray(current_a, dtype="float64")
        discharge = np.maximum(-current_a, 0.0)
        if p["throughput"] == "discharge":
            return discharge / (3600.0 * capacity_ah)
        charge = p["coulombic_efficiency"] * np.maximum(current_a, 0.0)
        return (discharge + charge) / (2.0 * 3600.0 * capacity_ah)

    def process(self, data, state=None):
        p = self.params
        time_s = data["time"].to_numpy(dtype="float64")
        current = np.nan_to_num(data["current"].to_numpy(dtype="float64"), nan=0.0)
        capacity_ah = p["nominal_capacity_ah"] * soh_per_sample(data, p["soh"])
        previous = None
        start = p["initial_value"]
        if state is not None:
            previous = (state["time_s"], float(self.cycle_rate(state["current_a"], state["capacity_ah"])))
            start = state["eq_cycles"]
        steps = held_increments(time_s, self.cycle_rate(current, capacity_ah), p["current_hold"], p["max_gap_s"],
                                previous)
        # One sequential cumulative sum from the start value, so batches add up bit for bit.
        values = np.cumsum(np.concatenate(([start], steps)))[1:]
        if len(data):
            self.last_state = {"eq_cycles": float(values[-1]), "time_s": float(time_s[-1]),
                               "current_a": float(current[-1]), "capacity_ah": float(capacity_ah[-1])}
        else:
            self.last_state = dict(state) if state is not None else None
        return {"eq_cycles": pd.Series(values, index=data.index, name="eq_cycles")}
