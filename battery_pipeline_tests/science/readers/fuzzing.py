"""Mutation fuzzing of the cycler readers on slices of the real datasets (shared by the test and
`benchmarks/fuzz_readers.py`).

A *seed* is a small real file (or a slice of one, re-saved in its own format) per reader format.
`mutate_case` damages a copy of it the way files get damaged in practice: bytes flipped,
truncated, inserted or deleted; CSV cells replaced with garbage or emptied; a header renamed;
rows duplicated, reordered or dropped; a column's numbers scaled; a column deleted; delimiters,
line ends or encoding changed; a .mat struct field emptied, retyped, reshaped or dropped; a Parquet
column retyped or renamed; an xlsx sheet's XML edited. All randomness comes from one
`random.Random`-like object, so hypothesis (`st.randoms`) can drive and shrink it and the benchmark
can drive it from plain seeds.

`reading_problem(path)` reads the mutated file exactly as the pipeline does (detect the format by
content, build the `cells` record, read, check the frame's shape, validate) and returns None when
the outcome is acceptable - the pipeline gets a canonical frame whose rows validation sorts into
valid and quarantined, or a `SourceFormatError` that names the file - and otherwise a text saying
what went wrong (any other exception, with its traceback; a frame of the wrong shape; rows lost).
"""

from __future__ import annotations

import io
import re
import shutil
import traceback
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from battery_pipeline.science.readers import SourceFormatError, detect_format
from battery_pipeline.science.schema import CellCycleSample, CellImpedance
from battery_pipeline.science.sources import CellSource, cell_record
from battery_pipeline.science.validation import CellLimits, validate_samples

FUZZ_CELL = "fuzz_cell"


@dataclass
class Seed:
    """One real seed file of a format and how to mutate it."""

    path: Path
    kind: str  # "text", "mat", "parquet", "xlsx" or "binary" (bytes only): which structural mutations apply
    delimiter: str = ","
    companions: list[Path] = field(default_factory=list)  # copied beside it, unmutated


# ------------------------------------------------------------------------------------------
# Seeds: small real files, or slices of real files re-saved in their own format
# ------------------------------------------------------------------------------------------


def _head_lines(source: Path, target: Path, n_lines: int) -> Path:
    with source.open("rb") as handle:
        lines = [handle.readline() for _ in range(n_lines)]
    target.write_bytes(b"".join(lines))
    return target


