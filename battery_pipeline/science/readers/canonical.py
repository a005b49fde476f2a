"""Files already in the canonical sample layout: CSV (`canonical_csv`) and Parquet (`canonical_parquet`).

Columns are matched by name (case-insensitive, surrounding blanks and a UTF-8 BOM ignored), in
any order, extra columns ignored:
  - required: time_s, voltage_v, current_a, cycle_number;
  - optional: cell_id, step_type, step_index, temperature_c, capacity_ah, internal_resistance_ohm;
  - unit-suffixed alternatives, converted to SI: voltage_mv, current_ma, capacity_mah (x 1e-3).
    Where both spellings exist the SI column wins.
  - source_file / source_row in the file are ignored: the reader always sets them (file name,
    0-based data row; for CSV the n-th non-blank line after the header).

The values are expected to follow the canonical conventions already (V, A, degC, Ah, s; current
positive = charge; time continuing across the files of a test), so nothing is re-signed or
shifted. What the reader does:
  - `cell_id` column: one distinct value -> it is the cell key; several -> SourceFormatError
    "holds N cells" (one file = one cell's test, or part of it);
  - `step_type`: trimmed and lower-cased; missing values (or no column) derived from the sign of
    the current; `step_index` missing -> derived from step_type changes;
  - text in a numeric column becomes NaN (validation quarantines the row); but a required
    column that is more than 50 % text is a SourceFormatError naming the column (that is a
    wrong file, not a few bad rows). An unreadable `cycle_number` / `step_index` becomes -1,
    which the schema (ge=0) rejects, so the row is quarantined visibly, never dropped;
  - a truncated CSV (last line cut mid-row) reads; the missing fields of that row are NaN;
  - unit sanity, on a strided sample of at most 100 000 values so it costs nothing on 20 M rows:
      * voltage_v with median |value| > 100: no single cell's terminal voltage exceeds 5.5 V,
        while millivolt readings of a Li-ion cell are >= ~1500, so the column holds mV;
      * voltage_mv with median |value| < 20: a cell never sits at 20 mV, so it holds volts;
      * current_a with 99th-percentile |value| > 1000: no single cell under test carries 1 kA
        (even a 300 Ah cell at 3C stays below), while a 3 Ah cell logged in mA reaches 3000 at
        1C, so the column holds mA. (Low mA currents cannot be told from A by value alone;
        validation's C-rate rule catches them against the rated capacity.)
      * capacity_ah with 99th-percentile > 1000: no single cell holds 1000 Ah -> mAh.
    Each raises SourceFormatError telling which column to rename.
  - empty file -> "file is empty"; header without rows -> "no data rows"; missing required
    columns -> SourceFormatError listing them; a truncated or corrupt Parquet file ->
    SourceFormatError.

Speed: Parquet is read with pyarrow, only the needed columns, row group by row group in two
threads, each row group decoded straight into preallocated NumPy arrays (nulls -> NaN), so every
output byte is allocated and written once; text columns stay dictionary-encoded (pandas
Categorical: a 20 M-row frame holds a few distinct strings, not 20 M Python objects), and the
frame is assembled without consolidation copies. ~0.65 s for 20 M samples (~30 M samples/s) on
this 2-core VM when its CPUs and memory are warm; first touch of fresh VM memory can add
seconds of kernel time that no reader can avoid. Parquet files whose numeric columns are stored
as text take a slower whole-table path. Clean CSV goes through pyarrow's multithreaded parser;
a file it rejects (ragged/truncated rows, text in numeric columns) falls back to pandas' lenient
parser.

Sniffing: Parquet by its magic `PAR1`; CSV by a first line naming at least two canonical
columns. Both run after the cycler-specific formats (priority 90).
"""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from battery_pipeline.science.readers.base import (
    REST_CURRENT_THRESHOLD_A,
    CyclerReader,
    ReadResult,
    SourceFormatError,
    tame_overflowing_exponents,
    text_to_float,
)
from battery_pipeline.science.schema import SAMPLE_COLUMNS, STEP_TYPES

