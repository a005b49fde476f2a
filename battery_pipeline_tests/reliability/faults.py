"""Child processes for the reliability tests: real pipeline writes that the parent kills or races.

Run as `python -m battery_pipeline_tests.reliability.faults <scenario> <json arguments>`. The
child talks to the parent on stdout, one line per event:

  READY                      imports done (the `race` scenario then waits for a line on stdin)
  SNAPSHOT <json>            digests of what the warehouse holds before the write that is killed
  PAUSED <statement>         the write is open and waiting: the parent SIGKILLs the child now
  WROTE <method>             a write ended without the expected pause (a test failure)

Fault injection: `duckdb.connect` is wrapped, so the connections dagster-duckdb hands our
`Warehouse` pass every statement through `_Pause` first. Our own code (Warehouse, assets,
readers) runs unchanged; only the driver below it is instrumented. When the statement chosen by
the scenario is about to run inside the transaction chosen by the scenario, the child prints
PAUSED and blocks forever, so the SIGKILL lands at a known point inside the write, with the
uncommitted data already written (DuckDB writes large inserts to the database file before
commit). No sleeps, no timing.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from pathlib import Path

import duckdb

TABLES = ("cells", "raw_samples", "cell_impedance", "source_cycle_summaries", "validated_samples", "quarantined_samples")


def say(line: str) -> None:
    print(line, flush=True)


class _Pause:
    """Which statement to stop before: `before` matches it, and, if `after` is given, an
    earlier statement of the same transaction must match `after`."""

    def __init__(self, before: str, after: str | None = None):
        self.before = re.compile(before)
        self.after = re.compile(after) if after else None
        self.armed = False
        self.paused = threading.Semaphore(0)  # released once per paused statement

    def check(self, transaction: list[str], sql: str) -> None:
        if not self.armed or not self.before.search(sql):
            return
        if self.after and not any(self.after.search(s) for s in transaction):
            return
        say(f"PAUSED {' '.join(sql.split())[:80]}")
        self.paused.release()
        threading.Event().wait()  # until the parent's SIGKILL


class _Connection:
    """A DuckDB connection that consults the pause before each statement (see module doc)."""

    def __init__(self, connection, pause: _Pause):
        self._connection = connection
        self._pause = pause
        self._transaction: list[str] = []

    def execute(self, sql, *args, **kwargs):
        if sql.strip().upper().startswith("BEGIN"):
            self._transaction = []
        self._pause.check(self._transaction, sql)
        self._transaction.append(sql)
        return self._connection.execute(sql, *args, **kwargs)

    def cursor(self):
        # a Warehouse session hands each call a cursor of its one connection: pause those too
        return _Connection(self._connection.cursor(), self._pause)

    def __getattr__(self, name):
        return getattr(self._connection, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._connection.close()


def install(pause: _Pause) -> None:
    real_connect = duckdb.connect
    duckdb.connect = lambda *args, **kwargs: _Connection(real_connect(*args, **kwargs), pause)


# ------------------------------------------------------------------------------------------
# What the warehouse holds: order-independent digests, computed the same way in both processes
# ------------------------------------------------------------------------------------------


def table_digest(conn, table: str, where: str = "", params: list | None = None) -> list:
    """[rows, sum of row hashes]: equal digests mean the same rows (in any order)."""
    exists = conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
    ).fetchone()[0]
    if not exists:
        return [0, "0"]
    rows, hashes = conn.execute(
        f'SELECT count(*), coalesce(sum(hash(t)), 0)::VARCHAR FROM (SELECT * FROM "{table}" {where}) t',
        params or [],
    ).fetchone()
    return [rows, hashes]


def partition_digests(database: str, key: str) -> dict[str, list]:
    with duckdb.connect(database, read_only=True) as conn:
        return {table: table_digest(conn, table, "WHERE cell_id = ?", [key]) for table in TABLES}


def whole_table_digests(database: str, tables: list[str]) -> dict[str, list]:
    with duckdb.connect(database, read_only=True) as conn:
        return {table: table_digest(conn, table) for table in tables}


# ------------------------------------------------------------------------------------------
# Scenarios
# ------------------------------------------------------------------------------------------


def _materialize(database: str, data_dir: str, key: str, run_config: dict | None = None):
    import dagster as dg

    from battery_pipeline_tests.pipeline.test_ingest_pipeline import register, run_partition

    with dg.instance_for_test() as instance:
        register(instance, Path(data_dir))
        result = run_partition(instance, Path(data_dir), Path(database), key, run_config)
        failures = [
            e.step_failure_data.error.message if e.step_failure_data.error else str(e.step_failure_data)
            for e in result.all_events
            if e.is_step_failure
        ]
        return result.success, failures


def killed_partition_write(args: dict) -> None:
    """Materialize the cell partition once (complete), then again with `second` inputs, pausing
    inside the transaction named by `pause_before` / `pause_after`."""
    pause = _Pause(args["pause_before"], args.get("pause_after"))
    install(pause)
    say("READY")
    ok, failures = _materialize(args["database"], args["first_data"], args["key"])
    if not ok:
        raise SystemExit(f"the first, complete run failed: {failures}")
    say("SNAPSHOT " + json.dumps(partition_digests(args["database"], args["key"])))
    pause.armed = True
    _materialize(args["database"], args["second_data"], args["key"], args.get("second_run_config"))
    raise SystemExit("the second run finished: it should have paused inside its write")


def killed_table_writes(args: dict) -> None:
    """`Warehouse.replace_table` and `Warehouse.append_rows(..., then=...)`, each paused before
    its COMMIT in its own thread, so one SIGKILL interrupts both open transactions."""
    import pandas as pd

    from battery_pipeline.resources import Warehouse

    pause = _Pause(r"^COMMIT")
    install(pause)
    warehouse = Warehouse(database=args["database"])
    say("READY")
    warehouse.replace_table("training_rows", pd.DataFrame({"cell_id": ["a", "b"], "soh": [1.0, 0.9]}))
    warehouse.replace_table("current_model", pd.DataFrame({"model_name": ["soh"], "model_id": ["m1"]}))
    warehouse.append_rows("model_promotions", pd.DataFrame({"model_name": ["soh"], "model_id": ["m1"]}))
    tables = ["training_rows", "current_model", "model_promotions"]
    say("SNAPSHOT " + json.dumps(whole_table_digests(args["database"], tables)))

    n = args["rows"]  # large: DuckDB writes it to the database file before the commit
    bigger = pd.DataFrame({"cell_id": ["c"] * n, "soh": [0.8] * n, "cycle": range(n)})  # new layout too
    promote = ('UPDATE "current_model" SET model_id = ? WHERE model_name = ?', ["m2", "soh"])

    def write(method, *args, **kwargs):
        method(*args, **kwargs)
        say(f"WROTE {method.__name__} without pausing before a COMMIT")  # not transactional?

    pause.armed = True
    writers = [
        threading.Thread(target=write, args=(warehouse.replace_table, "training_rows", bigger)),
        threading.Thread(
            target=write,
            args=(warehouse.append_rows, "model_promotions", pd.DataFrame({"model_name": ["soh"], "model_id": ["m2"]})),
            kwargs={"then": promote},
        ),
    ]
    # One after the other: the promotion first, and the table replacement once the promotion
    # waits before its COMMIT. (The other order would block the promotion's CREATE TABLE IF NOT
    # EXISTS behind the open CREATE OR REPLACE: DuckDB serializes catalog changes.)
    for writer in reversed(writers):
        writer.start()
        pause.paused.acquire()
    threading.Event().wait()  # both writes are open: until the parent's SIGKILL


def race(args: dict) -> None:
    """Materialize the partition as soon as the parent writes a line to stdin (all racers at once)."""
    import dagster  # noqa: F401  (import before READY, so the race starts at the same moment)

    from battery_pipeline.assets import ingest, validation  # noqa: F401

    say("READY")
    sys.stdin.readline()
    ok, failures = _materialize(args["database"], args["data"], args["key"])
    say("RESULT " + json.dumps({"success": ok, "failures": failures}))


SCENARIOS = {f.__name__: f for f in (killed_partition_write, killed_table_writes, race)}

if __name__ == "__main__":
    SCENARIOS[sys.argv[1]](json.loads(sys.argv[2]))
