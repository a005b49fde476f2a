"""The SQLite event log of our Dagster instance, with connections kept open and batched commits.

Why. Dagster's `SqliteEventLogStorage` opens a new SQLAlchemy engine and connection for every
write, and each materialization or check result is two to three writes (the run's own database
and the cross-run index). Closing the last connection of a WAL database also checkpoints it and
deletes its log, so every event paid an engine, a connection, a fresh statement compile and a
checkpoint: 20-30 ms an event on this machine, about 27 events per cell (a materialization per
asset, a result per check). A batch of 1,000 cells spent most of its time there, and Dagster's
planned events at run creation (one per asset and partition of a range run) took minutes.

What this class changes, and nothing else (the tables, the SQL and the files are Dagster's):
* an engine per database file, kept (a small LRU of run databases plus the index), with pooled
  connections; prepared statements are then compiled once;
* `batched_writes()`: a context in which every event this thread stores goes into one open
  transaction per database file, committed every `COMMIT_EVERY` events and at the end. The cell
  batch step wraps each group's events in it; Dagster's own event batches (`store_event_batch`:
  the planned events of a run, the materializations of a partition range) use it too, enabled by
  `DAGSTER_EVENT_BATCH_SIZE` (set here unless the environment sets it);
* after each commit to a run's database, a passive WAL checkpoint: the webserver follows a
  running run by watching that file, which a kept connection would otherwise leave unchanged
  until SQLite's own checkpoint.

Durability is SQLite's with WAL (see `instance_tuning` for `synchronous`); a crash inside a batch
loses that batch's uncommitted events, never the database. A Postgres instance
(`BATTERY_PIPELINE_DAGSTER_PG_URL`) does not use this class.

Configured in the dagster.yaml that `battery-pipeline` writes:

    event_log_storage:
      module: battery_pipeline.instance_storage
      class: PooledSqliteEventLogStorage

`base_dir` defaults to `$DAGSTER_HOME/history/runs`, where Dagster's default storage keeps the
same files, so an existing instance switches over (and back) without migration.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from dagster import Field, StringSource
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME, SqliteEventLogStorage
from dagster._core.storage.sql import create_engine
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from sqlalchemy import text

# Events per transaction inside `batched_writes`: long enough to amortize the commit, short
# enough that the UI sees a running batch move and other writers wait little for the index.
COMMIT_EVERY = 500
# Run databases whose engine stays open (the index's always does); a webserver browsing many runs
# keeps at most this many files open.
RUN_ENGINES = 8
# Dagster's own batching of planned and range-materialization events (see the module docstring).
EVENT_BATCH_SIZE_ENV = "DAGSTER_EVENT_BATCH_SIZE"
EVENT_BATCH_SIZE = "1000"


def _total_changes(connection) -> int:
    return connection.connection.dbapi_connection.total_changes


def _checkpoint(connection) -> None:
    connection.execute(text("PRAGMA wal_checkpoint(PASSIVE)"))


def default_base_dir() -> str:
    return os.path.join(os.environ["DAGSTER_HOME"], "history", "runs")


class _Batch:
    """This thread's open transactions, one per database file."""

    def __init__(self) -> None:
        self.connections: dict[str, object] = {}
        self.events = 0


class _BatchedWrites:
    """`batched_writes()` for an event log whose `_connect` joins this thread's `_Batch`; the
    storage commits a batch in `_commit(batch)`."""

    @contextmanager
    def batched_writes(self) -> Iterator[None]:
        """Every event this thread stores inside is written in one transaction per database
        (committed every `COMMIT_EVERY` events and on exit, also when the body raises: those
        events happened). Nested use joins the outer batch."""
        if getattr(self._local, "batch", None) is not None:
            yield
            return
        self._local.batch = _Batch()
        try:
            yield
        finally:
            batch, self._local.batch = self._local.batch, None
            self._commit(batch)

    def store_event(self, event) -> None:
        super().store_event(event)
        batch: _Batch | None = getattr(self._local, "batch", None)
        if batch is not None:
            batch.events += 1
            if batch.events >= COMMIT_EVERY:
                self._commit(batch)
                batch.connections, batch.events = {}, 0


