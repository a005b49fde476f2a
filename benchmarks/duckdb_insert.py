"""DuckDB insert benchmark: what storing sample rows costs on the installed DuckDB, by column kind.

    python benchmarks/duckdb_insert.py [--rows 2000000] [--repeat 3]

The warehouse's raw_samples layout (3 text columns, 3 integer, 6 floating point) inserted from an
Arrow table the way `resources._insert` hands it over (text as dictionaries), into a new DuckDB file
in one transaction with a DELETE before it, as a partition replace does. Variants: one Arrow batch
for all rows (a cell's frame before `INSERT_BATCH_ROWS`), batches of a row group's size (now), and
the same without the text columns (what the text columns cost). Prints wall and CPU time
(process_time: DuckDB's threads included) per variant, the best of `--repeat`, and the DuckDB
version: run it in environments with different DuckDB releases to compare them.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    one_batch = sample_table(args.rows)
    row_groups = pa.Table.from_batches(one_batch.to_batches(max_chunksize=ROW_GROUP), one_batch.schema)
    variants = {
        "one Arrow batch": one_batch,
        "row-group batches": row_groups,
        "row-group batches, no text columns": row_groups.drop_columns(list(TEXT)),
    }
    print(f"DuckDB {duckdb.__version__}; {args.rows:,} rows; best of {args.repeat}")
    with tempfile.TemporaryDirectory() as folder:
        conn = duckdb.connect(str(Path(folder) / "insert.duckdb"))
        for name, table in variants.items():
            wall, cpu = timed_insert(conn, table, args.repeat)
            print(f"  {name:36s} {wall:6.2f} s wall  {cpu:6.2f} s CPU  ({args.rows / cpu / 1e6:.2f} M rows/s per CPU-second)")
        conn.close()


if __name__ == "__main__":
    main()
