"""Jobs: what a user launches, and what the runner and sensors request."""


import dagster as dg

from battery_pipeline.partitions import cell_partitions
from battery_pipeline.resources import SourceCatalog

# The main job: every per-cell asset that exists so far, for one cell partition per run.
cell_pipeline_job = dg.define_asset_job(
    "cell_pipeline_job",
    selection=dg.AssetSelection.groups("ingest", "features"),
    description=(
        "Everything per cell: cells registry, raw, validated and quarantined samples, "
        "per-cycle features and curves, labels."
    ),
)


@dg.op(description="Scan the data folders and add a `cells` partition for every cell source found.")
def register_cell_sources(context: dg.OpExecutionContext, catalog: SourceCatalog) -> list[str]:
    found = catalog.discover()
    known = set(context.instance.get_dynamic_partitions(cell_partitions.name))
    new = [key for key in found.keys() if key not in known]
    if new:
        context.instance.add_dynamic_partitions(cell_partitions.name, new)
    problems = {s.partition_key: s.problem for s in found if s.problem}
    context.add_output_metadata(
        {
            "cells_found": len(found),
            "new_partitions": dg.MetadataValue.json(new),
            "unreadable_files": dg.MetadataValue.json(problems),
        }
    )
    return new


@dg.job(description="Register cell partitions for the files in the data folders (no data is read).")
def register_sources_job():
    register_cell_sources()