def _nasa_slice(source: Path, target: Path, n_operations: int = 5, max_samples: int = 60) -> Path:
    """The first operations of a NASA cell, every series thinned to <= max_samples, same layout."""
    import scipy.io as sio

    mat = sio.loadmat(source)
    name = source.stem
    cycle = mat[name][0, 0]["cycle"][:, :n_operations].copy()
    for k in range(cycle.shape[1]):
        data = cycle[0, k]["data"][0, 0]
        if str(cycle[0, k]["type"][0]) == "impedance":
            continue
        lengths = [data[f].size for f in data.dtype.names if data[f].size > 1]
        stride = max(1, max(lengths) // max_samples)
        for f in data.dtype.names:
            if data[f].size > 1:
                data[f] = data[f][:, ::stride]
    cell = np.empty((1, 1), dtype=[("cycle", object)])
    cell[0, 0]["cycle"] = cycle
    sio.savemat(target, {name: cell}, do_compression=False)
    return target


def _canonical_frame(datasets: Path) -> pd.DataFrame:
    """Real samples in the canonical layout: the Arbin fast-charge fixture read by its reader."""
    from battery_pipeline.science.readers.arbin_csv import ArbinCsvReader

    path = datasets / "cycler_samples" / "FastCharge_000025_CH8.csv"
    frame = ArbinCsvReader.read([path], "FastCharge_000025_CH8").samples
    return frame.astype({c: str for c in ("cell_id", "step_type", "source_file")})


SEED_SOURCES = {
    "arbin_csv": "cycler_samples/FastCharge_000025_CH8.csv",
    "arbin_xlsx": "calce_cs2/CS2_35/CS2_35_8_18_10.xlsx",
    "maccor_text": "cycler_samples/PreDiag_000229_000229_truncated.034",
    "digatron_csv": "lg_hg2/25degC/549_Dis_2C.csv",
    "nasa_pcoe_mat": "nasa_pcoe/B0025.mat",
    "panasonic_18650pf_mat": "panasonic_18650pf/25degC/1C discharge tests_end_of_tests/07-22-17_22.09 4020_Charge1.mat",
    "xjtu_cycle_summary": "xjtu_features/2C_battery-1.csv",
    "canonical_csv": "cycler_samples/FastCharge_000025_CH8.csv",
    "canonical_parquet": "cycler_samples/FastCharge_000025_CH8.csv",
    "biologic_mpt": "cycler_zoo/biologic_mpt/gcpl.pr_182.1.mpt",
    "neware_nda": "cycler_zoo/neware_nda/TestFile.nda",
    "neware_csv": "cycler_zoo/neware_csv/neware_uio.csv",
    "bdf_csv": "cycler_zoo/bdf_csv/batmo_bdf.csv",
    "bdf_parquet": "cycler_zoo/bdf_parquet/legacy.bdf.parquet",
    "pec_csv": "cycler_zoo/pec_csv/pec.csv",
    "novonix_csv": "cycler_zoo/novonix_csv/test_Nova_Form-CH01-01_short.csv",
    "basytec_txt": "cycler_zoo/basytec_txt/sample_data_basytec.txt",
    "arbin_res": "cycler_zoo/arbin_res/20160805_test001_45_cc_01.res",
    "biologic_mpr": "cycler_zoo/biologic_mpr/gcpl.pr_182.1.mpr",
    "maccor_mactest": "cycler_zoo/maccor_txt/maccor_002.txt",
}
FORMATS = tuple(SEED_SOURCES)


def build_seeds(datasets: Path, out: Path) -> dict[str, list[Seed]]:
    """Seed files per format, written under `out` (the datasets themselves stay untouched).

    Raises FileNotFoundError naming the first missing dataset file.
    """
    for relative in SEED_SOURCES.values():
        if not (datasets / relative).exists():
            raise FileNotFoundError(f"{relative} is not in {datasets}")
    out.mkdir(parents=True, exist_ok=True)
    samples = datasets / "cycler_samples"
    seeds: dict[str, list[Seed]] = {}

    arbin = []
    for stem in ("FastCharge_000025_CH8", "2017-05-09_test-TC-contact_CH33"):
        folder = out / "arbin_csv" / stem
        folder.mkdir(parents=True)
        data = shutil.copy(samples / f"{stem}.csv", folder)
        meta = shutil.copy(samples / f"{stem}_Metadata.csv", folder)
        arbin.append(Seed(Path(data), "text", companions=[Path(meta)]))
    seeds["arbin_csv"] = arbin

    folder = out / "arbin_xlsx"
    folder.mkdir()
    seeds["arbin_xlsx"] = [Seed(Path(shutil.copy(datasets / SEED_SOURCES["arbin_xlsx"], folder)), "xlsx")]

    folder = out / "maccor_text"
    folder.mkdir()
    seeds["maccor_text"] = [
        Seed(_head_lines(samples / "PreDiag_000229_000229_truncated.034", folder / "PreDiag_000229_000229_truncated.034", 150), "text", "\t"),
        Seed(_head_lines(samples / "PredictionDiagnostics_000109_tztest.010", folder / "PredictionDiagnostics_000109_tztest.010", 150), "text", "\t"),
        # battery-data-toolkit's export: time in minutes, CRLF, 8 rows
        Seed(Path(shutil.copy(datasets / "cycler_zoo" / "maccor_raw" / "maccor_example.001", folder)), "text", "\t"),
    ]
    folder = out / "maccor_mactest"
    folder.mkdir()
    mactest = datasets / "cycler_zoo" / "maccor_txt"
    seeds["maccor_mactest"] = [
        Seed(Path(shutil.copy(mactest / "maccor_two.txt", folder)), "text", "\t"),  # decimal comma, cut last line
        # header with 0xFF padding + ~400 data lines across the first charge
        Seed(_head_lines(mactest / "maccor_002.txt", folder / "maccor_002.txt", 415), "text", "\t"),
    ]

    folder = out / "digatron_csv" / "25degC"  # the temperature folder is part of the cell key
    folder.mkdir(parents=True)
    lg = datasets / "lg_hg2" / "25degC"
    seeds["digatron_csv"] = [
        Seed(Path(shutil.copy(lg / "549_Dis_2C.csv", folder)), "text"),
        Seed(_head_lines(lg / "549_Charge.csv", folder / "549_Charge.csv", 200), "text"),
    ]

    folder = out / "nasa_pcoe_mat"
    folder.mkdir()
    seeds["nasa_pcoe_mat"] = [Seed(_nasa_slice(datasets / SEED_SOURCES["nasa_pcoe_mat"], folder / "B0025.mat"), "mat")]

    folder = out / "panasonic_18650pf_mat"
    folder.mkdir()
    pana = datasets / SEED_SOURCES["panasonic_18650pf_mat"]
    seeds["panasonic_18650pf_mat"] = [Seed(Path(shutil.copy(pana, folder)), "mat")]

    folder = out / "xjtu_cycle_summary"
    folder.mkdir()
    seeds["xjtu_cycle_summary"] = [
        Seed(_head_lines(datasets / SEED_SOURCES["xjtu_cycle_summary"], folder / "2C_battery-1.csv", 60), "text")
    ]

    frame = _canonical_frame(datasets)
    folder = out / "canonical"
    folder.mkdir()
    csv_path = folder / "fastcharge_canonical.csv"
    frame.drop(columns=["source_file", "source_row"]).to_csv(csv_path, index=False)
    seeds["canonical_csv"] = [Seed(csv_path, "text")]
    parquet_path = folder / "fastcharge_canonical.parquet"
    frame.drop(columns=["source_file", "source_row"]).to_parquet(parquet_path, index=False)
    seeds["canonical_parquet"] = [Seed(parquet_path, "parquet")]

    zoo = datasets / "cycler_zoo"
    folder = out / "biologic_mpt"
    folder.mkdir()
    seeds["biologic_mpt"] = [
        Seed(_head_lines(zoo / "biologic_mpt" / "gcpl.pr_182.1.mpt", folder / "gcpl.pr_182.1.mpt", 400), "text", "\t"),
        Seed(Path(shutil.copy(zoo / "biologic_mpt" / "Sample_data_biologic_no_header.mpt", folder)), "text", "\t"),
    ]
    folder = out / "neware_nda"
    folder.mkdir()
    seeds["neware_nda"] = [  # binary .nda and a small zipped .ndax: only their bytes are damaged
        Seed(Path(shutil.copy(zoo / "neware_nda" / "TestFile.nda", folder)), "binary"),
        Seed(Path(shutil.copy(zoo / "neware_ndax" / "21_10_7_85.ndax", folder)), "binary"),
    ]
    folder = out / "neware_csv"
    folder.mkdir()
    seeds["neware_csv"] = [Seed(_head_lines(zoo / "neware_csv" / "neware_uio.csv", folder / "neware_uio.csv", 300), "text")]
    folder = out / "bdf"
    folder.mkdir()
    sintef = "SINTEF__SLPBA842124HV__2024-10-23__Rate_25degC__Neware__Time_Bug.bdf.csv"
    seeds["bdf_csv"] = [
        Seed(_head_lines(zoo / "bdf_csv" / "batmo_bdf.csv", folder / "batmo_bdf.csv", 300), "text"),
        Seed(_head_lines(zoo / "bdf_csv" / sintef, folder / sintef, 300), "text"),
    ]
    seeds["bdf_parquet"] = [Seed(Path(shutil.copy(zoo / "bdf_parquet" / "legacy.bdf.parquet", folder)), "parquet")]
    folder = out / "pec_csv"
    folder.mkdir()
    seeds["pec_csv"] = [
        Seed(_head_lines(zoo / "pec_csv" / "pec.csv", folder / "pec.csv", 400), "text"),
        Seed(Path(shutil.copy(zoo / "pec_csv" / "Test25205.csv", folder)), "text"),
    ]
    folder = out / "novonix_csv"
    folder.mkdir()
    novonix = "test_Nova_Form-CH01-01_short"
    seeds["novonix_csv"] = [Seed(
        _head_lines(zoo / "novonix_csv" / f"{novonix}.csv", folder / f"{novonix}.csv", 400), "text",
        companions=[Path(shutil.copy(zoo / "novonix_csv" / f"{novonix}_metadata.csv", folder))],
    )]
    folder = out / "basytec_txt"
    folder.mkdir()
    seeds["basytec_txt"] = [Seed(Path(shutil.copy(zoo / "basytec_txt" / "sample_data_basytec.txt", folder)), "text", "\t")]
    folder = out / "arbin_res"
    folder.mkdir()
    # an Access database read by mdb-export in a subprocess: damaged pages must fail the file only
    seeds["arbin_res"] = [Seed(Path(shutil.copy(zoo / "arbin_res" / "20160805_test001_45_cc_01.res", folder)), "binary")]
    folder = out / "biologic_mpr"
    folder.mkdir()
    seeds["biologic_mpr"] = [  # decoded by galvani (the biologic-mpr extra): only bytes are damaged
        Seed(Path(shutil.copy(zoo / "biologic_mpr" / "gcpl.pr_182.1.mpr", folder)), "binary"),
        Seed(Path(shutil.copy(zoo / "biologic_mpr" / "GCPL-0.mpr", folder)), "binary"),
    ]
    return seeds


# ------------------------------------------------------------------------------------------
# Mutations
# ------------------------------------------------------------------------------------------

# What damaged cells of real exports hold: spreadsheet errors, locale decimals, placeholders,
# numbers beyond float range (and exponents beyond a C int, which crash pandas' parser), NUL,
# stray quotes, times in the wrong shape, non-ASCII.
GARBAGE = (
    "", " ", "nan", "NaN", "inf", "-inf", "1e309", "-1e309", "1e-400", "abc", "#DIV/0!", "N/A",
    "-", "1,5", '"', '""', "\x00", "9" * 400, "-0", "0x1F", "10/28/2018 7:09:02 AM", "00:00:00",
    "::", "1:2:3:4", "99:99:99.9", "-1", "1e18", "TRUE", "\u00ff\u00fe", "\u2103", "C", "D", "R",
    "CHA", "DCH", "TABLE", "charge", "[mA]", "[kV]", "(mAh)",
    "3.E255631284671", "1e2147483648", "-2E4294967296", " 1E+0099999 ", "7,5e-2147483649", "1e2147483648x",
)
HEADER_GARBAGE = (
    "", "x", "Current(mA)", "Voltage (kV)", "Test_Time(h)", "Test_Time(fortnights)", "current_a",
    "CURRENT", "Temperature_1", "Aux_Temperature_2 (K)", "Cyc#", "State", "Prog Time",
    "capacity", "cell_id", "time_s", "Rec#", "Status", "\ufeffTest_Time", "Voltage\t",
)
SCALES = (1000.0, 1e-3, -1.0, 0.0, 1e12, 1e-12, float("nan"), 3600.0)


def _random_bytes(rng, n: int) -> bytes:
    return bytes(rng.randrange(256) for _ in range(n))


def byte_mutation(data: bytes, rng) -> tuple[bytes, str]:
    """Damage as a disk, a copy tool or a transfer does it."""
    n = len(data)
    if n == 0:
        return _random_bytes(rng, 8), "fill empty"
    op = rng.choice(("flip", "truncate", "insert", "delete", "duplicate", "zero"))
    pos = rng.randrange(n)
    if op == "flip":
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(n)] = rng.randrange(256)
        return bytes(out), "flip bytes"
    if op == "truncate":
        return data[:pos], f"truncate at {pos}"
    if op == "insert":
        return data[:pos] + _random_bytes(rng, rng.randint(1, 64)) + data[pos:], f"insert at {pos}"
    length = rng.randint(1, max(1, min(4096, n - pos)))
    if op == "delete":
        return data[:pos] + data[pos + length :], f"delete {length} at {pos}"
    if op == "duplicate":
        return data[:pos] + data[pos : pos + length] * 2 + data[pos + length :], f"duplicate {length} at {pos}"
    return data[:pos] + b"\x00" * length + data[pos + length :], f"zero {length} at {pos}"


