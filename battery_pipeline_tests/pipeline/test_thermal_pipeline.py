"""`temperature_forecast_models` through Dagster on real drive cycles stored by the cell pipeline:
three Panasonic 18650PF drive cycles (one cell type, held out file by file) and an LG HG2 file
alone of its type (never held out, and said so), with the ambient's source per file."""

import json

import dagster as dg
import duckdb
import pytest

from battery_pipeline.assets import governance, thermal
from battery_pipeline_tests.conftest import dataset_file
from battery_pipeline_tests.fixtures import store_cells

PANASONIC = ("US06", "HWFTa", "LA92")


@pytest.fixture(scope="module")
def run(tmp_path_factory, datasets):
    tmp = tmp_path_factory.mktemp("thermal")
    data = tmp / "incoming"
    (data / "25degC").mkdir(parents=True)
    (data / "lg" / "n10degC").mkdir(parents=True)
    drive = dataset_file(datasets, "panasonic_18650pf/25degC/Drive cycles")
    for name in PANASONIC:
        (path,) = drive.glob(f"*_{name}_*.mat")
        (data / "25degC" / path.name).symlink_to(path)
    lg = dataset_file(datasets, "lg_hg2/n10degC/601_US06.csv")
    (data / "lg" / "n10degC" / lg.name).symlink_to(lg)
    database = tmp / "warehouse.duckdb"
    with dg.instance_for_test() as instance:
        resources = store_cells(instance, data, tmp)
        result = dg.materialize([thermal.temperature_forecast_models], instance=instance, raise_on_error=False,
                                resources={k: v for k, v in resources.items() if k != "catalog"})
        cards = dg.materialize([governance.data_cards], instance=instance, raise_on_error=False, resources=resources)
        assert cards.success
    with duckdb.connect(str(database), read_only=True) as conn:
        metrics = conn.execute(f"SELECT * FROM {thermal.METRICS_TABLE}").df()
    payload = json.loads((tmp / "results" / thermal.RESULTS_FILE).read_text())
    return result, metrics, payload, tmp


def test_each_panasonic_file_is_held_out_once_and_the_lone_lg_file_never(run):
    result, _, payload, _ = run
    assert result.success
    held = sorted(f["test_file"] for f in payload["folds"])
    assert len(held) == 3 and all("Pan18650PF" in f for f in held)
    for fold in payload["folds"]:
        assert fold["test_file"] not in fold["train_files"] and len(fold["train_files"]) == 2
    files = {f["file_id"]: f for f in payload["files"]}
    (lg,) = [f for f in files if "601_US06" in f]
    assert files[lg]["cell_id"] != files[held[0]]["cell_id"]  # another cell type: its own (absent) fit


def test_ambient_sources_are_stated_per_file(run):
    _, _, payload, _ = run
    sources = {f["file_id"]: f["ambient_source"] for f in payload["files"]}
    for file_id, source in sources.items():
        if "Pan18650PF" in file_id:
            assert source.startswith("dataset rule: Panasonic 18650PF set README") and "25 degC" in source
        else:  # the n10degC LG file: the folder's -10 degC, agreeing with the cell's first readings
            assert source.startswith("dataset rule: LG 18650HG2 set README") and "-10 degC" in source


def test_checks_hold_and_the_hybrid_beats_persistence_at_300_s(run):
    result, metrics, _, tmp = run
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    for name in thermal.CHECKS:
        assert checks[name].passed, (name, checks[name].description)
    at_300 = metrics[metrics["horizon_s"] == 300].set_index("model")["rmse_c"]
    assert at_300["hybrid"] < 0.9 * at_300["persistence"]
    assert at_300["physics_one_state"] < at_300["persistence"]
    card = (tmp / "reports" / thermal.CARD_FILE).read_text()
    assert "## Metrics (degC, held-out files)" in card and "| 300 s |" in card


def test_the_data_cards_say_how_the_forecaster_used_each_cell(run):
    _, _, _, tmp = run
    cards = {p.name: p.read_text() for p in (tmp / "reports" / "data_cards").glob("*.md")}
    panasonic = next(text for name, text in cards.items() if "Panasonic" in name)
    tasks = panasonic.split("## Tasks", 1)[1].split("\n## ", 1)[0]
    assert "temperature forecast" in tasks and "held out once; ambient dataset rule: 3" in tasks, tasks
    lg = next(text for name, text in cards.items() if "LG" in name)
    assert "not used: the only usable file of its cell type" in lg.split("## Tasks", 1)[1].split("\n## ", 1)[0]
