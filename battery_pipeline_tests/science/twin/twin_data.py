"""Small builders for twin-model tests: a model by name, and frames in the logical input layout."""

from __future__ import annotations

import numpy as np
import pandas as pd

from battery_pipeline.science.twin.base import column_name
from battery_pipeline.science.twin.registry import discover_models


def model(name: str, **params):
    return discover_models()[name](params)


def logical_frame(time_s, current=None, cells: dict | None = None, temperatures: dict | None = None,
                  **columns) -> pd.DataFrame:
    """A resolved input frame: `time`, `current`, `cell_voltages:<id>`, `temperatures:<id>`, extras."""
    data = {"time": np.asarray(time_s, dtype="float64")}
    if current is not None:
        data["current"] = np.asarray(current, dtype="float64")
    for cid, values in (cells or {}).items():
        data[column_name("cell_voltages", cid)] = np.asarray(values, dtype="float64")
    for sid, values in (temperatures or {}).items():
        data[column_name("temperatures", sid)] = np.broadcast_to(np.asarray(values, dtype="float64"), len(time_s))
    data.update(columns)
    return pd.DataFrame(data)
