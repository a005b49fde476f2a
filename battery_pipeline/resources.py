"""Resources: the single place that switches by environment (paths, storage, data folders).

Environment variables (all optional):
  BATTERY_PIPELINE_WAREHOUSE  `duckdb` (default: one embedded file) or `ducklake` (PostgreSQL
                              catalog + Parquet data: several writers at once, see `lakehouse`)
  BATTERY_PIPELINE_DUCKDB     warehouse file           (default: data/warehouse.duckdb)
  BATTERY_PIPELINE_DUCKLAKE_CATALOG    DuckLake's PostgreSQL catalog (libpq string or URL)
  BATTERY_PIPELINE_DUCKLAKE_DATA_PATH  DuckLake's data folder or URL (default: data/lake)
  BATTERY_PIPELINE_DATA_DIRS  data folders, os.pathsep-separated (default: data/incoming)
  BATTERY_PIPELINE_DEMO_DIR   demo fleet folder        (default: data/demo)
  BATTERY_PIPELINE_MODEL_DIR  trained-model artifacts  (default: data/models, beside the warehouse)
  BATTERY_PIPELINE_RESULTS_DIR  metrics JSON for audit (default: results)
  BATTERY_PIPELINE_REPORTS_DIR  model and data cards   (default: reports)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
from dagster import ConfigurableResource
from dagster_duckdb import DuckDBResource
from pydantic import Field, PrivateAttr

from battery_pipeline import compact_layout, lakehouse
from battery_pipeline.compact_layout import CompactLayout
from battery_pipeline.science import sources as source_discovery
from battery_pipeline.science.sample_quality import INTERPOLATED_CHANNELS, empty_flags
from battery_pipeline.science.schema import CellCycleSample, CellImpedance, CellRecord, QuarantinedSample

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = PROJECT_ROOT / "data"

# Every asset or check that opens the embedded warehouse runs in this Dagster pool. DuckDB admits
# one read-write process per file, so the instance limits the pool to 1 slot (see dagster.yaml).
DUCKDB_POOL = "duckdb"

WAREHOUSE_ENV = "BATTERY_PIPELINE_WAREHOUSE"
DUCKLAKE_CATALOG_ENV = "BATTERY_PIPELINE_DUCKLAKE_CATALOG"
DUCKLAKE_DATA_ENV = "BATTERY_PIPELINE_DUCKLAKE_DATA_PATH"
BACKENDS = ("duckdb", "ducklake")


def default_backend() -> str:
    backend = os.environ.get(WAREHOUSE_ENV, "duckdb").strip().lower() or "duckdb"
    if backend not in BACKENDS:
        raise ValueError(f"{WAREHOUSE_ENV}={backend!r}: expected one of {', '.join(BACKENDS)}")
    return backend


def warehouse_pool() -> str | None:
    """The pool of the steps that write the warehouse: the one-slot `duckdb` pool for the embedded
    file; none for DuckLake, whose writers commit side by side. Read at import, so every process
    of a deployment (code server, run and step workers) must see the same environment."""
    return DUCKDB_POOL if default_backend() == "duckdb" else None


# The pool the warehouse-writing assets are defined with (read once, at import).
WAREHOUSE_POOL = warehouse_pool()


def default_warehouse_path() -> str:
    return os.environ.get("BATTERY_PIPELINE_DUCKDB", str(DATA_DIR / "warehouse.duckdb"))


def default_ducklake_catalog() -> str:
    return os.environ.get(DUCKLAKE_CATALOG_ENV, "")


def default_ducklake_data_path() -> str:
    return os.environ.get(DUCKLAKE_DATA_ENV, str(DATA_DIR / "lake"))


def default_data_dirs() -> list[str]:
    raw = os.environ.get("BATTERY_PIPELINE_DATA_DIRS")
    if raw:
        return [p for p in raw.split(os.pathsep) if p]
    return [str(DATA_DIR / "incoming")]


def default_demo_dir() -> str:
    return os.environ.get("BATTERY_PIPELINE_DEMO_DIR", str(DATA_DIR / "demo"))


def default_model_dir() -> str:
    return os.environ.get("BATTERY_PIPELINE_MODEL_DIR", str(DATA_DIR / "models"))


def default_results_dir() -> str:
    return os.environ.get("BATTERY_PIPELINE_RESULTS_DIR", str(PROJECT_ROOT / "results"))


def default_reports_dir() -> str:
    return os.environ.get("BATTERY_PIPELINE_REPORTS_DIR", str(PROJECT_ROOT / "reports"))


_DUCKDB_TYPES = {"str": "VARCHAR", "int64": "BIGINT", "Int64": "BIGINT", "float64": "DOUBLE"}

# Table layouts come from the pandera models, so column order and types are fixed by the schema.
TABLE_MODELS = {
    "quarantined_samples": QuarantinedSample,
    "cells": CellRecord,
    "cell_impedance": CellImpedance,
}


def _ddl_columns(model) -> str:
    columns = model.to_schema().columns
    return ", ".join(f'"{name}" {_DUCKDB_TYPES[str(col.dtype)]}' for name, col in columns.items())


# `raw_samples` and `cycle_curves` are views over a compact layout (`compact_layout`: text once per
# source, not per row).
RAW = compact_layout.RAW
RAW_SAMPLES = RAW.view
COMPACT = compact_layout.LAYOUTS
# `validated_samples` is not a second copy of the samples but a view: the raw rows of the cells in
# `validated_cells`, minus the quarantined ones, with sample_flags' interpolated values filling
# the holes. Storing every sample twice cost DuckDB about 0.5 us of CPU a sample and table, half
# of ingest. A sample is named by (cell_id, source_file, source_row), which validation requires
# to be unique. `validated_cells` holds a digest of the raw rows each cell was validated on:
# replacing a cell's raw rows with different ones takes it out, so a cell read again but not yet
# validated again has no validated samples, never unvalidated ones.
VALIDATED_SAMPLES = "validated_samples"
VALIDATED_CELLS_DDL = "CREATE TABLE IF NOT EXISTS validated_cells (cell_id VARCHAR, validated_rows BIGINT, raw_digest HUGEINT)"
_RAW_DIGESTS = RAW.digests_sql()
# the digest of earlier versions, over a raw_samples table: to carry validations over to the view
_TABLE_RAW_DIGESTS = (
    "SELECT cell_id, sum(hash({columns})::HUGEINT) AS raw_digest FROM raw_samples "
    "WHERE cell_id IN (SELECT key FROM _keys) GROUP BY cell_id"
).format(columns=", ".join(c for c in CellCycleSample.to_schema().columns if c != "cell_id"))
_SAME_SOURCE = "k.cell_id = x.cell_id AND k.source_file = x.source_file"


def validated_samples_sql(in_keys: bool = False, stored_columns: bool = False) -> str:
    """The view's query; `in_keys`: only the cells in the relation `_keys`, in stored order (what
    a read of some partitions runs: filtered before the joins, which a filter on the view
    itself is not, for the semi-join of a keys relation). Quarantined and flagged samples are
    matched on (source key, source_row): their few rows get their source's key, so the
    samples' join is on two integers, not on text. `stored_columns`: the source key and step code
    in place of the text (`CompactLayout.decode`)."""
    only = " AND {a}.cell_id IN (SELECT key FROM _keys)" if in_keys else ""
    columns = ", ".join(
        f"coalesce(f.{c}, {raw}) AS {c}" if c in INTERPOLATED_CHANNELS else f"{raw} AS {c}"
        for c, raw in (RAW.stored_column_sql() if stored_columns else RAW.column_sql()).items()
    )
    fills = ", ".join(f"max(value) FILTER (WHERE channel = '{c}') AS {c}" for c in INTERPOLATED_CHANNELS)
    keyed = f"JOIN {RAW.sources} k ON {_SAME_SOURCE}"
    return f"""SELECT {columns} FROM {RAW.joined}
        SEMI JOIN validated_cells c ON c.cell_id = s.cell_id
        ANTI JOIN (SELECT k.source_key, x.source_row FROM quarantined_samples x {keyed} WHERE true{only.format(a="x")}) q
            ON q.source_key = v.source_key AND q.source_row = v.source_row
        LEFT JOIN (SELECT k.source_key, x.source_row, {fills} FROM sample_flags x {keyed}
                   WHERE x.flag = 'interpolated'{only.format(a="x")} GROUP BY ALL) f
            ON f.source_key = v.source_key AND f.source_row = v.source_row
        {"WHERE true" + only.format(a="s") + " ORDER BY v.rowid" if in_keys else ""}"""


def _arrow_shape(frame: pd.DataFrame) -> pa.Table:
    """Zero-row Arrow table of the frame's columns; text columns with no values yet (which
    Arrow would type as null, and DuckDB could never store text in) become strings."""
    table = pa.Table.from_pandas(frame.head(0), preserve_index=False)
    fields = [pa.field(f.name, pa.string()) if pa.types.is_null(f.type) or pa.types.is_dictionary(f.type) else f for f in table.schema]
    return pa.Table.from_pylist([], schema=pa.schema(fields))


def _quote_identifier(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"not a plain identifier: {name!r}")
    return f'"{name}"'


@contextmanager
def _transaction(conn: duckdb.DuckDBPyConnection):
    """All statements inside commit together or not at all (a killed run rolls back)."""
    conn.execute("BEGIN TRANSACTION")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        try:
            conn.execute("ROLLBACK")
        except duckdb.TransactionException:
            pass  # a failed COMMIT (a DuckLake conflict) has already rolled back
        raise


def _arrow_table(frame: pd.DataFrame) -> pa.Table:
    # Arrow hands DuckDB the columns without a per-value conversion: about twice as fast as
    # registering the pandas frame. The table is the one pa.Table.from_pandas makes (NaN ->
    # null), built column by column: float64 columns go over without a copy (NaN as a null mask),
    # 4x faster than from_pandas on a 1 M-row sample frame. Categoricals become dictionaries with
    # int32 indices, so the tables of many cells share one schema whatever their category counts.
    columns = []
    for name in frame.columns:
        column = frame[name]
        if column.dtype == "float64":
            values = column.to_numpy()
            nan = np.isnan(values)
            columns.append(pa.array(values, mask=nan) if nan.any() else pa.array(values))
        elif isinstance(column.dtype, pd.CategoricalDtype):
            codes = column.cat.codes.to_numpy()
            categories = pa.array(column.cat.categories.to_numpy(dtype=object), pa.string())
            columns.append(pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32), mask=codes < 0), categories))
        else:
            columns.append(pa.Array.from_pandas(column))
    return pa.Table.from_arrays(columns, names=[str(c) for c in frame.columns])


def _incoming(frames: pd.DataFrame | Sequence[pd.DataFrame]) -> pa.Table:
    """The rows to insert: one frame, or the frames of a group of partitions concatenated as Arrow
    chunks (no pandas concat, which turns categoricals of different categories back into Python
    strings); pandas' concat when their columns' types differ (e.g. a column all-null in one)."""
    if isinstance(frames, pd.DataFrame):
        return _arrow_table(frames)
    frames = [f for f in frames if len(f)] or list(frames[:1])
    tables = [_arrow_table(f) for f in frames]
    if len(tables) == 1:
        return tables[0]
    try:
        return pa.concat_tables(tables)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return _arrow_table(pd.concat(frames, ignore_index=True))


# DuckDB scans an Arrow table one record batch per thread: a cell's frame is one batch of up to
# millions of rows, which DuckDB 1.5 then inserts on one core (2.0 splits it itself). Batches of
# a row group's size let it insert on every core: 2 M samples 1.4 s -> 0.7 s on 2 cores.
INSERT_BATCH_ROWS = 122_880


@contextmanager
def _duckdb_threads(conn: duckdb.DuckDBPyConnection, threads: int | None):
    """DuckDB's thread count for the block, restored after it (the setting is the database's,
    and a lake's in-memory database outlives a session)."""
    if threads is None:
        yield
        return
    ((before,),) = conn.execute("SELECT current_setting('threads')").fetchall()
    conn.execute(f"SET threads = {int(threads)}")
    try:
        yield
    finally:
        conn.execute(f"SET threads = {int(before)}")


