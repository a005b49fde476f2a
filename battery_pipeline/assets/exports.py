"""Exports for other labs' tools: a cell's validated samples as Battery Data Format files.

Materialized on demand (no automation): select cells in the UI, or run
`battery-pipeline export --bdf DIR`, which writes the same files with the same function.
"""

import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from battery_pipeline.partitions import cell_partitions
from battery_pipeline.resources import DATA_DIR, WAREHOUSE_POOL, Warehouse
from battery_pipeline.science.bdf_export import write_bdf

EXPORTS_GROUP = "exports"


def default_bdf_dir() -> str:
    return os.environ.get("BATTERY_PIPELINE_BDF_DIR", str(DATA_DIR / "exports" / "bdf"))


class BdfExportConfig(dg.Config):
    directory: str = Field(default_factory=default_bdf_dir, description="folder of the .bdf.parquet files")
    csv: bool = Field(default=False, description="also write .bdf.csv")


@dg.asset(
    deps=["validated_samples"],
    partitions_def=cell_partitions,
    group_name=EXPORTS_GROUP,
    pool=WAREHOUSE_POOL,
    kinds={"parquet", "csv"},
    description="The cell's validated samples as a Battery Data Format file (spec labels and file naming), for other labs' tools.",
)
def bdf_exports(context: dg.AssetExecutionContext, config: BdfExportConfig, warehouse: Warehouse):
    key = context.partition_key
    validated = warehouse.query("SELECT count(*) AS n FROM validated_cells WHERE cell_id = ?", [key]) \
        if warehouse.table_exists("validated_cells") else None
    if validated is None or not int(validated["n"].iloc[0]):
        raise dg.Failure(f"cell {key!r} has no validated samples: materialize validated_samples first", allow_retries=False)
    samples = warehouse.read_partition("validated_samples", "cell_id", key)
    written = write_bdf(samples, Path(config.directory), key, csv=config.csv)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(samples),
            "files": dg.MetadataValue.json([str(p) for p in written]),
            "format": "Battery Data Format (battery-data-alliance/battery-data-format), written by science/bdf_export.py",
        }
    )
