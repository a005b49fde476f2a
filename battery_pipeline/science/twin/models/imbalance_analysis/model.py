"""Cell imbalance: voltage spread, SOC spread at rests with confidence, weakest cell, trend."""

from __future__ import annotations

import numpy as np
import pandas as pd

from battery_pipeline.science.twin.base import TwinModel, input_columns, mean_temperature, register_model
from battery_pipeline.science.twin.rests import detect_rests, rest_cell_soc, table_at

REST_COLUMNS = ["start_time_s", "end_time_s", "temperature_c", "voltage_spread_v", "soc_mean", "soc_spread",
                "weakest_cell", "strongest_cell", "confidence"]
CELL_SOC_COLUMNS = ["end_time_s", "cell", "ocv_v", "soc", "soc_offset", "confidence"]
SECONDS_PER_DAY = 86400.0


def soc_confidence(slope_v_per_soc: np.ndarray, voltage_noise_v: float, soc_resolution: float) -> np.ndarray:
    """1 / (1 + (sigma_SOC / resolution)^2) with sigma_SOC = voltage noise / dOCV/dSOC."""
    sigma_soc = voltage_noise_v / np.maximum(slope_v_per_soc, 1e-12)
    return 1.0 / (1.0 + (sigma_soc / soc_resolution) ** 2)


def extreme_cells(soc: np.ndarray, names: np.ndarray, lowest: bool) -> np.ndarray:
    """Per row, the cell with the lowest (or highest) SOC; None where no cell has a reading."""
    filled = np.nan_to_num(soc, nan=np.inf if lowest else -np.inf)
    picked = names[np.argmin(filled, axis=1) if lowest else np.argmax(filled, axis=1)] if soc.size else names[:0]
    return np.where(np.isnan(soc).all(axis=1), None, picked) if soc.size else picked


@register_model("imbalance_analysis")
class ImbalanceAnalysis(TwinModel):
    def process(self, data, state=None):
        p = self.params
        cells = input_columns(data, "cell_voltages")
        # pandas skips missing readings and gives NaN (no warning) where a sample has none.
        spread = (cells.max(axis=1) - cells.min(axis=1)).astype("float64").rename("voltage_spread_v")

        rests = detect_rests(data["time"].to_numpy(dtype="float64"), data["current"].to_numpy(dtype="float64"),
                             p["rest_current_a"], p["rest_min_duration_s"], p["current_hold"])
        temperature = mean_temperature(data, p["default_temperature_c"])
        ocv, soc, rest_temp = rest_cell_soc(rests, cells, temperature, p["chemistry"])
        soc_v = soc.to_numpy()
        slopes = np.array([table_at(p["chemistry"], t).slope(row) for t, row in zip(rest_temp, soc_v)])
        confidence = soc_confidence(slopes.reshape(soc_v.shape), p["voltage_noise_v"], p["soc_resolution"])
        mean = soc.mean(axis=1).to_numpy()
        offsets = soc_v - mean[:, None]

        names = np.asarray(cells.columns, dtype=object)
        rest_rows = pd.DataFrame({
            "start_time_s": rests["start_time_s"].to_numpy(),
            "end_time_s": rests["end_time_s"].to_numpy(),
            "temperature_c": rest_temp,
            "voltage_spread_v": spread.to_numpy()[rests["end"].to_numpy()],
            "soc_mean": mean,
            "soc_spread": soc.max(axis=1).to_numpy() - soc.min(axis=1).to_numpy(),
            "weakest_cell": extreme_cells(soc_v, names, lowest=True),
            "strongest_cell": extreme_cells(soc_v, names, lowest=False),
            "confidence": pd.DataFrame(confidence).min(axis=1).to_numpy() if len(rests) else [],
        }, columns=REST_COLUMNS)

        n_cells = len(names)
        cell_rows = pd.DataFrame({
            "end_time_s": np.repeat(rests["end_time_s"].to_numpy(), n_cells),
            "cell": np.tile(names, len(rests)),
            "ocv_v": ocv.to_numpy().ravel(),
            "soc": soc_v.ravel(),
            "soc_offset": offsets.ravel(),
            "confidence": confidence.ravel(),
        }, columns=CELL_SOC_COLUMNS)

        return {"voltage_spread_v": spread, "rests": rest_rows, "cell_soc": cell_rows,
                "summary": self._summary(rest_rows, offsets, names)}

    def _summary(self, rests: pd.DataFrame, offsets: np.ndarray, names: np.ndarray) -> pd.DataFrame:
        confident = (rests["confidence"] >= self.params["min_confidence"]).to_numpy()
        row = {"n_rests": len(rests), "n_confident_rests": int(confident.sum()), "weakest_cell": None,
               "strongest_cell": None, "soc_offset_weakest": np.nan, "soc_offset_strongest": np.nan,
               "last_soc_spread": np.nan, "soc_spread_trend_per_day": np.nan,
               "mean_confidence": float(rests["confidence"].mean()) if len(rests) else np.nan}
        if confident.any():
            # A cell's standing is its mean offset over the rests we trust, not one rest's reading.
            mean_offset = np.nanmean(offsets[confident], axis=0)
            weakest, strongest = int(np.nanargmin(mean_offset)), int(np.nanargmax(mean_offset))
            row.update(weakest_cell=names[weakest], strongest_cell=names[strongest],
                       soc_offset_weakest=float(mean_offset[weakest]),
                       soc_offset_strongest=float(mean_offset[strongest]),
                       last_soc_spread=float(rests["soc_spread"].to_numpy()[confident][-1]))
            days = rests["end_time_s"].to_numpy()[confident] / SECONDS_PER_DAY
            spreads = rests["soc_spread"].to_numpy()[confident]
            if len(np.unique(days)) >= 2:
                row["soc_spread_trend_per_day"] = float(np.polyfit(days, spreads, 1)[0])
        return pd.DataFrame([row])
