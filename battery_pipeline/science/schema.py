"""Canonical tables of the pipeline: one pandera model per table, the single source of truth.

`data/cell_cycle_schema.json` is *exported* from `CellCycleSample` (`python -m
battery_pipeline.science.schema`) and a test proves the committed file equals the export, so the
JSON Schema that outside tools read can never drift from what the pipeline validates.

Conventions every reader must honour (and say so in its docstring):
  - units V, A, degC, Ah, s;
  - current positive = charge, negative = discharge;
  - `time_s` relative to the start of the cell's test, continuing across the files of one test;
  - `cycle_number` continuous across those files;
  - `step_type` in {charge, discharge, rest};
  - provenance: `source_file` (file name, never a full path) and `source_row` (0-based data row in
    that file, so a rejected sample can be found again by opening the file).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing.pandas import Series

STEP_TYPES = ("charge", "discharge", "rest")

# Hard physical envelopes: no lithium-ion cell under test is ever outside these, so a value beyond
# them is a unit or parsing error, not a measurement. Chemistry-specific windows are applied in
# `validation.py` on top of these.
TEMPERATURE_RANGE_C = (-40.0, 90.0)
VOLTAGE_ENVELOPE_V = (0.0, 5.5)


class CellCycleSample(pa.DataFrameModel):
    """One measured sample of one cell (a row of a cycler export)."""

    cell_id: Series[str] = pa.Field(
        description="Cell identifier, also the Dagster partition key (sanitized: [A-Za-z0-9_.-])",
        str_matches=r"^[A-Za-z0-9_.\-]+$",
    )
    cycle_number: Series[int] = pa.Field(
        ge=0, description="Cycle index, continuous across all files of one cell's test"
    )
    step_index: Series[int] = pa.Field(
        ge=0,
        description="Index of the cycler step (program line); derived from step_type changes where the source has none",
    )
    step_type: Series[str] = pa.Field(
        isin=list(STEP_TYPES), description="charge, discharge or rest"
    )
    time_s: Series[float] = pa.Field(
        ge=0, description="Seconds since the start of the cell's test"
    )
    voltage_v: Series[float] = pa.Field(description="Terminal voltage, V")
    current_a: Series[float] = pa.Field(
        description="Current, A; positive = charge, negative = discharge"
    )
    temperature_c: Series[float] = pa.Field(
        nullable=True, description="Cell (or, failing that, chamber) temperature, degC"
    )
    capacity_ah: Series[float] = pa.Field(
        nullable=True,
        ge=0,
        description=(
            "Charge moved in the sample's direction since its cycle began, Ah (Arbin "
            "Charge/Discharge_Capacity convention); null where the source records none"
        ),
    )
    internal_resistance_ohm: Series[float] = pa.Field(
        nullable=True,
        description="Internal resistance reported by the cycler, ohm; null where not measured",
    )
    source_file: Series[str] = pa.Field(description="Name of the file the sample came from")
    source_row: Series[int] = pa.Field(ge=0, description="0-based data row in source_file")

    class Config:
        strict = True  # no unknown columns: the column set is the contract
        ordered = True  # DuckDB tables are created in this order


SAMPLE_COLUMNS: list[str] = list(CellCycleSample.to_schema().columns)
# Low-cardinality text columns, held as pandas Categorical in memory: a 20 M-row frame then
# costs a few bytes per row for them instead of a Python object each.
STRING_COLUMNS = ("cell_id", "step_type", "source_file")

def float_values(frame: pd.DataFrame, name: str) -> np.ndarray:
    """A numeric column as float64 with NaN for nulls; a view, not a copy, when it already is."""
    column = frame[name]
    if column.dtype == np.float64:
        return column.to_numpy()  # to_numpy with na_value would copy
    return column.to_numpy(dtype="float64", na_value=np.nan)


def column_differences(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(missing, unexpected) columns of a frame against the canonical sample columns."""
    missing = [c for c in SAMPLE_COLUMNS if c not in frame.columns]
    unexpected = [c for c in frame.columns if c not in SAMPLE_COLUMNS]
    return missing, unexpected


# Physical-rule fields: a missing value here makes the sample unusable.
REQUIRED_MEASUREMENTS = ("time_s", "voltage_v", "current_a")


class QuarantinedSample(CellCycleSample):
    """A rejected sample, kept verbatim with why it was rejected (never silently dropped)."""

    reason_code: Series[str] = pa.Field(description="Machine-readable rule that rejected the row")
    reason: Series[str] = pa.Field(description="Human-readable explanation naming the value")

    class Config:
        strict = True
        ordered = True


QUARANTINE_COLUMNS: list[str] = list(QuarantinedSample.to_schema().columns)


class CellImpedance(pa.DataFrameModel):
    """A cell-level resistance measurement (e.g. a NASA impedance operation), not a sample."""

    cell_id: Series[str]
    time_s: Series[float] = pa.Field(description="Seconds since the start of the cell's test")
    cycle_number: Series[int] = pa.Field(ge=0, description="The charge/discharge cycle it follows")
    re_ohm: Series[float] = pa.Field(nullable=True, description="Electrolyte resistance Re, ohm")
    rct_ohm: Series[float] = pa.Field(nullable=True, description="Charge-transfer resistance Rct, ohm")
    source_file: Series[str]

    class Config:
        strict = True
        ordered = True
        coerce = True


IMPEDANCE_COLUMNS: list[str] = list(CellImpedance.to_schema().columns)


