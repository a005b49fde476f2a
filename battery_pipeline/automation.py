"""Declarative automation: the per-cell predictions follow new data and new promoted models.

`soh_predictions` and `rul_predictions` (group "predictions", partitioned by cell) carry
`PREDICTIONS_CONDITION`, `cycle_life_predictions` `CYCLE_LIFE_CONDITION` and `cycle_anomalies`
`ANOMALIES_CONDITION` (below), evaluated by `predictions_automation_sensor`:

* a cell's predictions are requested when its `cycle_features` or `cycle_labels` partition is
  updated (the sensor's `cell_pipeline_job` run), or when a `promoted_<task>_model` is
  materialized (every cell is rescored: a backfill), or for a newly added cell partition;
* never while an upstream is missing (a cell whose pipeline has not run, no model promoted yet)
  or still in progress;
* and only when every blocking check of every direct upstream passed for that partition (e.g.
  `features_finite`, `capacity_plausible`, `labels_consistent`, `no_label_leakage`, and the
  model's `promotion_gate`). A cell held back is scored after a rerun whose
  checks pass (the rerun is itself an upstream update).

`AutomationCondition.eager()` alone does not wait for blocking checks (dagster 1.13: it is
`in_latest_time_window & (newly_missing | any_deps_updated).since_last_handled &
~any_deps_missing & ~any_deps_in_progress & ~in_progress`); inside one run a failed blocking
check stops downstream steps, but a later, separate run would still consume the bad partition.
Hence the `& all_deps_blocking_checks_passed()`. Two consequences, on purpose:
* Dagster blocks in-run only on failures of ERROR severity, while `check_passed` here counts any
  failure: a blocking check that fails with WARN severity (e.g. `capacity_plausible` with single
  cycles outside the bounds) also holds the cell's predictions back until it passes.
* A training run whose promotion gate rejects the candidate holds back the scoring of new cells
  (the previous promoted model stays in force) until a later promotion passes; materialize the
  predictions by hand (or `score_cells_job`) to score them with the model in force meanwhile.

Per-cell check results. A check declared without a `partitions_def` is unpartitioned even on a
partitioned asset (dagster 1.13): its evaluation is stored without the cell, and
`all_deps_blocking_checks_passed` then reads the latest evaluation of any cell: one bad cell
would hold back every other cell's predictions (test_schedules_automation shows it does not).
`with_automation_conditions` therefore also gives every check of a partitioned asset its asset's
partitions, so each evaluation is kept per cell (and the UI shows check results per partition).
The public way is `AssetCheckSpec(..., partitions_def=...)` in each asset module; it is a preview
parameter that warns on every load, hence done here, once, on the definitions Dagster built.

The conditions are applied in one place, `with_automation_conditions` in definitions.py, so no
asset module names them; `dg.map_asset_specs` leaves every other asset spec as it was.
"""

from collections.abc import Sequence

import dagster as dg

from battery_pipeline.assets.models import PREDICTIONS_GROUP

PREDICTIONS_CONDITION = (
    dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()
).with_label("eager, once upstream blocking checks passed")

# `cycle_life_predictions` (one table over every cell) follows a new cell's features and new
# frozen models. Not plain eager(): a registered cell whose file failed is a missing partition
# of cycle_features for good, which would hold every later prediction back; only the models
# must exist (without them there is nothing to score with).
CYCLE_LIFE_PREDICTIONS = "cycle_life_predictions"
CYCLE_LIFE_CONDITION = (
    dg.AutomationCondition.eager().without(~dg.AutomationCondition.any_deps_missing())
    & ~dg.AutomationCondition.any_deps_missing().allow(dg.AssetSelection.assets("cycle_life_models"))
).with_label("eager on new cells' features and new frozen models, once the models exist")

# `cycle_anomalies` (one table over every cell) follows every cell's features the same way: a
# failed cell's missing partition must not hold back the scores of the others.
CYCLE_ANOMALIES = "cycle_anomalies"
ANOMALIES_CONDITION = dg.AutomationCondition.eager().without(~dg.AutomationCondition.any_deps_missing()).with_label(
    "eager on new cells' features")


def with_automation_conditions(
    assets: Sequence[dg.AssetsDefinition], condition: dg.AutomationCondition = PREDICTIONS_CONDITION
) -> Sequence[dg.AssetsDefinition]:
    """The assets, with `condition` on every asset of the predictions group and every check of a
    partitioned asset partitioned like its asset."""

    def apply(spec: dg.AssetSpec) -> dg.AssetSpec:
        if spec.group_name == PREDICTIONS_GROUP:
            return spec.replace_attributes(automation_condition=condition)
        if spec.key == dg.AssetKey(CYCLE_LIFE_PREDICTIONS):
            return spec.replace_attributes(automation_condition=CYCLE_LIFE_CONDITION)
        if spec.key == dg.AssetKey(CYCLE_ANOMALIES):
            return spec.replace_attributes(automation_condition=ANOMALIES_CONDITION)
        return spec

    return dg.map_asset_specs(apply, [with_partitioned_checks(a) for a in assets])


def with_partitioned_checks(assets_def: dg.AssetsDefinition) -> dg.AssetsDefinition:
    """The same definition, with each check spec partitioned like its asset (see the docstring)."""
    partitions_def = assets_def.partitions_def
    check_specs = assets_def.node_check_specs_by_output_name
    if partitions_def is None or not check_specs:
        return assets_def
    partitioned = {name: spec._replace(partitions_def=partitions_def) for name, spec in check_specs.items()}
    # How map_asset_specs itself rebuilds a definition (replace_specs_on_asset): same node, specs swapped.
    return dg.AssetsDefinition.dagster_internal_init(
        **{**assets_def.get_attributes_dict(), "check_specs_by_output_name": partitioned}
    )


predictions_automation_sensor = dg.AutomationConditionSensorDefinition(
    "predictions_automation_sensor",
    target=dg.AssetSelection.groups(PREDICTIONS_GROUP) | dg.AssetSelection.assets(CYCLE_LIFE_PREDICTIONS, CYCLE_ANOMALIES),
    # Running from the start: it only ever requests predictions of cells whose upstream passed its
    # checks, and requests nothing until a model has been promoted.
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Scores each cell with the promoted SOH/RUL models once its features and labels pass their checks.",
)