def _split(line: str, delimiter: str) -> list[str]:
    return line.split(delimiter)


def _as_bytes_text(value: str) -> str:
    """`value` as its UTF-8 bytes in the byte-transparent (latin-1) view of a file."""
    return value.encode("utf-8").decode("latin-1")


def text_mutation(data: bytes, rng, delimiter: str) -> tuple[bytes, str]:
    """Damage as a person, a spreadsheet program or a half-finished export does it."""
    text = data.decode("latin-1")  # byte-transparent: every byte maps to one character
    lines = text.split("\n")
    n = len(lines)
    if n < 2:
        return byte_mutation(data, rng)
    # The header is the widest of the first lines (Maccor and Digatron have preambles).
    head = range(min(n, 40))
    header = max(head, key=lambda i: lines[i].count(delimiter))
    body = list(range(header + 1, n))
    if not body:
        body = [header]
    op = rng.choice(
        (
            "garbage_cell", "garbage_cell", "empty_cell", "rename_header", "duplicate_rows",
            "reorder_rows", "drop_rows", "scale_column", "drop_column", "insert_line",
            "ragged_line", "line_endings", "delimiter", "encoding", "garbage_column",
        )
    )
    if op in ("garbage_cell", "empty_cell"):
        for _ in range(rng.randint(1, 5)):
            i = rng.choice(body)
            cells = _split(lines[i], delimiter)
            j = rng.randrange(len(cells))
            cells[j] = "" if op == "empty_cell" else _as_bytes_text(rng.choice(GARBAGE))
            lines[i] = delimiter.join(cells)
    elif op == "garbage_column":
        j = rng.randrange(max(1, lines[header].count(delimiter) + 1))
        value = _as_bytes_text(rng.choice(GARBAGE))
        fraction = rng.choice((0.1, 0.5, 0.9, 1.0))
        for i in body:
            cells = _split(lines[i], delimiter)
            if j < len(cells) and rng.random() < fraction:
                cells[j] = value
            lines[i] = delimiter.join(cells)
    elif op == "rename_header":
        i = header if rng.random() < 0.8 else rng.choice(list(head))
        cells = _split(lines[i], delimiter)
        j = rng.randrange(len(cells))
        cells[j] = _as_bytes_text(rng.choice(HEADER_GARBAGE)) if rng.random() < 0.7 else rng.choice(
            (cells[j].upper(), cells[j].lower(), cells[j] + " (mA)")
        )
        lines[i] = delimiter.join(cells)
    elif op == "duplicate_rows":
        i = rng.choice(body)
        block = lines[i : i + rng.randint(1, 20)]
        lines[i:i] = block * rng.randint(1, 3)
    elif op == "reorder_rows":
        start = rng.choice(body)
        block = lines[start : start + rng.randint(2, 50)]
        rng.shuffle(block)
        lines[start : start + len(block)] = block
    elif op == "drop_rows":
        start = rng.choice(body)
        del lines[start : start + rng.randint(1, max(1, len(body)))]
    elif op == "scale_column":
        j = rng.randrange(max(1, lines[header].count(delimiter) + 1))
        factor = rng.choice(SCALES)
        for i in body:
            cells = _split(lines[i], delimiter)
            if j < len(cells):
                try:
                    cells[j] = repr(float(cells[j].strip()) * factor)
                except ValueError:
                    pass
            lines[i] = delimiter.join(cells)
    elif op == "drop_column":
        j = rng.randrange(max(1, lines[header].count(delimiter) + 1))
        for i in [header, *body]:
            cells = _split(lines[i], delimiter)
            if j < len(cells):
                del cells[j]
            lines[i] = delimiter.join(cells)
    elif op == "insert_line":
        i = rng.randrange(n + 1)
        lines.insert(i, rng.choice(("", "\r", "# comment", "\x00", delimiter * 3, _as_bytes_text(rng.choice(GARBAGE)))))
    elif op == "ragged_line":
        i = rng.choice(body)
        cells = _split(lines[i], delimiter)
        cut = rng.randrange(len(cells) + 3)
        lines[i] = delimiter.join(cells[:cut] if cut <= len(cells) else cells + ["1"] * (cut - len(cells)))
    elif op == "line_endings":
        joined = "\n".join(lines)
        joined = joined.replace("\r\n", "\n") if "\r\n" in joined else joined.replace("\n", "\r\n")
        if rng.random() < 0.3:
            joined = joined.replace("\r\n", "\r").replace("\n", "\r")  # classic Mac
        return joined.encode("latin-1"), op
    elif op == "delimiter":
        other = rng.choice([d for d in (",", ";", "\t", "|") if d != delimiter])
        return "\n".join(lines).replace(delimiter, other).encode("latin-1"), f"delimiter -> {other!r}"
    elif op == "encoding":
        decoded = "\n".join(lines)
        choice = rng.choice(("utf-16", "bom", "latin1-accents", "utf-8-accents"))
        if choice == "utf-16":
            return decoded.encode("utf-16"), "utf-16"
        if choice == "bom":
            return b"\xef\xbb\xbf" + decoded.encode("latin-1"), "utf-8 BOM"
        i = rng.choice(body)
        accent = "\u00e9\u00b0\u00b5" if choice == "latin1-accents" else "\u00e9\u00b0\u00b5".encode("utf-8").decode("latin-1")
        lines[i] = accent + lines[i]
    return "\n".join(lines).encode("latin-1"), op


