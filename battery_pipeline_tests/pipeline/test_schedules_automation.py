"""The nightly schedule, the defaults a newcomer gets, and the predictions' automation condition
evaluated on real in-process materializations.

Automation reads only the Dagster instance (materializations, check results, runs), so the models
train on one temporary warehouse (the simulated fleet's feature tables) and the new cell flows
through another; both report to the same instance, as they would in one deployment.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import dagster as dg
import pytest

from battery_pipeline.assets import cell_pipeline, governance, models, reports, twin
from battery_pipeline.automation import PREDICTIONS_CONDITION, with_automation_conditions
from battery_pipeline.definitions import defs as CODE_LOCATION
from battery_pipeline.partitions import cell_partitions, pack_partitions
from battery_pipeline.resources import ModelStore, SourceCatalog, Warehouse
from battery_pipeline.schedules import nightly_training_schedule
from battery_pipeline_tests.fixtures import cycling_frame, write_csv
from battery_pipeline_tests.pipeline.test_models_pipeline import checks_of, write_cell_tables
from battery_pipeline_tests.pipeline.test_sensors import SensorDriver

PREDICTIONS = ("soh_predictions", "rul_predictions")


def test_defaults_a_newcomer_gets():
    repository = CODE_LOCATION.get_repository_def()
    sensors = {s.name: s.default_status for s in repository.sensor_defs}
    # Our own automation sensor covers every automated asset, so Dagster adds no default one
    # (which would start stopped).
    assert sensors == {
        "incoming_files_sensor": dg.DefaultSensorStatus.RUNNING,
        "cell_packs_sensor": dg.DefaultSensorStatus.RUNNING,
        "predictions_automation_sensor": dg.DefaultSensorStatus.RUNNING,
    }
    assert {s.name: s.default_status for s in repository.schedule_defs} == {
        "nightly_training_schedule": dg.DefaultScheduleStatus.STOPPED
    }


def test_conditions_go_on_the_predictions_only_and_leave_every_other_definition_as_it_was():
    from battery_pipeline.assets import cycle_life
    from battery_pipeline.automation import CYCLE_LIFE_CONDITION, CYCLE_LIFE_PREDICTIONS

    plain = dg.load_assets_from_modules([cell_pipeline, models, reports, twin, governance, cycle_life])
    automated = with_automation_conditions(plain)
    assert [a.keys for a in automated] == [a.keys for a in plain]
    conditioned = set()
    for before, after in zip(plain, automated):
        assert after.node_def is before.node_def  # same computation, multi-assets included
        assert {c.key for c in after.check_specs} == {c.key for c in before.check_specs}
        assert {c.key: c.blocking for c in after.check_specs} == {c.key: c.blocking for c in before.check_specs}
        for key, spec in after.specs_by_key.items():
            if spec.automation_condition is not None:
                conditioned.add(key.to_user_string())
                expected = CYCLE_LIFE_CONDITION if key.to_user_string() == CYCLE_LIFE_PREDICTIONS else PREDICTIONS_CONDITION
                assert spec.automation_condition is expected
            assert spec.replace_attributes(automation_condition=None) == before.specs_by_key[key]
    assert conditioned == {*PREDICTIONS, CYCLE_LIFE_PREDICTIONS}

    # Each check of a partitioned asset keeps its result per partition (cell or pack).
    graph = CODE_LOCATION.resolve_asset_graph()
    by_asset = {c.asset_key.to_user_string(): graph.get(c).partitions_def for c in graph.asset_check_keys}
    assert by_asset["validated_samples"] == by_asset["cycle_labels"] == cell_partitions  # multi-asset, asset
    assert by_asset["telemetry"] == pack_partitions
    assert by_asset["promoted_soh_model"] is None


def test_nightly_schedule_trains_every_model_once_there_are_labelled_cells():
    night = datetime(2025, 3, 4, 2, 0, tzinfo=timezone.utc)
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=night)
        skipped = nightly_training_schedule.evaluate_tick(context)
        assert skipped.run_requests == [] and "no cell has labels yet" in skipped.skip_message

        instance.add_dynamic_partitions("cells", ["cell_a"])
        instance.report_runless_asset_event(dg.AssetMaterialization("cycle_labels", partition="cell_a"))
        (request,) = nightly_training_schedule.evaluate_tick(context).run_requests
    assert request.run_key == "nightly-training-2025-03-04"
    assert nightly_training_schedule.job_name == "train_models_job"
    graph = CODE_LOCATION.resolve_asset_graph()
    trained = {k.to_user_string() for k in CODE_LOCATION.resolve_job_def("train_models_job").asset_layer.selected_asset_keys}
    assert {"soh_training_set", "soh_ridge_model", "model_registry", "promoted_soh_model", "promoted_rul_model",
            "model_metrics_report", "model_cards"} <= trained
    assert not trained & {*PREDICTIONS, "cycle_features"}
    assert trained == {k.to_user_string() for k in dg.AssetSelection.groups("models", "reports").resolve(graph)}


def resources_for(tmp_path, warehouse: str):
    return {
        "warehouse": Warehouse(database=str(tmp_path / warehouse)),
        "catalog": SourceCatalog(data_dirs=[str(tmp_path / "incoming")], use_demo_when_empty=False),
        "model_store": ModelStore(
            models_dir=str(tmp_path / "models"), results_dir=str(tmp_path / "results"), reports_dir=str(tmp_path / "reports")
        ),
        "pack_catalog": CODE_LOCATION.resources["pack_catalog"],
    }


class AutomationTicks:
    """Successive evaluations of `soh_predictions`' automation condition, cursor carried over.

    One asset only: each evaluation costs about a second, most of it Dagster serializing the
    condition tree's per-partition state."""

    def __init__(self, instance, defs=CODE_LOCATION):
        self.instance, self.defs, self.cursor = instance, defs, None

    def requested(self) -> set:
        result = dg.evaluate_automation_conditions(
            defs=self.defs, instance=self.instance, cursor=self.cursor,
            asset_selection=dg.AssetSelection.assets("soh_predictions"),
        )
        self.cursor = result.cursor
        return result.get_requested_partitions(dg.AssetKey("soh_predictions"))


