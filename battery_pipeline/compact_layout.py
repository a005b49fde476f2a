"""Tables stored without text on every row: the asset is a view over two tables.

    <values>   one row per sample (or curve point): its source's key, a code, and the numbers
    <sources>  one row per source: the key, the text naming it (cell_id and a second column),
               and the names the codes of its rows index

Storing a few text values per row was half of DuckDB 1.5's insert cost
(`benchmarks/duckdb_insert.py`: 2 M samples 1.64 s of CPU with cell_id, step_type and
source_file on every row, 0.85 s in this layout). The text is stored once per source; the view
puts it back, so every reader sees the asset's columns as before.

    raw_samples   sources = (cell_id, source_file), step_type coded
    cycle_curves  sources = (cell_id, curve)

A source's key is a hash of its text, not a counter: writers in several processes (DuckLake)
make keys without asking each other. Two sources hashing to one key would be read as one; a
replace refuses that by name (`collisions_sql`) instead of merging them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from battery_pipeline.science.features import CURVE_COLUMNS
from battery_pipeline.science.schema import SAMPLE_COLUMNS, STEP_TYPES

CODES = 65_535  # a code is USMALLINT: this many names per replace at most
KEY = "cell_id"  # the partition key: every layout's sources start with it


@dataclass(frozen=True)
class CompactLayout:
    view: str
    values: str
    sources: str
    columns: tuple[str, ...]  # the view's columns, in order
    named_by: str  # the text column that, with cell_id, names a source
    numbers: dict  # {column: SQL type} stored on every row
    coded: str | None = None  # a text column stored as a code into its source's names
    first_names: tuple[str, ...] = ()  # names coded first, the same codes in every source

    def __post_init__(self):
        stored = {KEY, self.named_by, *self.numbers, *([self.coded] if self.coded else [])}
        assert stored == set(self.columns), f"{self.view}: the layout must hold every column"

    @property
    def code(self) -> str | None:
        """The values' column of codes."""
        return f"{self.coded}_code" if self.coded else None

    @property
    def names(self) -> str | None:
        """The sources' column of names the codes index."""
        return f"{self.coded}s" if self.coded else None

    @property
    def text(self) -> tuple[str, ...]:
        return tuple(c for c in (KEY, self.named_by, self.coded) if c)

    def values_ddl(self) -> str:
        code = f", {self.code} USMALLINT" if self.coded else ""
        numbers = ", ".join(f'"{c}" {t}' for c, t in self.numbers.items())
        return f"CREATE TABLE IF NOT EXISTS {self.values} (source_key BIGINT{code}, {numbers})"

    def sources_ddl(self) -> str:
        names = f", {self.names} VARCHAR[]" if self.coded else ""
        return f"CREATE TABLE IF NOT EXISTS {self.sources} (source_key BIGINT, {KEY} VARCHAR, {self.named_by} VARCHAR{names})"

    def column_sql(self, values: str = "v", sources: str = "s") -> dict[str, str]:
        """{column: its expression} over `<values> {values} JOIN <sources> {sources}`."""
        text = {KEY: f"{sources}.{KEY}", self.named_by: f"{sources}.{self.named_by}"}
        if self.coded:
            text[self.coded] = f"{sources}.{self.names}[{values}.{self.code} + 1]"  # lists count from 1
        return {c: text.get(c, f"{values}.{c}") for c in self.columns}

    def stored_column_sql(self, values: str = "v") -> dict[str, str]:
        """{column: expression}: the view's columns with the source key in place of its text and
        the code in place of the coded column (for `decode`)."""
        stored = {"source_key": f"{values}.source_key", **({self.code: f"{values}.{self.code}"} if self.coded else {})}
        return {**stored, **{c: f"{values}.{c}" for c in self.columns if c in self.numbers}}

    def decode(self, rows: pd.DataFrame, sources: pd.DataFrame) -> pd.DataFrame:
        """Rows of `stored_column_sql` -> the view's columns, text as categoricals built from the
        sources' rows (no string per row: for large read-backs)."""
        sources = sources.sort_values("source_key", ignore_index=True)
        at = np.searchsorted(sources["source_key"].to_numpy(), rows["source_key"].to_numpy())
        at = np.minimum(at, max(len(sources) - 1, 0))
        if len(rows) and not (sources["source_key"].to_numpy()[at] == rows["source_key"].to_numpy()).all():
            raise LookupError(f"{self.view}: rows whose source is not in {self.sources}")
        text = {}
        for column in (KEY, self.named_by):
            codes, categories = pd.factorize(sources[column])
            text[column] = pd.Categorical.from_codes(codes[at] if len(rows) else codes[:0], categories=categories)
        if self.coded:
            names = self.code_names([n for row in sources[self.names] for n in row])
            lookup = {name: i for i, name in enumerate(names)}
            width = max((len(row) for row in sources[self.names]), default=0) + 1
            remap = np.full((max(len(sources), 1), width), -1, dtype=np.int32)  # [source, code] -> name
            for i, row in enumerate(sources[self.names]):
                remap[i, : len(row)] = [lookup[n] for n in row]
            code = rows[self.code].to_numpy(dtype=np.float64, na_value=np.nan)
            missing = np.isnan(code)
            picked = remap[at, np.where(missing, width - 1, code).astype(np.int64)] if len(rows) else np.zeros(0, np.int32)
            text[self.coded] = pd.Categorical.from_codes(picked, categories=names)
        return pd.DataFrame({c: text[c] if c in text else rows[c] for c in self.columns})

    @property
    def joined(self) -> str:
        return f"{self.values} v JOIN {self.sources} s ON s.source_key = v.source_key"

    def view_sql(self, in_keys: bool = False) -> str:
        """The view's query; `in_keys`: only the cells in the relation `_keys`, in stored order."""
        columns = ", ".join(f"{expression} AS {name}" for name, expression in self.column_sql().items())
        only = f" WHERE s.{KEY} IN (SELECT key FROM _keys) ORDER BY v.rowid" if in_keys else ""
        return f"SELECT {columns} FROM {self.joined}{only}"

    def stored_rows_sql(self) -> str:
        """The stored rows of the cells in `_keys`, in stored order (`stored_column_sql`: no join)."""
        columns = ", ".join(f"{expression} AS {name}" for name, expression in self.stored_column_sql().items())
        return f"SELECT {columns} FROM {self.values} v WHERE source_key IN ({self.keys_sources()}) ORDER BY v.rowid"

    def keys_sources_rows_sql(self) -> str:
        """The sources' rows of the cells in `_keys` (for `decode`)."""
        return f"SELECT * FROM {self.sources} WHERE {KEY} IN (SELECT key FROM _keys)"

    def keys_sources(self) -> str:
        """The keys of the sources of the cells in `_keys`."""
        return f"SELECT source_key FROM {self.sources} WHERE {KEY} IN (SELECT key FROM _keys)"

    def delete_sql(self) -> tuple[str, str]:
        return (f"DELETE FROM {self.values} WHERE source_key IN ({self.keys_sources()})",
                f"DELETE FROM {self.sources} WHERE {KEY} IN (SELECT key FROM _keys)")

    def _source_hash(self, alias: str, *more: str) -> str:
        # DuckDB's hash(a, b) mixes a before it XORs b in: what sources share (their names) comes
        # first, so no two sources' XOR or sum cancels it
        return f"hash({', '.join(([f'{alias}.{self.names}'] if self.coded else []) + [f'{alias}.{self.named_by}', f'{alias}.source_key', *more])})"

    def digests_sql(self) -> str:
        """Per cell in `_keys`: a digest of its rows, order-free (a sum of row hashes: no sort),
        over the stored columns (about 60 ns a row) plus, once per source, what it stands for."""
        stored = ", ".join(([self.code] if self.coded else []) + list(self.numbers))
        return f"""
            WITH rows AS (
                SELECT source_key, sum(hash({stored})::HUGEINT) AS digest
                FROM {self.values} WHERE source_key IN ({self.keys_sources()}) GROUP BY source_key)
            SELECT s.{KEY}, sum(coalesce(r.digest, 0) + {self._source_hash("s")}::HUGEINT) AS raw_digest
            FROM {self.sources} s LEFT JOIN rows r USING (source_key)
            WHERE s.{KEY} IN (SELECT key FROM _keys) GROUP BY s.{KEY}"""

    def partition_hash_sql(self) -> str:
        """For `lineage.partition_hashes`: per cell in the list `?`, (k, n, h) = its row count and
        the XOR over its sources of one hash of what the source stands for and its rows' XOR."""
        return f"""
            WITH src AS (SELECT * FROM {self.sources} WHERE {KEY} IN (SELECT unnest(?))),
                 rows AS (SELECT source_key, count(*) AS n, bit_xor(hash(v)) AS h
                          FROM {self.values} v WHERE source_key IN (SELECT source_key FROM src) GROUP BY source_key)
            SELECT s.{KEY} AS k, coalesce(sum(r.n), 0) AS n,
                   bit_xor({self._source_hash("s", "coalesce(r.n, 0)", "coalesce(r.h, 0)")}) AS h
            FROM src s LEFT JOIN rows r USING (source_key) GROUP BY s.{KEY}"""

    def collisions_sql(self) -> str:
        """Keys of the sources just written (`_new_sources`) held by more than one source."""
        return f"""
            SELECT source_key, list({KEY} ORDER BY {KEY}), list({self.named_by} ORDER BY {KEY}) FROM {self.sources}
            WHERE source_key IN (SELECT source_key FROM _new_sources) GROUP BY source_key HAVING count(*) > 1"""

    def move_table_sql(self) -> str:
        """The rows of a table of earlier versions (text on every row) into this layout, its
        sources in `_new_sources` (a name outside its source's names gets no code: there is none)."""
        code = f"(list_position(n.{self.names}, r.{self.coded}) - 1)::USMALLINT AS {self.code}, " if self.coded else ""
        return f"""
            INSERT INTO {self.values} BY NAME SELECT n.source_key, {code}{", ".join(f"r.{c}" for c in self.numbers)}
            FROM {self.view} r JOIN _new_sources n
                ON n.{KEY} = r.{KEY} AND n.{self.named_by} IS NOT DISTINCT FROM r.{self.named_by}
            ORDER BY r.rowid"""

    def code_names(self, present: Sequence) -> list[str]:
        """The names coded first, then the others present, sorted."""
        return list(self.first_names) + sorted({str(p) for p in present} - set(self.first_names))

    def sources_table(self, sources: dict[int, tuple[str, str | None]], names: list[str] | None) -> pa.Table:
        """{key: (cell_id, named_by)} as rows of the sources table."""
        columns = {
            "source_key": pa.array(list(sources), pa.int64()),
            KEY: pa.array([cell for cell, _ in sources.values()], pa.string()),
            self.named_by: pa.array([name for _, name in sources.values()], pa.string()),
        }
        if self.coded:
            columns[self.names] = pa.array([names] * len(sources), pa.list_(pa.string()))
        return pa.table(columns)

    def encode(self, frames: pd.DataFrame | Sequence[pd.DataFrame]) -> tuple[list[pa.Table], pa.Table]:
        """Frames of the view's columns -> (Arrow tables of the stored columns, one per frame;
        the sources table). A row's (cell_id, named_by) becomes its source's key, its coded text
        a code into the source's names; the numbers go over unchanged. A row without a cell_id
        cannot belong to a partition and is refused (never dropped)."""
        frames = [frames] if isinstance(frames, pd.DataFrame) else list(frames)
        for frame in frames:
            unknown = [c for c in frame.columns if c not in self.columns]
            missing_text = [c for c in self.text if c not in frame.columns]
            if unknown or missing_text:
                raise ValueError(f"{self.view} frame: unknown columns {unknown}, missing text columns {missing_text}")
        names = self._names(frames) if self.coded else None
        position = {name: i for i, name in enumerate(names or [])}
        sources: dict[int, tuple[str, str | None]] = {}
        stored = []
        for frame in frames:
            cell_codes, cells = _codes(frame[KEY])
            name_codes, named = _codes(frame[self.named_by])
            if len(cell_codes) and cell_codes.min() < 0:
                raise ValueError(f"{int((cell_codes < 0).sum()):,} row(s) of {self.view} without a cell_id cannot be stored in a cell partition")
            if len(cell_codes) and cell_codes.min() == cell_codes.max() and name_codes.min() == name_codes.max():
                pairs, inverse = np.array([[cell_codes[0], name_codes[0]]]), np.zeros(len(frame), dtype=np.intp)  # one source
            else:  # one integer per (cell, name): np.unique over rows (axis=0) sorts 30x slower
                width = len(named) + 1
                combined, inverse = np.unique(cell_codes.astype(np.int64) * width + (name_codes + 1), return_inverse=True)
                pairs = np.stack([combined // width, combined % width - 1], axis=1)
            keys = np.empty(len(pairs), dtype=np.int64)
            for i, (cell, name) in enumerate(pairs.tolist()):
                pair = (str(cells[cell]), None if name < 0 else str(named[name]))
                keys[i] = source_key(*pair)
                sources[int(keys[i])] = pair
            columns = {"source_key": pa.array(keys[inverse.reshape(-1)])}
            if self.coded:
                codes, values = _codes(frame[self.coded])
                remap = np.array([position[str(v)] for v in values] + [0], dtype=np.uint16)
                columns[self.code] = _array(remap[codes], codes < 0)  # code -1 (missing) picks the trailing 0, masked: NULL
            for name in self.numbers:
                if name in frame.columns:
                    values = frame[name].to_numpy()
                    columns[name] = _array(values, np.isnan(values) if values.dtype.kind == "f" else None)
            stored.append(pa.table(columns))
        return stored, self.sources_table(sources, names)

    def _names(self, frames: Sequence[pd.DataFrame]) -> list[str]:
        """The coded column's names over all frames of a replace (what the file said is kept)."""
        names = self.code_names([name for frame in frames for name in _codes(frame[self.coded])[1]])
        if len(names) > CODES:
            raise ValueError(f"{len(names):,} distinct {self.coded} values in one replace of {self.view} (at most {CODES:,})")
        return names


RAW = CompactLayout(
    view="raw_samples", values="raw_sample_values", sources="raw_sample_sources", columns=tuple(SAMPLE_COLUMNS),
    named_by="source_file", coded="step_type", first_names=tuple(STEP_TYPES),
    numbers={
        "cycle_number": "BIGINT", "step_index": "BIGINT", "time_s": "DOUBLE", "voltage_v": "DOUBLE",
        "current_a": "DOUBLE", "temperature_c": "DOUBLE", "capacity_ah": "DOUBLE",
        "internal_resistance_ohm": "DOUBLE", "source_row": "BIGINT",
    },
)
CURVES = CompactLayout(
    view="cycle_curves", values="cycle_curve_points", sources="cycle_curve_sources", columns=tuple(CURVE_COLUMNS),
    named_by="curve", numbers={"cycle_number": "BIGINT", "voltage_v": "DOUBLE", "value": "DOUBLE"},
)
LAYOUTS = {layout.view: layout for layout in (RAW, CURVES)}


def source_key(cell_id: str | None, name: str | None) -> int:
    """63-bit key of a (cell, name) pair, the same in every process and DuckDB version."""
    digest = hashlib.blake2b(json.dumps([cell_id, name]).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def _codes(column: pd.Series) -> tuple[np.ndarray, list]:
    """(codes, values): a categorical's codes and categories, else a factorization (-1 = missing)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return np.asarray(column.cat.codes), list(column.cat.categories)
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    return codes, list(uniques)


def _array(values: np.ndarray, missing: np.ndarray | None) -> pa.Array:
    """Arrow over the numpy buffer (no copy without missing values); NaN -> null, as pandas' own
    conversion does."""
    return pa.array(values, mask=missing) if missing is not None and missing.any() else pa.array(values)
