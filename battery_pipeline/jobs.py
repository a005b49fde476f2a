"""Jobs: what a user launches, and what the runner and sensors request."""


import dagster as dg

from battery_pipeline.executors import step_executor
from battery_pipeline.pack_resources import PackSourceCatalog
from battery_pipeline.partitions import cell_partitions, pack_partitions
from battery_pipeline.resources import SourceCatalog

# Executors (`executors.step_executor`, one place for every job). With the embedded DuckDB
# warehouse, every step that touches it queues on the one-slot duckdb pool, so steps in separate
# processes never ran side by side; each only paid a process start-up and the import of the whole
# stack (about 10 s a step). Jobs therefore run in the run's own process, and the per-cell work
# that can run in parallel does so inside `cell_pipeline`, in worker processes. With DuckLake and
# a Dask cluster configured, every step is a task on the cluster's workers instead.
STEP_EXECUTOR = step_executor()

# The main job: every per-cell asset, for one cell or a batch (a partition range) per run.
cell_pipeline_job = dg.define_asset_job(
    "cell_pipeline_job",
    selection=dg.AssetSelection.groups("ingest", "features"),
    description=(
        "Everything per cell: cells registry, raw, validated and quarantined samples, "
        "per-cycle features and curves, labels; one cell or a batch of cells per run."
    ),
    executor_def=STEP_EXECUTOR,
)

# Across cells: training sets, every model, registry, promotion, metrics report and model cards.
train_models_job = dg.define_asset_job(
    "train_models_job",
    selection=dg.AssetSelection.groups("models", "reports"),
    description="Train every model on all cells' features, register, promote through the gate, report.",
    executor_def=STEP_EXECUTOR,
)

# Across cells: the early-life cycle-life cohort, its frozen models and every cell's prediction.
cycle_life_job = dg.define_asset_job(
    "cycle_life_job",
    selection=dg.AssetSelection.groups("cycle_life"),
    description="Fit the Severson cycle-life models on the cohort (Severson's training cells), freeze them, score every cell with 100 cycles.",
    executor_def=STEP_EXECUTOR,
)

# Across cells: every cycle's anomaly score against its cell's trend and its fleet.
anomalies_job = dg.define_asset_job(
    "anomalies_job",
    selection=dg.AssetSelection.groups("anomalies"),
    description="Score every cycle of every cell against the cell's own trend and its fleet, with the reason; self-test and card.",
    executor_def=STEP_EXECUTOR,
)

# Across cells: the temperature forecaster per cell type, evaluated file by file against persistence.
thermal_job = dg.define_asset_job(
    "thermal_job",
    selection=dg.AssetSelection.groups("thermal"),
    description="Fit the lumped thermal model and its residual ML per cell type on the stored cells with measured temperature; forecast 60 / 300 s ahead, held out file by file.",
    executor_def=STEP_EXECUTOR,
)

# Across packs: open faults per pack and the diagnosis's self-test at the fleet's configurations.
fault_report_job = dg.define_asset_job(
    "fault_report_job",
    selection=dg.AssetSelection.groups("fault_report"),
    description="Summarise every pack's open faults and self-test the fault diagnosis on simulated packs like the fleet's; results and card.",
    executor_def=STEP_EXECUTOR,
)

# Across runs: the data cards from what the warehouse holds, and the audit trail of finished runs.
governance_job = dg.define_asset_job(
    "governance_job",
    selection=dg.AssetSelection.groups("governance"),
    description="Write a data card per dataset and append every finished run to the audit_log table.",
    executor_def=STEP_EXECUTOR,
)

# Per cell or batch of cells: the promoted models' SOH and RUL predictions (also for cells that arrive later).
score_cells_job = dg.define_asset_job(
    "score_cells_job",
    selection=dg.AssetSelection.groups("predictions"),
    description="Score a cell, or a batch of cells in one run, with the promoted SOH and RUL models.",
    executor_def=STEP_EXECUTOR,
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


# Per pack: the pack's telemetry and every enabled twin model, for one pack partition per run.
pack_pipeline_job = dg.define_asset_job(
    "pack_pipeline_job",
    selection=dg.AssetSelection.groups("telemetry", "twin"),
    description="Everything per pack: packs registry, telemetry, and the outputs of every enabled twin model.",
    executor_def=STEP_EXECUTOR,
)


@dg.op(description="Scan the pack folders (and the cells named as one-cell packs) and add a `packs` partition for each.")
def register_pack_sources(context: dg.OpExecutionContext, pack_catalog: PackSourceCatalog) -> list[str]:
    found = pack_catalog.discover()
    known = set(context.instance.get_dynamic_partitions(pack_partitions.name))
    new = [key for key in found.keys() if key not in known]
    if new:
        context.instance.add_dynamic_partitions(pack_partitions.name, new)
    context.add_output_metadata(
        {
            "packs_found": len(found),
            "new_partitions": dg.MetadataValue.json(new),
            "unreadable_files": dg.MetadataValue.json({s.pack_id: s.problem for s in found if s.problem}),
        }
    )
    return new


@dg.job(description="Register pack partitions for the pack files found (no data is read).")
def register_pack_sources_job():
    register_pack_sources()
