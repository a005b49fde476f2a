"""SOC per cell from relaxed voltage at rests fused with coulomb counting (method: README.md).

Rest voltage: each cell's mean reading over the last `ocv_average_s` of a long rest (at most its
last sixth), read through the OCV table at the rest's temperature.

Anchor rule (inverse-variance fusion, a scalar Kalman update per cell at each long rest):

  counted  z_c = previous estimate + coulomb-counted change, variance
           P_c = P_prev + (counting_sigma_rel * Ah counted / Q + current_offset_sigma_a * hours / Q)^2
           (Ah counted = charge throughput |I| dt since the previous anchor: capacity and current
           gain errors scale with it, a current offset with time);
  OCV      z_o = OCV^-1(relaxed voltage), variance
           R = (ocv_voltage_sigma_v / |dOCV/dSOC at z_o|)^2 (a flat curve: a few mV are several % SOC);
  fused    w = P_c / (P_c + R) (the anchor weight, 0..1), z = z_c + w (z_o - z_c), P = (1 - w) P_c.

With no estimate before the first anchor (no `initial_soc`), the first anchor has weight 1 and
its variance is R: on a flat part of the curve (the LFP plateau) the stated uncertainty `soc_sigma`
stays large until an anchor on a steeper part (or enough counting-consistent anchors) narrows it.
`ocv_voltage_sigma_v` = 0 gives every anchor weight 1 (the OCV replaces the count, as before
version 1.1). `soc_sigma` is only as honest as the error parameters: on real cells after short
rests or with hysteresis the rest voltage can be tens of mV off the table (README).
"""

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
from battery_pipeline.science.twin.rests import detect_rests, rest_cell_soc, table_at

ANCHOR_COLUMNS = ["start_time_s", "end_time_s", "cell", "temperature_c", "ocv_v", "ocv_soc", "ocv_slope_v",
                  "ocv_sigma", "counted_soc", "counted_sigma", "weight", "soc", "soc_sigma"]
MIN_SLOPE_V = 1e-6  # dOCV/dSOC floor (V per unit SOC), so that a flat table gives a finite variance


def _capacity_as(data: pd.DataFrame, params: dict) -> np.ndarray:
    return 3600.0 * params["nominal_capacity_ah"] * soh_per_sample(data, params["soh"])


def counted_soc(data: pd.DataFrame, params: dict) -> np.ndarray:
    """Cumulative SOC change at each sample since the first (sample and hold, eta on charge)."""
    current = np.nan_to_num(data["current"].to_numpy(dtype="float64"), nan=0.0)
    stored = np.where(current > 0, params["coulombic_efficiency"] * current, current)
    steps = held_increments(data["time"].to_numpy(dtype="float64"), stored / _capacity_as(data, params),
                            params["current_hold"], params["max_gap_s"])
    return np.cumsum(steps)


def counting_drift(data: pd.DataFrame, params: dict) -> np.ndarray:
    """Cumulative 1-sigma bound of the counting error (SOC units) at each sample since the first:
    counting_sigma_rel x throughput / Q plus current_offset_sigma_a x time / Q. The counting
    uncertainty between two samples is the difference of its values there."""
    current = np.abs(np.nan_to_num(data["current"].to_numpy(dtype="float64"), nan=0.0))
    rate = (params["counting_sigma_rel"] * current + params["current_offset_sigma_a"]) / _capacity_as(data, params)
    steps = held_increments(data["time"].to_numpy(dtype="float64"), rate, params["current_hold"], params["max_gap_s"])
    return np.cumsum(steps)


