"""The one timing rule of the *_peer_check benchmarks, for our readers and the peers alike.

One untimed read first, so imports, lazily loaded modules and the OS file cache count for
neither side; then the best of `repeat` timed reads (the least disturbed by other work on the
machine). Peer scripts run in their own venvs: they get this function's source (PEER_PRELUDE).
"""

from __future__ import annotations

import inspect
import json
import subprocess
import time


def best_seconds(read, repeat: int):
    """(fastest of `repeat` timed calls of `read()` after one untimed call, its result)."""
    result = read()
    best = float("inf")
    for _ in range(max(repeat, 1)):
        start = time.perf_counter()
        result = read()
        best = min(best, time.perf_counter() - start)
    return best, result


PEER_PRELUDE = "import time\n" + inspect.getsource(best_seconds)


def run_peer_script(python, script: str, *args) -> dict:
    """Run `script` (PEER_PRELUDE prepended) in the peer's venv; its last stdout line is JSON.

    A peer that cannot read a file is a result, not a stop: {"error": its last stderr line}.
    """
    done = subprocess.run([str(python), "-c", PEER_PRELUDE + script, *map(str, args)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = [line for line in done.stderr.strip().splitlines() if line.strip()][-1:]
        return {"error": last[0] if last else f"exit code {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])