# --- MATLAB .mat: edit the loaded structure, save it back ---------------------------------


def _mat_leaves(value, path=()):
    """(path, array) of every struct field value below `value` (loadmat's struct arrays)."""
    if isinstance(value, np.ndarray) and value.dtype.names:
        for index in np.ndindex(value.shape):
            for name in value.dtype.names:
                child = value[index][name]
                yield (*path, index, name), child
                yield from _mat_leaves(child, (*path, index, name))
    elif isinstance(value, np.ndarray) and value.dtype == object and value.size and value.size <= 200:
        for index in np.ndindex(value.shape):
            yield from _mat_leaves(value[index], (*path, index))


def _set_at(root, path, new) -> None:
    target = root
    for step in path[:-2]:
        target = target[step]
    target[path[-2]][path[-1]] = new


def _drop_field(struct: np.ndarray, name: str) -> np.ndarray:
    names = [n for n in struct.dtype.names if n != name]
    out = np.empty(struct.shape, dtype=[(n, object) for n in names])
    for index in np.ndindex(struct.shape):
        for n in names:
            out[index][n] = struct[index][n]
    return out


def _leaf_replacement(leaf: np.ndarray, rng) -> tuple[object, str]:
    numeric = isinstance(leaf, np.ndarray) and leaf.dtype.kind in "fiuc" and leaf.size > 0
    choices = ["empty", "text", "nan", "cell", "int"]
    if numeric:
        choices += ["scale", "truncate", "transpose", "reshape", "inf", "complex", "huge", "shuffle"]
    op = rng.choice(choices)
    if op == "empty":
        return np.zeros((0, 0)), op
    if op == "text":
        return np.array([rng.choice(("charge", "discharge", "impedance", "foo", "", "\u00e9"))]), op
    if op == "nan":
        return np.full(leaf.shape if numeric else (1, 1), np.nan), op
    if op == "cell":
        cell = np.empty((1, 1), dtype=object)
        cell[0, 0] = leaf
        return cell, op
    if op == "int":
        return np.zeros(leaf.shape if numeric else (1, 1), dtype=np.uint8), op
    values = leaf.astype("float64") if leaf.dtype.kind != "c" else leaf
    if op == "scale":
        return values * rng.choice(SCALES), op
    if op == "truncate":
        flat = values.ravel()
        return flat[: rng.randrange(flat.size)].reshape(1, -1), op
    if op == "transpose":
        return values.T.copy(), op
    if op == "reshape":
        flat = values.ravel()
        return (flat.reshape(-1, 2) if flat.size % 2 == 0 else flat.reshape(1, 1, -1)), op
    if op == "inf":
        out = values.copy()
        out.flat[rng.randrange(out.size)] = rng.choice((np.inf, -np.inf, 1e308))
        return out, op
    if op == "complex":
        return values + 1j, op
    if op == "huge":
        return np.full(values.shape, 1e300), op
    out = values.ravel().copy()
    rng.shuffle(out)
    return out.reshape(values.shape), op