def _concat(tables: list[pa.Table]) -> pa.Table:
    """Tables of one layout as one (their columns as chunks); a column all-null in one table is
    cast to the others' type."""
    try:
        return pa.concat_tables(tables)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.concat_tables(tables, promote_options="permissive")


def _insert(conn: duckdb.DuckDBPyConnection, table: str, frames: pd.DataFrame | Sequence[pd.DataFrame]) -> None:
    _insert_arrow(conn, table, _incoming(frames))


def _insert_arrow(conn: duckdb.DuckDBPyConnection, table: str, incoming: pa.Table) -> None:
    if incoming.num_rows > INSERT_BATCH_ROWS:
        incoming = pa.Table.from_batches(incoming.to_batches(max_chunksize=INSERT_BATCH_ROWS), incoming.schema)
    conn.register("_incoming", incoming)
    conn.execute(f"INSERT INTO {_quote_identifier(table)} BY NAME SELECT * FROM _incoming")
    conn.unregister("_incoming")


def _replace_compact(conn: duckdb.DuckDBPyConnection, layout: CompactLayout, frames: pd.DataFrame | Sequence[pd.DataFrame]) -> None:
    """Replace the rows of the cells in `_keys` in a compact layout (inside the caller's transaction)."""
    for statement in layout.delete_sql():
        conn.execute(statement)
    values, sources = layout.encode(frames)
    if not sources.num_rows:
        return
    outside = set(sources["cell_id"].to_pylist()) - {row[0] for row in conn.execute("SELECT key FROM _keys").fetchall()}
    if outside:
        raise ValueError(f"{layout.view} rows of cells outside the partitions replaced: {sorted(outside)}")
    conn.register("_new_sources", sources)
    try:
        conn.execute(f"INSERT INTO {layout.sources} SELECT * FROM _new_sources")
        collisions = conn.execute(layout.collisions_sql()).fetchall()
        if collisions:
            key, cells, names = collisions[0]
            raise ValueError(f"{layout.view}: source key {key} stands for {list(zip(cells, names))}: rename one of them")
    finally:
        conn.unregister("_new_sources")
    _insert_arrow(conn, layout.values, _concat(values))