REQUIRED = ("time_s", "voltage_v", "current_a", "cycle_number")
OPTIONAL_NUMERIC = ("step_index", "temperature_c", "capacity_ah", "internal_resistance_ohm")
TEXT_COLUMNS = ("cell_id", "step_type")
INT_COLUMNS = ("cycle_number", "step_index")
# suffixed name -> (canonical name, factor to SI)
UNIT_SUFFIXED = {"voltage_mv": ("voltage_v", 1e-3), "current_ma": ("current_a", 1e-3), "capacity_mah": ("capacity_ah", 1e-3)}
_SNIFF_NAMES = {"time_s", "voltage_v", "voltage_mv", "current_a", "current_ma", "cycle_number"}
_DELIMITERS = (",", ";", "\t")
MOSTLY_TEXT_FRACTION = 0.5
_SAMPLE_SIZE = 100_000
PARQUET_MAGIC = b"PAR1"
_MAX_TEXT_VALUES = 32_000  # cell_id / step_type hold a handful; codes are int16


def _norm(name: str) -> str:
    return str(name).replace("\ufeff", "").strip().lower()


class _Columns:
    """Which file column feeds which canonical column, and with which factor."""

    def __init__(self, path: Path, names: list[str]):
        by_norm: dict[str, str] = {}
        for name in names:
            by_norm.setdefault(_norm(name), name)
        self.source: dict[str, str] = {}  # canonical -> column name in the file
        self.factor: dict[str, float] = {}
        for canonical in (*REQUIRED, *OPTIONAL_NUMERIC, *TEXT_COLUMNS):
            if canonical in by_norm:
                self.source[canonical] = by_norm[canonical]
                self.factor[canonical] = 1.0
        for suffixed, (canonical, factor) in UNIT_SUFFIXED.items():
            if canonical not in self.source and suffixed in by_norm:
                self.source[canonical] = by_norm[suffixed]
                self.factor[canonical] = factor
        missing = [c for c in REQUIRED if c not in self.source]
        if missing:
            shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
            raise SourceFormatError(
                path, f"missing required columns {missing} (found: {shown or 'no columns'})"
            )

    def file_name(self, canonical: str) -> str:
        return self.source[canonical]


# ------------------------------------------------------------------------------------------
# Column conversion (shared by CSV and Parquet)
# ------------------------------------------------------------------------------------------


def _chunked_to_float(column: pa.ChunkedArray) -> np.ndarray:
    """One copy into a fresh writable float64 array, nulls -> NaN."""
    out = np.empty(len(column), dtype="float64")
    position = 0
    for chunk in column.chunks:
        size = len(chunk)
        if chunk.type != pa.float64():
            chunk = chunk.cast(pa.float64())
        if chunk.null_count:
            chunk = chunk.fill_null(np.nan)
        out[position : position + size] = chunk.to_numpy(zero_copy_only=False)
        position += size
    return out


def _chunked_to_int(column: pa.ChunkedArray) -> np.ndarray:
    """int64; null / NaN / unreadable -> -1 (rejected by the schema, so quarantined)."""
    if pa.types.is_integer(column.type):
        out = np.empty(len(column), dtype="int64")
        position = 0
        for chunk in column.chunks:
            size = len(chunk)
            if chunk.null_count:
                chunk = chunk.fill_null(-1)
            out[position : position + size] = chunk.to_numpy(zero_copy_only=False)
            position += size
        return out
    return _float_to_int(_chunked_to_float(column))


def _float_to_int(values: np.ndarray) -> np.ndarray:
    finite = np.isfinite(values)
    if finite.all():
        return values.astype("int64")
    return np.where(finite, values, -1).astype("int64")