def mat_mutation(data: bytes, rng) -> tuple[bytes, str]:
    import scipy.io as sio

    mat = sio.loadmat(io.BytesIO(data))
    variables = {k: v for k, v in mat.items() if not k.startswith("__")}
    op = rng.choice(("leaf", "leaf", "leaf", "drop_field", "rename_variable", "empty_struct"))
    description = op
    if op == "rename_variable":
        (name, value), = list(variables.items())[:1]
        variables = {rng.choice(("x", "meas", "B0005", "data")): value}
    elif op == "empty_struct":
        name = next(iter(variables))
        value = variables[name]
        variables[name] = np.empty((0, 0), dtype=value.dtype) if value.dtype.names else np.zeros((0, 0))
    else:
        root = next(iter(variables.values()))
        leaves = list(_mat_leaves(root))
        if not leaves:
            return byte_mutation(data, rng)
        path, leaf = rng.choice(leaves)
        if op == "drop_field" and path[:-2]:
            parent_path = path[:-2]
            parent = root
            for step in parent_path[:-2]:
                parent = parent[step]
            struct = parent[parent_path[-2]][parent_path[-1]]
            if isinstance(struct, np.ndarray) and struct.dtype.names and len(struct.dtype.names) > 1:
                parent[parent_path[-2]][parent_path[-1]] = _drop_field(struct, path[-1])
                description = f"drop field {path[-1]}"
        elif op == "drop_field" and root.dtype.names and len(root.dtype.names) > 1:
            name = next(iter(variables))
            variables[name] = _drop_field(root, path[-1])
            description = f"drop field {path[-1]}"
        else:
            new, what = _leaf_replacement(leaf, rng)
            _set_at(root, path, new)
            description = f"field {'/'.join(str(p) for p in path if isinstance(p, str))}: {what}"
    buffer = io.BytesIO()
    sio.savemat(buffer, variables, do_compression=rng.random() < 0.5)
    return buffer.getvalue(), description


