"""Small canonical cycler files written on the fly for tests (clean and deliberately dirty)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def cycling_frame(
    n_cycles: int = 3, points_per_step: int = 20, capacity_ah: float = 2.0, balanced: bool = False
) -> pd.DataFrame:
    """A plausible CC charge / rest / CC discharge / rest test of a 2 Ah NMC cell, in canonical columns.

    Each cycle's first sample is already 30 s into its charge, so the interval before it (across
    the cycle boundary) is never integrated and the charge falls one interval short of the
    discharge (coulombic efficiency 1.05: cycles the classifier calls part-charged). `balanced`
    opens every cycle with one rest sample instead: charge and discharge then balance, as on a
    real cycler, and every cycle after the first is a comparable full cycle."""
    rows = []
    t = 0.0
    steps = [("charge", 1.0, 3.4, 4.15), ("rest", 0.0, 4.15, 4.1), ("discharge", -1.0, 4.05, 3.0), ("rest", 0.0, 3.0, 3.2)]
    for cycle in range(n_cycles):
        if balanced:
            t += 30.0
            rows.append({"cycle_number": cycle, "step_index": 0, "step_type": "rest", "time_s": t, "voltage_v": 3.3,
                         "current_a": 0.0, "temperature_c": 25.0, "capacity_ah": np.nan})
        for step_index, (step_type, current, v0, v1) in enumerate(steps):
            for k in range(points_per_step):
                t += 30.0
                rows.append(
                    {
                        "cycle_number": cycle,
                        "step_index": step_index + int(balanced),
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


def xjtu_lookalike(datasets: Path, directory: Path, name: str, severson_cell: str = "cell1") -> Path:
    """Another lab's per-cycle summary table in the XJTU 17-column layout, from real data: the
    capacities of a Severson LFP cell (1.1 Ah; Q_d at 2.0 V of cycles 2-100, Attia et al.'s arrays)
    under the other 16 columns of a real XJTU table, i.e. a file an XJTU-layout sniffer accepts
    but whose capacities no 2.0 Ah XJTU cell has."""
    qdlin = np.loadtxt(datasets / "severson_qdlin" / "train" / f"{severson_cell}.csv", delimiter=",")
    capacity = qdlin[-1]  # row 999 = 2.0 V, the discharge's end: the cycle's capacity
    template = pd.read_csv(datasets / "xjtu_features" / "2C_battery-1.csv").head(len(capacity))
    table = template.assign(capacity=capacity[: len(template)])
    return write_csv(directory, name, table)


def store_cells(instance, data: Path, tmp: Path) -> dict:
    """Every cell file under `data` through `cell_pipeline` (one batch run) into a warehouse under
    `tmp`; returns the resources (warehouse, catalog, model_store) for the assets after it."""
    import dagster as dg

    from battery_pipeline.assets.cell_pipeline import cell_pipeline
    from battery_pipeline.partitions import cell_partitions
    from battery_pipeline.resources import ModelStore, SourceCatalog, Warehouse
    from battery_pipeline.science.sources import discover

    resources = {
        "warehouse": Warehouse(database=str(tmp / "warehouse.duckdb")),
        "catalog": SourceCatalog(data_dirs=[str(data)], use_demo_when_empty=False),
        "model_store": ModelStore(models_dir=str(tmp / "models"), results_dir=str(tmp / "results"), reports_dir=str(tmp / "reports")),
    }
    keys = discover([data]).keys()
    instance.add_dynamic_partitions(cell_partitions.name, keys)
    cells = dg.materialize(
        [cell_pipeline], instance=instance, resources=resources, raise_on_error=False,
        tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]},
    )
    assert cells.success
    return resources
