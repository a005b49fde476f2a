"""How the warehouse stores raw samples: `raw_samples` is a view over two tables.

    raw_sample_values   one row per sample: its source's key, a step code and the numbers
    raw_sample_sources  one row per (cell, source file): the key, cell_id, source_file and the
                        step type names the codes of its rows index

Storing the three text columns of a sample (cell_id, step_type, source_file) on every row was
half of DuckDB 1.5's insert cost (`benchmarks/duckdb_insert.py`: 2 M rows 1.64 s of CPU, 0.74 s
in this layout). A cell's text is stored once per source file instead; the view puts it back, so
every reader sees the `CellCycleSample` columns as before.

A source's key is a hash of (cell_id, source_file), not a counter: writers in several processes
(DuckLake) make keys without asking each other. Two sources hashing to one key would be read as
one; a replace refuses that by name (`COLLISIONS_SQL`) instead of merging them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from battery_pipeline.science.schema import SAMPLE_COLUMNS, STEP_TYPES

RAW_SAMPLES = "raw_samples"
VALUES = "raw_sample_values"
SOURCES = "raw_sample_sources"
TEXT_COLUMNS = ("cell_id", "step_type", "source_file")
NUMBER_COLUMNS = {  # the stored columns of a sample besides its source key and step code
    "cycle_number": "BIGINT", "step_index": "BIGINT", "time_s": "DOUBLE", "voltage_v": "DOUBLE",
    "current_a": "DOUBLE", "temperature_c": "DOUBLE", "capacity_ah": "DOUBLE",
    "internal_resistance_ohm": "DOUBLE", "source_row": "BIGINT",
}
assert set(NUMBER_COLUMNS) | set(TEXT_COLUMNS) == set(SAMPLE_COLUMNS), "the layout must hold every sample column"
STEP_CODES = 65_535  # step_code is USMALLINT: this many step type names per replace at most

VALUES_DDL = (
    f"CREATE TABLE IF NOT EXISTS {VALUES} (source_key BIGINT, step_code USMALLINT, "
    + ", ".join(f'"{c}" {t}' for c, t in NUMBER_COLUMNS.items()) + ")"
)
SOURCES_DDL = f"CREATE TABLE IF NOT EXISTS {SOURCES} (source_key BIGINT, cell_id VARCHAR, source_file VARCHAR, step_types VARCHAR[])"


def sample_columns(values: str = "v", sources: str = "s") -> dict[str, str]:
    """{sample column: its expression} over `raw_sample_values {values} JOIN raw_sample_sources {sources}`."""
    text = {
        "cell_id": f"{sources}.cell_id",
        "step_type": f"{sources}.step_types[{values}.step_code + 1]",  # lists count from 1
        "source_file": f"{sources}.source_file",
    }
    return {c: text.get(c, f"{values}.{c}") for c in SAMPLE_COLUMNS}


JOINED = f"{VALUES} v JOIN {SOURCES} s ON s.source_key = v.source_key"


def raw_samples_sql(in_keys: bool = False) -> str:
    """The view's query; `in_keys`: only the cells in the relation `_keys`, in stored order."""
    columns = ", ".join(f"{expression} AS {name}" for name, expression in sample_columns().items())
    only = " WHERE s.cell_id IN (SELECT key FROM _keys) ORDER BY v.rowid" if in_keys else ""
    return f"SELECT {columns} FROM {JOINED}{only}"


# A cell's sources and their rows, for `... IN (SELECT key FROM _keys)`.
KEYS_SOURCES = f"SELECT source_key FROM {SOURCES} WHERE cell_id IN (SELECT key FROM _keys)"
DELETE_SQL = (
    f"DELETE FROM {VALUES} WHERE source_key IN ({KEYS_SOURCES})",
    f"DELETE FROM {SOURCES} WHERE cell_id IN (SELECT key FROM _keys)",
)

# Per cell in `_keys`: a digest of its raw rows, order-free (a sum of row hashes: no sort), over
# the stored columns (about 60 ns a row) plus, once per source, what its key and codes stand for.
DIGESTS_SQL = f"""
    WITH rows AS (
        SELECT source_key, sum(hash(step_code, {", ".join(NUMBER_COLUMNS)})::HUGEINT) AS digest
        FROM {VALUES} WHERE source_key IN ({KEYS_SOURCES}) GROUP BY source_key)
    SELECT s.cell_id, sum(coalesce(r.digest, 0) + hash(s.step_types, s.source_file, s.source_key)::HUGEINT) AS raw_digest
    FROM {SOURCES} s LEFT JOIN rows r USING (source_key)
    WHERE s.cell_id IN (SELECT key FROM _keys) GROUP BY s.cell_id"""

# For `lineage.partition_hashes`: per cell in the list `?`, (k, n, h) = its row count and the XOR
# over its sources of one hash of what the source stands for and its rows' XOR. (DuckDB's
# hash(a, b) mixes a before it XORs b in: the key and the rows come after what sources share, so
# no two sources' XOR cancels it.)
PARTITION_HASH_SQL = f"""
    WITH src AS (SELECT source_key, cell_id, step_types, source_file
                 FROM {SOURCES} WHERE cell_id IN (SELECT unnest(?))),
         rows AS (SELECT source_key, count(*) AS n, bit_xor(hash(v)) AS h
                  FROM {VALUES} v WHERE source_key IN (SELECT source_key FROM src) GROUP BY source_key)
    SELECT s.cell_id AS k, coalesce(sum(r.n), 0) AS n,
           bit_xor(hash(s.step_types, s.source_file, s.source_key, coalesce(r.n, 0), coalesce(r.h, 0))) AS h
    FROM src s LEFT JOIN rows r USING (source_key) GROUP BY s.cell_id"""

