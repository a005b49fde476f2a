"""In-process materialization of the ingest assets on a temporary DuckDB warehouse."""

from __future__ import annotations

import hashlib
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pytest

from battery_pipeline.assets import cell_pipeline
from battery_pipeline.partitions import cell_partitions
from battery_pipeline.resources import SourceCatalog, Warehouse
from battery_pipeline.science.sources import discover
from battery_pipeline_tests.fixtures import cycling_frame, write_csv

ASSETS = [cell_pipeline.cell_pipeline]
# the ingest stages of the per-cell step (registry, raw, validated), not features and labels
INGEST_SELECTION = [spec.key for spec in cell_pipeline.CELL_SPECS if spec.group_name == "ingest"]


def run_partition(instance, data_dir: Path, db_path: Path, key: str, run_config=None, assets=ASSETS, selection=INGEST_SELECTION):
    return dg.materialize(
        assets,
        selection=selection,
        partition_key=key,
        instance=instance,
        resources={
            "warehouse": Warehouse(database=str(db_path)),
            "catalog": SourceCatalog(data_dirs=[str(data_dir)], use_demo_when_empty=False),
        },
        run_config=run_config,
        raise_on_error=False,
    )


def register(instance, data_dir: Path) -> list[str]:
    keys = discover([data_dir]).keys()
    instance.add_dynamic_partitions(cell_partitions.name, keys)
    return keys


def table_counts(db_path: Path, table: str) -> dict[str, int]:
    with duckdb.connect(str(db_path), read_only=True) as conn:
        rows = conn.execute(f"SELECT cell_id, count(*) FROM {table} GROUP BY cell_id").fetchall()
    return dict(rows)


def checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def test_clean_cell_flows_through_with_checks_passing(tmp_path, instance):
    data = tmp_path / "incoming"
    write_csv(data, "cell_a.csv", cycling_frame(n_cycles=3))
    db = tmp_path / "warehouse.duckdb"
    (key,) = register(instance, data)
    result = run_partition(instance, data, db, key)
    assert result.success
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(evaluations) >= {"raw_schema_conformance", "schema_conformance", "row_accounting", "no_duplicate_samples", "cycle_numbers_continuous", "quarantine_rate"}
    assert all(e.passed for e in evaluations.values()), {k: e.passed for k, e in evaluations.items()}
    assert table_counts(db, "raw_samples") == {key: 240}
    assert table_counts(db, "validated_samples") == {key: 240}
    assert table_counts(db, "quarantined_samples") == {}


def test_dirty_rows_are_quarantined_with_reasons_and_counts_add_up(tmp_path, instance):
    frame = cycling_frame(n_cycles=2)
    frame.loc[5, "voltage_v"] = 41.5  # a unit slip: far outside the window
    frame.loc[6, "temperature_c"] = 150.0
    frame.loc[7, "current_a"] = np.nan
    frame = frame.astype({"voltage_v": object})
    frame.loc[8, "voltage_v"] = "n/a"  # text in a numeric column
    frame = __import__("pandas").concat([frame, frame.iloc[[20, 21]]], ignore_index=True)  # duplicated rows
    data = tmp_path / "incoming"
    write_csv(data, "dirty.csv", frame)
    db = tmp_path / "warehouse.duckdb"
    (key,) = register(instance, data)
    result = run_partition(instance, data, db, key)
    assert result.success
    with duckdb.connect(str(db), read_only=True) as conn:
        reasons = dict(conn.execute("SELECT reason_code, count(*) FROM quarantined_samples GROUP BY 1").fetchall())
        rows = {r: set(v) for r, v in conn.execute("SELECT reason_code, list(source_row) FROM quarantined_samples GROUP BY 1").fetchall()}
    assert reasons == {
        "voltage_out_of_window": 1,
        "temperature_out_of_range": 1,
        "missing_value": 2,
        "duplicate_sample": 2,
    }
    assert rows["voltage_out_of_window"] == {5} and rows["missing_value"] == {7, 8}
    raw, valid = table_counts(db, "raw_samples")[key], table_counts(db, "validated_samples")[key]
    assert raw == len(frame) and valid + 6 == raw
    accounting = [e for e in result.get_asset_check_evaluations() if e.check_name == "row_accounting"][0]
    assert accounting.passed and accounting.metadata["unaccounted_rows"].value == 0


