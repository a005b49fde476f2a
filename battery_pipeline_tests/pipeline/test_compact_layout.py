"""`raw_samples` and `cycle_curves` are views over a compact layout (`compact_layout`): text once per
source. They must give back every row as it was stored (several files per cell, step types
outside the canonical three, missing values), refuse what they cannot store, and take over a
warehouse that still holds them as tables, validations included."""

import duckdb
import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from battery_pipeline import compact_layout
from battery_pipeline.compact_layout import RAW
from battery_pipeline.lineage import partition_hash
from battery_pipeline.resources import _TABLE_RAW_DIGESTS, VALIDATED_CELLS_DDL, Warehouse, _ddl_columns, _keys_relation
from battery_pipeline.science.schema import SAMPLE_COLUMNS, CellCycleSample
from battery_pipeline.science.validation import validate_samples
from battery_pipeline_tests.pipeline.test_validated_view import LIMITS, comparable, raw_cell, store


def two_file_cell(cell_id: str) -> pd.DataFrame:
    """A cell read from two files, with a step type a lab wrote its own way and one missing."""
    frame = raw_cell(cell_id)
    half = len(frame) // 2
    frame["source_file"] = [f"{cell_id}_part1.csv"] * half + [f"{cell_id}_part2.csv"] * (len(frame) - half)
    frame["source_row"] = np.r_[np.arange(half), np.arange(len(frame) - half)]
    frame["step_type"] = frame["step_type"].astype(object)
    frame.loc[3, "step_type"] = "CCCV_Chg"
    frame.loc[4, "step_type"] = None
    return frame


def stored_text(database: str) -> list[tuple[str, str]]:
    with duckdb.connect(database, read_only=True) as conn:
        return conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_name = ? AND data_type = 'VARCHAR'",
            [RAW.values],
        ).fetchall()


def test_raw_rows_come_back_as_the_reader_gave_them(tmp_path):
    warehouse = Warehouse(database=str(tmp_path / "w.duckdb"))
    frames = {"a": two_file_cell("a"), "b": raw_cell("b")}
    warehouse.replace_partitions({"raw_samples": list(frames.values())}, "cell_id", list(frames))
    back = warehouse.read_partitions("raw_samples", "cell_id", ["a", "b", "never"])
    decoded = warehouse.read_partitions("raw_samples", "cell_id", ["a", "b", "never"], text_as_category=True)
    for key, frame in frames.items():
        for rows in (back[key], decoded[key]):
            pdt.assert_frame_equal(rows[SAMPLE_COLUMNS].astype({c: object for c in RAW.text}).reset_index(drop=True),
                                   frame.astype({c: object for c in RAW.text}), check_dtype=False)
        assert isinstance(decoded[key]["step_type"].dtype, pd.CategoricalDtype)
    assert back["never"].empty and decoded["never"].empty
    assert back["a"].loc[4, "step_type"] is None and back["a"].loc[3, "step_type"] == "CCCV_Chg"
    assert stored_text(warehouse.database) == []  # no text on a sample row
    sources = warehouse.query("SELECT cell_id, source_file FROM raw_sample_sources ORDER BY 1, 2")
    assert sources.values.tolist() == [["a", "a_part1.csv"], ["a", "a_part2.csv"], ["b", "b.csv"]]


def test_replacing_a_cell_leaves_the_others_and_no_orphan_sources(tmp_path):
    warehouse = Warehouse(database=str(tmp_path / "w.duckdb"))
    warehouse.replace_partitions({"raw_samples": [two_file_cell("a"), raw_cell("b")]}, "cell_id", ["a", "b"])
    warehouse.replace_partition("raw_samples", raw_cell("a", n_cycles=2), "cell_id", "a")  # now one file
    counts = warehouse.query("SELECT cell_id, count(*) AS n FROM raw_samples GROUP BY 1 ORDER BY 1")
    assert counts.values.tolist() == [["a", len(raw_cell("a", 2))], ["b", len(raw_cell("b"))]]
    (orphans,), = warehouse.query(
        "SELECT count(*) FROM raw_sample_values v ANTI JOIN raw_sample_sources s USING (source_key)").values.tolist()
    assert orphans == 0
    assert warehouse.query("SELECT count(*) AS n FROM raw_sample_sources")["n"].iloc[0] == 2


def test_rows_that_cannot_be_stored_are_refused_by_name(tmp_path):
    warehouse = Warehouse(database=str(tmp_path / "w.duckdb"))
    nameless = raw_cell("a")
    nameless.loc[0, "cell_id"] = None
    with pytest.raises(ValueError, match="without a cell_id"):
        warehouse.replace_partition("raw_samples", nameless, "cell_id", "a")
    with pytest.raises(ValueError, match=r"outside the partitions replaced: \['b'\]"):
        warehouse.replace_partitions({"raw_samples": [raw_cell("a"), raw_cell("b")]}, "cell_id", ["a"])
    with pytest.raises(ValueError, match="unknown columns"):
        warehouse.replace_partition("raw_samples", raw_cell("a").assign(extra=1), "cell_id", "a")


def test_two_sources_on_one_key_are_refused_not_merged(tmp_path):
    warehouse = Warehouse(database=str(tmp_path / "w.duckdb"))
    warehouse.replace_partition("raw_samples", raw_cell("a"), "cell_id", "a")
    key = compact_layout.source_key("b", "b.csv")
    with duckdb.connect(warehouse.database) as conn:  # another source already holds b.csv's key
        conn.execute("INSERT INTO raw_sample_sources VALUES (?, 'z', 'z.csv', ['charge'])", [key])
    with pytest.raises(ValueError, match=rf"source key {key} stands for .*'b', 'b.csv'.*'z', 'z.csv'"):
        warehouse.replace_partition("raw_samples", raw_cell("b"), "cell_id", "b")
    assert set(warehouse.query("SELECT DISTINCT cell_id FROM raw_samples")["cell_id"]) == {"a"}  # rolled back


