"""The incoming-files sensor, evaluated as the daemon does on a temporary instance and folders.

Each `tick()` builds a sensor context from the real code location (its jobs and partitions) with
the stored cursor, evaluates the sensor, and applies its dynamic-partition requests to the
instance, as the daemon does between ticks. The sensor is built with no minimum file age, so that
stability is decided by the two-evaluation rule alone (one test sets an age).
"""

from __future__ import annotations

import json
import os
import shutil

import dagster as dg
import pytest

from battery_pipeline.assets import cell_pipeline
from battery_pipeline.definitions import defs as CODE_LOCATION
from battery_pipeline.pack_resources import PackSourceCatalog
from battery_pipeline.resources import SourceCatalog, Warehouse
from battery_pipeline.science.sources import discover
from battery_pipeline.science.twin.pack_sim import simulate_pack, write_pack
from battery_pipeline.sensors import HASH_DIGITS, build_incoming_files_sensor
from battery_pipeline_tests.conftest import dataset_file
from battery_pipeline_tests.fixtures import cycling_frame, write_csv
from battery_pipeline_tests.pipeline.test_ingest_pipeline import checksum


class SensorDriver:
    """The sensor as the daemon runs it: cursor in, cursor out, partitions added between ticks."""

    def __init__(self, instance, tmp_path, cursor: str | None = None, min_file_age_seconds: float = 0):
        self.instance = instance
        self.incoming, self.packs = tmp_path / "incoming", tmp_path / "packs"
        self.sensor = build_incoming_files_sensor(min_file_age_seconds=min_file_age_seconds)
        self.resources = {
            "catalog": SourceCatalog(data_dirs=[str(self.incoming)], demo_dir=str(tmp_path / "demo")),
            "pack_catalog": PackSourceCatalog(
                pack_dirs=[str(self.packs)], demo_pack_dir=str(tmp_path / "demo_packs"), twin_cells=[]
            ),
        }
        self.cursor = cursor

    def tick(self):
        context = dg.build_sensor_context(
            instance=self.instance,
            # the ref lets the sensor validate partition keys against the instance, as in the daemon
            instance_ref=self.instance.get_ref(),
            cursor=self.cursor,
            definitions=CODE_LOCATION,
            resources=self.resources,
        )
        result = self.sensor.evaluate_tick(context)
        for request in result.dynamic_partitions_requests:
            self.instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
        self.cursor = result.cursor
        return result

    def requests(self) -> list[tuple[str, str, str]]:
        """(job, partition, run key) of each run requested by one tick."""
        return [(r.job_name, r.partition_key, r.run_key) for r in self.tick().run_requests]


@pytest.fixture(scope="module")
def shared_instance():
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture
def instance(shared_instance):
    """One instance for the module (creating one costs seconds); the sensor reads only the dynamic
    partitions from it, so each test starts with none."""
    for name in ("cells", "packs"):
        for key in shared_instance.get_dynamic_partitions(name):
            shared_instance.delete_dynamic_partition(name, key)
    return shared_instance


@pytest.fixture
def driver(instance, tmp_path):
    return SensorDriver(instance, tmp_path)


def test_new_file_registers_its_cell_and_requests_one_run_once_stable(driver, instance):
    path = write_csv(driver.incoming, "cell_a.csv", cycling_frame(n_cycles=2))
    before = (checksum(path), path.stat().st_mtime_ns)

    first = driver.tick()  # first sight: it might still be being written
    assert first.run_requests == [] and first.dynamic_partitions_requests == []
    assert "waiting until stable: cells/cell_a" in first.skip_message

    second = driver.tick()
    (request,) = second.run_requests
    assert (request.job_name, request.partition_key) == ("cell_pipeline_job", "cell_a")
    content = request.tags["battery_pipeline/content_hash"]
    assert request.run_key == f"cells:cell_a:{content}" and request.tags["battery_pipeline/trigger"] == "new"
    assert [(r.partitions_def_name, list(r.partition_keys)) for r in second.dynamic_partitions_requests] == [
        ("cells", ["cell_a"])
    ]
    assert instance.get_dynamic_partitions("cells") == ["cell_a"]

    assert driver.requests() == []  # the same file again: nothing
    assert (checksum(path), path.stat().st_mtime_ns) == before  # source files are only read


def test_a_burst_of_new_files_is_one_batched_run_over_their_partition_range(driver, instance):
    write_csv(driver.incoming, "cell_a.csv", cycling_frame(n_cycles=2))
    driver.tick()
    driver.tick()  # cell_a runs alone
    for name in ("cell_b", "cell_c", "cell_d"):
        write_csv(driver.incoming, f"{name}.csv", cycling_frame(n_cycles=2))
    driver.tick()
    (request,) = driver.tick().run_requests
    assert request.partition_key is None and request.job_name == "cell_pipeline_job"
    assert (request.tags["dagster/asset_partition_range_start"], request.tags["dagster/asset_partition_range_end"]) == ("cell_b", "cell_d")
    assert instance.get_dynamic_partitions("cells") == ["cell_a", "cell_b", "cell_c", "cell_d"]
    assert request.tags["battery_pipeline/trigger"] == "3 new, 0 changed cells"

    # an edit to two cells that are not neighbours in the partition order: one run each
    write_csv(driver.incoming, "cell_a.csv", cycling_frame(n_cycles=3))
    write_csv(driver.incoming, "cell_c.csv", cycling_frame(n_cycles=3))
    driver.tick()
    assert sorted(key for _, key, _ in driver.requests()) == ["cell_a", "cell_c"]