def _relation_kind(conn: duckdb.DuckDBPyConnection, name: str) -> str:
    """'BASE TABLE', 'VIEW', or '' where the warehouse has no such relation."""
    ((kind,),) = conn.execute(
        "SELECT coalesce(max(table_type), '') FROM information_schema.tables WHERE table_name = ? AND table_catalog = current_database()",
        [name],
    ).fetchall()
    return kind


# A view's comment names its query's version, so a newer definition replaces it.
def _view_version(definition: str) -> str:
    return hashlib.sha256(definition.encode()).hexdigest()[:16]


def _view_comment(conn: duckdb.DuckDBPyConnection, name: str) -> str | None:
    comment = conn.execute(
        "SELECT comment FROM duckdb_views() WHERE view_name = ? AND NOT internal AND database_name = current_database()", [name]
    ).fetchall()
    return comment[0][0] if comment else None


@contextmanager
def _keys_relation(conn: duckdb.DuckDBPyConnection, keys: Sequence[str]):
    """The relation `_keys(key)` holding the partition keys, for `... IN (SELECT key FROM _keys)`
    (keys as data, never formatted into SQL)."""
    conn.register("_keys", pa.table({"key": pa.array(list(keys), pa.string())}))
    try:
        yield
    finally:
        conn.unregister("_keys")


