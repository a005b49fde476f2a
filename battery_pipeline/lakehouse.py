"""DuckLake: the warehouse for several writers at once (catalog in PostgreSQL, data as Parquet).

The embedded warehouse is one DuckDB file, which admits one read-write process, so every step
that writes it queues on a one-slot pool. DuckLake keeps the same tables as Parquet files under a
data path (a folder here, object storage or a shared file system in production) and their
catalog (which files make up which table at which snapshot) in PostgreSQL. Each process opens an
in-memory DuckDB with the lake attached; a transaction is one catalog commit, so readers only
ever see committed snapshots, and writers of different partitions commit side by side.

Extensions load from the `duckdb-extension-ducklake` / `duckdb-extension-postgres-scanner`
wheels, never from the internet (a lab's air-gapped machines included): each file is loaded by
its path, and automatic installs and loads are off.

Conflicts. Two writers committing at once are reconciled by DuckLake itself where their changes
do not overlap (inserts, deletes from different files). Real conflicts (two transactions deleting
from the same data file, e.g. two runs replacing the same cell, or two creating the same table)
fail the later commit; `retry_conflicts` runs that transaction again on the new snapshot, so the
last writer's rows are what remains, never both.
"""

from __future__ import annotations

import os
import random
import threading
import time
from importlib.util import find_spec
from pathlib import Path

import duckdb

from battery_pipeline.executors import dask_worker

# The attached lake's name: every table is addressed in it after `USE`.
LAKE_ALIAS = "warehouse"
# The catalog's tables go in their own PostgreSQL schema, so one database can hold them beside
# other things (Dagster's instance tables, say).
METADATA_SCHEMA = "battery_lake"
# Retries of a transaction that lost a real conflict (DuckLake's own retries cover the rest).
CONFLICT_ATTEMPTS = 8
CONFLICT_WAIT_SECONDS = 0.05


# The extensions' wheels (repackaged official builds: DuckDB checks each file's signature on LOAD,
# and unsigned extensions stay refused), one per extension, built for exactly one DuckDB release.
EXTENSION_PACKAGES = {"ducklake": "duckdb_extension_ducklake", "postgres_scanner": "duckdb_extension_postgres_scanner"}


def extension_files() -> list[str]:
    """The extension files DuckLake on PostgreSQL needs, for the installed DuckDB."""
    files = []
    for name, package in EXTENSION_PACKAGES.items():
        spec = find_spec(package)
        folder = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
        path = folder / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension" if folder else None
        if path is None or not path.exists():
            raise RuntimeError(
                f"DuckLake needs the DuckDB extension {name!r} for DuckDB {duckdb.__version__} from the "
                f"{package.replace('_', '-')} wheel (a project dependency): reinstall the project (`make install`)"
            )
        files.append(str(path))
    return files


def postgres_conninfo(catalog: str) -> str:
    """A libpq connection string (keyword form or postgresql:// URI) for the catalog. A
    SQLAlchemy URL such as Dagster's `postgresql+psycopg2://...` is taken too (libpq reads the
    same URI without the driver)."""
    catalog = catalog.strip()
    for prefix in ("ducklake:postgres:", "postgres:"):
        if catalog.startswith(prefix):
            catalog = catalog[len(prefix):]
    if catalog.startswith("postgresql+"):
        catalog = "postgresql://" + catalog.split("://", 1)[1]
    if not catalog:
        raise ValueError("no DuckLake catalog given: set BATTERY_PIPELINE_DUCKLAKE_CATALOG to a PostgreSQL connection string")
    return catalog


def redacted(conninfo: str) -> str:
    """The connection string without its password, for messages and metadata."""
    if "://" in conninfo:
        scheme, rest = conninfo.split("://", 1)
        credentials, at, host = rest.rpartition("@")
        if at and ":" in credentials:
            return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"
        return conninfo
    return " ".join("password=***" if part.startswith("password=") else part for part in conninfo.split())


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def connect(catalog: str, data_path: str) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the lake attached as `warehouse` and in use. The lake is created
    on first use (catalog tables in `METADATA_SCHEMA`, data under `data_path`)."""
    conninfo = postgres_conninfo(catalog)
    if "://" not in data_path or data_path.startswith("file://"):
        Path(data_path.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
    # nothing is ever downloaded: the extensions load from the wheels' files, by path
    config = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    worker = dask_worker()
    if worker is not None:
        # the host's cores its operator gave the worker: DuckDB otherwise takes every core of the
        # host for each query, and the host's other workers with it
        config["threads"] = worker.state.nthreads
    conn = duckdb.connect(config=config)
    try:
        for path in extension_files():
            conn.execute(f"LOAD {_literal(path)}")
        attach = (
            f"ATTACH {_literal('ducklake:postgres:' + conninfo)} AS {LAKE_ALIAS} "
            f"(DATA_PATH {_literal(data_path)}, METADATA_SCHEMA {_literal(METADATA_SCHEMA)})"
        )
        # processes attaching a new lake at once each try to create its catalog: one wins, the
        # others find it there when they try again
        _retrying(lambda: conn.execute(attach), lambda exc: "already exists" in str(exc))
        conn.execute(f"USE {LAKE_ALIAS}")
    except duckdb.Error as exc:
        conn.close()
        raise RuntimeError(f"cannot open the DuckLake warehouse (catalog {redacted(conninfo)}, data {data_path}): {exc}") from exc
    return conn


_shared: dict[tuple[str, str], duckdb.DuckDBPyConnection] = {}
_shared_pid = os.getpid()
_shared_lock = threading.Lock()


def cursor(catalog: str, data_path: str) -> duckdb.DuckDBPyConnection:
    """A connection of its own (a cursor) on this process's attached lake, opened on first use.
    Attaching costs about 0.3 s (the extensions load, the catalog is read), and unlike a DuckDB
    file the lake holds no lock to give back, so one attachment per process serves every call;
    each transaction still reads the latest committed snapshot."""
    global _shared_pid
    key = (catalog, data_path)
    with _shared_lock:
        if _shared_pid != os.getpid():  # a forked child must not use its parent's connections
            _shared.clear()
            _shared_pid = os.getpid()
        conn = _shared.get(key)
        if conn is None:
            conn = _shared[key] = connect(catalog, data_path)
    return use_lake(conn.cursor())


def use_lake(cursor: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """A cursor of a lake connection starts in DuckDB's `memory` catalog: switch it to the lake."""
    cursor.execute(f"USE {LAKE_ALIAS}")
    return cursor


def is_conflict(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.TransactionException) and "conflict" in str(exc).lower()


def retry_conflicts(work):
    """`work()`, run again (with a growing, jittered wait) when its transaction lost a conflict
    with another writer's commit; any other error, or the last attempt's, is raised."""
    return _retrying(work, is_conflict)


def _retrying(work, retryable):
    """`work()`, run again after a growing, jittered wait while it raises a DuckDB error that
    `retryable(error)` accepts, at most CONFLICT_ATTEMPTS times."""
    for attempt in range(CONFLICT_ATTEMPTS):
        try:
            return work()
        except duckdb.Error as exc:
            if not retryable(exc) or attempt == CONFLICT_ATTEMPTS - 1:
                raise
            time.sleep(CONFLICT_WAIT_SECONDS * 2**attempt * random.uniform(0.5, 1.5))
    raise AssertionError("unreachable")