# --- Parquet: edit the table, write it back ------------------------------------------------


def parquet_mutation(data: bytes, rng) -> tuple[bytes, str]:
    frame = pd.read_parquet(io.BytesIO(data))
    column = rng.choice(list(frame.columns))
    op = rng.choice(("text", "drop", "rename", "nan", "scale", "duplicate", "reorder", "cells", "null_text", "int"))
    n = len(frame)
    if op == "text":
        values = frame[column].astype(str).to_numpy(dtype=object)
        for _ in range(rng.randint(1, max(1, n if rng.random() < 0.3 else 5))):
            values[rng.randrange(n)] = rng.choice(GARBAGE)
        frame[column] = values
    elif op == "drop":
        frame = frame.drop(columns=[column])
    elif op == "rename":
        frame = frame.rename(columns={column: rng.choice(HEADER_GARBAGE + (column.upper(),))})
    elif op == "nan":
        frame[column] = frame[column].where(np.array([rng.random() > 0.3 for _ in range(n)]))
    elif op == "scale" and pd.api.types.is_numeric_dtype(frame[column]):
        frame[column] = frame[column] * rng.choice(SCALES)
    elif op == "duplicate":
        frame = pd.concat([frame, frame.iloc[rng.randrange(n) :].head(rng.randint(1, 30))])
    elif op == "reorder":
        frame = frame.sample(frac=1.0, random_state=rng.randrange(2**31))
    elif op == "cells":
        frame["cell_id"] = [rng.choice(("a", "b", "", None)) for _ in range(n)]
    elif op == "null_text":
        frame[column] = None
    elif op == "int" and pd.api.types.is_numeric_dtype(frame[column]):
        frame[column] = frame[column].fillna(-1).astype("int64")
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, row_group_size=rng.choice((None, 7, 100)))
    return buffer.getvalue(), f"parquet {op} {column}"


