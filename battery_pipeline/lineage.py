"""What an asset was made from: a cheap hash of its input data, and the code version.

Every asset that can put `lineage_metadata(...)` into its materialization metadata does, and the
`audit_log` asset copies both keys into its table, so a published figure can be traced to the
exact input data and code. Two kinds of input hash:

* `files_hash`: sha256 over the source files' names and bytes (ingest reads the files anyway; a
  file changed by one byte changes the hash);
* `partition_hash`: a DuckDB aggregate over one partition of a warehouse table: the row count and
  the XOR of the row hashes. Order-independent (a partition is a set of rows) and one scan; the
  row hash is DuckDB's, so the value is stable for one DuckDB version, which is what an audit
  needs (same data, same code, same hash). The two views are hashed by what they are made of:
  `raw_samples` and `cycle_curves` over their compact tables (`compact_layout`), `validated_samples` as the partitions of
  the tables it is computed from (the same rows give the same hash, without evaluating the view).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

from battery_pipeline.compact_layout import LAYOUTS as COMPACT
from battery_pipeline.provenance import code_version

_BLOCK = 1 << 20


def files_hash(paths: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as handle:
            while block := handle.read(_BLOCK):
                digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def partition_hash(warehouse, tables: Iterable[str], key_column: str, key: str) -> str:
    """One hash over the partition `key` of each table (in the given order); a missing table
    counts as empty."""
    return partition_hashes(warehouse, tables, key_column, [key])[key]


# A view's rows are a function of these tables' partitions (resources.validated_samples_sql).
VIEW_INPUTS = {"validated_samples": ("raw_samples", "quarantined_samples", "sample_flags", "validated_cells")}


def partition_hashes(warehouse, tables: Iterable[str], key_column: str, keys: list[str]) -> dict[str, str]:
    """`partition_hash` of many partitions, one scan per table for the whole batch."""
    parts: dict[str, list[str]] = {key: [] for key in keys}
    for table in [t for table in tables for t in VIEW_INPUTS.get(table, (table,))]:
        if not warehouse.table_exists(table):
            for key in keys:
                parts[key].append(f"{table}:absent")
            continue
        if not table.replace("_", "").isalnum() or not key_column.replace("_", "").isalnum():
            raise ValueError(f"not a plain identifier: {table!r} / {key_column!r}")
        if table in COMPACT and key_column == "cell_id":
            sql = COMPACT[table].partition_hash_sql()
        else:
            sql = (f'SELECT "{key_column}" AS k, count(*) AS n, coalesce(bit_xor(hash(t)), 0) AS h FROM "{table}" t '
                   f'WHERE "{key_column}" IN (SELECT unnest(?)) GROUP BY 1')
        rows = warehouse.query(sql, [list(keys)])
        found = {row.k: (int(row.n), int(row.h)) for row in rows.itertuples()}
        for key in keys:
            n, h = found.get(key, (0, 0))
            parts[key].append(f"{table}:{n}:{h}")
    return {key: f"duckdb:{hashlib.sha256('|'.join(p).encode()).hexdigest()[:32]}" for key, p in parts.items()}


def lineage_metadata(data_hash: str) -> dict:
    """The two keys the audit trail reads from a materialization."""
    return {"data_hash": data_hash, "code_version": code_version()}
