"""Parent side of `faults.py`: start a child scenario, follow its stdout, kill it."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading

from battery_pipeline_tests.conftest import REPO_ROOT

# Not a timing assertion: only a guard so that a child that never reaches its point fails the
# test instead of hanging it. The shared 2-core machine can be very slow.
GIVE_UP_AFTER_S = 900


class Child:
    def __init__(self, scenario: str, args: dict, env: dict | None = None):
        self.scenario = scenario
        self.process = subprocess.Popen(
            [sys.executable, "-m", "battery_pipeline_tests.reliability.faults", scenario, json.dumps(args)],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        # A thread reads stdout line by line (select() on a buffered pipe could miss a line
        # already read into the buffer); None marks the end of the output.
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        threading.Thread(target=self._pump, args=(self.process.stdout, self._queue.put), daemon=True).start()
        self._stderr_pump = threading.Thread(target=self._pump, args=(self.process.stderr, self._stderr.append), daemon=True)
        self._stderr_pump.start()

    @staticmethod
    def _pump(stream, sink) -> None:
        for line in stream:
            sink(line)
        sink(None)

    @property
    def stderr(self) -> str:
        return "".join(line for line in self._stderr if line)

    def expect(self, prefix: str, unless: str | None = None) -> str:
        """The rest of the next stdout line starting with `prefix` (earlier lines are kept);
        AssertionError if a line starting with `unless` comes first."""
        while True:
            try:
                line = self._queue.get(timeout=GIVE_UP_AFTER_S)
            except queue.Empty:
                self.kill()
                raise AssertionError(
                    f"{self.scenario} did not reach {prefix!r} in {GIVE_UP_AFTER_S} s; stdout {self.lines}"
                ) from None
            if line is None:  # the child ended without saying it
                self.process.wait()
                raise AssertionError(
                    f"{self.scenario} ended (exit {self.process.returncode}) before {prefix!r}; "
                    f"stdout {self.lines}; stderr:\n{self.stderr[-4000:]}"
                )
            self.lines.append(line.rstrip("\n"))
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
            if unless and line.startswith(unless):
                raise AssertionError(f"{self.scenario}: {line.strip()!r} before {prefix!r}; stdout {self.lines}")

    def send(self, line: str) -> None:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def kill(self) -> int:
        """SIGKILL: no handler, no atexit, no rollback by the process itself."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        return self.process.wait()

    def finish(self) -> str:
        """Wait for the end; the child's stderr."""
        self.process.wait(timeout=GIVE_UP_AFTER_S)
        while (line := self._queue.get(timeout=GIVE_UP_AFTER_S)) is not None:
            self.lines.append(line.rstrip("\n"))
        self._stderr_pump.join(timeout=GIVE_UP_AFTER_S)
        return self.stderr