def _text_to_numeric(path: Path, canonical: str, source: str, values: pd.Series, required: bool) -> np.ndarray:
    """Coerce text to numbers; NaN where unreadable; a mostly-text required column is an error."""
    numbers = text_to_float(values)
    given = values.notna() & (values.astype(str).str.strip() != "")
    text = given & numbers.isna()
    n_text = int(text.sum())
    if required and n_text > MOSTLY_TEXT_FRACTION * max(len(values), 1):
        examples = ", ".join(repr(v) for v in values[text].astype(str).unique()[:3])
        raise SourceFormatError(
            path,
            f"column {source!r} ({canonical}) is mostly text: {n_text} of {len(values)} values "
            f"are not numbers (e.g. {examples})",
        )
    return numbers.to_numpy(dtype="float64", na_value=np.nan)


def _categorical(values) -> pd.Categorical:
    if isinstance(values, (pa.ChunkedArray, pa.Array)):
        if not pa.types.is_dictionary(values.type):
            values = values.cast(pa.string()).dictionary_encode()
        series = values.to_pandas()
        return pd.Categorical(series) if not isinstance(series.dtype, pd.CategoricalDtype) else series.array
    return pd.Categorical(pd.Series(values, dtype=object).where(pd.notna(values), None))


def _used_categories(cat: pd.Categorical) -> list[str]:
    """Distinct non-null values actually present (cheap on 20 M codes: no per-row Python)."""
    if len(cat.categories) == 0 or len(cat) == 0:
        return []
    codes = np.asarray(cat.codes)
    if len(cat.categories) == 1:
        return [str(cat.categories[0])] if codes.max() >= 0 else []
    present = sorted(int(c) for c in pd.unique(codes) if c >= 0)
    return [str(cat.categories[c]) for c in present]


def _step_type(cat: pd.Categorical | None, current: np.ndarray) -> pd.Categorical:
    """Normalized step_type categorical; missing values derived from the current's sign."""
    n = len(current)
    if cat is None:
        codes = np.full(n, 2, dtype=np.int8)  # rest
        codes[current > REST_CURRENT_THRESHOLD_A] = 0
        codes[current < -REST_CURRENT_THRESHOLD_A] = 1
        return pd.Categorical.from_codes(codes, categories=list(STEP_TYPES))
    normalized = [str(c).strip().lower() for c in cat.categories]
    raw_codes = np.asarray(cat.codes)
    if normalized == list(STEP_TYPES[: len(normalized)]) and (n == 0 or raw_codes.min() >= 0):
        return pd.Categorical.from_codes(raw_codes, categories=list(STEP_TYPES))  # the usual case
    categories = list(STEP_TYPES) + sorted(set(normalized) - set(STEP_TYPES))
    position = {name: i for i, name in enumerate(categories)}
    remap = np.array([position[name] for name in normalized] + [-1], dtype=np.int16)
    codes = remap[raw_codes]  # code -1 (missing) picks the trailing -1
    missing = codes < 0
    if missing.any():
        derived = np.full(n, 2, dtype=np.int16)
        derived[current > REST_CURRENT_THRESHOLD_A] = 0
        derived[current < -REST_CURRENT_THRESHOLD_A] = 1
        codes = np.where(missing, derived, codes)
    dtype = np.int8 if len(categories) < 127 else np.int16
    return pd.Categorical.from_codes(codes.astype(dtype), categories=categories)


def _step_index_from_codes(codes: np.ndarray) -> np.ndarray:
    out = np.zeros(len(codes), dtype="int64")
    if len(codes) > 1:
        np.cumsum(codes[1:] != codes[:-1], out=out[1:])
    return out