def _partitions_sql(table: str, key_column: str) -> str:
    """The rows of the partitions in `_keys`, in stored order."""
    if table == VALIDATED_SAMPLES or table in COMPACT:
        if key_column != "cell_id":
            raise ValueError(f"{table} is partitioned by cell_id, not {key_column}")
        return validated_samples_sql(in_keys=True) if table == VALIDATED_SAMPLES else COMPACT[table].view_sql(in_keys=True)
    return f"SELECT * FROM {_quote_identifier(table)} WHERE {_quote_identifier(key_column)} IN (SELECT key FROM _keys) ORDER BY rowid"


def split_by_key(frame: pd.DataFrame, key_column: str, keys: Sequence[str]) -> dict[str, pd.DataFrame]:
    """{key: its rows, index from 0}. A group's partitions are inserted one after another, so each
    key's rows are usually one contiguous block in stored order: then slices, else a groupby."""
    values = frame[key_column]
    codes, uniques = (values.cat.codes.to_numpy(), values.cat.categories) if isinstance(values.dtype, pd.CategoricalDtype) \
        else pd.factorize(values)
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]]) if len(codes) else np.array([], dtype=int)
    if len(set(codes[starts].tolist())) == len(starts) and not (codes < 0).any():  # one block per key
        ends = np.r_[starts[1:], len(codes)]
        groups = {
            str(uniques[codes[a]]): frame.iloc[a:b].set_axis(pd.RangeIndex(b - a), copy=False)
            for a, b in zip(starts.tolist(), ends.tolist())
        }
    else:
        groups = {str(k): g.reset_index(drop=True) for k, g in frame.groupby(key_column, sort=False, observed=True)}
    return {key: groups.get(key, frame.iloc[0:0]) for key in keys}