# --- xlsx: edit a member's XML, zip it back --------------------------------------------------


def xlsx_mutation(data: bytes, rng) -> tuple[bytes, str]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = {info.filename: archive.read(info.filename) for info in archive.infolist()}
    sheets = [m for m in members if m.startswith("xl/worksheets/sheet")]
    op = rng.choice(("value", "value", "delete_cell", "duplicate_row", "swap_rows", "shared_string",
                     "truncate_xml", "drop_member", "sheet_name"))
    if op in ("value", "delete_cell", "duplicate_row", "swap_rows", "truncate_xml") and sheets:
        name = rng.choice(sheets)
        xml = members[name].decode("utf-8")
        if op == "value":
            values = list(re.finditer(r"<v>([^<]*)</v>", xml))
            for match in rng.sample(values, min(len(values), rng.randint(1, 5))):
                garbage = rng.choice(GARBAGE).replace("<", "").replace("&", "")
                xml = xml.replace(match.group(0), f"<v>{garbage}</v>", 1)
        elif op == "delete_cell":
            cells = list(re.finditer(r"<c [^>]*>.*?</c>", xml))
            if cells:
                match = rng.choice(cells)
                xml = xml[: match.start()] + xml[match.end() :]
        elif op in ("duplicate_row", "swap_rows"):
            rows = list(re.finditer(r"<row [^>]*>.*?</row>", xml, flags=re.S))
            if len(rows) >= 2:
                a, b = sorted(rng.sample(range(len(rows)), 2))
                ra, rb = rows[a].group(0), rows[b].group(0)
                if op == "duplicate_row":
                    xml = xml[: rows[a].end()] + ra + xml[rows[a].end() :]
                else:
                    xml = xml[: rows[a].start()] + rb + xml[rows[a].end() : rows[b].start()] + ra + xml[rows[b].end() :]
        else:
            xml = xml[: rng.randrange(len(xml))]
        members[name] = xml.encode("utf-8")
    elif op == "shared_string" and "xl/sharedStrings.xml" in members:
        xml = members["xl/sharedStrings.xml"].decode("utf-8")
        strings = list(re.finditer(r"<t(?:\s[^>]*)?>([^<]*)</t>", xml))
        if strings:
            match = rng.choice(strings[:40])
            new = rng.choice(HEADER_GARBAGE).replace("<", "")
            xml = xml[: match.start(1)] + new + xml[match.end(1) :]
        members["xl/sharedStrings.xml"] = xml.encode("utf-8")
    elif op == "drop_member":
        del members[rng.choice(sorted(members))]
    elif op == "sheet_name" and "xl/workbook.xml" in members:
        xml = members["xl/workbook.xml"].decode("utf-8")
        members["xl/workbook.xml"] = re.sub(r'name="Channel_[^"]*"', f'name="{rng.choice(("Info", "Sheet1", "Channel_1-999"))}"', xml, count=1).encode("utf-8")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue(), f"xlsx {op}"