def _sample(values: np.ndarray) -> np.ndarray:
    step = max(1, len(values) // _SAMPLE_SIZE)
    sample = np.abs(values[::step])
    return sample[np.isfinite(sample)]


def _check_units(path: Path, columns: _Columns, numeric: dict[str, np.ndarray]) -> None:
    """Raise where a column's values are plainly in the other unit (see module docstring)."""

    def stat(canonical: str, q: float) -> float | None:
        sample = _sample(numeric[canonical])
        return float(np.percentile(sample, q)) if len(sample) else None

    voltage_name = columns.file_name("voltage_v")
    median_v = stat("voltage_v", 50)
    if median_v is not None:
        if columns.factor["voltage_v"] == 1.0 and median_v > 100:
            raise SourceFormatError(
                path,
                f"column {voltage_name!r} looks like millivolts (median |value| {median_v:.4g} > 100; "
                "a cell's terminal voltage never exceeds 5.5 V): rename it voltage_mv or convert to V",
            )
        if columns.factor["voltage_v"] != 1.0 and median_v < 20e-3:  # values < 20 "mV"
            raise SourceFormatError(
                path,
                f"column {voltage_name!r} looks like volts (median |value| {median_v * 1e3:.4g} < 20 mV "
                "is no cell's voltage): rename it voltage_v",
            )
    p99_i = stat("current_a", 99)
    if p99_i is not None and columns.factor["current_a"] == 1.0 and p99_i > 1000:
        raise SourceFormatError(
            path,
            f"column {columns.file_name('current_a')!r} looks like milliamps (99th percentile |value| "
            f"{p99_i:.4g} > 1000 A, beyond any single cell under test): rename it current_ma or convert to A",
        )
    if "capacity_ah" in numeric and columns.factor.get("capacity_ah") == 1.0:
        p99_q = stat("capacity_ah", 99)
        if p99_q is not None and p99_q > 1000:
            raise SourceFormatError(
                path,
                f"column {columns.file_name('capacity_ah')!r} looks like mAh (99th percentile "
                f"{p99_q:.4g} > 1000 Ah): rename it capacity_mah or convert to Ah",
            )


def _cell_key_from(path: Path, cat: pd.Categorical | None) -> str | None:
    if cat is None:
        return None
    used = _used_categories(cat)
    if len(used) > 1:
        shown = ", ".join(used[:5]) + (", ..." if len(used) > 5 else "")
        raise SourceFormatError(
            path, f"holds {len(used)} cells ({shown}); one file must hold one cell's samples"
        )
    return used[0] if used else None


class _Parsed:
    """One file's columns, converted: numeric arrays (SI), categoricals, row count."""

    def __init__(self, path: Path, n: int, numeric: dict[str, np.ndarray], text: dict[str, pd.Categorical]):
        self.path = path
        self.n = n
        self.numeric = numeric
        self.text = text


def _finish(path: Path, columns: _Columns, n: int, numeric: dict[str, np.ndarray], text: dict) -> _Parsed:
    if n == 0:
        raise SourceFormatError(path, "no data rows (header only)")
    for canonical, values in numeric.items():
        factor = columns.factor.get(canonical, 1.0)
        if factor != 1.0:
            values *= factor
    _check_units(path, columns, numeric)
    _cell_key_from(path, text.get("cell_id"))
    return _Parsed(path, n, numeric, text)


def _assemble(parsed: list[_Parsed], cell_id: str) -> pd.DataFrame:
    """The canonical frame, built column by column in order, without consolidation copies."""
    if len(parsed) == 1:
        part = parsed[0]
        n = part.n

        def numeric(name):
            return part.numeric.get(name)

        step_cat = part.text.get("step_type")
        source_file = pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), categories=[part.path.name])
        source_row = np.arange(n, dtype="int64")
    else:
        n = sum(p.n for p in parsed)

        def numeric(name):
            if all(name not in p.numeric for p in parsed):
                return None
            return np.concatenate(
                [p.numeric[name] if name in p.numeric else _absent(name, p.n) for p in parsed]
            )

        cats = [p.text.get("step_type") for p in parsed]
        if all(c is None for c in cats):
            step_cat = None
        else:
            step_cat = pd.api.types.union_categoricals(
                [c if c is not None else pd.Categorical([None] * p.n) for c, p in zip(cats, parsed)]
            )
        names = list(dict.fromkeys(p.path.name for p in parsed))
        source_file = pd.Categorical.from_codes(
            np.concatenate([np.full(p.n, names.index(p.path.name), dtype=np.int16) for p in parsed]),
            categories=names,
        )
        source_row = np.concatenate([np.arange(p.n, dtype="int64") for p in parsed])

    current = numeric("current_a")
    step_type = _step_type(step_cat, current)
    step_index = numeric("step_index")
    if step_index is None:
        step_index = _step_index_from_codes(np.asarray(step_type.codes))
    data = {
        "cell_id": pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), categories=[cell_id]),
        "cycle_number": numeric("cycle_number"),
        "step_index": step_index,
        "step_type": step_type,
        "time_s": numeric("time_s"),
        "voltage_v": numeric("voltage_v"),
        "current_a": current,
        "temperature_c": _or_nan(numeric("temperature_c"), n),
        "capacity_ah": _or_nan(numeric("capacity_ah"), n),
        "internal_resistance_ohm": _or_nan(numeric("internal_resistance_ohm"), n),
        "source_file": source_file,
        "source_row": source_row,
    }
    assert list(data) == SAMPLE_COLUMNS
    return pd.DataFrame(data, copy=False)