class Warehouse(DuckDBResource):
    """The warehouse: an embedded DuckDB file (default; Dagster's DuckDB integration, which retries
    the connection on lock) or DuckLake (`backend="ducklake"`: catalog in PostgreSQL, data as
    Parquet, writers in many processes at once; see `lakehouse`). The same SQL runs on both.

    All SQL of the pipeline goes through these methods; partition keys and other values are
    always bound as parameters, never formatted into SQL text.
    """

    backend: str = Field(default_factory=default_backend, description="duckdb (one file) or ducklake")
    database: str = Field(default_factory=default_warehouse_path, description="DuckDB file path (backend duckdb)")
    ducklake_catalog: str = Field(
        default_factory=default_ducklake_catalog, description="DuckLake's PostgreSQL catalog: libpq string or URL (backend ducklake)"
    )
    ducklake_data_path: str = Field(
        default_factory=default_ducklake_data_path, description="DuckLake's data folder or object-store URL (backend ducklake)"
    )
    _session: duckdb.DuckDBPyConnection | None = PrivateAttr(default=None)
    # layouts ensured during the session (`ensure_table`): its batch ensures the same few tables
    # before every store, at about 10 ms of catalog queries each time (32 ms a cell, timed by hand on the ingest benchmark's warehouse)
    _ensured: set | None = PrivateAttr(default=None)

    @property
    def location(self) -> str:
        """Where the warehouse is, for messages and metadata (no password)."""
        if self.backend == "ducklake":
            return f"DuckLake (catalog {lakehouse.redacted(lakehouse.postgres_conninfo(self.ducklake_catalog))}, data {self.ducklake_data_path})"
        return self.database

    @contextmanager
    def _open(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"warehouse backend {self.backend!r}: expected one of {', '.join(BACKENDS)}")
        if self.backend == "ducklake":
            conn = lakehouse.cursor(self.ducklake_catalog, self.ducklake_data_path)
            try:
                yield conn
            finally:
                conn.close()
            return
        Path(self.database).parent.mkdir(parents=True, exist_ok=True)
        with self.get_connection() as conn:
            yield conn

    @contextmanager
    def connection(self):
        if self._session is not None:
            # a cursor: a connection of its own on the session's open database (no file open),
            # so a call's unfinished result never blocks the next call
            cursor = self._session.cursor()
            if self.backend == "ducklake":
                lakehouse.use_lake(cursor)
            try:
                yield cursor
            finally:
                cursor.close()
            return
        with self._open() as conn:
            yield conn

    @contextmanager
    def threads(self, threads: int | None):
        """DuckDB's threads for the calls in the block, inside a session (outside one, or with
        None, DuckDB's own: one per core)."""
        if self._session is None:
            yield
            return
        with _duckdb_threads(self._session, threads):
            yield

    @contextmanager
    def session(self):
        """One connection for every call inside the block. Opening the DuckDB file costs 20-40 ms
        (and closing it after a write, a checkpoint), attaching the lake about as much; a batch of
        cells makes dozens of calls per cell. With the embedded file, only for a step that owns
        the writer (the one-slot `duckdb` pool): other processes cannot open the file while the
        session lasts. With DuckLake, other processes read and write meanwhile."""
        if self._session is not None:
            yield self
            return
        with self._open() as conn:
            self._session, self._ensured = conn, set()
            try:
                yield self
            finally:
                self._session, self._ensured = None, None

    def ensure_table(self, conn: duckdb.DuckDBPyConnection, table: str, frame: pd.DataFrame | None = None):
        """Create the table if it is missing, and add the columns a newer version of the code
        writes (a warehouse made before a column existed keeps its rows; the new column is NULL
        there until the partition is materialized again)."""
        name = _quote_identifier(table)
        layout = (table, None if table in TABLE_MODELS or table in COMPACT or frame is None else tuple(frame.columns))
        if self._ensured is not None and layout in self._ensured:
            return
        # another writer creating the same table or column at once is a conflict: look again
        if table == VALIDATED_SAMPLES:
            lakehouse.retry_conflicts(lambda: self._ensure_validated_view(conn))
        elif table in COMPACT:
            lakehouse.retry_conflicts(lambda: self._ensure_compact_view(conn, COMPACT[table]))
        else:
            lakehouse.retry_conflicts(lambda: self._ensure_base_table(conn, table, name, frame))
        if self._ensured is not None:
            self._ensured.add(layout)

    def _ensure_base_table(self, conn: duckdb.DuckDBPyConnection, table: str, name: str, frame: pd.DataFrame | None) -> None:
        if table in TABLE_MODELS:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {name} ({_ddl_columns(TABLE_MODELS[table])})")
            wanted = {n: _DUCKDB_TYPES[str(c.dtype)] for n, c in TABLE_MODELS[table].to_schema().columns.items()}
        elif frame is not None:
            conn.register("_shape", _arrow_shape(frame))
            conn.execute(f"CREATE TABLE IF NOT EXISTS {name} AS SELECT * FROM _shape")
            wanted = dict(conn.execute("SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM _shape)").fetchall())
            conn.unregister("_shape")
        else:
            raise ValueError(f"no layout known for table {table!r}")
        present = {row[0] for row in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? AND table_catalog = current_database()", [table]
        ).fetchall()}
        for column, sql_type in wanted.items():
            if column not in present:
                conn.execute(f"ALTER TABLE {name} ADD COLUMN {_quote_identifier(column)} {sql_type}")

    def _ensure_validated_view(self, conn: duckdb.DuckDBPyConnection) -> None:
        """The view and the tables it reads. A warehouse of earlier versions holds validated
        samples as a table (raw minus quarantined, plus the fills, as the view computes them): its
        cells are recorded as validated before it is replaced by the view."""
        for table in (RAW_SAMPLES, "quarantined_samples"):
            self.ensure_table(conn, table)
        self.ensure_table(conn, "sample_flags", empty_flags())
        conn.execute(VALIDATED_CELLS_DDL)
        definition = validated_samples_sql()
        kind, version = _relation_kind(conn, VALIDATED_SAMPLES), _view_version(definition)
        if kind == "VIEW" and _view_comment(conn, VALIDATED_SAMPLES) == version:
            return
        with _transaction(conn):
            if kind == "BASE TABLE":
                keys = [row[0] for row in conn.execute(f"SELECT DISTINCT cell_id FROM {VALIDATED_SAMPLES}").fetchall()]
                with _keys_relation(conn, keys):
                    conn.execute(
                        f"INSERT INTO validated_cells SELECT v.cell_id, v.n, d.raw_digest FROM "
                        f"(SELECT cell_id, count(*) AS n FROM {VALIDATED_SAMPLES} GROUP BY cell_id) v "
                        f"JOIN ({_RAW_DIGESTS}) d USING (cell_id)"
                    )
                conn.execute(f"DROP TABLE {VALIDATED_SAMPLES}")
            conn.execute(f"CREATE OR REPLACE VIEW {VALIDATED_SAMPLES} AS {definition}")
            conn.execute(f"COMMENT ON VIEW {VALIDATED_SAMPLES} IS '{version}'")

    def _ensure_compact_view(self, conn: duckdb.DuckDBPyConnection, layout: CompactLayout) -> None:
        """The compact tables and the view over them. A warehouse of earlier versions holds the
        asset as a table: its rows move to the compact tables (every one, or an error), and a cell
        validated on its raw rows stays validated (its digest is carried over)."""
        definition = layout.view_sql()
        kind, version = _relation_kind(conn, layout.view), _view_version(definition)
        if kind == "VIEW" and _view_comment(conn, layout.view) == version:
            return
        with _transaction(conn):
            conn.execute(layout.values_ddl())
            conn.execute(layout.sources_ddl())
            if kind == "BASE TABLE":
                self._move_table(conn, layout)
            conn.execute(f"CREATE OR REPLACE VIEW {layout.view} AS {definition}")
            conn.execute(f"COMMENT ON VIEW {layout.view} IS '{version}'")

    def _move_table(self, conn: duckdb.DuckDBPyConnection, layout: CompactLayout) -> None:
        table = layout.view
        (rows,), = conn.execute(f"SELECT count(*) FROM {table}").fetchall()
        pairs = conn.execute(f"SELECT DISTINCT cell_id, {layout.named_by} FROM {table}").fetchall()
        if any(cell is None for cell, _ in pairs):
            raise ValueError(f"{table} holds rows without a cell_id: they belong to no partition (delete or fix them first)")
        names = layout.code_names([row[0] for row in conn.execute(
            f"SELECT DISTINCT {layout.coded} FROM {table} WHERE {layout.coded} IS NOT NULL").fetchall()]) if layout.coded else None
        sources = layout.sources_table({compact_layout.source_key(*pair): pair for pair in pairs}, names)
        validated = layout is RAW and self._exists(conn, "validated_cells")
        with _keys_relation(conn, sorted({cell for cell, _ in pairs})):
            before = conn.execute(_TABLE_RAW_DIGESTS).df() if validated else None
            conn.register("_new_sources", sources)
            conn.execute(f"INSERT INTO {layout.sources} SELECT * FROM _new_sources")
            conn.execute(layout.move_table_sql())
            conn.unregister("_new_sources")
            (moved,), = conn.execute(f"SELECT count(*) FROM {layout.values}").fetchall()
            if moved != rows:
                raise RuntimeError(f"moving {table} to {layout.values}: {rows:,} rows, {moved:,} moved")
            if validated:  # a cell validated on these rows stays validated on them
                digests = before.merge(conn.execute(_RAW_DIGESTS).df(), on="cell_id", suffixes=("_before", "_after"))
                conn.register("_digests", digests)
                conn.execute(
                    "UPDATE validated_cells SET raw_digest = d.raw_digest_after FROM _digests d "
                    "WHERE validated_cells.cell_id = d.cell_id AND validated_cells.raw_digest = d.raw_digest_before"
                )
                conn.unregister("_digests")
        conn.execute(f"DROP TABLE {table}")

    def _any_validated(self, conn: duckdb.DuckDBPyConnection) -> bool:
        """Whether a cell of `_keys` is marked validated (only then do new raw rows need a digest)."""
        if not self._exists(conn, "validated_cells"):
            return False
        return conn.execute("SELECT count(*) FROM validated_cells WHERE cell_id IN (SELECT key FROM _keys)").fetchall()[0][0] > 0

    @staticmethod
    def _mark_validated(conn: duckdb.DuckDBPyConnection, keys: list[str], frames) -> None:
        """Record the cells as validated, on their stored raw rows (their digest), with the row count
        validation kept, for the checks to compare with the view; the samples are the view."""
        counts: dict[str, int] = {}
        for frame in [frames] if isinstance(frames, pd.DataFrame) else frames:
            for key, n in frame["cell_id"].value_counts(sort=False).items():  # categorical: no string per row
                if n:
                    counts[str(key)] = counts.get(str(key), 0) + int(n)
        if set(counts) - set(keys):
            raise ValueError(f"validated rows of cells outside the partitions replaced: {sorted(set(counts) - set(keys))}")
        conn.execute("DELETE FROM validated_cells WHERE cell_id IN (SELECT key FROM _keys)")
        conn.register("_validated", pa.table({"cell_id": keys, "validated_rows": [counts.get(k, 0) for k in keys]}))
        conn.execute(f"INSERT INTO validated_cells SELECT v.*, d.raw_digest FROM _validated v LEFT JOIN ({_RAW_DIGESTS}) d USING (cell_id)")
        conn.unregister("_validated")

    def replace_partition(self, table: str, frame: pd.DataFrame, key_column: str, key: str) -> int:
        """Atomically replace the rows of one partition; other partitions are untouched."""
        self.replace_partitions({table: frame}, key_column, key)
        return len(frame)

    def replace_partitions(
        self, frames: dict[str, pd.DataFrame | list[pd.DataFrame]], key_column: str, key: str | Sequence[str]
    ) -> None:
        """Replace one partition, or a batch of them (`key` a list; a table's rows one frame or
        a list of frames, e.g. one per partition), in several tables in a single transaction.

        Readers never see a half-written partition (e.g. validated rows of the new run beside
        quarantined rows of the old one), and a run killed midway leaves the old partitions. A
        batch is one DELETE and one INSERT per table, however many partitions it holds.

        `validated_samples` is a view (`validated_samples_sql`): its frames are not stored but
        mark their cells validated, with their row counts; they must come with the quarantined
        rows and flags that make the view equal them.
        """
        column = _quote_identifier(key_column)
        keys = [key] if isinstance(key, str) else list(key)
        if VALIDATED_SAMPLES in frames and key_column != "cell_id":
            raise ValueError(f"{VALIDATED_SAMPLES} is partitioned by cell_id, not {key_column}")
        with self.connection() as conn:
            for table, frame in frames.items():
                self.ensure_table(conn, table, frame if isinstance(frame, pd.DataFrame) else frame[0])
            with _keys_relation(conn, keys):
                # a DuckLake writer that lost a conflict (another run replacing rows in the same
                # data files) replaces again on the new snapshot: one copy of each row remains
                lakehouse.retry_conflicts(lambda: self._replace_in_transaction(conn, frames, column, keys))

    def _replace_in_transaction(self, conn, frames: dict, column: str, keys: list[str]) -> None:
        with _transaction(conn):
            for table, frame in frames.items():
                if table == VALIDATED_SAMPLES:
                    continue
                if table in COMPACT:
                    _replace_compact(conn, COMPACT[table], frame)
                    continue
                conn.execute(f"DELETE FROM {_quote_identifier(table)} WHERE {column} IN (SELECT key FROM _keys)")
                if any(len(f) for f in ([frame] if isinstance(frame, pd.DataFrame) else frame)):
                    _insert(conn, table, frame)
            if VALIDATED_SAMPLES in frames:  # last: on the raw rows as stored now
                self._mark_validated(conn, keys, frames[VALIDATED_SAMPLES])
            elif RAW_SAMPLES in frames and self._any_validated(conn):
                conn.execute(
                    f"DELETE FROM validated_cells v WHERE cell_id IN (SELECT key FROM _keys) AND raw_digest IS DISTINCT FROM "
                    f"(SELECT d.raw_digest FROM ({_RAW_DIGESTS}) d WHERE d.cell_id = v.cell_id)"
                )

    def replace_table(self, table: str, frame: pd.DataFrame) -> int:
        """Replace a whole (unpartitioned) table, layout included, in one transaction: for tables
        whose columns follow the data, e.g. a training set after a feature was added."""
        name = _quote_identifier(table)
        if self._ensured is not None:  # its layout is the frame's now
            self._ensured = {layout for layout in self._ensured if layout[0] != table}
        incoming = pa.Table.from_pandas(frame, preserve_index=False)

        def replace(conn) -> None:
            with _transaction(conn):
                conn.register("_incoming", incoming)
                conn.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM _incoming")
                conn.unregister("_incoming")

        with self.connection() as conn:
            lakehouse.retry_conflicts(lambda: replace(conn))
        return len(frame)

    def append_rows(self, table: str, frame: pd.DataFrame, then: tuple[str, list] | None = None) -> None:
        """Append rows (creating the table from the frame's layout), and optionally run one more
        statement `then` = (sql, params), all in one transaction: e.g. a decision log and the
        state it decided, which must never disagree."""
        def append(conn) -> None:
            with _transaction(conn):
                _insert(conn, table, frame)
                if then is not None:
                    conn.execute(*then)

        with self.connection() as conn:
            self.ensure_table(conn, table, frame)
            lakehouse.retry_conflicts(lambda: append(conn))

    def read_partition(self, table: str, key_column: str, key: str, columns: list[str] | None = None) -> pd.DataFrame:
        selected = ", ".join(_quote_identifier(c) for c in columns) if columns else "*"
        with self.connection() as conn:
            self._ensure_readable(conn, table)
            with _keys_relation(conn, [key]):
                return conn.execute(f"SELECT {selected} FROM ({_partitions_sql(table, key_column)})").df()

    def read_partitions(
        self, table: str, key_column: str, keys: Sequence[str], text_as_category: bool = False
    ) -> dict[str, pd.DataFrame]:
        """Many partitions in one scan: {key: its rows in stored order} (an empty frame with the
        table's columns for a key without rows). `text_as_category`: text columns as pandas
        categoricals (Arrow dictionaries, no Python string per row: for large read-backs)."""
        with self.connection() as conn:
            self._ensure_readable(conn, table)
            with _keys_relation(conn, keys):
                if text_as_category and table in (RAW_SAMPLES, VALIDATED_SAMPLES) and key_column == "cell_id":
                    frame = self._read_samples_decoded(conn, table)
                else:
                    rows = conn.sql(_partitions_sql(table, key_column))
                    frame = rows.to_arrow_table().to_pandas(strings_to_categorical=True) if text_as_category else rows.df()
        return split_by_key(frame, key_column, keys)

    @staticmethod
    def _read_samples_decoded(conn: duckdb.DuckDBPyConnection, table: str) -> pd.DataFrame:
        """Samples of the cells in `_keys` in stored order, their text rebuilt from the sources:
        sorting numbers only takes 1.5's read of 25 cells' validated samples from 215 to 132 ms."""
        sql = validated_samples_sql(in_keys=True, stored_columns=True) if table == VALIDATED_SAMPLES else RAW.stored_rows_sql()
        rows = conn.sql(sql).to_arrow_table().to_pandas()
        return RAW.decode(rows, conn.sql(RAW.keys_sources_rows_sql()).to_arrow_table().to_pandas())

    def _ensure_readable(self, conn: duckdb.DuckDBPyConnection, table: str) -> None:
        if not self._exists(conn, table):
            raise LookupError(f"table {table} does not exist yet: materialize it first")
        if table == VALIDATED_SAMPLES or table in COMPACT:  # the layout these reads query (a warehouse of earlier versions: moved)
            self.ensure_table(conn, table)

    def query_keys(self, sql: str, keys: Sequence[str]) -> pd.DataFrame:
        """`sql` run with the relation `_keys(key)` holding `keys` (one query for a group of
        partitions: `WHERE cell_id IN (SELECT key FROM _keys)`)."""
        with self.connection() as conn, _keys_relation(conn, keys):
            return conn.execute(sql).df()

    def query(self, sql: str, params: list | None = None) -> pd.DataFrame:
        with self.connection() as conn:
            return conn.execute(sql, params or []).df()

    def table_exists(self, table: str) -> bool:
        with self.connection() as conn:
            return self._exists(conn, table)

    @staticmethod
    def _exists(conn, table: str) -> bool:
        # fetchall: a result left unfinished blocks the next register() on the connection
        ((count,),) = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ? AND table_catalog = current_database()", [table]
        ).fetchall()
        return bool(count)