_STRUCTURAL = {"text": None, "mat": mat_mutation, "parquet": parquet_mutation, "xlsx": xlsx_mutation, "binary": byte_mutation}


def mutate(seed: Seed, data: bytes, rng) -> tuple[bytes, list[str]]:
    """1-3 mutations. Structural edits need an intact container, so once bytes are damaged the
    later rounds only damage bytes (loading a byte-damaged .mat to edit it could crash scipy)."""
    applied = []
    intact = True
    for _ in range(rng.randint(1, 3)):
        if seed.kind == "text" and rng.random() < 0.8:
            data, what = text_mutation(data, rng, seed.delimiter)
        elif seed.kind != "text" and intact and rng.random() < 0.7:
            try:
                data, what = _STRUCTURAL[seed.kind](data, rng)
            except Exception as exc:  # scipy cannot load what savemat wrote: damage bytes instead
                data, what = byte_mutation(data, rng)
                what += f" (structural edit impossible: {type(exc).__name__})"
                intact = False
        else:
            data, what = byte_mutation(data, rng)
            intact = False
        applied.append(what)
    return data, applied


@dataclass
class Case:
    path: Path
    seed: Seed
    mutations: list[str]


def mutate_case(seeds: list[Seed], rng, folder: Path) -> Case:
    """Write a mutated copy of one of `seeds` (same file name) and its companions to `folder`."""
    seed = seeds[rng.randrange(len(seeds))]
    folder = folder / seed.path.parent.name  # keep the parent's name (Digatron's cell key uses it)
    folder.mkdir(parents=True, exist_ok=True)
    for companion in seed.companions:
        shutil.copy(companion, folder)
    data, applied = mutate(seed, seed.path.read_bytes(), rng)
    target = folder / seed.path.name
    target.write_bytes(data)
    return Case(target, seed, applied)


# ------------------------------------------------------------------------------------------
# The property
# ------------------------------------------------------------------------------------------


def _clear_error(exc: SourceFormatError, path: Path) -> str | None:
    if path.name not in str(exc):
        return f"SourceFormatError does not name the file {path.name!r}: {exc}"
    return None


def reading_problem(path: Path) -> str | None:
    """None if `path` reads as the pipeline needs it (see the module docstring), else why not."""
    from battery_pipeline.science.cell_chain import summary_table
    from battery_pipeline.checks.data_quality import frame_shape_check

    try:
        reader = detect_format(path)
        source = CellSource(FUZZ_CELL, path.stem, reader.format_name, (path,))
        record = cell_record(source)  # what the `cells` asset stores (describe + sidecars)
        result = reader.read([path], FUZZ_CELL)
    except SourceFormatError as exc:
        return _clear_error(exc, path)
    except KeyboardInterrupt:
        raise
    except BaseException:  # also what derives from BaseException only, e.g. pyo3 panics
        return "unexpected exception:\n" + traceback.format_exc()

    samples = result.samples
    try:
        shape = frame_shape_check(samples)
        if not shape.passed:
            return f"frame of the wrong shape: {dict((k, v.value) for k, v in shape.metadata.items())}"
        if result.impedance is not None:
            CellImpedance.validate(result.impedance)
        summary_table(result.cycle_summary)
        limits = CellLimits.from_record(record)
        validated = validate_samples(samples, limits)
        if len(validated.valid) + len(validated.quarantined) != len(samples):
            return (
                f"rows lost in validation: {len(samples)} raw, {len(validated.valid)} valid, "
                f"{len(validated.quarantined)} quarantined"
            )
        CellCycleSample.validate(validated.valid)
    except KeyboardInterrupt:
        raise
    except BaseException:
        return "reader output breaks the pipeline after reading:\n" + traceback.format_exc()
    return None


def describe_case(case: Case) -> str:
    return f"{case.seed.path.name} mutated by {case.mutations} -> {case.path}"
