"""Every cell's chemistry, nominal capacity and voltage window says where it came from, and a
layout alone never assigns a dataset's metadata (issue 13, item 1)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from battery_pipeline.science.readers.base import ORIGIN_KINDS
from battery_pipeline.science.sources import cell_record, discover, trusted_nominal
from battery_pipeline_tests.conftest import dataset_file
from battery_pipeline_tests.fixtures import xjtu_lookalike

SOURCE_COLUMNS = ("chemistry_source", "nominal_capacity_source", "voltage_window_source", "ambient_temperature_source")


def _records(*roots: Path) -> dict[str, dict]:
    return {source.partition_key: cell_record(source) for source in discover(list(roots)) if not source.problem}


def _kind(text: str) -> str:
    return text.split(":", 1)[0]


@pytest.mark.parametrize(
    "relative",
    [
        "nasa_pcoe/B0005.mat",
        "xjtu_features/2C_battery-1.csv",
        "cycler_samples/PredictionDiagnostics_000109_tztest.010",
        "cycler_samples/FastCharge_000025_CH8.csv",
        "lg_hg2/25degC/549_C20DisCh.csv",
    ],
)
def test_every_traced_value_of_a_real_file_names_its_kind(datasets, relative):
    path = dataset_file(datasets, relative)
    (record,) = _records(path).values()
    for column in SOURCE_COLUMNS:
        assert _kind(record[column]) in ORIGIN_KINDS, (column, record[column])
    # a value is known exactly when its source is not "unknown"
    assert (record["chemistry"] is None) == (record["chemistry_source"] == "unknown")
    assert (record["nominal_capacity_ah"] is None) == (record["nominal_capacity_source"] == "unknown")
    assert (record["ambient_temperature_c"] is None) == (record["ambient_temperature_source"] == "unknown")


@pytest.mark.parametrize("relative, expected", [("lg_hg2/25degC/549_C20DisCh.csv", 25.0),
                                                 ("lg_hg2/n10degC/601_US06.csv", -10.0)])
def test_a_chamber_folder_states_the_ambient_as_a_dataset_rule(datasets, relative, expected):
    (record,) = _records(dataset_file(datasets, relative)).values()
    assert record["ambient_temperature_c"] == expected
    assert record["ambient_temperature_source"].startswith("dataset rule: LG 18650HG2 set README")


def test_a_sidecar_states_the_ambient_and_a_nonsense_one_is_refused(datasets, tmp_path):
    from battery_pipeline.science.readers import SourceFormatError

    path = dataset_file(datasets, "cycler_samples/PredictionDiagnostics_000109_tztest.010")
    shutil.copy(path, tmp_path / path.name)
    sidecar = tmp_path / (path.stem + ".cell.json")
    sidecar.write_text(json.dumps({"ambient_temperature_c": 30}))
    (record,) = _records(tmp_path).values()
    assert record["ambient_temperature_c"] == 30 and record["ambient_temperature_source"] == f"sidecar: {sidecar.name}"
    sidecar.write_text(json.dumps({"ambient_temperature_c": 298.15}))  # kelvin, not degC
    with pytest.raises(SourceFormatError, match="ambient_temperature_c"):
        _records(tmp_path)


def test_the_maccor_diagnostic_file_gets_no_invented_chemistry_or_capacity(datasets):
    path = dataset_file(datasets, "cycler_samples/PredictionDiagnostics_000109_tztest.010")
    (record,) = _records(path).values()
    assert record["chemistry"] is None and record["chemistry_source"] == "unknown"
    assert record["nominal_capacity_ah"] is None and record["nominal_capacity_source"] == "unknown"
    assert trusted_nominal(record) is None


def test_a_real_xjtu_table_matches_the_dataset_rule_on_name_layout_and_values(datasets):
    path = dataset_file(datasets, "xjtu_features/2C_battery-1.csv")
    (record,) = _records(path).values()
    assert record["nominal_capacity_ah"] == 2.0 and record["chemistry"] == "NMC"
    assert record["nominal_capacity_source"].startswith("dataset rule: XJTU")
    assert trusted_nominal(record) == 2.0


@pytest.mark.parametrize("name", ["2C_battery-9.csv", "lab_cell_07.csv"])
def test_a_lookalike_summary_table_becomes_unknown_source(datasets, tmp_path, name):
    """Another lab's LFP 1.1 Ah summaries in the XJTU layout: even under an XJTU-style file name
    the capacities give it away; nothing of the XJTU set is assigned."""
    dataset_file(datasets, "severson_qdlin/train/cell1.csv")
    xjtu_lookalike(datasets, tmp_path, name)
    (record,) = _records(tmp_path).values()
    assert record["source_format"] == "xjtu_cycle_summary"  # the layout is still read
    assert record["dataset"] == "unknown source, summary layout (XJTU feature-table columns)"
    assert record["chemistry"] is None and record["nominal_capacity_ah"] is None
    assert record["nominal_capacity_source"] == "unknown"
    assert "capacities" in record["description"] and "not an XJTU cell" in record["description"]
    assert trusted_nominal(record) is None


def test_a_sidecar_is_named_as_the_source_of_what_it_sets(datasets, tmp_path):
    path = dataset_file(datasets, "cycler_samples/PredictionDiagnostics_000109_tztest.010")
    shutil.copy(path, tmp_path / path.name)
    (tmp_path / (path.stem + ".cell.json")).write_text(json.dumps({"nominal_capacity_ah": 4.8}))
    (record,) = _records(tmp_path).values()
    assert record["nominal_capacity_source"] == f"sidecar: {path.stem}.cell.json"
    assert record["chemistry_source"] == "unknown"  # the sidecar did not state it
    assert trusted_nominal(record) == 4.8


def test_a_struct_layout_without_a_pcoe_name_gets_no_nasa_metadata(datasets, tmp_path):
    path = dataset_file(datasets, "nasa_pcoe/B0005.mat")
    copy = tmp_path / "lab_cell_3.mat"
    shutil.copy(path, copy)
    (record,) = _records(copy).values()
    assert record["source_format"] == "nasa_pcoe_mat"
    assert record["nominal_capacity_ah"] is None and record["nominal_capacity_source"] == "unknown"
    assert record["voltage_window_source"].startswith("unknown")
