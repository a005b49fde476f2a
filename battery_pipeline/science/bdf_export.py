"""Write a canonical sample frame as a Battery Data Format (BDF) file.

Spec: https://github.com/battery-data-alliance/battery-data-format (README, ontology 1.3.0).
  - one cell per file (README "Defining the BDF": "Each file contains time-series data for one
    and only one cell");
  - header = the quantity's preferred label (README "Data structure"; FAQ "Which label should I
    use"), SI units fixed by the spec;
  - name `InstitutionCode__CellName__YYYYMMDD_XXX` (README "File naming conventions") with the
    `.bdf` prefix before the serialization's extension: `.bdf.parquet`, `.bdf.csv` (README
    "File extension").

Canonical column -> BDF quantity:
  time_s -> Test Time / s; voltage_v -> Voltage / V; current_a -> Current / A (both conventions
  are positive = charge, so no sign change); cycle_number -> Cycle Count / 1; step_index ->
  Step ID (the canonical step index is the cycler's program step or a step-change counter; Step
  ID is the spec's term for an instrument-defined step number that may recur); step_type ->
  Step Type (free text in BDF; we write charge / discharge / rest); temperature_c ->
  Temperature T1 / degC (the canonical column is cell or chamber temperature, placement not
  recorded: T1 is the spec's "sensor placement is setup-defined" channel); capacity_ah ->
  Cycle Charging Capacity / Ah and Cycle Discharging Capacity / Ah ("resets to zero when
  cycle_count increments", non-negative: the running total of each direction within the cycle,
  held through the samples of the other direction and rests); internal_resistance_ohm ->
  Internal Resistance / ohm. All-null optional columns are left out.

What reading the export back with `readers.bdf` does not reproduce:
  - source_file / source_row point at the exported file and its rows, not the original source;
  - capacity_ah of a charge/discharge sample whose capacity was null comes back as the held
    running total of the cycle (BDF capacity counters are defined on every row), and so do
    samples whose step_type disagrees with the direction their capacity was counted in;
  - nothing else: values are written at full float64 precision (Parquet natively, CSV with
    the shortest round-trip repr).
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from battery_pipeline.science.schema import SAMPLE_COLUMNS

TEST_TIME = "Test Time / s"
VOLTAGE = "Voltage / V"
CURRENT = "Current / A"
CYCLE_COUNT = "Cycle Count / 1"
STEP_ID = "Step ID"
STEP_TYPE = "Step Type"
TEMPERATURE = "Temperature T1 / degC"
CYCLE_CHARGING_CAPACITY = "Cycle Charging Capacity / Ah"
CYCLE_DISCHARGING_CAPACITY = "Cycle Discharging Capacity / Ah"
INTERNAL_RESISTANCE = "Internal Resistance / ohm"

DEFAULT_INSTITUTION = "unknown"
_UNSAFE_NAME_PART = re.compile(r"[^A-Za-z0-9._-]+")
_FIELD_SEPARATOR = re.compile(r"_{2,}")


def _name_part(text: str) -> str:
    """A file-name field without `__` (the spec's field separator) or path characters."""
    cleaned = _FIELD_SEPARATOR.sub("_", _UNSAFE_NAME_PART.sub("-", str(text))).strip("-_.")
    return cleaned or "unknown"


def bdf_file_stem(cell_id: str, *, institution: str = DEFAULT_INSTITUTION,
                  test_date: dt.date | None = None, part: int = 1) -> str:
    """`InstitutionCode__CellName__YYYYMMDD_XXX`; the date defaults to today (the export date)
    because the canonical frame carries no calendar time."""
    day = (test_date or dt.date.today()).strftime("%Y%m%d")
    return f"{_name_part(institution)}__{_name_part(cell_id)}__{day}_{part:03d}"


def _held_cycle_capacity(capacity: np.ndarray, is_direction: np.ndarray, cycle: np.ndarray) -> np.ndarray:
    """Running Ah of one direction within each cycle, held on the other samples, 0 before the
    first sample of that direction in the cycle."""
    values = pd.Series(np.where(is_direction, capacity, np.nan))
    held = values.groupby(cycle).ffill()
    return held.fillna(0.0).to_numpy(dtype="float64")


def to_bdf_table(samples: pd.DataFrame) -> pd.DataFrame:
    """The canonical frame with BDF column labels (see the module docstring for the mapping)."""
    missing = [c for c in SAMPLE_COLUMNS if c not in samples.columns]
    if missing:
        raise ValueError(f"not a canonical sample frame: missing columns {missing}")
    if samples["cell_id"].nunique() > 1:
        raise ValueError(
            f"a BDF file holds one cell, the frame holds {samples['cell_id'].nunique()} cells"
        )
    cycle = samples["cycle_number"].to_numpy()
    step_type = samples["step_type"].astype(str).to_numpy()
    capacity = samples["capacity_ah"].to_numpy(dtype="float64", na_value=np.nan)
    table = pd.DataFrame(
        {
            TEST_TIME: samples["time_s"].to_numpy(dtype="float64"),
            VOLTAGE: samples["voltage_v"].to_numpy(dtype="float64"),
            CURRENT: samples["current_a"].to_numpy(dtype="float64"),
            CYCLE_COUNT: cycle.astype("int64"),
            STEP_ID: samples["step_index"].to_numpy(dtype="int64"),
            STEP_TYPE: step_type,
        }
    )
    if samples["temperature_c"].notna().any():
        table[TEMPERATURE] = samples["temperature_c"].to_numpy(dtype="float64", na_value=np.nan)
    if np.isfinite(capacity).any():
        table[CYCLE_CHARGING_CAPACITY] = _held_cycle_capacity(capacity, step_type == "charge", cycle)
        table[CYCLE_DISCHARGING_CAPACITY] = _held_cycle_capacity(capacity, step_type == "discharge", cycle)
    if samples["internal_resistance_ohm"].notna().any():
        table[INTERNAL_RESISTANCE] = samples["internal_resistance_ohm"].to_numpy(dtype="float64", na_value=np.nan)
    return table


def write_bdf(
    samples: pd.DataFrame,
    directory: Path | str,
    cell_id: str,
    *,
    csv: bool = False,
    institution: str = DEFAULT_INSTITUTION,
    test_date: dt.date | None = None,
) -> list[Path]:
    """Write one cell's canonical samples as `<stem>.bdf.parquet` (and `<stem>.bdf.csv` if
    `csv`), returning the paths written. `samples` should be validated samples of that cell."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    table = to_bdf_table(samples)
    stem = bdf_file_stem(cell_id, institution=institution, test_date=test_date)
    parquet_path = directory / f"{stem}.bdf.parquet"
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    # No pandas index metadata: the file is for any BDF reader, not for pandas round trips.
    arrow = arrow.replace_schema_metadata({b"bdf:cell_id": str(cell_id).encode()})
    pq.write_table(arrow, parquet_path)
    written = [parquet_path]
    if csv:
        csv_path = directory / f"{stem}.bdf.csv"
        table.to_csv(csv_path, index=False, float_format=None)
        written.append(csv_path)
    return written
