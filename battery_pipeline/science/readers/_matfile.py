"""MATLAB .mat helpers shared by the .mat readers (`nasa_mat`, `panasonic_mat`).

Not a reader itself (it defines no `CyclerReader`), so auto-discovery imports it harmlessly.

`peek_mat5(head)` reads just enough of a MATLAB 5 (v5/v6/v7, not v7.3) file's *first bytes* to say
what its first variable is: name, MATLAB class, field names if it is a struct, and the same for
the value of its first field. That is what `sniff` needs to tell a NASA `B0005.cycle` struct
from a Panasonic `meas` struct without loading the file. v7 files compress each variable with
zlib (`miCOMPRESSED`); a partial zlib stream decompresses fine, so the 64 KiB sniff head is
plenty (the names sit in the first few hundred decompressed bytes).

`load_mat(path)` wraps `scipy.io.loadmat` so that any failure (truncated or corrupt file, HDF5
based v7.3 file, not a .mat at all) becomes a `SourceFormatError` naming the file and the problem.
Before scipy sees the file, `mat5_structure_problem` walks its element tree: scipy's compiled
reader *crashes the process* (segmentation fault, scipy 1.17) on an element whose data type
number is not a MAT data type, e.g. a tag zeroed by disk damage (found by fuzzing the readers with
mutated real files, see `battery_pipeline_tests/science/readers/test_fuzz_readers.py`).
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from battery_pipeline.science.readers.base import SourceFormatError

MAT5_HEADER_BYTES = 128
# MAT-file data types (MATLAB "MAT-File Format", Table 1-1) and array classes (Table 1-3)
_MI_INT8, _MI_INT32, _MI_UINT32, _MI_MATRIX, _MI_COMPRESSED = 1, 5, 6, 14, 15
# The data types scipy reads (int8 ... uint64, single, double, utf8/16/32). Any other number (0,
# the reserved 8, 10, 11, or 19 and up) inside a variable makes scipy.io.loadmat segfault.
_DATA_TYPES = frozenset({1, 2, 3, 4, 5, 6, 7, 9, 12, 13, 16, 17, 18})
MX_CLASSES = {
    1: "cell",
    2: "struct",
    3: "object",
    4: "char",
    5: "sparse",
    6: "double",
    7: "single",
    8: "int8",
    9: "uint8",
    10: "int16",
    11: "uint16",
    12: "int32",
    13: "uint32",
    14: "int64",
    15: "uint64",
}


def mat_header_text(head: bytes) -> str | None:
    """The 116-byte descriptive text of a MATLAB 5+ file ('MATLAB 5.0 MAT-file ...'), else None."""
    if len(head) < MAT5_HEADER_BYTES or not head.startswith(b"MATLAB "):
        return None
    return head[:116].decode("latin-1", errors="replace").rstrip(" \x00")


def is_mat73(head: bytes) -> bool:
    """MATLAB v7.3 files are HDF5 files behind a 512-byte MATLAB text header."""
    return head.startswith(b"MATLAB 7.3") or head[512:520] == b"\x89HDF\r\n\x1a\n"


@dataclass
class MatVariable:
    """What `peek_mat5` could see of one (possibly nested) array."""

    name: str
    mx_class: str
    dims: tuple[int, ...]
    fields: list[str] = field(default_factory=list)
    first_field_value: MatVariable | None = None  # value of fields[0] in element (1, 1)


class _Truncated(Exception):
    """The head ends before the element does (normal for a sniff head)."""


class _Cursor:
    def __init__(self, data: bytes, endian: str):
        self.data = data
        self.pos = 0
        self.endian = endian

    def tag(self) -> tuple[int, int, bool]:
        """(type, nbytes, small) of the element at the cursor; advances past the 4/8-byte tag."""
        if self.pos + 8 > len(self.data):
            raise _Truncated
        word, nbytes = struct.unpack_from(self.endian + "II", self.data, self.pos)
        if word >> 16:  # small data element format: 2-byte nbytes, 2-byte type, 4 bytes data
            self.pos += 4
            return word & 0xFFFF, word >> 16, True
        self.pos += 8
        return word, nbytes, False

    def payload(self, nbytes: int, small: bool) -> bytes:
        if self.pos + nbytes > len(self.data):
            raise _Truncated
        out = self.data[self.pos : self.pos + nbytes]
        self.pos += 4 if small else (nbytes + 7) // 8 * 8  # elements are 8-byte aligned
        return out


def _parse_matrix(cur: _Cursor, depth: int) -> MatVariable:
    """Parse a miMATRIX body (the cursor is just past its tag)."""
    mi_type, nbytes, small = cur.tag()
    flags = cur.payload(nbytes, small)
    if mi_type != _MI_UINT32 or len(flags) < 4:
        raise ValueError("bad array-flags subelement")
    mx_class = MX_CLASSES.get(struct.unpack_from(cur.endian + "I", flags)[0] & 0xFF, "unknown")
    mi_type, nbytes, small = cur.tag()
    dims_raw = cur.payload(nbytes, small)
    if mi_type != _MI_INT32:
        raise ValueError("bad dimensions subelement")
    dims = struct.unpack(cur.endian + f"{nbytes // 4}i", dims_raw)
    mi_type, nbytes, small = cur.tag()
    name = cur.payload(nbytes, small).decode("latin-1", errors="replace")
    var = MatVariable(name=name, mx_class=mx_class, dims=tuple(dims))
    if mx_class not in ("struct", "object"):
        return var
    if mx_class == "object":  # class name precedes the field names
        mi_type, nbytes, small = cur.tag()
        cur.payload(nbytes, small)
    mi_type, nbytes, small = cur.tag()
    name_len = struct.unpack(cur.endian + "i", cur.payload(nbytes, small)[:4])[0]
    mi_type, nbytes, small = cur.tag()
    raw = cur.payload(nbytes, small)
    if name_len <= 0:
        return var
    var.fields = [
        raw[i : i + name_len].split(b"\x00", 1)[0].decode("latin-1", errors="replace")
        for i in range(0, len(raw), name_len)
    ]
    if depth > 0 and var.fields and all(d > 0 for d in dims):
        try:
            mi_type, _, _ = cur.tag()
            if mi_type == _MI_MATRIX:
                var.first_field_value = _parse_matrix(cur, depth - 1)
        except (_Truncated, ValueError, struct.error):
            pass
    return var


def peek_mat5(head: bytes, depth: int = 1) -> MatVariable | None:
    """The first variable of a MATLAB 5 file from its first bytes, or None if not readable so."""
    if mat_header_text(head) is None or is_mat73(head):
        return None
    indicator = head[126:128]
    if indicator == b"IM":
        endian = "<"
    elif indicator == b"MI":
        endian = ">"
    else:
        return None
    cur = _Cursor(head[MAT5_HEADER_BYTES:], endian)
    try:
        mi_type, nbytes, small = cur.tag()
        if mi_type == _MI_COMPRESSED:
            compressed = cur.data[cur.pos : cur.pos + nbytes]
            # A partial stream is expected (the head is cut); 16 KiB of output is plenty.
            inner = zlib.decompressobj().decompress(compressed, 16 * 1024)
            cur = _Cursor(inner, endian)
            mi_type, nbytes, small = cur.tag()
        if mi_type != _MI_MATRIX:
            return None
        return _parse_matrix(cur, depth)
    except (_Truncated, ValueError, struct.error, zlib.error):
        return None


def _element_problem(buf: bytes, endian: str, start: int, end: int) -> str | None:
    """Check the subelements of one miMATRIX body, and of every matrix nested in it.

    Every element must be a matrix (walked in turn) or data of a type scipy knows, and lie
    within its parent. Iterative, so a deeply nested (or maliciously nested) file cannot exhaust
    Python's recursion limit.
    """
    unpack = struct.Struct(endian + "II").unpack_from  # hot loop: ~10 elements per sample
    data_types = _DATA_TYPES
    pending = [(start, end)]
    while pending:
        pos, stop = pending.pop()
        while pos + 8 <= stop:
            word, nbytes = unpack(buf, pos)
            if word >> 16:  # small data element: type and size in the first 4 bytes
                mdtype, nbytes, size = word & 0xFFFF, word >> 16, 8
                if nbytes > 4:
                    return f"element at byte {pos} claims {nbytes} bytes in a 4-byte small element"
                nbytes = 0  # its data sits inside the 8 bytes already checked
            else:
                mdtype, size = word, 8 + (nbytes + 7) // 8 * 8
            if mdtype == _MI_MATRIX:
                if pos + 8 + nbytes > stop:
                    return f"array at byte {pos} claims {nbytes} bytes, more than its container holds (truncated?)"
                pending.append((pos + 8, pos + 8 + nbytes))
            elif mdtype not in data_types:
                return f"element at byte {pos} has data type {mdtype}, which is no MAT-file data type"
            elif pos + 8 + nbytes > stop:
                return f"data at byte {pos} claims {nbytes} bytes, more than its array holds (truncated?)"
            pos += size
    return None


def mat5_structure_problem(data: bytes) -> str | None:
    """Why scipy must not be given this MATLAB 5 file (see the module docstring), or None.

    Offsets in the answer are file offsets for uncompressed variables and offsets within the
    decompressed variable for compressed (-v7) ones.
    """
    if len(data) < MAT5_HEADER_BYTES:
        return f"{len(data)} bytes, shorter than the 128-byte header"
    endian = {b"IM": "<", b"MI": ">"}.get(data[126:128])
    if endian is None:
        return "no byte-order mark ('IM'/'MI') at bytes 126-127 of the header"
    pos = MAT5_HEADER_BYTES
    number = 0
    while pos + 8 <= len(data):
        number += 1
        mdtype, nbytes = struct.unpack_from(endian + "II", data, pos)
        body_end = pos + 8 + nbytes
        if mdtype == _MI_COMPRESSED:
            try:
                inner = zlib.decompressobj().decompress(data[pos + 8 : body_end])
            except zlib.error as exc:
                return f"compressed variable {number} (at byte {pos}) is corrupt ({exc})"
            if len(inner) >= 8:
                inner_type, inner_bytes = struct.unpack_from(endian + "II", inner, 0)
                if inner_type == _MI_MATRIX:
                    if 8 + inner_bytes > len(inner):
                        return f"compressed variable {number} (at byte {pos}) is truncated"
                    problem = _element_problem(inner, endian, 8, 8 + inner_bytes)
                    if problem:
                        return f"variable {number} (compressed, at byte {pos}): {problem}"
        elif mdtype == _MI_MATRIX:
            if body_end > len(data):
                return f"variable {number} (at byte {pos}) claims {nbytes} bytes, beyond the end of the file (truncated?)"
            problem = _element_problem(data, endian, pos + 8, body_end)
            if problem:
                return f"variable {number}: {problem}"
        pos = body_end if mdtype == _MI_COMPRESSED else pos + 8 + (nbytes + 7) // 8 * 8
    return None


def load_mat(path: Path) -> dict:
    """`scipy.io.loadmat(path)`; every failure becomes a SourceFormatError naming the file."""
    import scipy.io  # local: only the .mat readers need scipy

    path = Path(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(1024)
    except OSError as exc:
        raise SourceFormatError(path, f"cannot open file ({exc.strerror})") from exc
    if not head:
        raise SourceFormatError(path, "file is empty (0 bytes)")
    if is_mat73(head):
        raise SourceFormatError(
            path, "MATLAB v7.3 (HDF5) file: not supported by this reader, save it with -v7"
        )
    if head.startswith(b"MATLAB") and len(head) < MAT5_HEADER_BYTES:
        raise SourceFormatError(
            path, f"truncated MAT-file: {len(head)} bytes, shorter than its 128-byte header"
        )
    if mat_header_text(head) is None:
        raise SourceFormatError(path, "not a MATLAB 5 MAT-file (no 'MATLAB 5.0' header)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SourceFormatError(path, f"cannot read file ({exc.strerror})") from exc
    problem = mat5_structure_problem(data)
    if problem:
        raise SourceFormatError(path, f"corrupt MAT-file: {problem}")
    try:
        mat = scipy.io.loadmat(io.BytesIO(data))
    except Exception as exc:  # scipy raises ValueError, zlib.error, OSError, TypeError, ...
        detail = str(exc) or type(exc).__name__
        raise SourceFormatError(
            path, f"corrupt or truncated MAT-file, scipy cannot read it ({type(exc).__name__}: {detail})"
        ) from exc
    if not any(not key.startswith("__") for key in mat):
        raise SourceFormatError(path, "MAT-file holds no variables (empty, or truncated after its header)")
    return mat


def as_float_vector(value) -> np.ndarray:
    """A MATLAB numeric array (any shape, any numeric class, e.g. uint8 zeros) as float64 1-D."""
    array = np.asarray(value)
    if array.dtype == object:
        raise TypeError("not a numeric array")
    if np.iscomplexobj(array):
        array = array.real
    return array.astype("float64", copy=False).ravel()


def as_text(value) -> str:
    """A MATLAB char array (as scipy returns it) as a Python string."""
    array = np.asarray(value)
    if array.dtype == object:
        array = np.asarray(array.ravel()[0]) if array.size else np.asarray("")
    return "".join(str(x) for x in array.ravel()).strip()