class SourceCatalog(ConfigurableResource):
    """Where cycler files are found. With no data files there, the demo fleet is used."""

    data_dirs: list[str] = Field(default_factory=default_data_dirs)
    demo_dir: str = Field(default_factory=default_demo_dir)
    use_demo_when_empty: bool = True

    def roots(self) -> list[Path]:
        roots = [Path(d) for d in self.data_dirs]
        if self.use_demo_when_empty and not source_discovery.iter_data_files(roots):
            from battery_pipeline.science.demo import ensure_demo_fleet

            return [ensure_demo_fleet(Path(self.demo_dir))]
        return roots

    def discover(self) -> source_discovery.Catalog:
        return source_discovery.discover(self.roots())


MODEL_SIDECAR = "model.json"


class ModelStore(ConfigurableResource):
    """Files beside the warehouse: model artifacts, the audit JSON of the metrics, and reports.

    `models_dir/<model_id>/` holds the artifact (`science.ml.persistence`) and `model.json`, the
    sidecar that says what the model is; `models_dir/current/<model_name>.json` names the model id
    that asset `<model_name>` produced last. A model directory is written under a temporary name
    and renamed into place, so a run killed midway never leaves a half-written model behind.
    """

    models_dir: str = Field(default_factory=default_model_dir)
    results_dir: str = Field(default_factory=default_results_dir)
    reports_dir: str = Field(default_factory=default_reports_dir)

    def model_dir(self, model_id: str) -> Path:
        return Path(self.models_dir) / model_id

    def save(self, model_id: str, estimator, sidecar: dict) -> Path:
        from battery_pipeline.science.ml.persistence import save_estimator

        target = self.model_dir(model_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{model_id}-", dir=target.parent))
        try:
            files = save_estimator(estimator, staging)
            _write_json(staging / MODEL_SIDECAR, {**sidecar, "artifact_files": files})
            if target.exists():  # same id = same data, code, parameters and seed: replace it
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def set_current(self, model_name: str, model_id: str) -> None:
        _write_json(Path(self.models_dir) / "current" / f"{model_name}.json", {"model_id": model_id})

    def current(self, model_name: str) -> str | None:
        path = Path(self.models_dir) / "current" / f"{model_name}.json"
        return json.loads(path.read_text())["model_id"] if path.exists() else None

    def has(self, model_id: str) -> bool:
        return (self.model_dir(model_id) / MODEL_SIDECAR).exists()

    def sidecar(self, model_id: str) -> dict:
        path = self.model_dir(model_id) / MODEL_SIDECAR
        if not path.exists():
            raise LookupError(f"model {model_id!r} has no artifact in {self.models_dir} (train it first)")
        return json.loads(path.read_text())

    def load(self, model_id: str):
        from battery_pipeline.science.ml.persistence import load_estimator

        self.sidecar(model_id)  # a clear error when the model is unknown
        return load_estimator(self.model_dir(model_id))

    def write_result(self, name: str, payload: dict) -> Path:
        return _write_json(Path(self.results_dir) / name, payload)

    def write_report(self, relative_path: str, text: str) -> Path:
        path = Path(self.reports_dir) / relative_path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
        return path


def _write_json(path: Path, payload) -> Path:
    """Write JSON atomically (temp file + rename): readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str, allow_nan=True))
    tmp.replace(path)
    return path


def environment_resources() -> dict[str, ConfigurableResource]:
    """Every resource of the code location, its folders read from the environment now."""
    from battery_pipeline.pack_resources import PackSourceCatalog

    return {"warehouse": Warehouse(), "catalog": SourceCatalog(), "model_store": ModelStore(), "pack_catalog": PackSourceCatalog()}


def environment_run_config(**overrides: dict) -> dict:
    """Run config pinning each resource's environment-derived fields (those with a
    default_factory: folders, the database) to the environment as it is now, plus `overrides`
    per resource. A run executed in the process that imported the definitions earlier (the CLI,
    a test) needs it, as the definitions' resources read the environment at import; it also
    records in the run which folders it used. A field that may hold a password (the DuckLake
    catalog's connection string) is given as a reference to its variable (`SECRET_FIELDS`)."""
    resources = {}
    for key, resource in environment_resources().items():
        fields = {name: getattr(resource, name) for name, field in type(resource).model_fields.items() if field.default_factory is not None}
        for name, variable in SECRET_FIELDS.get(type(resource).__name__, {}).items():
            if name in fields and os.environ.get(variable):
                fields[name] = {"env": variable}  # the run names the variable, never its value
        resources[key] = {"config": {**fields, **overrides.get(key, {})}}
    return {"resources": resources}


# Fields whose value may hold a password: the run config (shown in the UI, stored with the run)
# names their environment variable instead, which every host of the deployment sets.
SECRET_FIELDS = {"Warehouse": {"ducklake_catalog": DUCKLAKE_CATALOG_ENV}}
