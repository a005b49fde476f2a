"""Worker processes of a batch whose one storing process (the DuckDB writer) is what the batch
waits on: results through shared memory, workers at a lower CPU priority.

Priority: the workers have time to spare (they wait for the writer about half the time), the
writer does not; at niceness 10 they take the cores the writer leaves. Measured on 20 M samples
(`benchmarks/ingest.py` with the niceness set from the environment, 2 cores, four runs each):
8.6-9.9 s at niceness 10, 9.6-10.9 s at 0.

Results: a worker's frames of a million samples reach the storing process through shared memory
instead of the pipe.

A result returned by a `ProcessPoolExecutor` worker is pickled in band: its arrays are copied into
a bytes object, through the pipe, into a second bytes object and into new arrays, four copies and
a page fault per fresh page on the storing side, which is the one process the batch waits on.
Here the worker pickles with protocol 5 and keeps its large buffers (the columns' arrays) out of
band, written once into a file in a per-batch folder on a memory file system (`/dev/shm`); the
storing process maps that file and unpickles with the arrays pointing into the mapping: no copy on
its side. The mapping is private (copy on write), so the arrays are writable like any other.

Where the memory file system is too small for a result (Docker gives containers 64 MB of
`/dev/shm` unless told otherwise), that result goes through the pipe as before.

The folder belongs to one batch (`SharedFolder`): each file is unlinked as soon as it is mapped
(its pages live as long as the arrays that use them), and the folder, with any file a dead worker
left, is removed when the batch ends. A folder whose creating process is gone (a storing process
killed outright) is removed by the next batch.
"""

from __future__ import annotations

import mmap
import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Buffers smaller than this stay in the pickle: a file write per tiny array costs more than it saves.
MIN_SHARED_BYTES = 1 << 16
# Each buffer starts on a cache-line boundary, so arrays built on it are aligned for any dtype.
_ALIGN = 64
_PREFIX = "battery-pipeline-frames-"
WORKER_NICENESS = 10


def lower_priority() -> None:
    """A worker's initializer: below the storing process (see the module's docstring)."""
    os.nice(WORKER_NICENESS)


def _memory_dir() -> str | None:
    """`/dev/shm` where it exists and is writable (Linux), else the default temporary folder."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


@dataclass
class Packed:
    """A pickled result whose large buffers are in `path` (None: all in `payload`)."""

    payload: bytes
    path: str | None = None
    sizes: tuple[int, ...] = ()


def pack(result, folder: str) -> Packed:
    """In the worker: `result` pickled, its large buffers written to a new file in `folder`."""
    buffers: list[pickle.PickleBuffer] = []

    def out_of_band(buffer: pickle.PickleBuffer) -> bool:
        if buffer.raw().nbytes < MIN_SHARED_BYTES:
            return True  # in band
        buffers.append(buffer)
        return False

    payload = pickle.dumps(result, protocol=5, buffer_callback=out_of_band)
    if not buffers:
        return Packed(payload)
    path = None
    try:
        descriptor, path = tempfile.mkstemp(dir=folder, suffix=".frames")
        sizes = []
        with os.fdopen(descriptor, "wb") as file:
            for buffer in buffers:
                raw = buffer.raw()
                file.write(raw)
                file.write(b"\0" * (-raw.nbytes % _ALIGN))
                sizes.append(raw.nbytes)
    except OSError:
        # e.g. a container's 64 MB /dev/shm full: the whole result through the pipe, slower but whole
        if path is not None:
            Path(path).unlink(missing_ok=True)
        return Packed(pickle.dumps(result, protocol=5))
    return Packed(payload, path, tuple(sizes))


def packed_call(function, folder: str, argument) -> Packed:
    """In the worker: `function(argument)`, packed (what a pool's task runs)."""
    return pack(function(argument), folder)


def unpack(packed: Packed):
    """In the storing process: the result, its arrays on the mapped file (unlinked at once)."""
    if packed.path is None:
        return pickle.loads(packed.payload)
    try:
        with open(packed.path, "rb") as file:
            mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY)
    finally:
        os.unlink(packed.path)
    view, buffers, offset = memoryview(mapped), [], 0
    for size in packed.sizes:
        buffers.append(view[offset : offset + size])
        offset += size + (-size % _ALIGN)
    return pickle.loads(packed.payload, buffers=buffers)


class SharedFolder:
    """The folder of one batch's result files: created on entry, removed on exit with whatever a
    dead worker left in it; entering also removes folders of storing processes that no longer run."""

    def __init__(self) -> None:
        self.path: str | None = None

    def __enter__(self) -> str:
        base = _memory_dir() or tempfile.gettempdir()
        _remove_orphans(base)
        self.path = tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=base)
        return self.path

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _remove_orphans(base: str) -> None:
    for folder in Path(base).glob(f"{_PREFIX}*"):
        try:
            pid = int(folder.name[len(_PREFIX) :].split("-")[0])
        except ValueError:
            continue
        if not _running(pid):
            shutil.rmtree(folder, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: running, and not ours to clean
        return True
    return True
