"""The DuckLake warehouse on a real PostgreSQL catalog: writers in several processes at once,
snapshot reads, conflicts, offline extensions, and the errors a wrong setting gets.

Writers are separate processes (spawned), as steps on different workers are. Without PostgreSQL
the module is skipped with the reason, unless CI is set (`.ci/run` installs it).
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from battery_pipeline import lakehouse
from battery_pipeline.local_cluster import create_database
from battery_pipeline.resources import Warehouse


@pytest.fixture
def lake(postgres, tmp_path, request) -> dict[str, str]:
    """A new, empty lake: its own catalog database and data folder."""
    name = "lake_" + "".join(c for c in request.node.name.lower() if c.isalnum())[:40]
    return {"backend": "ducklake", "ducklake_catalog": create_database(postgres, name), "ducklake_data_path": str(tmp_path / "data")}


def cell_rows(cell: str, n: int, value: float) -> pd.DataFrame:
    return pd.DataFrame({"cell_id": [cell] * n, "source_row": range(n), "value": [value] * n})


def replace_repeatedly(settings: dict, cells: list[str], rounds: int, tables: list[str]) -> None:
    """In a writer process: replace its cells' rows in every table, `rounds` times, the value
    the round's number."""
    warehouse = Warehouse(**settings)
    for round_number in range(rounds):
        warehouse.replace_partitions({t: cell_rows(c, 50, round_number) for t in tables for c in cells[:1]}
                                     if len(cells) == 1 else
                                     {t: [cell_rows(c, 50, round_number) for c in cells] for t in tables}, "cell_id", cells)


def in_processes(target, argument_lists: list[tuple]) -> None:
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=target, args=arguments) for arguments in argument_lists]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=300)
    assert [p.exitcode for p in processes] == [0] * len(processes), [p.exitcode for p in processes]


def test_writers_of_different_cells_commit_side_by_side_on_a_new_lake(lake):
    # 4 processes on a lake with no tables yet: they create the same tables at once, then
    # replace their own cells in them (creates, inserts and deletes interleaved: the case that
    # DuckDB 1.4.4's DuckLake failed with "Failed to parse catalog entry")
    tables = ["samples", "features"]
    writers = [(lake, [f"w{w}_c{c}" for c in range(3)], 6, tables) for w in range(4)]
    in_processes(replace_repeatedly, writers)
    warehouse = Warehouse(**lake)
    for table in tables:
        counts = warehouse.query(f"SELECT cell_id, count(*) AS n, min(value) AS lo, max(value) AS hi FROM {table} GROUP BY ALL")
        assert len(counts) == 12 and set(counts["n"]) == {50}, counts
        assert set(counts["lo"]) == set(counts["hi"]) == {5.0}, counts  # every cell holds its last round only


def test_two_runs_replacing_the_same_cell_at_once_leave_one_copy(lake):
    in_processes(replace_repeatedly, [(lake, ["shared"], 8, ["samples"])] * 2)
    rows = Warehouse(**lake).query("SELECT source_row, value FROM samples")
    assert len(rows) == 50 and rows["source_row"].is_unique, rows.describe()
    assert rows["value"].nunique() == 1  # one writer's rows, never a mix


def test_readers_see_only_committed_snapshots(lake):
    warehouse = Warehouse(**lake)
    warehouse.replace_partition("samples", cell_rows("a", 10, 1.0), "cell_id", "a")
    writer = lakehouse.connect(lake["ducklake_catalog"], lake["ducklake_data_path"])
    try:
        writer.execute("BEGIN TRANSACTION")
        writer.execute("DELETE FROM samples WHERE cell_id = 'a'")
        writer.execute("INSERT INTO samples SELECT 'a', i, 2.0 FROM range(20) t(i)")
        # another process's view while the replace is open: the old partition, whole
        seen = pd.DataFrame(in_subprocess_query(lake, "SELECT count(*) AS n, max(value) AS v FROM samples"))
        assert seen.to_dict("records") == [{"n": 10, "v": 1.0}], seen
        writer.execute("COMMIT")
    finally:
        writer.close()
    seen = pd.DataFrame(in_subprocess_query(lake, "SELECT count(*) AS n, max(value) AS v FROM samples"))
    assert seen.to_dict("records") == [{"n": 20, "v": 2.0}], seen


