"""The one Definitions object of the code location (loaded by `dagster dev` via workspace.yaml)."""

import dagster as dg

from battery_pipeline.assets import features, ingest, validation
from battery_pipeline.jobs import cell_pipeline_job, register_sources_job
from battery_pipeline.resources import SourceCatalog, Warehouse

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([ingest, validation, features]),
    jobs=[cell_pipeline_job, register_sources_job],
    resources={"warehouse": Warehouse(), "catalog": SourceCatalog()},
)
