"""Small canonical cycler files written on the fly for tests (clean and deliberately dirty)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def cycling_frame(n_cycles: int = 3, points_per_step: int = 20, capacity_ah: float = 2.0) -> pd.DataFrame:
    """A plausible CC charge / rest / CC discharge / rest test of a 2 Ah NMC cell, in canonical columns."""
    rows = []
    t = 0.0
    for cycle in range(n_cycles):
        for step_index, (step_type, current, v0, v1) in enumerate(
            [("charge", 1.0, 3.4, 4.15), ("rest", 0.0, 4.15, 4.1), ("discharge", -1.0, 4.05, 3.0), ("rest", 0.0, 3.0, 3.2)]
        ):
            for k in range(points_per_step):
                t += 30.0
                rows.append(
                    {
                        "cycle_number": cycle,
                        "step_index": step_index,
                        "step_type": step_type,
                        "time_s": t,
                        "voltage_v": v0 + (v1 - v0) * k / (points_per_step - 1),
                        "current_a": current,
                        "temperature_c": 25.0 + 0.1 * k,
                        "capacity_ah": abs(current) * 30.0 * (k + 1) / 3600 if current else np.nan,
                    }
                )
    return pd.DataFrame(rows)


def write_csv(directory: Path, name: str, frame: pd.DataFrame) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    frame.to_csv(path, index=False)
    return path