def test_changed_content_runs_again_but_a_touched_identical_file_does_not(driver):
    path = write_csv(driver.incoming, "cell_a.csv", cycling_frame(n_cycles=2))
    driver.tick()
    ((_, _, first_key),) = driver.requests()

    later = path.stat().st_mtime + 60
    os.utime(path, (later, later))  # same bytes, new timestamp (e.g. copied again)
    assert driver.requests() == [] and driver.requests() == []

    write_csv(driver.incoming, "cell_a.csv", cycling_frame(n_cycles=3))
    assert driver.requests() == []  # changed since the last look: wait one more evaluation
    result = driver.tick()
    (request,) = result.run_requests
    assert request.partition_key == "cell_a" and request.tags["battery_pipeline/trigger"] == "changed"
    assert request.run_key != first_key  # a new run key: Dagster does not de-duplicate it away
    assert result.dynamic_partitions_requests == []  # the partition exists already


def test_growing_file_is_not_taken_until_it_stops_changing(driver):
    frame = cycling_frame(n_cycles=3)
    path = driver.incoming / "cell_a.csv"
    write_csv(driver.incoming, "cell_a.csv", frame.iloc[:100])
    assert driver.requests() == []
    with path.open("a") as handle:  # a copy still in progress
        frame.iloc[100:].to_csv(handle, header=False, index=False)
    assert driver.requests() == []
    ((job, key, _),) = driver.requests()
    assert (job, key) == ("cell_pipeline_job", "cell_a")


def test_minimum_file_age_holds_back_a_file_modified_just_now(instance, tmp_path):
    patient = SensorDriver(instance, tmp_path, min_file_age_seconds=3600)
    write_csv(patient.incoming, "cell_a.csv", cycling_frame(n_cycles=2))
    assert patient.requests() == [] and patient.requests() == []
    assert "waiting until stable: cells/cell_a" in patient.tick().skip_message

    # Same cursor, no minimum age: the file has been unchanged since the previous evaluation.
    eager = SensorDriver(instance, tmp_path, cursor=patient.cursor)
    assert [key for _, key, _ in eager.requests()] == ["cell_a"]


def test_cursor_is_compact_json_and_survives_a_restart(driver, instance, tmp_path):
    path = write_csv(driver.incoming, "cell_a.csv", cycling_frame(n_cycles=2))
    driver.tick()
    driver.tick()
    stored = driver.cursor
    cursor = json.loads(stored)
    assert stored == json.dumps(cursor, separators=(",", ":"), sort_keys=True)
    size, mtime_ns, content = cursor["files"][str(path)]
    assert (size, mtime_ns) == (path.stat().st_size, path.stat().st_mtime_ns) and len(content) == HASH_DIGITS

    restarted = SensorDriver(instance, tmp_path, cursor=stored)  # a new sensor object, the stored cursor
    assert restarted.requests() == []
    write_csv(driver.incoming, "cell_a.csv", cycling_frame(n_cycles=3))
    restarted.tick()
    assert [key for _, key, _ in restarted.requests()] == ["cell_a"]


def test_pack_file_registers_a_pack_partition_and_requests_the_pack_job(driver, instance):
    # pack_sim writes the telemetry with a sidecar naming ground-truth companions: one pack.
    write_pack(simulate_pack(n_cells=4, duration_h=2.0, seed=3), driver.packs)
    assert driver.requests() == []
    result = driver.tick()
    assert [(r.job_name, r.partition_key) for r in result.run_requests] == [("pack_pipeline_job", "pack_01")]
    assert result.run_requests[0].run_key.startswith("packs:pack_01:")
    assert instance.get_dynamic_partitions("packs") == ["pack_01"]
    assert instance.get_dynamic_partitions("cells") == []


def test_cell_made_of_several_files_is_one_partition_and_a_new_file_reruns_it(driver, datasets):
    names = ("CS2_35_10_15_10.xlsx", "CS2_35_10_22_10.xlsx", "CS2_35_11_01_10.xlsx")
    sources = [dataset_file(datasets, f"calce_cs2/CS2_35/{name}") for name in names]
    driver.incoming.mkdir()
    for source in sources[:2]:
        (driver.incoming / source.name).symlink_to(source)
    (key,) = discover([driver.incoming]).keys()
    driver.tick()
    ((job, requested, first_key),) = driver.requests()
    assert (job, requested) == ("cell_pipeline_job", key)

    (driver.incoming / sources[2].name).symlink_to(sources[2])  # the next week's export of the test
    driver.tick()
    ((_, again, second_key),) = driver.requests()
    assert again == key and second_key != first_key


