"""DuckDB insert benchmark: what storing sample rows costs on the installed DuckDB, by layout.

    python benchmarks/duckdb_insert.py [--rows 2000000] [--repeat 3]

One cell's samples (3 text columns, 3 integer, 6 floating point) inserted from Arrow the way
`resources._insert` hands them over (text as dictionaries), into a new DuckDB file in one
transaction with a DELETE before it, as a partition replace does. Variants: the row layout of
earlier versions (every column on every row) as one Arrow batch for all rows (before
`INSERT_BATCH_ROWS`) and in batches of a row group's size; the same without the text columns
(what they cost); and the compact layout stored now (`compact_layout.RAW`: the text once per source file),
its encoding from the pandas frame included. Prints wall and CPU time (process_time: DuckDB's
threads included) per variant, the best of `--repeat`, and the DuckDB version: run it in
environments with different DuckDB releases to compare them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from battery_pipeline.compact_layout import RAW  # noqa: E402
from battery_pipeline.resources import _concat  # noqa: E402

ROW_GROUP = 122_880
TEXT = ("cell_id", "step_type", "source_file")


def sample_table(rows: int) -> pa.Table:
    rng = np.random.default_rng(0)

    def dictionary(codes: np.ndarray, values: list[str]) -> pa.DictionaryArray:
        return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), pa.array(values))

    return pa.table({
        "cell_id": dictionary(np.zeros(rows), ["CELL_0001"]),
        "cycle_number": pa.array(np.arange(rows) // 500),
        "step_index": pa.array(np.arange(rows) // 50),
        "step_type": dictionary(rng.integers(0, 3, rows), ["charge", "discharge", "rest"]),
        "time_s": pa.array(np.arange(rows, dtype=float)),
        "voltage_v": pa.array(3.0 + rng.random(rows)),
        "current_a": pa.array(rng.random(rows) - 0.5),
        "temperature_c": pa.array(25.0 + rng.random(rows)),
        "capacity_ah": pa.array(rng.random(rows)),
        "internal_resistance_ohm": pa.array(np.full(rows, np.nan), mask=np.ones(rows, bool)),
        "source_file": dictionary(np.zeros(rows), ["cell_0001.parquet"]),
        "source_row": pa.array(np.arange(rows)),
    })


def ddl(table: pa.Table) -> str:
    types = {"cycle_number": "BIGINT", "step_index": "BIGINT", "source_row": "BIGINT", **{t: "VARCHAR" for t in TEXT}}
    return ", ".join(f'"{name}" {types.get(name, "DOUBLE")}' for name in table.column_names)


def timed_insert(conn: duckdb.DuckDBPyConnection, table: pa.Table, repeat: int) -> tuple[float, float]:
    conn.execute(f"CREATE OR REPLACE TABLE samples ({ddl(table)})")
    conn.register("_incoming", table)
    best = (float("inf"), float("inf"))
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        conn.execute("BEGIN TRANSACTION")
        conn.execute("DELETE FROM samples")
        conn.execute("INSERT INTO samples BY NAME SELECT * FROM _incoming")
        conn.execute("COMMIT")
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    conn.unregister("_incoming")
    return best


def timed_compact_insert(conn: duckdb.DuckDBPyConnection, table: pa.Table, repeat: int) -> tuple[float, float]:
    """The compact layout, as `resources._replace_compact` stores it: encode, then the values in
    row-group batches and one row per source."""
    frame = table.to_pandas()  # text columns as categoricals, as readers give them
    conn.execute(f"DROP TABLE IF EXISTS {RAW.values}")
    conn.execute(f"DROP TABLE IF EXISTS {RAW.sources}")
    conn.execute(RAW.values_ddl())
    conn.execute(RAW.sources_ddl())
    best = (float("inf"), float("inf"))
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        values, sources = RAW.encode(frame)
        incoming = _concat(values)
        incoming = pa.Table.from_batches(incoming.to_batches(max_chunksize=ROW_GROUP), incoming.schema)
        conn.register("_incoming", incoming)
        conn.register("_sources", sources)
        conn.execute("BEGIN TRANSACTION")
        conn.execute(f"DELETE FROM {RAW.values}")
        conn.execute(f"DELETE FROM {RAW.sources}")
        conn.execute(f"INSERT INTO {RAW.values} BY NAME SELECT * FROM _incoming")
        conn.execute(f"INSERT INTO {RAW.sources} SELECT * FROM _sources")
        conn.execute("COMMIT")
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
        conn.unregister("_incoming")
        conn.unregister("_sources")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    one_batch = sample_table(args.rows)
    row_groups = pa.Table.from_batches(one_batch.to_batches(max_chunksize=ROW_GROUP), one_batch.schema)
    variants = {
        "row layout, one Arrow batch": (timed_insert, one_batch),
        "row layout, row-group batches": (timed_insert, row_groups),
        "row layout without the text columns": (timed_insert, row_groups.drop_columns(list(TEXT))),
        "compact layout (stored now)": (timed_compact_insert, one_batch),
    }
    print(f"DuckDB {duckdb.__version__}; {args.rows:,} rows; best of {args.repeat}")
    with tempfile.TemporaryDirectory() as folder:
        conn = duckdb.connect(str(Path(folder) / "insert.duckdb"))
        for name, (timed, table) in variants.items():
            wall, cpu = timed(conn, table, args.repeat)
            print(f"  {name:38s} {wall:6.2f} s wall  {cpu:6.2f} s CPU  ({args.rows / cpu / 1e6:.2f} M rows/s per CPU-second)")
        conn.close()


if __name__ == "__main__":
    main()
