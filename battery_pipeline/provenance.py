"""Which code made a result: the git commit of the checkout, or the package version outside git.

Recorded with every trained model (and the audit trail), so a published metric can be traced to
the code that made it. A checkout with uncommitted changes to tracked files gets a "+dirty"
suffix: its results cannot be reproduced from the commit alone.
"""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@functools.cache
def code_version() -> str:
    """"git:<commit>[+dirty]", else "package:<version>" (cached for the process)."""
    commit = _git("rev-parse", "HEAD")
    if commit:
        dirty = _git("status", "--porcelain", "--untracked-files=no")
        return f"git:{commit}{'+dirty' if dirty else ''}"
    try:
        return f"package:{metadata.version('battery_pipeline')}"
    except metadata.PackageNotFoundError:
        return "unknown"


def short_code_version() -> str:
    """`code_version()` as benchmarks print it: the short commit, "+dirty" with uncommitted
    changes to tracked files (else the package version)."""
    version = code_version()
    if not version.startswith("git:"):
        return version
    commit = version.removeprefix("git:")
    return commit[:7] + ("+dirty" if commit.endswith("+dirty") else "")