def test_bad_file_fails_only_its_own_partition_and_sources_stay_untouched(tmp_path, instance):
    data = tmp_path / "incoming"
    good = write_csv(data, "good.csv", cycling_frame(n_cycles=2))
    (data / "empty.csv").write_bytes(b"")
    (data / "garbage.bin").write_bytes(bytes(range(256)) * 10)
    write_csv(data, "missing_columns.csv", cycling_frame(n_cycles=1).drop(columns=["voltage_v"]))
    truncated = data / "truncated.csv"
    text = good.read_text()
    last_line = text.rstrip("\n").rsplit("\n", 1)[-1]
    truncated.write_text(text[: len(text) - 1 - len(last_line) // 2])  # cut mid-row
    before = {p.name: checksum(p) for p in data.iterdir()}
    db = tmp_path / "warehouse.duckdb"
    keys = register(instance, data)
    assert set(keys) == {"good", "empty", "garbage", "missing_columns", "truncated"}

    outcomes = {key: run_partition(instance, data, db, key) for key in keys}
    assert outcomes["good"].success and outcomes["truncated"].success
    for key in ("empty", "garbage", "missing_columns"):
        assert not outcomes[key].success
        failure = [e for e in outcomes[key].all_events if e.is_step_failure][0]
        text = failure.step_failure_data.user_failure_data.description
        assert Path(next(n for n in before if n.startswith(key))).name in text, text
    assert "voltage_v" in [e for e in outcomes["missing_columns"].all_events if e.is_step_failure][0].step_failure_data.user_failure_data.description
    # The truncated last row is kept and quarantined, not lost.
    assert table_counts(db, "raw_samples")["truncated"] == 160
    assert table_counts(db, "quarantined_samples").get("truncated", 0) >= 1
    assert set(table_counts(db, "raw_samples")) == {"good", "truncated"}
    assert before == {p.name: checksum(p) for p in data.iterdir()}


def test_rematerializing_a_partition_replaces_only_that_partition(tmp_path, instance):
    data = tmp_path / "incoming"
    write_csv(data, "a.csv", cycling_frame(n_cycles=2))
    write_csv(data, "b.csv", cycling_frame(n_cycles=3))
    db = tmp_path / "warehouse.duckdb"
    keys = register(instance, data)
    for key in keys:
        assert run_partition(instance, data, db, key).success
    assert table_counts(db, "validated_samples") == {"a": 160, "b": 240}
    write_csv(data, "a.csv", cycling_frame(n_cycles=1))
    assert run_partition(instance, data, db, "a").success
    assert table_counts(db, "validated_samples") == {"a": 80, "b": 240}
    assert table_counts(db, "raw_samples") == {"a": 80, "b": 240}


def test_hostile_file_names_become_safe_partition_keys(tmp_path, instance):
    data = tmp_path / "incoming"
    nested = data / "lab'; DROP TABLE raw_samples; --"
    write_csv(nested, "cell'); DELETE FROM cells; --.csv", cycling_frame(n_cycles=1))
    write_csv(data, "back\\slash name.csv", cycling_frame(n_cycles=1))
    db = tmp_path / "warehouse.duckdb"
    keys = register(instance, data)
    for key in keys:
        assert all(ch.isalnum() or ch in "_.-" for ch in key), key
        assert run_partition(instance, data, db, key).success
    assert set(table_counts(db, "raw_samples")) == set(keys)
    assert len(keys) == 2


def test_real_cycler_files_through_the_pipeline(tmp_path, instance, datasets):
    """Real files (linked, never copied): Arbin CSV without impedance, then NASA B0025 with it."""
    from battery_pipeline_tests.conftest import dataset_file

    data = tmp_path / "incoming"
    data.mkdir()
    for relative in ("cycler_samples/FastCharge_000025_CH8.csv", "cycler_samples/FastCharge_000025_CH8_Metadata.csv", "nasa_pcoe/B0025.mat"):
        source = dataset_file(datasets, relative)
        (data / source.name).symlink_to(source)
    db = tmp_path / "warehouse.duckdb"
    keys = register(instance, data)
    assert keys == ["B0025", "FastCharge_000025_CH8"]
    for key in reversed(keys):  # the cell without impedance first: the table layout must not depend on it
        result = run_partition(instance, data, db, key)
        assert result.success, key
    with duckdb.connect(str(db), read_only=True) as conn:
        impedance = conn.execute("SELECT cell_id, count(*), min(re_ohm), max(rct_ohm) FROM cell_impedance GROUP BY 1").fetchall()
        cells = dict(conn.execute("SELECT cell_id, source_format FROM cells").fetchall())
    assert cells == {"B0025": "nasa_pcoe_mat", "FastCharge_000025_CH8": "arbin_csv"}
    ((cell, count, re_min, rct_max),) = impedance
    assert cell == "B0025" and count == 21 and re_min > 0 and rct_max > re_min
    accounting = table_counts(db, "raw_samples")["B0025"]
    assert accounting == table_counts(db, "validated_samples")["B0025"] + table_counts(db, "quarantined_samples").get("B0025", 0)


def test_sidecar_metadata_feeds_the_registry_and_a_bad_sidecar_fails_its_partition(tmp_path, instance):
    import json

    data = tmp_path / "incoming"
    frame = cycling_frame(n_cycles=1)
    frame.loc[3, "voltage_v"] = 3.9  # fine for NMC; above the LFP window set by the sidecar
    write_csv(data, "lfp_cell.csv", frame)
    (data / "lfp_cell.cell.json").write_text(json.dumps({"chemistry": "LFP", "nominal_capacity_ah": 1.1, "dataset": "bench"}))
    write_csv(data, "broken_meta.csv", cycling_frame(n_cycles=1))
    (data / "broken_meta.cell.json").write_text('{"nominal_capacity_ah": "three"}')
    db = tmp_path / "warehouse.duckdb"
    keys = register(instance, data)
    assert keys == ["broken_meta", "lfp_cell"]
    assert run_partition(instance, data, db, "lfp_cell").success
    with duckdb.connect(str(db), read_only=True) as conn:
        row = conn.execute("SELECT chemistry, nominal_capacity_ah, voltage_min_v, voltage_max_v, dataset, metadata_origin FROM cells").fetchone()
        quarantined = conn.execute("SELECT count(*) FROM quarantined_samples WHERE reason_code = 'voltage_out_of_window'").fetchone()[0]
    assert row[:5] == ("LFP", 1.1, 2.0, 3.65, "bench")
    assert "lfp_cell.cell.json" in row[5] and "chemistry table" in row[5]
    assert quarantined > 0  # the charge samples above 3.75 V are outside LFP's window
    broken = run_partition(instance, data, db, "broken_meta")
    assert not broken.success
    text = [e for e in broken.all_events if e.is_step_failure][0].step_failure_data.user_failure_data.description
    assert "broken_meta.cell.json" in text and "nominal_capacity_ah" in text
