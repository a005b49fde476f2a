"""Ingest: cycler files -> `cells` registry, `raw_samples`, `cell_impedance` (per cell partition).

Thin Dagster layer: the reading is `science.readers`, the grouping `science.sources`; this module
only looks up the partition's files, calls them, stores the frames and describes the result.
"""


import hashlib
import json
import time

import dagster as dg
import pandas as pd

from battery_pipeline.assets.metadata import frame_preview, table_schema
from battery_pipeline.checks.governance import check_spec
from battery_pipeline.lineage import files_hash, lineage_metadata
from battery_pipeline.partitions import cell_partitions
from battery_pipeline.resources import DUCKDB_POOL, SourceCatalog, Warehouse
from battery_pipeline.assets.metadata import typed_feature_frame
from battery_pipeline.science.features import CYCLE_FEATURE_COLUMNS
from battery_pipeline.science.readers import SourceFormatError
from battery_pipeline.science.schema import (
    CELL_COLUMNS,
    IMPEDANCE_COLUMNS,
    CellCycleSample,
    CellImpedance,
    CellRecord,
)
from battery_pipeline.science.sources import CellSource, cell_record

INGEST_GROUP = "ingest"


def source_for_partition(context: dg.AssetExecutionContext, catalog: SourceCatalog) -> CellSource:
    key = context.partition_key
    try:
        return catalog.discover()[key]
    except KeyError as exc:
        raise dg.Failure(
            description=f"cell partition {key!r} has no source files any more: {exc}",
            allow_retries=False,
        ) from None


def failure_for(source: CellSource, exc: Exception) -> dg.Failure:
    """A clear, non-retried failure naming the file and the problem, for this partition only."""
    return dg.Failure(
        description=str(exc),
        metadata={
            "files": dg.MetadataValue.json([str(p) for p in source.files]),
            "format": source.format_name or "unknown",
        },
        allow_retries=False,
    )


def summary_table(summary: pd.DataFrame | None) -> pd.DataFrame:
    """A source's per-cycle table in the cycle_features layout (+ provenance), fixed types."""
    columns = [*CYCLE_FEATURE_COLUMNS, "source_file", "source_row"]
    frame = summary.reindex(columns=columns) if summary is not None else pd.DataFrame(columns=columns)
    return typed_feature_frame(frame)


@dg.asset(
    partitions_def=cell_partitions,
    pool=DUCKDB_POOL,
    group_name=INGEST_GROUP,
    kinds={"duckdb", "pandas"},
    description=(
        "Registry of cells: chemistry, rated capacity, voltage window, dataset, licence, and where "
        "each value came from (sidecar, the file, a dataset rule matched on name + layout + values, "
        "inferred, or unknown). A `<file or cell>.cell.json` sidecar next to the data overrides."
    ),
    metadata={"dagster/column_schema": table_schema(CellRecord)},
)
def cells(context: dg.AssetExecutionContext, catalog: SourceCatalog, warehouse: Warehouse) -> dg.MaterializeResult:
    source = source_for_partition(context, catalog)
    try:
        if source.problem:
            raise SourceFormatError(source.files[0], source.problem)
        frame = pd.DataFrame([cell_record(source)], columns=CELL_COLUMNS)
    except SourceFormatError as exc:
        raise failure_for(source, exc) from exc
    frame = CellRecord.validate(frame)
    warehouse.replace_partition("cells", frame, "cell_id", source.partition_key)
    record = frame.iloc[0]
    return dg.MaterializeResult(
        metadata={
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
                json.dumps(frame.iloc[0].to_dict(), sort_keys=True, default=str).encode()
            ).hexdigest()),
        }
    )


@dg.multi_asset(
    specs=[
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
    ],
    partitions_def=cell_partitions,
    pool=DUCKDB_POOL,
    check_specs=[
        check_spec("raw_schema_conformance", "raw_samples")
    ],
)
def raw_samples(context: dg.AssetExecutionContext, catalog: SourceCatalog, warehouse: Warehouse):
    from battery_pipeline.checks.data_quality import frame_shape_check

    source = source_for_partition(context, catalog)
    started = time.perf_counter()
    try:
        result = source.reader.read(list(source.files), source.partition_key)
    except SourceFormatError as exc:
        raise failure_for(source, exc) from exc
    read_seconds = time.perf_counter() - started
    samples = result.samples
    shape = frame_shape_check(samples)
    impedance = CellImpedance.validate(
        result.impedance if result.impedance is not None else pd.DataFrame(columns=IMPEDANCE_COLUMNS)
    )
    warehouse.replace_partitions(
        {
            "raw_samples": samples,
            "cell_impedance": impedance[IMPEDANCE_COLUMNS],
            # summary-level sources carry a per-cycle table instead of samples; empty otherwise
            "source_cycle_summaries": summary_table(result.cycle_summary),
        },
        "cell_id",
        source.partition_key,
    )

    n = len(samples)
    lineage = lineage_metadata(files_hash(source.files))
    yield dg.MaterializeResult(
        asset_key="raw_samples",
        metadata={
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
    )
    yield dg.MaterializeResult(
        asset_key="cell_impedance", metadata={"dagster/row_count": len(impedance), **lineage}
    )
    yield dg.MaterializeResult(
        asset_key="source_cycle_summaries",
        metadata={"dagster/row_count": 0 if result.cycle_summary is None else len(result.cycle_summary), **lineage},
    )
    yield shape
