"""`battery-pipeline export --bdf DIR`: a cell's validated samples, as the warehouse's view serves
them, written as BDF and read back equal by our BDF reader."""

from __future__ import annotations

import pandas as pd
import pytest

from battery_pipeline.cli import export_bdf, main
from battery_pipeline.resources import Warehouse
from battery_pipeline.science.readers import detect_format
from battery_pipeline.science.schema import SAMPLE_COLUMNS
from battery_pipeline.science.validation import CellLimits, validate_samples
from battery_pipeline_tests.conftest import dataset_file

SOURCE = "cycler_samples/PreDiag_000229_000229_truncated.034"
PROVENANCE = ["cell_id", "source_file", "source_row"]


@pytest.fixture
def warehouse(datasets, tmp_path):
    path = dataset_file(datasets, SOURCE)
    raw = detect_format(path).read([path], "prediag").samples
    result = validate_samples(raw, CellLimits(voltage_min_v=2.0, voltage_max_v=4.4))
    warehouse = Warehouse(database=str(tmp_path / "warehouse.duckdb"))
    warehouse.replace_partitions({"raw_samples": raw}, "cell_id", "prediag")
    warehouse.replace_partitions(
        {"validated_samples": result.valid, "quarantined_samples": result.quarantined, "sample_flags": result.flags},
        "cell_id", "prediag",
    )
    return warehouse


def test_exported_cell_reads_back_as_its_validated_samples(warehouse, tmp_path):
    out = tmp_path / "bdf"
    assert export_bdf(out, None, csv=True, warehouse=warehouse) == 0
    parquet, csv = sorted(out.glob("*.bdf.parquet")), sorted(out.glob("*.bdf.csv"))
    assert len(parquet) == len(csv) == 1 and "__prediag__" in parquet[0].name
    stored = warehouse.read_partition("validated_samples", "cell_id", "prediag")
    for path in (parquet[0], csv[0]):
        back = detect_format(path).read([path], "prediag").samples
        assert len(back) == len(stored)
        columns = [c for c in SAMPLE_COLUMNS if c not in PROVENANCE + ["capacity_ah"]]
        pd.testing.assert_frame_equal(
            back[columns].astype({"step_type": str}), stored[columns].astype({"step_type": str}), check_dtype=False
        )
        assert back["source_file"].astype(str).eq(path.name).all()  # provenance: the exported file


def test_a_cell_without_validated_samples_is_refused_by_name(warehouse, tmp_path, capsys):
    assert export_bdf(tmp_path / "bdf", ["no_such_cell"], csv=False, warehouse=warehouse) == 1
    assert "no_such_cell" in capsys.readouterr().out
    assert not (tmp_path / "bdf").exists()


def test_the_command_line_needs_a_folder():
    with pytest.raises(SystemExit):
        main(["export"])


def test_the_bdf_exports_asset_writes_the_cell(warehouse, tmp_path):
    import dagster as dg

    from battery_pipeline.assets.exports import bdf_exports
    from battery_pipeline.partitions import cell_partitions

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(cell_partitions.name, ["prediag", "unvalidated"])
    out = tmp_path / "asset_bdf"
    config = {"ops": {"bdf_exports": {"config": {"directory": str(out), "csv": False}}}}
    result = dg.materialize([bdf_exports], partition_key="prediag", instance=instance,
                            resources={"warehouse": warehouse}, run_config=config)
    assert result.success
    (path,) = out.glob("*.bdf.parquet")
    metadata = result.asset_materializations_for_node("bdf_exports")[0].metadata
    assert metadata["files"].value == [str(path)]
    assert metadata["dagster/row_count"].value == len(warehouse.read_partition("validated_samples", "cell_id", "prediag"))
    failed = dg.materialize([bdf_exports], partition_key="unvalidated", instance=instance,
                            resources={"warehouse": warehouse}, run_config=config, raise_on_error=False)
    assert not failed.success
