"""The Dagster definitions import the model zoo's names, not its libraries.

Why: every Dagster process (the UI, the daemon, each step of every job) imports the definitions;
scikit-learn cost about 1.8 s of a 4 s import, and torch would cost more, where only the model
steps use them. A fresh interpreter, because this test process may have imported them already.
"""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_definitions_imports_neither_sklearn_nor_torch():
    code = (
        "import sys\n"
        "import battery_pipeline.definitions\n"
        "print(sorted(m for m in ('torch', 'sklearn') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