def test_predictions_follow_a_new_cell_and_a_promotion_and_wait_for_blocking_checks(tmp_path, fleet_tables):
    assets = CODE_LOCATION.assets
    write_cell_tables(tmp_path / "training.duckdb", fleet_tables)
    training, cell_store = resources_for(tmp_path, "training.duckdb"), resources_for(tmp_path, "cells.duckdb")
    # The SOH side only, with one estimator (the cheapest): enough for a promoted SOH model.
    soh_models = dg.AssetSelection.assets("soh_training_set", "soh_ridge_model", "model_registry", "promoted_soh_model")
    with dg.instance_for_test() as instance:
        trained = dg.materialize(assets, selection=soh_models, instance=instance, resources=training)
        assert checks_of(trained)[("promoted_soh_model", "promotion_gate")].passed

        # A cycler file arrives: the sensor registers the cell and requests its pipeline run.
        sensor = SensorDriver(instance, tmp_path)
        # (balanced cycles and a stated rated capacity: every check can evaluate, and passes)
        write_csv(sensor.incoming, "cell_a.csv", cycling_frame(n_cycles=5, balanced=True))
        (sensor.incoming / "cell_a.cell.json").write_text(json.dumps({"nominal_capacity_ah": 0.17}))
        sensor.tick()
        ((job, key, _),) = sensor.requests()
        ticks = AutomationTicks(instance)
        assert ticks.requested() == set()  # registered, but its features and labels are missing

        cell_run = dg.materialize(
            assets, selection=dg.AssetSelection.groups("ingest", "features"), partition_key=key,
            instance=instance, resources=cell_store,
        )
        blocking = [e for e in cell_run.get_asset_check_evaluations() if e.blocking]
        assert job == "cell_pipeline_job" and len(blocking) >= 5 and all(e.passed for e in blocking)
        assert ticks.requested() == {key}
        assert ticks.requested() == set()  # requested once, not again

        # A new promotion rescores the cell.
        dg.materialize(assets, selection=dg.AssetSelection.assets("promoted_soh_model"), instance=instance, resources=training)
        assert ticks.requested() == {key}

        # For contrast, plain AutomationCondition.eager() on the same instance from here on (its
        # first evaluation only sets its starting point).
        eager_only = dg.Definitions(
            assets=with_automation_conditions(assets, dg.AutomationCondition.eager()), resources=CODE_LOCATION.resources
        )
        eager_ticks = AutomationTicks(instance, eager_only)
        assert eager_ticks.requested() == set()

        # A second cell flows through cleanly; then the first cell's sidecar claims 2 Ah where it
        # delivers 0.17, and its rerun fails the blocking capacity_plausible (and initial_soh_in_band) check.
        write_csv(sensor.incoming, "cell_b.csv", cycling_frame(n_cycles=5, balanced=True))
        (sensor.incoming / "cell_b.cell.json").write_text(json.dumps({"nominal_capacity_ah": 0.17}))
        sensor.tick()
        ((_, other, _),) = sensor.requests()
        dg.materialize(
            assets, selection=dg.AssetSelection.groups("ingest", "features"), partition_key=other,
            instance=instance, resources=cell_store,
        )
        (sensor.incoming / "cell_a.cell.json").write_text(json.dumps({"nominal_capacity_ah": 2.0}))
        sensor.tick()
        assert [k for _, k, _ in sensor.requests()] == [key]
        rerun = dg.materialize(
            assets, selection=dg.AssetSelection.assets("cells", "cycle_features", "cycle_curves", "cycle_labels"),
            partition_key=key, instance=instance, resources=cell_store, raise_on_error=False,
        )
        assert not checks_of(rerun)[("cycle_features", "capacity_plausible")].passed

        # Only the good cell is scored: check results are kept per cell, so the latest (failed)
        # evaluation, the bad cell's, holds back that cell alone ...
        assert ticks.requested() == {other}
        # ... where eager() alone, which does not look at checks, would also score the bad cell.
        assert eager_ticks.requested() == {key, other}


def test_cycle_life_predictions_follow_new_cells_once_the_models_exist():
    from battery_pipeline.automation import CYCLE_LIFE_PREDICTIONS

    key = dg.AssetKey(CYCLE_LIFE_PREDICTIONS)
    with dg.instance_for_test() as instance:
        cursor = None

        def requested() -> int:
            nonlocal cursor
            result = dg.evaluate_automation_conditions(
                defs=CODE_LOCATION, instance=instance, cursor=cursor, asset_selection=dg.AssetSelection.assets(CYCLE_LIFE_PREDICTIONS)
            )
            cursor = result.cursor
            return len(result.get_requested_partitions(key))

        instance.add_dynamic_partitions("cells", ["cell_a", "cell_failed"])  # cell_failed never gets features
        for asset in ("cells", "cycle_features", "cycle_labels"):
            instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition="cell_a"))
        assert requested() == 0  # no frozen model yet: nothing to score with
        instance.report_runless_asset_event(dg.AssetMaterialization("cycle_life_models"))
        assert requested() == 1
        assert requested() == 0  # once, not again
        instance.report_runless_asset_event(dg.AssetMaterialization("cycle_features", partition="cell_a"))
        assert requested() == 1  # a cell's new features, though another cell's are missing for good
