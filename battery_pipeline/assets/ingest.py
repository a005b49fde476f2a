"""Ingest: cycler files -> `cells` registry, `raw_samples`, `cell_impedance`, `source_cycle_summaries`
(per cell partition): the asset specs and what the UI shows of each cell.

The reading is `science.readers` (through `science.cell_chain`), the grouping `science.sources`;
`assets.cell_pipeline` computes and stores the stages, this module describes them.
"""


import hashlib
import json

import dagster as dg
import pandas as pd

from battery_pipeline.assets.metadata import StageReport, frame_preview, table_schema
from battery_pipeline.checks.data_quality import frame_shape_check
from battery_pipeline.checks.governance import check_spec
from battery_pipeline.lineage import files_hash, lineage_metadata
from battery_pipeline.science.cell_chain import CellOutcome
from battery_pipeline.science.schema import CellCycleSample, CellImpedance, CellRecord
from battery_pipeline.science.sources import CellSource

INGEST_GROUP = "ingest"

CELLS_SPECS = (
    dg.AssetSpec(
        "cells",
        group_name=INGEST_GROUP,
        kinds={"duckdb", "pandas"},
        description=(
            "Registry of cells: chemistry, rated capacity, voltage window, dataset, licence, and where "
            "each value came from (sidecar, the file, a dataset rule matched on name + layout + values, "
            "inferred, or unknown). A `<file or cell>.cell.json` sidecar next to the data overrides."
        ),
        metadata={"dagster/column_schema": table_schema(CellRecord)},
    ),
)
RAW_SPECS = (
    dg.AssetSpec(
        "raw_samples",
        group_name=INGEST_GROUP,
        kinds={"duckdb", "pandas"},
        description=(
            "Every sample of the cell's source files in the canonical schema (SI units, "
            "+ = charge), with file and row provenance. Nothing is judged or dropped here."
        ),
        metadata={"dagster/column_schema": table_schema(CellCycleSample)},
    ),
    dg.AssetSpec(
        "cell_impedance",
        group_name=INGEST_GROUP,
        kinds={"duckdb", "pandas"},
        description=(
            "Cell-level resistance measurements (e.g. NASA impedance operations: Re, Rct), "
            "kept apart from the samples, with the cycle each one follows."
        ),
        metadata={"dagster/column_schema": table_schema(CellImpedance)},
    ),
    dg.AssetSpec(
        "source_cycle_summaries",
        group_name=INGEST_GROUP,
        kinds={"duckdb", "pandas"},
        description=(
            "Per-cycle tables of summary-level sources (no raw samples, e.g. the XJTU feature "
            "tables), in the cycle_features layout; empty for cycler sources."
        ),
    ),
)
RAW_CHECKS = (check_spec("raw_schema_conformance", "raw_samples"),)


def describe_cells(frame: pd.DataFrame) -> StageReport:
    record = frame.iloc[0]
    metadata = {
        "chemistry": "unknown" if pd.isna(record["chemistry"]) else str(record["chemistry"]),
        "nominal_capacity_ah": None if pd.isna(record["nominal_capacity_ah"]) else float(record["nominal_capacity_ah"]),
        "voltage_window_v": f"{record['voltage_min_v']:g}-{record['voltage_max_v']:g}",
        "dataset": "unknown" if pd.isna(record["dataset"]) else str(record["dataset"]),
        "metadata_origin": str(record["metadata_origin"]),
        # where each value came from: sidecar / file / dataset rule (evidence) / inferred / unknown
        "chemistry_source": str(record["chemistry_source"]),
        "nominal_capacity_source": str(record["nominal_capacity_source"]),
        "voltage_window_source": str(record["voltage_window_source"]),
        # the record is everything this asset derives from (reader defaults + sidecar)
        **lineage_metadata("sha256:" + hashlib.sha256(
            json.dumps(record.to_dict(), sort_keys=True, default=str).encode()
        ).hexdigest()),
    }
    return StageReport({"cells": metadata})


def describe_raw(source: CellSource, outcome: CellOutcome) -> StageReport:
    samples = outcome.tables["raw_samples"]
    summary = outcome.tables["source_cycle_summaries"]
    n = len(samples)
    read_seconds = outcome.read_seconds or 0.0
    lineage = lineage_metadata(files_hash(source.files))
    return StageReport(
        {
            "raw_samples": {
                "dagster/row_count": n,
                "format": source.format_name,
                "files": dg.MetadataValue.json([p.name for p in source.files]),
                "cycles": int(samples["cycle_number"].nunique()) if n else 0,
                "duration_h": float(samples["time_s"].max() - samples["time_s"].min()) / 3600 if n else 0.0,
                "read_seconds": round(read_seconds, 3),
                "samples_per_second": round(n / read_seconds) if read_seconds > 0 else None,
                "preview": frame_preview(samples),
                **lineage,
            },
            "cell_impedance": {"dagster/row_count": len(outcome.tables["cell_impedance"]), **lineage},
            "source_cycle_summaries": {"dagster/row_count": len(summary), **lineage},
        },
        [frame_shape_check(samples)],
    )
