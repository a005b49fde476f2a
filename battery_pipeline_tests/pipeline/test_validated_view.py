"""`validated_samples` is a view over raw_samples, quarantined_samples and sample_flags
(`resources.validated_samples_sql`): it must give back exactly the frame validation kept, forget a
cell whose raw rows changed, and take over a warehouse that still holds the table."""

import duckdb
import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from battery_pipeline.resources import Warehouse
from battery_pipeline.science.schema import SAMPLE_COLUMNS
from battery_pipeline.science.validation import CellLimits, FrameShapeError, validate_samples
from battery_pipeline_tests.fixtures import cycling_frame

LIMITS = CellLimits(voltage_min_v=2.5, voltage_max_v=4.2, nominal_capacity_ah=2.0)


def raw_cell(cell_id: str, n_cycles: int = 3) -> pd.DataFrame:
    frame = cycling_frame(n_cycles=n_cycles)
    frame.insert(0, "cell_id", cell_id)
    frame["internal_resistance_ohm"] = np.nan
    frame["source_file"] = f"{cell_id}.csv"
    frame["source_row"] = np.arange(len(frame))
    frame.loc[5, "voltage_v"] = np.nan  # a one-sample gap: interpolated
    frame.loc[30, "voltage_v"] = 9.0  # outside the window: quarantined
    frame.loc[50, "temperature_c"] = np.nan  # a short temperature gap: interpolated
    return frame[SAMPLE_COLUMNS]


def store(warehouse: Warehouse, raw: pd.DataFrame):
    key = str(raw["cell_id"].iloc[0])
    result = validate_samples(raw.copy(), LIMITS)
    warehouse.replace_partitions({"raw_samples": raw}, "cell_id", key)
    warehouse.replace_partitions(
        {"validated_samples": result.valid, "quarantined_samples": result.quarantined, "sample_flags": result.flags},
        "cell_id", key,
    )
    return result


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[SAMPLE_COLUMNS].astype({c: str for c in ("cell_id", "step_type", "source_file")}).reset_index(drop=True)


def test_the_view_gives_back_what_validation_kept_in_order(tmp_path):
    warehouse = Warehouse(database=str(tmp_path / "w.duckdb"))
    results = {key: store(warehouse, raw_cell(key, n)) for key, n in (("a", 3), ("b", 2))}
    assert len(results["a"].quarantined) == 1 and (results["a"].flags["flag"] == "interpolated").sum() == 2
    stored = warehouse.read_partitions("validated_samples", "cell_id", ["a", "b", "never"], text_as_category=True)
    for key, result in results.items():
        pdt.assert_frame_equal(comparable(stored[key]), comparable(result.valid))
    assert stored["never"].empty
    one = warehouse.read_partition("validated_samples", "cell_id", "a", columns=["source_row", "voltage_v"])
    assert one["source_row"].is_monotonic_increasing and 30 not in set(one["source_row"])
    assert one.loc[one["source_row"] == 5, "voltage_v"].notna().all()
    with duckdb.connect(warehouse.database, read_only=True) as conn:
        assert conn.execute("SELECT table_type FROM information_schema.tables WHERE table_name = 'validated_samples'").fetchone() == ("VIEW",)
        raw_nan = conn.execute("SELECT count(*) FROM raw_samples WHERE cell_id = 'a' AND voltage_v IS NULL").fetchone()
    assert raw_nan == (1,)  # the raw rows keep the hole


def test_changed_raw_rows_unvalidate_the_cell_and_the_same_rows_do_not(tmp_path):
    warehouse = Warehouse(database=str(tmp_path / "w.duckdb"))
    raw = raw_cell("a")
    kept = len(store(warehouse, raw).valid)
    warehouse.replace_partitions({"raw_samples": raw}, "cell_id", "a")  # read again, same rows
    assert len(warehouse.read_partition("validated_samples", "cell_id", "a")) == kept
    changed = raw.copy()
    changed.loc[10, "voltage_v"] += 0.001
    warehouse.replace_partitions({"raw_samples": changed}, "cell_id", "a")
    assert warehouse.read_partition("validated_samples", "cell_id", "a").empty  # not validated on these rows
    assert len(store(warehouse, changed).valid) == kept
    assert len(warehouse.read_partition("validated_samples", "cell_id", "a")) == kept


def test_a_warehouse_with_the_validated_table_of_earlier_versions_is_taken_over(tmp_path):
    database = str(tmp_path / "w.duckdb")
    raw = raw_cell("a")
    result = validate_samples(raw.copy(), LIMITS)
    warehouse = Warehouse(database=database)
    warehouse.replace_partitions(
        {"raw_samples": raw, "quarantined_samples": result.quarantined, "sample_flags": result.flags}, "cell_id", "a"
    )
    with duckdb.connect(database) as conn:  # as earlier versions stored it: a second copy
        conn.register("valid", comparable(result.valid))
        conn.execute("CREATE TABLE validated_samples AS SELECT * FROM valid")
    with warehouse.connection() as conn:
        warehouse.ensure_table(conn, "validated_samples")
    pdt.assert_frame_equal(comparable(warehouse.read_partition("validated_samples", "cell_id", "a")), comparable(result.valid))


def test_a_reader_giving_two_samples_one_source_row_fails_validation():
    raw = raw_cell("a")
    raw.loc[7, "source_row"] = 6
    with pytest.raises(FrameShapeError, match=r"a\.csv:6"):
        validate_samples(raw, LIMITS)


def test_a_view_of_another_definition_is_replaced(tmp_path):
    warehouse = Warehouse(database=str(tmp_path / "w.duckdb"))
    result = store(warehouse, raw_cell("a"))
    with duckdb.connect(warehouse.database) as conn:  # as a version with another query left it
        conn.execute("CREATE OR REPLACE VIEW validated_samples AS SELECT * FROM raw_samples")
    store(warehouse, raw_cell("a"))
    pdt.assert_frame_equal(comparable(warehouse.read_partition("validated_samples", "cell_id", "a")), comparable(result.valid))