def _absent(name: str, n: int) -> np.ndarray:
    return np.full(n, -1, dtype="int64") if name in INT_COLUMNS else np.full(n, np.nan)


def _or_nan(values: np.ndarray | None, n: int) -> np.ndarray:
    return values if values is not None else np.full(n, np.nan)


# ------------------------------------------------------------------------------------------
# Parquet
# ------------------------------------------------------------------------------------------


def _parquet_error(path: Path, exc: Exception) -> SourceFormatError:
    return SourceFormatError(path, f"not a readable Parquet file (truncated or corrupt: {exc})")


def _is_text(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind)


def _is_number(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind) or pa.types.is_boolean(kind)


def _read_parquet(path: Path) -> _Parsed:
    try:
        if path.stat().st_size == 0:
            raise SourceFormatError(path, "file is empty")
        schema = pq.read_schema(path)
    except SourceFormatError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _parquet_error(path, exc) from exc
    columns = _Columns(path, list(schema.names))
    numeric_names = [c for c in (*REQUIRED, *OPTIONAL_NUMERIC) if c in columns.source]
    text_names = [c for c in TEXT_COLUMNS if c in columns.source]
    kinds = {c: schema.field(columns.source[c]).type for c in (*numeric_names, *text_names)}
    streamable = all(_is_number(kinds[c]) for c in numeric_names) and all(_is_text(kinds[c]) for c in text_names)
    try:
        if streamable:
            return _read_parquet_streaming(path, columns, numeric_names, text_names)
        return _read_parquet_table(path, columns, numeric_names, text_names, kinds)
    except (pa.ArrowException, OSError) as exc:
        raise _parquet_error(path, exc) from exc