def test_a_warehouse_with_the_raw_table_of_earlier_versions_is_taken_over(tmp_path):
    database = str(tmp_path / "w.duckdb")
    raw, other = two_file_cell("a"), raw_cell("b")
    result = validate_samples(other.copy(), LIMITS)
    with duckdb.connect(database) as conn:  # as earlier versions stored it: text on every row ...
        conn.execute(f"CREATE TABLE raw_samples ({_ddl_columns(CellCycleSample)})")
        conn.register("raw", pd.concat([raw, other]))
        conn.execute("INSERT INTO raw_samples BY NAME SELECT * FROM raw")
        conn.register("quarantined", result.quarantined)
        conn.execute("CREATE TABLE quarantined_samples AS SELECT * FROM quarantined")
        conn.register("flags", result.flags)
        conn.execute("CREATE TABLE sample_flags AS SELECT * FROM flags")
        conn.execute(VALIDATED_CELLS_DDL)  # ... cell b validated on them, with that version's digest
        with _keys_relation(conn, ["b"]):
            conn.execute(f"INSERT INTO validated_cells SELECT cell_id, ?, raw_digest FROM ({_TABLE_RAW_DIGESTS})", [len(result.valid)])
        conn.execute("CREATE VIEW validated_samples AS SELECT * FROM raw_samples")  # that version's view (another query)
    warehouse = Warehouse(database=database)
    back = warehouse.read_partitions("raw_samples", "cell_id", ["a", "b"])  # a read takes it over
    for key, frame in (("a", raw), ("b", other)):
        pdt.assert_frame_equal(back[key][SAMPLE_COLUMNS].astype({"step_type": object}), frame.astype({"step_type": object}),
                               check_dtype=False)
    pdt.assert_frame_equal(comparable(warehouse.read_partition("validated_samples", "cell_id", "b")), comparable(result.valid))
    with duckdb.connect(database, read_only=True) as conn:
        kinds = dict(conn.execute("SELECT table_name, table_type FROM information_schema.tables").fetchall())
    assert kinds["raw_samples"] == "VIEW" and kinds[RAW.values] == "BASE TABLE"


def test_partition_hashes_of_the_views_follow_every_stored_value(tmp_path):
    warehouse = Warehouse(database=str(tmp_path / "w.duckdb"))
    raw = two_file_cell("a")

    def hashes(frame: pd.DataFrame) -> tuple[str, str]:
        store(warehouse, frame)
        return (partition_hash(warehouse, ["raw_samples"], "cell_id", "a"),
                partition_hash(warehouse, ["validated_samples"], "cell_id", "a"))

    first = hashes(raw)
    assert hashes(raw.copy()) == first  # the same rows: the same hash
    changes = {
        "a value": raw.assign(voltage_v=raw["voltage_v"].where(raw.index != 10, 3.71)),
        "a step type's name": raw.assign(step_type=raw["step_type"].replace("CCCV_Chg", "CV_Chg")),
        "a file's name": raw.assign(source_file=raw["source_file"].replace("a_part2.csv", "a_part3.csv")),
    }
    for change, frame in changes.items():
        raw_hash, valid_hash = hashes(frame)
        assert raw_hash != first[0] and valid_hash != first[1], change


def curve_points(cell_id: str, n_cycles: int = 3) -> pd.DataFrame:
    grid = np.linspace(3.0, 4.1, 50)
    frames = [pd.DataFrame({"cell_id": cell_id, "cycle_number": cycle, "curve": curve, "voltage_v": grid,
                            "value": np.sin(grid * cycle) + i}) for cycle in range(1, n_cycles + 1) for i, curve in enumerate(("q_of_v", "dqdv"))]
    return pd.concat(frames, ignore_index=True)[list(compact_layout.CURVES.columns)]


def test_cycle_curves_come_back_whole_and_an_earlier_table_is_moved(tmp_path):
    warehouse = Warehouse(database=str(tmp_path / "w.duckdb"))
    frames = {"a": curve_points("a"), "b": curve_points("b", 2)}
    warehouse.replace_partitions({"cycle_curves": list(frames.values())}, "cell_id", list(frames))
    back = warehouse.read_partitions("cycle_curves", "cell_id", ["a", "b"])
    for key, frame in frames.items():
        pdt.assert_frame_equal(back[key], frame, check_dtype=False)
    assert warehouse.query("SELECT count(*) AS n FROM cycle_curve_sources")["n"].iloc[0] == 4  # (cell, curve) pairs
    warehouse.replace_partition("cycle_curves", curve_points("a").iloc[0:0], "cell_id", "a")  # a summary-level cell: none
    assert set(warehouse.query("SELECT DISTINCT cell_id FROM cycle_curves")["cell_id"]) == {"b"}

    database = str(tmp_path / "old.duckdb")
    with duckdb.connect(database) as conn:  # as earlier versions stored it: text on every row
        conn.register("curves", pd.concat(frames.values()))
        conn.execute("CREATE TABLE cycle_curves AS SELECT * FROM curves")
    moved = Warehouse(database=database).read_partitions("cycle_curves", "cell_id", ["a", "b"])
    for key, frame in frames.items():
        pdt.assert_frame_equal(moved[key], frame, check_dtype=False)
