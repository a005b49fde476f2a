"""Cycler readers: one module per source format, discovered at import.

`detect_format(path)` picks the reader by the file's content (extension only breaks ties);
`read_cell(paths, cell_id)` reads the files of one cell's test with that reader.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from battery_pipeline.science.readers.base import (
    CellDefaults,
    CyclerReader,
    ReadResult,
    SourceFormatError,
)

SNIFF_BYTES = 64 * 1024

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")


def readers_by_priority() -> list[type[CyclerReader]]:
    return sorted(CyclerReader.registry.values(), key=lambda r: (r.priority, r.format_name))


def detect_format(path: Path) -> type[CyclerReader]:
    """The reader whose sniffer accepts the file's content; SourceFormatError if none does."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError as exc:
        raise SourceFormatError(path, f"cannot open file ({exc.strerror})") from exc
    if not head:
        raise SourceFormatError(path, "file is empty (0 bytes)")
    candidates = [r for r in readers_by_priority() if r.sniff(path, head)]
    if not candidates:
        known = ", ".join(r.format_name for r in readers_by_priority())
        raise SourceFormatError(path, f"unknown format: content matches none of the readers ({known})")
    # Prefer a content match whose usual extension also fits.
    suffix = path.suffix.lower()
    for reader in candidates:
        if suffix in reader.extensions:
            return reader
    return candidates[0]


__all__ = [
    "CellDefaults",
    "CyclerReader",
    "ReadResult",
    "SourceFormatError",
    "detect_format",
    "readers_by_priority",
]