class CellRecord(pa.DataFrameModel):
    """Registry row describing one cell (`cells` asset)."""

    cell_id: Series[str]
    dataset: Series[str] = pa.Field(nullable=True)
    source_format: Series[str]
    chemistry: Series[str] = pa.Field(nullable=True, description="LCO, NMC, NCA, LFP, ...")
    nominal_capacity_ah: Series[float] = pa.Field(
        nullable=True, gt=0, description="Rated capacity, Ah; null = unknown (no current check)"
    )
    # 0 V where no chemistry is known: lithium's envelope (`chemistry.GENERIC_LI_ION_WINDOW_V`)
    voltage_min_v: Series[float] = pa.Field(ge=0, description="Lower limit of the operating window")
    voltage_max_v: Series[float] = pa.Field(gt=0, description="Upper limit of the operating window")
    max_abs_current_a: Series[float] = pa.Field(
        nullable=True, gt=0, description="Plausible |current| limit; null = derived from capacity"
    )
    licence: Series[str] = pa.Field(nullable=True)
    citation: Series[str] = pa.Field(nullable=True)
    description: Series[str] = pa.Field(nullable=True)
    source_files: Series[str] = pa.Field(description="JSON list of the files of this cell")
    metadata_origin: Series[str] = pa.Field(
        description="Where the limits came from: reader defaults, sidecar file, chemistry table"
    )
    chemistry_source: Series[str] = pa.Field(
        description="Where the chemistry came from: sidecar / file / dataset rule (with its evidence) / unknown"
    )
    nominal_capacity_source: Series[str] = pa.Field(
        description="Where the rated capacity came from: sidecar / file / dataset rule (with its evidence) / unknown"
    )
    voltage_window_source: Series[str] = pa.Field(
        description="Where the voltage window came from: sidecar / file / dataset rule / inferred from the chemistry / unknown"
    )
    stated_cycle_life: Series[pd.Int64Dtype] = pa.Field(
        nullable=True, gt=0, description="Cycles to end of life as the source states it (its own definition); null = not stated"
    )
    stated_cycle_life_source: Series[str] = pa.Field(
        description="Where the stated cycle life came from: sidecar / file (which line) / unknown (why)"
    )
    ambient_temperature_c: Series[float] = pa.Field(
        nullable=True, ge=-60, le=100, description="Temperature around the cell (chamber set point, room), degC; null = not stated"
    )
    ambient_temperature_source: Series[str] = pa.Field(
        description="Where the ambient temperature came from: sidecar / file / dataset rule (e.g. the chamber folder) / unknown"
    )

    class Config:
        strict = True
        ordered = True
        coerce = True  # a record with unknown (None) capacity must still be a float column


CELL_COLUMNS: list[str] = list(CellRecord.to_schema().columns)


def empty_samples() -> pd.DataFrame:
    """A zero-row frame with the canonical columns and dtypes."""
    return pd.DataFrame(
        {
            "cell_id": pd.Series(dtype=str),
            "cycle_number": pd.Series(dtype="int64"),
            "step_index": pd.Series(dtype="int64"),
            "step_type": pd.Series(dtype=str),
            "time_s": pd.Series(dtype="float64"),
            "voltage_v": pd.Series(dtype="float64"),
            "current_a": pd.Series(dtype="float64"),
            "temperature_c": pd.Series(dtype="float64"),
            "capacity_ah": pd.Series(dtype="float64"),
            "internal_resistance_ohm": pd.Series(dtype="float64"),
            "source_file": pd.Series(dtype=str),
            "source_row": pd.Series(dtype="int64"),
        }
    )[SAMPLE_COLUMNS]


_JSON_TYPES = {"str": "string", "int64": "integer", "float64": "number"}


def sample_json_schema() -> dict:
    """JSON Schema (draft 2020-12) of one canonical sample, derived from `CellCycleSample`."""
    schema = CellCycleSample.to_schema()
    properties: dict[str, dict] = {}
    required: list[str] = []
    for name, column in schema.columns.items():
        json_type = _JSON_TYPES[str(column.dtype)]
        prop: dict = {"type": [json_type, "null"] if column.nullable else json_type}
        if column.description:
            prop["description"] = column.description
        for check in column.checks:
            stats = check.statistics
            if check.name == "greater_than_or_equal_to":
                prop["minimum"] = stats["min_value"]
            elif check.name == "greater_than":
                prop["exclusiveMinimum"] = stats["min_value"]
            elif check.name == "isin":
                prop["enum"] = sorted(stats["allowed_values"])
            elif check.name == "str_matches":
                prop["pattern"] = stats["pattern"]
            else:  # keep the export honest: an unmapped check must be mapped, not dropped
                raise ValueError(f"no JSON Schema mapping for pandera check {check.name!r}")
        properties[name] = prop
        if not column.nullable:
            required.append(name)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://battery-pipeline.local/schemas/cell_cycle_schema.json",
        "title": "CellCycleSample",
        "description": (CellCycleSample.__doc__ or "").strip()
        + " Units: V, A, degC, Ah, s. Current positive = charge.",
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
        "x-column-order": SAMPLE_COLUMNS,
    }


def write_json_schema(path: Path) -> None:
    path.write_text(json.dumps(sample_json_schema(), indent=2) + "\n")


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("data/cell_cycle_schema.json")
    write_json_schema(target)
    print(f"wrote {target}")
