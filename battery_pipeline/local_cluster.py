"""Real servers on this machine, for the tests and benchmarks that need them: a throwaway
PostgreSQL server (Debian's `postgresql`: `initdb`, `pg_ctl`) and a Dask cluster (a scheduler and
worker processes, `dask scheduler` / `dask worker`), each on free loopback ports, in a folder of
their own, stopped and removed on exit.

This is the production shape shrunk onto one host: the Dagster instance and DuckLake's catalog in
PostgreSQL, a Dask scheduler, workers as separate processes (on other hosts in production, each
started with the same environment: `dask worker tcp://<scheduler>:8786 --nworkers <cores>
--nthreads 1`).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path


def postgres_bin_dir() -> Path | None:
    found = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)), None)
    return Path(found).resolve().parent if found else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def postgres_server():
    """A PostgreSQL server on a free port; yields its libpq URL to the `postgres` database.
    As root, the server runs as the `postgres` user (PostgreSQL refuses root)."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise FileNotFoundError("PostgreSQL (initdb, pg_ctl) is not installed (Debian: apt-get install postgresql)")
    as_root = os.geteuid() == 0
    run_as = ["runuser", "-u", "postgres", "--"] if as_root else []
    # Not under a private temporary folder: the server runs as `postgres`.
    root = Path(tempfile.mkdtemp(prefix="battery_pg_"))
    root.chmod(0o755)
    if as_root:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", free_port()
    subprocess.run([*run_as, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                    "-E", "UTF8", "--no-sync"], check=True, capture_output=True)
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300"
    subprocess.run([*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "server.log"),
                    "-w", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def create_database(server_url: str, name: str) -> str:
    """A new database on the server; its libpq URL."""
    import psycopg2

    if not name.replace("_", "").isalnum():
        raise ValueError(f"not a plain database name: {name!r}")
    conn = psycopg2.connect(server_url)
    conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
    conn.cursor().execute(f"CREATE DATABASE {name}")
    conn.close()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


class DaskCluster:
    """A Dask scheduler and `workers` worker processes (one thread each) on loopback, each
    worker a `dask worker` command of its own so that one can be killed alone. `env`: the
    environment the workers run steps in (the same the runs see)."""

    def __init__(self, workers: int, env: dict[str, str], folder: Path, pin_cores: bool = False):
        # pin_cores: worker i runs on core i only (as a one-core host would), the rest floats
        self.folder, self.env = folder, {**env, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        # every host of a deployment names the scheduler (the workers' jobs are the runs' jobs)
        self.env["BATTERY_PIPELINE_DASK_SCHEDULER"] = self.address
        self.processes: list[subprocess.Popen] = []
        self.pin_cores = pin_cores
        self._start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"])
        for index in range(workers):
            self.add_worker(index)
        self.wait_for_workers(workers)

    def _start(self, name: str, arguments: list[str], core: int | None = None) -> subprocess.Popen:
        log = open(self.folder / f"dask-{name}.log", "ab")
        # the `dask` command of this interpreter's environment, as a module (no PATH lookup)
        process = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_" + arguments[0], *arguments[1:]],
                                   env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder,
                                   start_new_session=True,
                                   preexec_fn=None if core is None else (lambda: os.sched_setaffinity(0, {core})))
        self.processes.append(process)
        return process

    def add_worker(self, index: int) -> None:
        core = index % (os.cpu_count() or 1) if self.pin_cores else None
        self._start(f"worker-{index}", ["worker", self.address, "--nthreads", "1", "--name", f"worker-{index}",
                                        "--no-dashboard", "--local-directory", str(self.folder / f"worker-{index}")], core)

    def client(self):
        from distributed import Client

        return Client(self.address, timeout=30, set_as_default=False)

    def wait_for_workers(self, count: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.client() as client:
                    client.wait_for_workers(count, timeout=max(1.0, deadline - time.monotonic()))
                    return
            except (OSError, TimeoutError):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{count} Dask worker(s) did not join {self.address}; see {self.folder}/dask-*.log")
                time.sleep(0.5)

    def close(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@contextmanager
def dask_cluster(workers: int, env: dict[str, str], folder: Path, pin_cores: bool = False):
    folder.mkdir(parents=True, exist_ok=True)
    cluster = DaskCluster(workers, env, folder, pin_cores)
    try:
        yield cluster
    finally:
        cluster.close()