def test_sidecar_and_companion_files_are_part_of_their_cell(driver, datasets):
    data = dataset_file(datasets, "cycler_samples/FastCharge_000025_CH8.csv")
    companion = dataset_file(datasets, "cycler_samples/FastCharge_000025_CH8_Metadata.csv")
    driver.incoming.mkdir()
    (driver.incoming / data.name).symlink_to(data)
    metadata = shutil.copy(companion, driver.incoming / companion.name)  # a copy: this test edits it
    (key,) = discover([driver.incoming]).keys()
    driver.tick()
    assert [k for _, k, _ in driver.requests()] == [key]

    (driver.incoming / f"{data.stem}.cell.json").write_text(json.dumps({"nominal_capacity_ah": 1.1}))
    driver.tick()
    assert [k for _, k, _ in driver.requests()] == [key]

    with open(metadata, "a") as handle:
        handle.write("\n")
    driver.tick()
    assert [k for _, k, _ in driver.requests()] == [key]


def test_unrecognised_file_is_registered_and_its_run_fails_with_the_readers_reason(driver, instance, tmp_path):
    driver.incoming.mkdir()
    (driver.incoming / "notes.dat").write_bytes(bytes(range(256)) * 8)
    driver.tick()
    ((job, key, _),) = driver.requests()
    assert job == "cell_pipeline_job" and key in instance.get_dynamic_partitions("cells")

    result = dg.materialize(
        [cell_pipeline.cell_pipeline],
        selection=["cells"],
        partition_key=key,
        instance=instance,
        resources={
            "warehouse": Warehouse(database=str(tmp_path / "warehouse.duckdb")),
            "catalog": driver.resources["catalog"],
        },
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "notes.dat" in failure.step_failure_data.error.message
    assert "unknown format" in failure.step_failure_data.error.message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_file_that_cannot_be_opened_does_not_break_the_sensor(driver):
    path = write_csv(driver.incoming, "cell_a.csv", cycling_frame(n_cycles=2))
    path.chmod(0)
    try:
        driver.tick()
        assert [key for _, key, _ in driver.requests()] == ["cell_a"]  # its run names the problem
        assert driver.requests() == []
        path.chmod(0o644)  # readable now: the real content runs
        assert [key for _, key, _ in driver.requests()] == ["cell_a"]
    finally:
        path.chmod(0o644)


def test_empty_folder_requests_nothing_and_never_falls_back_to_the_demo_fleet(driver, tmp_path):
    driver.incoming.mkdir()
    result = driver.tick()
    assert result.run_requests == [] and result.skip_message == "nothing new or changed"
    assert not (tmp_path / "demo").exists() and not (tmp_path / "demo_packs").exists()


def test_a_one_cell_pack_reruns_its_twin_after_each_successful_run_of_its_cell(tmp_path, instance):
    """cell_packs_sensor, given a real successful run of a cell's assets (ingest + validation)."""
    from battery_pipeline.pack_resources import PackSourceCatalog
    from battery_pipeline.sensors import CELL_PACKS_SENSOR_NAME, cell_packs_sensor
    from battery_pipeline_tests.pipeline.test_ingest_pipeline import register, run_partition

    write_csv(tmp_path / "incoming", "cell A.csv", cycling_frame(n_cycles=2))
    (key,) = register(instance, tmp_path / "incoming")
    result = run_partition(instance, tmp_path / "incoming", tmp_path / "warehouse.duckdb", key)
    assert result.success

    def evaluate(twin_cells):
        catalog = PackSourceCatalog(pack_dirs=[str(tmp_path / "packs")], use_demo_when_empty=False, twin_cells=twin_cells)
        context = dg.build_run_status_sensor_context(
            sensor_name=CELL_PACKS_SENSOR_NAME,
            dagster_event=result.get_run_success_event(),
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            resources={"pack_catalog": catalog},
        )
        return cell_packs_sensor(context)

    # The definition requests pack_pipeline_job, and is on by default (its monitored job,
    # cell_pipeline_job, has no public accessor to assert on).
    assert cell_packs_sensor.job_name == "pack_pipeline_job"
    assert cell_packs_sensor.default_status == dg.DefaultSensorStatus.RUNNING

    # A cell not run as a pack: nothing to do.
    assert isinstance(evaluate([]), dg.SkipReason)
    # Run as a pack: one request for its pack partition, added since it is not registered yet.
    first = evaluate([key])
    ((request,),) = [first.run_requests]
    assert request.partition_key == key and request.run_key == f"cell_packs:{key}:{result.run_id}"
    assert [(r.partitions_def_name, list(r.partition_keys)) for r in first.dynamic_partitions_requests] == [("packs", [key])]
    instance.add_dynamic_partitions("packs", [key])
    again = evaluate([key])  # the same run seen twice asks for the same run key: Dagster runs it once
    assert [r.run_key for r in again.run_requests] == [request.run_key] and not again.dynamic_partitions_requests
