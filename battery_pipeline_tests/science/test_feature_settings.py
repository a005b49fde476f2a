"""Feature definitions per dataset or cell from data/feature_settings.json: the paper's fixed
delta-Q grid and reference cycle for the cells they name, the code's defaults elsewhere; a bad
entry is refused with the file, the layer and the key named."""

import json

import numpy as np
import pytest

from battery_pipeline.science import synth
from battery_pipeline.science.cell_chain import STAGES, CellTask, compute_cell, feature_config_for
from battery_pipeline.science.sources import discover
from battery_pipeline_tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def lfp_cell(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cells")
    fleet = synth.generate_fleet(n_cells=2, seed=5, cycles=30)
    synth.write_fleet(fleet, folder)
    for truth in folder.glob("ground_truth_*.csv"):
        truth.unlink()  # the simulator's answers, not cells
    (folder / "injected_faults.csv").unlink()
    lfp = fleet.cells.loc[fleet.cells["chemistry"] == "LFP", "cell_id"].tolist()
    catalog = discover([folder])
    (source,) = [catalog[k] for k in catalog.keys() if k in lfp]
    return source


def _features(source, settings):
    outcome = compute_cell(CellTask(source, STAGES[:4], feature_settings=settings))
    assert outcome.ok, outcome.error
    return outcome


def test_the_paper_grid_applies_to_the_cells_a_pattern_names(lfp_cell, tmp_path):
    settings = tmp_path / "feature_settings.json"
    settings.write_text(json.dumps({"cell_patterns": {f"^{lfp_cell.partition_key}$": {
        "voltage_window_v": [2.0, 3.6], "reference_cycle": 10}}}))
    paper = _features(lfp_cell, settings)
    default = _features(lfp_cell, None)
    assert paper.feature_settings == [f"feature_settings.json cell_patterns['^{lfp_cell.partition_key}$']: reference_cycle, voltage_window_v"]
    assert default.feature_settings == []
    curves = paper.tables["cycle_curves"]
    grid = curves.loc[curves["curve"] == "delta_q", "voltage_v"]
    assert grid.min() == pytest.approx(2.0) and grid.max() == pytest.approx(3.6)
    own = default.tables["cycle_curves"].loc[lambda c: c["curve"] == "delta_q", "voltage_v"]
    assert own.min() > 2.0 + 0.05 or own.max() < 3.6 - 0.05  # the default window is the reference discharge's own
    # a different grid gives different delta-Q statistics on the same samples
    a = paper.tables["cycle_features"]["delta_q_variance_ah2"].to_numpy()
    b = default.tables["cycle_features"]["delta_q_variance_ah2"].to_numpy()
    assert np.isfinite(a).sum() > 10 and not np.allclose(a, b, equal_nan=True)


def test_the_committed_file_names_only_settable_fields_and_leaves_other_cells_alone():
    path = REPO_ROOT / "data" / "feature_settings.json"
    config, origin = feature_config_for({"cell_id": "severson_raw_b1c0", "source_format": "arbin_csv"}, path)
    assert config.voltage_window_v == (2.0, 3.6) and config.reference_cycle == 10 and origin
    config, origin = feature_config_for({"cell_id": "B0005", "source_format": "nasa_pcoe_mat", "dataset": "NASA PCoE Battery Data Set"}, path)
    assert config.voltage_window_v is None and origin == []


@pytest.mark.parametrize("entry, message", [
    ({"voltage_window_v": [3.6, 2.0]}, "low < high"),
    ({"reference_cycle": 0}, "whole number >= 1"),
    ({"rest_current_threshold_a": 0.1}, "not a settable feature setting"),
])
def test_a_bad_entry_is_refused_naming_the_file_and_key(tmp_path, entry, message):
    settings = tmp_path / "feature_settings.json"
    settings.write_text(json.dumps({"datasets": {"my lab": entry}}))
    with pytest.raises(ValueError, match=message) as error:
        feature_config_for({"cell_id": "c1", "dataset": "my lab", "source_format": "arbin_csv"}, settings)
    assert "feature_settings.json datasets['my lab']" in str(error.value)