def _read_parquet_streaming(path: Path, columns: _Columns, numeric_names: list[str], text_names: list[str]) -> _Parsed:
    """The fast path: row group by row group straight into preallocated NumPy arrays.

    Each output array is allocated once and written once; Arrow only ever holds one row group
    per worker, so its buffers are recycled instead of doubling the process's fresh memory
    (first-touch page faults, not decoding, dominate a 20 M-row read on a small VM).
    """
    text_sources = [columns.source[c] for c in text_names]
    parquet = pq.ParquetFile(path, read_dictionary=text_sources)
    meta = parquet.metadata
    n = meta.num_rows
    if n == 0:
        raise SourceFormatError(path, "no data rows (schema only)")
    wanted = list(dict.fromkeys(columns.source[c] for c in (*numeric_names, *text_names)))
    starts = np.concatenate([[0], np.cumsum([meta.row_group(i).num_rows for i in range(meta.num_row_groups)])])
    numeric = {c: np.empty(n, dtype="int64" if c in INT_COLUMNS else "float64") for c in numeric_names}
    codes = {c: np.empty(n, dtype=np.int16) for c in text_names}
    categories: dict[str, dict[str, int]] = {c: {} for c in text_names}
    lock = threading.Lock()
    local_files = threading.local()  # a ParquetFile is not safe to share between threads

    def load(group: int) -> None:
        handle = getattr(local_files, "file", None)
        if handle is None:
            handle = local_files.file = pq.ParquetFile(path, read_dictionary=text_sources)
        table = handle.read_row_group(group, columns=wanted, use_threads=False)
        lo, hi = int(starts[group]), int(starts[group + 1])
        for canonical in numeric_names:
            chunked = table.column(columns.source[canonical])
            out = numeric[canonical]
            position = lo
            for chunk in chunked.chunks:
                size = len(chunk)
                target = out[position : position + size]
                if canonical in INT_COLUMNS and pa.types.is_integer(chunk.type):
                    target[:] = (chunk.fill_null(-1) if chunk.null_count else chunk).to_numpy(zero_copy_only=False)
                else:
                    if chunk.type != pa.float64():
                        chunk = chunk.cast(pa.float64())
                    values = (chunk.fill_null(np.nan) if chunk.null_count else chunk).to_numpy(zero_copy_only=False)
                    if canonical in INT_COLUMNS:
                        values = _float_to_int(values)
                    target[:] = values
                position += size
        for canonical in text_names:
            position = lo
            for chunk in table.column(columns.source[canonical]).chunks:
                size = len(chunk)
                if not pa.types.is_dictionary(chunk.type):
                    chunk = chunk.cast(pa.string()).dictionary_encode()
                local = chunk.dictionary.to_pylist()
                with lock:
                    known = categories[canonical]
                    lut = np.array([known.setdefault(str(v), len(known)) for v in local] + [-1], dtype=np.int64)
                if len(known) > _MAX_TEXT_VALUES:
                    raise SourceFormatError(
                        path, f"column {columns.source[canonical]!r} has over {_MAX_TEXT_VALUES} distinct values"
                    )
                lut = lut.astype(np.int16)
                indices = chunk.indices
                indices = (indices.fill_null(-1) if indices.null_count else indices).to_numpy(zero_copy_only=False)
                codes[canonical][position : position + size] = lut[indices]
                position += size
        if hi != lo and position != hi:  # pragma: no cover - a footer that lies about row counts
            raise SourceFormatError(path, f"row group {group} holds {position - lo} rows, footer says {hi - lo}")

    with ThreadPoolExecutor(max_workers=2) as pool:  # decoding and copies release the GIL
        list(pool.map(load, range(meta.num_row_groups)))
    text = {
        c: pd.Categorical.from_codes(
            codes[c].astype(np.int8) if len(categories[c]) < 127 else codes[c],
            categories=list(categories[c]),
        )
        for c in text_names
    }
    return _finish(path, columns, n, numeric, text)


def _read_parquet_table(
    path: Path, columns: _Columns, numeric_names: list[str], text_names: list[str], kinds: dict
) -> _Parsed:
    """Unusual column types (numbers stored as text, ...): whole table, then coerce."""
    wanted = list(dict.fromkeys(columns.source[c] for c in (*numeric_names, *text_names)))
    text_sources = [columns.source[c] for c in text_names if _is_text(kinds[c])]
    table = pq.read_table(path, columns=wanted, read_dictionary=text_sources, use_threads=True)
    n = table.num_rows
    if n == 0:
        raise SourceFormatError(path, "no data rows (schema only)")

    def convert(canonical: str) -> np.ndarray:
        column = table.column(columns.source[canonical])
        if _is_text(column.type):
            if pa.types.is_dictionary(column.type):
                column = column.cast(column.type.value_type)
            values = _text_to_numeric(
                path, canonical, columns.source[canonical], column.to_pandas(), canonical in REQUIRED
            )
            return _float_to_int(values) if canonical in INT_COLUMNS else values
        if canonical in INT_COLUMNS:
            return _chunked_to_int(column)
        return _chunked_to_float(column)

    numeric = {c: convert(c) for c in numeric_names}
    text = {c: _categorical(table.column(columns.source[c])) for c in text_names}
    return _finish(path, columns, n, numeric, text)


