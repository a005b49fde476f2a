"""The pooled SQLite event log (instance_storage.py): the same files and rows as Dagster's own
storage, batches committed whole, and a webserver following a run still sees every event."""

from __future__ import annotations

import logging
import time

import dagster as dg
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log import SqliteEventLogStorage

from battery_pipeline import cli
from battery_pipeline.instance_storage import COMMIT_EVERY, PooledSqliteEventLogStorage


def entry(run_id: str, message: str) -> EventLogEntry:
    return EventLogEntry(
        error_info=None, level=logging.INFO, user_message=message, run_id=run_id, timestamp=time.time(),
        step_key=None, job_name=None, dagster_event=None,
    )


def messages(storage, run_id: str) -> list[str]:
    return [r.event_log_entry.user_message for r in storage.get_records_for_run(run_id).records]


def test_a_batch_spanning_several_commits_stores_every_event_in_order_for_dagsters_own_reader(tmp_path):
    writer = PooledSqliteEventLogStorage(str(tmp_path / "runs"))
    sent = [str(i) for i in range(2 * COMMIT_EVERY + 7)]
    with writer.batched_writes():
        for message in sent:
            writer.store_event(entry("run-a", message))
        writer.store_event_batch([entry("run-b", "other run")])  # joins the open batch
    assert messages(SqliteEventLogStorage(str(tmp_path / "runs")), "run-a") == sent
    assert messages(writer, "run-b") == ["other run"]


def test_a_batch_left_by_an_exception_keeps_the_events_stored_before_it(tmp_path):
    writer = PooledSqliteEventLogStorage(str(tmp_path / "runs"))
    try:
        with writer.batched_writes():
            writer.store_event(entry("run-a", "before"))
            raise RuntimeError("the step failed")
    except RuntimeError:
        pass
    writer.store_event(entry("run-a", "after"))
    assert messages(SqliteEventLogStorage(str(tmp_path / "runs")), "run-a") == ["before", "after"]


def test_a_watcher_of_the_run_file_sees_events_committed_through_kept_connections(tmp_path):
    # The webserver follows a running run by watching its database file; kept connections leave
    # that file unchanged until a checkpoint, which the storage runs after each commit.
    writer = PooledSqliteEventLogStorage(str(tmp_path / "runs"))
    writer.store_event(entry("run-a", "0"))
    watcher = SqliteEventLogStorage(str(tmp_path / "runs"))
    seen: list[str] = []
    watcher.watch("run-a", None, lambda event, _cursor: seen.append(event.user_message))
    try:
        with writer.batched_writes():
            for i in (1, 2, 3):
                writer.store_event(entry("run-a", str(i)))
        writer.store_event(entry("run-a", "4"))
        deadline = time.monotonic() + 20
        while seen != ["0", "1", "2", "3", "4"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert seen == ["0", "1", "2", "3", "4"]
    finally:
        watcher.dispose()


def test_the_instance_we_configure_uses_it_and_an_earlier_default_yaml_is_upgraded(tmp_path, monkeypatch):
    monkeypatch.delenv(cli.POSTGRES_URL_ENV, raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    (tmp_path / "dagster.yaml").write_text(cli.DAGSTER_YAML)  # what earlier versions wrote
    cli.ensure_dagster_home()
    assert (tmp_path / "dagster.yaml").read_text() == cli.instance_yaml()
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
        assert instance.event_log_storage._base_dir == str(tmp_path / "history" / "runs")

    users = "# mine\n" + cli.DAGSTER_YAML
    (tmp_path / "dagster.yaml").write_text(users)
    cli.ensure_dagster_home()
    assert (tmp_path / "dagster.yaml").read_text() == users