def fuse(prior_soc: np.ndarray, prior_var: np.ndarray, ocv_soc: np.ndarray,
         ocv_var: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse-variance fusion per cell: (soc, variance, weight of the OCV value).

    No prior (NaN or infinite variance): the OCV value with weight 1. No OCV value (NaN): the
    prior with weight 0."""
    no_prior = ~np.isfinite(prior_soc) | ~np.isfinite(prior_var)
    with np.errstate(invalid="ignore", divide="ignore"):
        weight = np.where(no_prior, 1.0, prior_var / (prior_var + ocv_var))
    weight = np.where(prior_var + ocv_var == 0, 1.0, weight)  # both exact: take the measurement
    weight = np.where(np.isnan(ocv_soc), 0.0, weight)
    with np.errstate(invalid="ignore"):  # inf x 0 in the branches np.where discards
        soc = np.where(weight == 0, prior_soc,
                       np.where(weight == 1, ocv_soc, prior_soc + weight * (ocv_soc - prior_soc)))
        var = np.where(weight == 0, prior_var, np.where(weight == 1, ocv_var, (1.0 - weight) * prior_var))
    return soc, var, weight


@register_model("soc_ocv_estimation")
class SocOcvEstimation(TwinModel):
    def process(self, data, state=None):
        p = self.params
        cells = input_columns(data, "cell_voltages")
        n, n_cells = len(data), cells.shape[1]
        time_s = data["time"].to_numpy(dtype="float64")
        counted = counted_soc(data, p)
        drift = counting_drift(data, p)
        temperature = mean_temperature(data, p["default_temperature_c"])
        rests = detect_rests(time_s, data["current"].to_numpy(dtype="float64"),
                             p["rest_current_a"], p["rest_min_duration_s"], p["current_hold"])
        ocv_at_rest, soc_at_rest, rest_temp = rest_cell_soc(rests, cells, temperature, p["chemistry"],
                                                            time_s=time_s, average_s=p["ocv_average_s"])
        ocv_soc = soc_at_rest.to_numpy()
        slopes = np.array([table_at(p["chemistry"], t).slope(row) for t, row in zip(rest_temp, ocv_soc)])
        slopes = np.maximum(slopes.reshape(ocv_soc.shape), MIN_SLOPE_V)
        ocv_var = (p["ocv_voltage_sigma_v"] / slopes) ** 2

        ends = rests["end"].to_numpy()
        n_rests = len(ends)
        fused = np.full((n_rests, n_cells), np.nan)
        fused_var = np.full((n_rests, n_cells), np.inf)
        prior_soc = np.full((n_rests, n_cells), np.nan)
        prior_var = np.full((n_rests, n_cells), np.inf)
        weights = np.zeros((n_rests, n_cells))
        # The estimate carried into each anchor: initial_soc at sample 0, then the previous anchor.
        if p["initial_soc"] is not None:
            soc_prev = np.full(n_cells, float(p["initial_soc"]))
            var_prev = np.full(n_cells, float(p["initial_soc_sigma"]) ** 2)
            at_prev = 0
        else:
            soc_prev, var_prev, at_prev = np.full(n_cells, np.nan), np.full(n_cells, np.inf), 0
        for i, end in enumerate(ends):
            prior_soc[i] = np.clip(soc_prev + (counted[end] - counted[at_prev]), 0.0, 1.0)
            prior_var[i] = var_prev + (drift[end] - drift[at_prev]) ** 2
            fused[i], fused_var[i], weights[i] = fuse(prior_soc[i], prior_var[i], ocv_soc[i], ocv_var[i])
            soc_prev, var_prev, at_prev = fused[i], fused_var[i], end

        # Anchor governing each sample: the last rest that has begun by then.
        governing = np.searchsorted(rests["start"].to_numpy(), np.arange(n), side="right") - 1
        soc = np.full((n, n_cells), np.nan)
        var = np.full((n, n_cells), np.nan)
        anchored = governing >= 0
        if n_rests:
            # Before the first rest: the first anchor counted backwards, unless initial_soc is set.
            use = np.where(anchored, governing, 0)
            base = ends[use]
            soc[:] = fused[use] + (counted - counted[base])[:, None]
            var[:] = fused_var[use] + ((drift - drift[base]) ** 2)[:, None]
        if p["initial_soc"] is not None:
            before = ~anchored
            soc[before] = p["initial_soc"] + counted[before, None]
            var[before] = p["initial_soc_sigma"] ** 2 + (drift[before, None]) ** 2
        soc = np.clip(soc, 0.0, 1.0)
        sigma = np.sqrt(var)
        sigma[np.isnan(soc)] = np.nan

        anchor = np.zeros(n, dtype=bool)
        anchor[ends] = True
        ocv = np.full((n, n_cells), np.nan)
        ocv[ends] = ocv_at_rest.to_numpy()
        soc_cells = pd.DataFrame(soc, index=data.index, columns=cells.columns)
        names = np.asarray(cells.columns, dtype=object)
        anchors = pd.DataFrame({
            "start_time_s": np.repeat(rests["start_time_s"].to_numpy(), n_cells),
            "end_time_s": np.repeat(rests["end_time_s"].to_numpy(), n_cells),
            "cell": np.tile(names, n_rests).astype(str),
            "temperature_c": np.repeat(rest_temp, n_cells),
            "ocv_v": ocv_at_rest.to_numpy().ravel(),
            "ocv_soc": ocv_soc.ravel(),
            "ocv_slope_v": slopes.ravel(),
            "ocv_sigma": np.sqrt(ocv_var).ravel(),
            "counted_soc": prior_soc.ravel(),
            "counted_sigma": np.where(np.isfinite(prior_var), np.sqrt(prior_var), np.nan).ravel(),
            "weight": weights.ravel(),
            "soc": soc[ends].ravel() if n_rests else np.empty(0),
            "soc_sigma": sigma[ends].ravel() if n_rests else np.empty(0),
        }, columns=ANCHOR_COLUMNS)
        return {
            "soc_cells": soc_cells,
            "soc_pack": soc_cells.mean(axis=1).rename("soc_pack"),
            "ocv_v": pd.DataFrame(ocv, index=data.index, columns=cells.columns),
            "rest_anchor": pd.Series(anchor, index=data.index, name="rest_anchor"),
            "soc_sigma": pd.DataFrame(sigma, index=data.index, columns=cells.columns),
            "anchors": anchors,
        }
