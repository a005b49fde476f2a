"""The one Definitions object of the code location (loaded by `dagster dev` via workspace.yaml)."""

import dagster as dg

from battery_pipeline import instance_tuning

from battery_pipeline.assets import (
    anomalies,
    cell_pipeline,
    cycle_life,
    exports,
    fault_report,
    governance,
    models,
    reports,
    thermal,
    twin,
)
from battery_pipeline.automation import predictions_automation_sensor, with_automation_conditions
from battery_pipeline.jobs import (
    STEP_EXECUTOR,
    anomalies_job,
    cell_pipeline_job,
    cycle_life_job,
    fault_report_job,
    governance_job,
    pack_pipeline_job,
    register_pack_sources_job,
    register_sources_job,
    score_cells_job,
    thermal_job,
    train_models_job,
)
from battery_pipeline.resources import environment_resources
from battery_pipeline.schedules import nightly_training_schedule
from battery_pipeline.sensors import cell_packs_sensor, incoming_files_sensor

instance_tuning.install()  # synchronous=NORMAL on the SQLite instance files (see the module)

defs = dg.Definitions(
    # The automation conditions (automation.py) are applied here, in one place.
    assets=with_automation_conditions(
        dg.load_assets_from_modules([cell_pipeline, models, reports, twin, governance, exports, cycle_life, anomalies, thermal, fault_report])
    ),
    jobs=[cell_pipeline_job, register_sources_job, train_models_job, score_cells_job, pack_pipeline_job,
          register_pack_sources_job, governance_job, cycle_life_job, anomalies_job, thermal_job, fault_report_job],
    schedules=[nightly_training_schedule],
    sensors=[incoming_files_sensor, cell_packs_sensor, predictions_automation_sensor],
    resources=environment_resources(),
    # Also for the runs Dagster makes itself (automation, UI materializations): see jobs.py
    executor=STEP_EXECUTOR,
)
