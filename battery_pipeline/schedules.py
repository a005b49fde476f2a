"""Schedules: the nightly retraining.

`nightly_training_schedule` runs `train_models_job` (training sets, every model, registry,
promotion gate, metrics report, model cards) at 02:00 UTC. Stopped by default: training the
whole zoo takes minutes of every core, and on a fresh install there is nothing to train on; turn
it on in the UI (Automation) once cells are flowing. A promotion that passes its gate then has
every cell rescored by the predictions automation (automation.py).
"""

import dagster as dg

from battery_pipeline.jobs import train_models_job

NIGHTLY_CRON = "0 2 * * *"
NIGHTLY_TIMEZONE = "UTC"
# Training needs labelled cells; without any the run could only fail.
TRAINING_INPUT = dg.AssetKey("cycle_labels")


@dg.schedule(
    name="nightly_training_schedule",
    cron_schedule=NIGHTLY_CRON,
    execution_timezone=NIGHTLY_TIMEZONE,
    job=train_models_job,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Retrain every model on all labelled cells, promote through the gate, refresh the reports and model cards.",
)
def nightly_training_schedule(context: dg.ScheduleEvaluationContext):
    if context.instance.get_latest_materialization_event(TRAINING_INPUT) is None:
        return dg.SkipReason("no cell has labels yet: nothing to train on (run cell_pipeline_job for some cells)")
    night = context.scheduled_execution_time
    return dg.RunRequest(
        run_key=f"nightly-training-{night:%Y-%m-%d}" if night else None,
        tags={"battery_pipeline/trigger": "nightly"},
    )