# ------------------------------------------------------------------------------------------
# CSV
# ------------------------------------------------------------------------------------------


def _first_line(head: bytes) -> str:
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    for line in text.splitlines():
        if line.strip():
            return line
    return ""


def _delimiter(line: str) -> tuple[str, int]:
    best, best_hits = ",", -1
    for delimiter in _DELIMITERS:
        names = {_norm(n) for n in line.split(delimiter)}
        hits = len(names & (_SNIFF_NAMES | set(OPTIONAL_NUMERIC) | set(TEXT_COLUMNS) | set(UNIT_SUFFIXED)))
        if hits > best_hits:
            best, best_hits = delimiter, hits
    return best, best_hits


def _read_csv(path: Path) -> _Parsed:
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(64 * 1024)
    except OSError as exc:
        raise SourceFormatError(path, f"cannot open file ({exc.strerror})") from exc
    if size == 0 or not head.strip():
        raise SourceFormatError(path, "file is empty")
    header = _first_line(head)
    delimiter, _ = _delimiter(header)
    names = [n.replace("\ufeff", "").strip() for n in header.split(delimiter)]
    columns = _Columns(path, names)
    wanted = list(dict.fromkeys(columns.source.values()))
    text_sources = {columns.source[c] for c in TEXT_COLUMNS if c in columns.source}
    try:
        table = pacsv.read_csv(
            path,
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(
                include_columns=wanted,
                column_types={
                    name: (pa.dictionary(pa.int32(), pa.string()) if name in text_sources else pa.float64())
                    for name in wanted
                },
                strings_can_be_null=True,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowKeyError):
        table = None  # ragged/truncated rows or text in numbers: the lenient parser decides
    if table is not None:
        n = table.num_rows
        numeric = {}
        for canonical in (*REQUIRED, *OPTIONAL_NUMERIC):
            if canonical in columns.source:
                values = _chunked_to_float(table.column(columns.source[canonical]))
                numeric[canonical] = _float_to_int(values) if canonical in INT_COLUMNS else values
        text = {c: _categorical(table.column(columns.source[c])) for c in TEXT_COLUMNS if c in columns.source}
        return _finish(path, columns, n, numeric, text)
    return _read_csv_lenient(path, columns, delimiter, wanted, text_sources)


def _read_csv_lenient(path: Path, columns: _Columns, delimiter: str, wanted: list[str], text_sources: set[str]) -> _Parsed:
    try:
        frame = pd.read_csv(
            io.BytesIO(tame_overflowing_exponents(path.read_bytes())),
            sep=delimiter,
            usecols=lambda name: name.replace("\ufeff", "").strip() in wanted,
            dtype=str,
            keep_default_na=True,
            encoding="utf-8",
            encoding_errors="replace",
            skipinitialspace=True,
            low_memory=False,
        )
    except pd.errors.EmptyDataError as exc:
        raise SourceFormatError(path, "file is empty") from exc
    except (pd.errors.ParserError, ValueError) as exc:
        raise SourceFormatError(path, f"cannot parse as CSV ({exc})") from exc
    frame.columns = [c.replace("\ufeff", "").strip() for c in frame.columns]
    n = len(frame)
    if n == 0:
        raise SourceFormatError(path, "no data rows (header only)")
    numeric = {}
    for canonical in (*REQUIRED, *OPTIONAL_NUMERIC):
        if canonical in columns.source:
            source = columns.source[canonical]
            values = _text_to_numeric(path, canonical, source, frame[source], canonical in REQUIRED)
            numeric[canonical] = _float_to_int(values) if canonical in INT_COLUMNS else values
    text = {
        c: _categorical(frame[columns.source[c]].str.strip().to_numpy(dtype=object))
        for c in TEXT_COLUMNS
        if c in columns.source
    }
    return _finish(path, columns, n, numeric, text)


# ------------------------------------------------------------------------------------------
# Readers
# ------------------------------------------------------------------------------------------


def _first_cell_id_csv(path: Path) -> str | None:
    with path.open("rb") as handle:
        head = handle.read(64 * 1024)
    header = _first_line(head)
    delimiter, _ = _delimiter(header)
    names = [_norm(n) for n in header.split(delimiter)]
    if "cell_id" not in names:
        return None
    frame = pd.read_csv(io.BytesIO(head), sep=delimiter, dtype=str, nrows=1, encoding_errors="replace")
    if frame.empty:
        return None
    value = frame.iloc[0, names.index("cell_id")]
    return str(value).strip() if pd.notna(value) and str(value).strip() else None


def _first_cell_id_parquet(path: Path) -> str | None:
    meta = pq.ParquetFile(path).metadata
    names = [_norm(n) for n in meta.schema.to_arrow_schema().names]
    if "cell_id" not in names or meta.num_row_groups == 0:
        return None
    index = names.index("cell_id")
    stats = meta.row_group(0).column(index).statistics
    if stats is not None and stats.has_min_max and stats.min == stats.max:
        value = stats.min
        return value.decode() if isinstance(value, bytes) else str(value)
    first = pq.ParquetFile(path).read_row_group(0, columns=[meta.schema.to_arrow_schema().names[index]])
    value = first.column(0)[0].as_py() if first.num_rows else None
    return str(value) if value not in (None, "") else None


class _CanonicalReader(CyclerReader):
    priority = 90  # after every cycler-specific format

    @classmethod
    def _parse(cls, path: Path) -> _Parsed:
        raise NotImplementedError

    @classmethod
    def _first_cell_id(cls, path: Path) -> str | None:
        raise NotImplementedError

    @classmethod
    def cell_key(cls, path: Path) -> str:
        """The file's `cell_id` (first row; `read` checks it is the only one), else its stem."""
        try:
            return cls._first_cell_id(path) or path.stem
        except Exception:  # an unreadable file still gets a key; `read` reports the problem
            return path.stem

    @classmethod
    def read(cls, paths: list[Path], cell_id: str) -> ReadResult:
        parsed = [cls._parse(Path(p)) for p in paths]
        return ReadResult(samples=_assemble(parsed, cell_id))


class CanonicalCsvReader(_CanonicalReader):
    format_name = "canonical_csv"
    extensions = (".csv", ".txt", ".tsv")

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        if head.startswith(PARQUET_MAGIC) or b"\x00" in head[:4096]:
            return False
        header = _first_line(head)
        delimiter, _ = _delimiter(header)
        names = {_norm(n) for n in header.split(delimiter)}
        return len(names & _SNIFF_NAMES) >= 2

    @classmethod
    def _parse(cls, path: Path) -> _Parsed:
        return _read_csv(path)

    @classmethod
    def _first_cell_id(cls, path: Path) -> str | None:
        return _first_cell_id_csv(path)


class CanonicalParquetReader(_CanonicalReader):
    format_name = "canonical_parquet"
    extensions = (".parquet", ".pq")

    @classmethod
    def sniff(cls, path: Path, head: bytes) -> bool:
        # Every Parquet file is claimed: one that lacks the canonical columns or is truncated
        # then fails in `read` with a precise message instead of "unknown format".
        return head.startswith(PARQUET_MAGIC)

    @classmethod
    def _parse(cls, path: Path) -> _Parsed:
        return _read_parquet(path)

    @classmethod
    def _first_cell_id(cls, path: Path) -> str | None:
        return _first_cell_id_parquet(path)