class PooledSqliteEventLogStorage(_BatchedWrites, SqliteEventLogStorage):
    def __init__(self, base_dir: str | None = None, inst_data=None):
        self._engines: OrderedDict[str, object] = OrderedDict()
        self._engines_pid = os.getpid()
        self._engines_lock = threading.Lock()
        self._local = threading.local()
        self._tables: set[str] = set()
        super().__init__(base_dir or default_base_dir(), inst_data)  # (a new index is built here)
        os.environ.setdefault(EVENT_BATCH_SIZE_ENV, EVENT_BATCH_SIZE)

    @classmethod
    def config_type(cls):
        return {"base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(inst_data=inst_data, **config_value)

    # --- engines -------------------------------------------------------------------------------

    def _engine(self, shard: str):
        with self._engines_lock:
            if self._engines_pid != os.getpid():
                # a forked child must not share the parent's connections: start afresh
                self._engines, self._engines_pid = OrderedDict(), os.getpid()
            engine = self._engines.get(shard)
            if engine is None:
                engine = create_engine(
                    self.conn_string_for_shard(shard),
                    pool_size=2,
                    max_overflow=8,
                    connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
                )
                if shard not in self._initialized_dbs:
                    self._initdb(engine)
                    self._initialized_dbs.add(shard)
                self._engines[shard] = engine
                runs = [name for name in self._engines if name != INDEX_SHARD_NAME]
                for stale in runs[: max(0, len(runs) - RUN_ENGINES)]:
                    self._engines.pop(stale).dispose()
            else:
                self._engines.move_to_end(shard)
            return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator:
        batch: _Batch | None = getattr(self._local, "batch", None)
        if batch is not None:
            connection = batch.connections.get(shard)
            if connection is None:
                connection = self._engine(shard).connect()
                connection.begin()
                batch.connections[shard] = connection
            yield connection  # inside the batch's transaction, committed by `batched_writes`
            return
        with self._engine(shard).connect() as connection:
            changes = _total_changes(connection)
            with connection.begin():
                yield connection
            if shard != INDEX_SHARD_NAME and _total_changes(connection) != changes:
                _checkpoint(connection)

    def has_table(self, table_name: str) -> bool:
        # asked before every asset-check event; a table, once there, stays
        if table_name not in self._tables and super().has_table(table_name):
            self._tables.add(table_name)
        return table_name in self._tables

    # --- batches (`_BatchedWrites`) ------------------------------------------------------------

    def store_event_batch(self, events: Sequence) -> None:
        with self.batched_writes():
            for event in events:
                self.store_event(event)

    def _commit(self, batch: _Batch) -> None:
        for shard, connection in batch.connections.items():
            try:
                connection.commit()
                if shard != INDEX_SHARD_NAME:
                    _checkpoint(connection)
            finally:
                connection.close()

    def dispose(self) -> None:
        super().dispose()
        with self._engines_lock:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()


# --- PostgreSQL --------------------------------------------------------------------------------

from dagster_postgres.event_log.event_log import PostgresEventLogStorage  # noqa: E402
from dagster_postgres.utils import create_pg_engine, pg_config, pg_url_from_config  # noqa: E402


class PooledPostgresEventLogStorage(_BatchedWrites, PostgresEventLogStorage):
    """Dagster's Postgres event log, with kept connections and batched commits.

    Why. `PostgresEventLogStorage` opens a new connection for every statement (NullPool, so that
    idle instances hold none), and an event is two to four statements. On a cluster's worker a
    step spent 41 % of its time in event writes and half of that connecting (py-spy, a 50-cell
    step on one Dask worker), against 21 % in the cells' own work. Here the engine keeps a small
    pool, and `batched_writes()` (the cell step's, as for SQLite) puts the events of a stage into
    one transaction, committed every `COMMIT_EVERY` events and at its end. The tables and SQL are
    Dagster's; only connections and transactions change.

    Configured in the dagster.yaml that `battery-pipeline` writes when
    $BATTERY_PIPELINE_DAGSTER_PG_URL is set (runs and schedules stay on Dagster's own classes).
    """

    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True, inst_data=None, token_provider=None):
        self._local = threading.local()
        self._engine_pid = os.getpid()
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider)
        self._engine = self._pooled_engine()
        os.environ.setdefault(EVENT_BATCH_SIZE_ENV, EVENT_BATCH_SIZE)

    def _pooled_engine(self):
        return create_pg_engine(
            self.postgres_url, self._token_provider, isolation_level="AUTOCOMMIT",
            pool_size=2, max_overflow=8, pool_recycle=3600, pool_pre_ping=True,
        )

    @classmethod
    def config_type(cls):
        return pg_config()

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(pg_url_from_config(config_value), config_value.get("should_autocreate_tables", True), inst_data)

    @contextmanager
    def _connect(self) -> Iterator:
        if self._engine_pid != os.getpid():  # a forked child must not share the parent's connections
            self._engine, self._engine_pid = self._pooled_engine(), os.getpid()
        batch: _Batch | None = getattr(self._local, "batch", None)
        if batch is not None:
            connection = batch.connections.get("events")
            if connection is None:
                connection = self._engine.connect().execution_options(isolation_level="READ COMMITTED")
                connection.begin()
                batch.connections["events"] = connection
            yield connection  # inside the batch's transaction, committed by `batched_writes`
            return
        with self._engine.connect() as connection:
            yield connection

    def store_event_batch(self, events) -> None:
        with self.batched_writes():
            super().store_event_batch(events)

    def _commit(self, batch: _Batch) -> None:
        for connection in batch.connections.values():
            try:
                connection.commit()
            finally:
                connection.close()

    def dispose(self) -> None:
        super().dispose()
        self._engine.dispose()