def _query_to_queue(settings, sql, results) -> None:
    results.put(Warehouse(**settings).query(sql).to_dict("records"))


def in_subprocess_query(settings: dict, sql: str) -> list[dict]:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_query_to_queue, args=(settings, sql, results))
    process.start()
    rows = results.get(timeout=120)
    process.join(timeout=60)
    return rows


def test_the_extensions_load_from_the_wheels_never_from_the_internet(lake):
    conn = lakehouse.connect(lake["ducklake_catalog"], lake["ducklake_data_path"])
    try:
        loaded = {row[0]: row[1:] for row in conn.execute(
            "SELECT extension_name, loaded, installed, install_mode FROM duckdb_extensions() "
            "WHERE extension_name IN ('ducklake', 'postgres_scanner')"
        ).fetchall()}
        settings = dict(conn.execute(
            "SELECT name, value FROM duckdb_settings() WHERE name IN ('autoinstall_known_extensions', 'autoload_known_extensions')"
        ).fetchall())
    finally:
        conn.close()
    # loaded from the wheels' files by path: nothing installed, so nothing was ever downloaded
    assert loaded == {name: (True, False, "NOT_INSTALLED") for name in ("ducklake", "postgres_scanner")}, loaded
    assert all("site-packages" in path and Path(path).is_file() for path in lakehouse.extension_files())
    assert settings == {"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"}, settings


def test_a_wrong_setting_is_named(lake, tmp_path):
    unreachable = {**lake, "ducklake_catalog": "postgresql://postgres@127.0.0.1:1/nowhere"}
    with pytest.raises(RuntimeError, match=r"cannot open the DuckLake warehouse \(catalog postgresql://postgres@127.0.0.1:1/nowhere"):
        Warehouse(**unreachable).table_exists("samples")
    with pytest.raises(ValueError, match="no DuckLake catalog given"):
        Warehouse(**{**lake, "ducklake_catalog": ""}).table_exists("samples")
    with pytest.raises(ValueError, match="warehouse backend 'lakehouse': expected one of duckdb, ducklake"):
        Warehouse(backend="lakehouse").table_exists("samples")
    assert lakehouse.redacted("postgresql://lab:secret@db:5432/lake") == "postgresql://lab:***@db:5432/lake"
    assert lakehouse.redacted("host=db password=secret dbname=lake") == "host=db password=*** dbname=lake"


def test_the_same_sql_on_both_backends(lake, tmp_path):
    """Partition replace, read-back in stored order, whole-table replace, appends, existence."""
    results = []
    for settings in ({"backend": "duckdb", "database": str(tmp_path / "w.duckdb")}, lake):
        warehouse = Warehouse(**settings)
        warehouse.replace_partitions({"samples": [cell_rows("a", 3, 1.0), cell_rows("b", 2, 2.0)]}, "cell_id", ["a", "b"])
        warehouse.replace_partition("samples", cell_rows("a", 4, 3.0), "cell_id", "a")
        warehouse.replace_table("summary", pd.DataFrame({"k": ["x"], "v": [1]}))
        warehouse.append_rows("log", pd.DataFrame({"k": ["y"]}))
        with warehouse.session():
            parts = warehouse.read_partitions("samples", "cell_id", ["b", "a", "missing"])
        results.append((
            {key: frame.to_dict("list") for key, frame in parts.items()},
            warehouse.query("SELECT * FROM summary").to_dict("list"),
            warehouse.table_exists("log"), warehouse.table_exists("nope"),
        ))
    assert results[0] == results[1], results
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as conn:  # the file backend is untouched by the lake
        assert conn.execute("SELECT count(*) FROM samples").fetchone()[0] == 6
