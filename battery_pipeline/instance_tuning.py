"""SQLite instance storage: `synchronous=NORMAL` on Dagster's own SQLite files.

Why. Dagster's default (SQLite) instance writes every event in its own transaction, on a fresh
connection; its databases are in WAL mode (Dagster sets that), where SQLite's default
`synchronous=FULL` flushes the log to disk on every commit. A batch of cells logs about 27 events
per cell (a materialization per asset, a result per check), so those flushes were a large share of
a batch's time on this machine (30-100 ms an event under load; half that with NORMAL,
`benchmarks/fleet.py`). The event log now commits in batches (`instance_storage`); NORMAL still
applies to its connections and to the run and schedule databases. With WAL, NORMAL is the setting SQLite documents as safe against
corruption: an application crash loses nothing, a power loss or OS crash may lose the last
transactions (run events of the last moments), never the database.

Scope: only connections to SQLite files under $DAGSTER_HOME, in the processes that import this
project (the CLI, run workers, the code server); the warehouse is DuckDB and untouched. A Postgres
instance (`BATTERY_PIPELINE_DAGSTER_PG_URL`) is what a shared or production deployment uses.
`BATTERY_PIPELINE_SQLITE_SYNCHRONOUS=FULL` keeps SQLite's default.
"""

from __future__ import annotations

import os
import sqlite3

from sqlalchemy import event
from sqlalchemy.engine import Engine

SETTING_ENV = "BATTERY_PIPELINE_SQLITE_SYNCHRONOUS"
_installed = False


def _instance_file(connection: sqlite3.Connection) -> bool:
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        return False
    files = [row[2] for row in connection.execute("PRAGMA database_list").fetchall() if row[2]]
    root = os.path.realpath(home) + os.sep
    return any(os.path.realpath(f).startswith(root) for f in files)


def _on_connect(dbapi_connection, _record) -> None:
    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    setting = os.environ.get(SETTING_ENV, "NORMAL").upper()
    if setting in ("NORMAL", "FULL", "EXTRA") and _instance_file(dbapi_connection):
        dbapi_connection.execute(f"PRAGMA synchronous={setting}")


def install() -> None:
    """Register the connect hook once per process."""
    global _installed
    if not _installed:
        event.listen(Engine, "connect", _on_connect)
        _installed = True