# Keys of the sources just written (`_new_sources`) held by more than one source.
COLLISIONS_SQL = f"""
    SELECT source_key, list(cell_id ORDER BY cell_id), list(source_file ORDER BY cell_id) FROM {SOURCES}
    WHERE source_key IN (SELECT source_key FROM _new_sources) GROUP BY source_key HAVING count(*) > 1"""


def source_key(cell_id: str | None, source_file: str | None) -> int:
    """63-bit key of a (cell, file) pair, the same in every process and DuckDB version."""
    digest = hashlib.blake2b(json.dumps([cell_id, source_file]).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def _codes(column: pd.Series) -> tuple[np.ndarray, list]:
    """(codes, values): a categorical's codes and categories, else a factorization (-1 = missing)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return np.asarray(column.cat.codes), list(column.cat.categories)
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    return codes, list(uniques)


def _step_names(frames: Sequence[pd.DataFrame]) -> list[str]:
    """The step type names of all frames of a replace (raw rows keep what the file said)."""
    names = step_names([name for frame in frames for name in _codes(frame["step_type"])[1]])
    if len(names) > STEP_CODES:
        raise ValueError(f"{len(names):,} distinct step types in one replace of raw samples (at most {STEP_CODES:,})")
    return names


def encode(frames: pd.DataFrame | Sequence[pd.DataFrame]) -> tuple[list[pa.Table], pa.Table]:
    """Sample frames -> (Arrow tables of the stored columns, one per frame; the sources table).

    A row's (cell_id, source_file) becomes its source's key and its step_type a code into the
    source's names; the numbers go over unchanged. A row without a cell_id cannot belong to a
    partition and is refused (never dropped)."""
    frames = [frames] if isinstance(frames, pd.DataFrame) else list(frames)
    for frame in frames:
        unknown = [c for c in frame.columns if c not in SAMPLE_COLUMNS]
        missing_text = [c for c in TEXT_COLUMNS if c not in frame.columns]
        if unknown or missing_text:
            raise ValueError(f"raw sample frame: unknown columns {unknown}, missing text columns {missing_text}")
    names = _step_names(frames)
    position = {name: i for i, name in enumerate(names)}
    sources: dict[int, tuple[str, str | None]] = {}
    stored = []
    for frame in frames:
        cell_codes, cells = _codes(frame["cell_id"])
        file_codes, files = _codes(frame["source_file"])
        if len(cell_codes) and cell_codes.min() < 0:
            raise ValueError(f"{int((cell_codes < 0).sum()):,} raw sample(s) without a cell_id cannot be stored in a cell partition")
        if len(cell_codes) and cell_codes.min() == cell_codes.max() and file_codes.min() == file_codes.max():
            pairs, inverse = np.array([[cell_codes[0], file_codes[0]]]), np.zeros(len(frame), dtype=np.intp)  # the usual case
        else:
            pairs, inverse = np.unique(np.stack([cell_codes, file_codes], axis=1), axis=0, return_inverse=True)
        keys = np.empty(len(pairs), dtype=np.int64)
        for i, (cell, file) in enumerate(pairs.tolist()):
            pair = (str(cells[cell]), None if file < 0 else str(files[file]))
            keys[i] = source_key(*pair)
            sources[int(keys[i])] = pair
        step_codes, step_values = _codes(frame["step_type"])
        remap = np.array([position[str(v)] for v in step_values] + [0], dtype=np.uint16)
        step = remap[step_codes]  # code -1 (missing) picks the trailing 0, masked: NULL in the view
        columns = {"source_key": pa.array(keys[inverse.reshape(-1)]), "step_code": _array(step, step_codes < 0)}
        for name in NUMBER_COLUMNS:
            if name in frame.columns:
                values = frame[name].to_numpy()
                columns[name] = _array(values, np.isnan(values) if values.dtype.kind == "f" else None)
        stored.append(pa.table(columns))
    return stored, sources_table(sources, names)


def _array(values: np.ndarray, missing: np.ndarray | None) -> pa.Array:
    """Arrow over the numpy buffer (no copy without missing values); NaN -> null, as pandas' own
    conversion does."""
    return pa.array(values, mask=missing) if missing is not None and missing.any() else pa.array(values)


def sources_table(sources: dict[int, tuple[str, str | None]], step_names: list[str]) -> pa.Table:
    """{key: (cell_id, source_file)} as rows of `raw_sample_sources`."""
    return pa.table({
        "source_key": pa.array(list(sources), pa.int64()),
        "cell_id": pa.array([cell for cell, _ in sources.values()], pa.string()),
        "source_file": pa.array([file for _, file in sources.values()], pa.string()),
        "step_types": pa.array([step_names] * len(sources), pa.list_(pa.string())),
    })


def step_names(present: Sequence) -> list[str]:
    """The canonical step types first, so their codes are the same in every source, then the
    others present, sorted."""
    return list(STEP_TYPES) + sorted({str(p) for p in present} - set(STEP_TYPES))


# The rows of a `raw_samples` table of earlier versions in this layout, their sources in
# `_new_sources` (a step type outside a source's names would have no code: there is none).
MOVE_TABLE_SQL = f"""
    INSERT INTO {VALUES} BY NAME SELECT n.source_key, (list_position(n.step_types, r.step_type) - 1)::USMALLINT AS step_code,
        {", ".join(f"r.{c}" for c in NUMBER_COLUMNS)}
    FROM {RAW_SAMPLES} r JOIN _new_sources n ON n.cell_id = r.cell_id AND n.source_file IS NOT DISTINCT FROM r.source_file
    ORDER BY r.rowid"""
