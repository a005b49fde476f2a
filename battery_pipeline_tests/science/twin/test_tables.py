"""Outputs <-> warehouse tables: names from the manifests, long layouts, exact round trip."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from battery_pipeline.science.twin.manifest import ManifestError, parse_manifest
from battery_pipeline.science.twin.pack_sim import simulate_pack
from battery_pipeline.science.twin.registry import ModelDiscoveryError, discover_models
from battery_pipeline.science.twin.runner import run_model, run_models
from battery_pipeline.science.twin.settings import DEFAULT_SETTINGS_FILE, load_settings
from battery_pipeline.science.twin.tables import (
    append_tables,
    inputs_fingerprint,
    output_tables,
    outputs_to_tables,
    tables_to_outputs,
)
from battery_pipeline_tests.science.twin.test_registry import (
    MINIMAL_MANIFEST,
    scaled_current_manifest,
    write_model_package,
)


def test_tables_are_named_in_the_manifests_and_default_by_kind():
    tables = {name: set(output_tables(cls.manifest)) for name, cls in discover_models().items()}
    assert tables["eq_cycles"] == {"equivalent_cycles"}
    assert tables["soc_ocv_estimation"] == {"soc_estimates", "cell_soc_estimates", "cell_soc_uncertainty", "soc_anchors"}
    assert "voltage_alerts" in tables["voltage_monitor"] and "cell_imbalance" in tables["imbalance_analysis"]
    manifest = parse_manifest({**MINIMAL_MANIFEST, "outputs": {
        "y": {"unit": "A", "description": "y"},
        "per_cell": {"unit": "V", "description": "v", "kind": "columns"},
        "events": {"unit": "", "description": "e", "kind": "records"}}})
    assert {s.name: s.table for s in manifest.outputs.values()} == {"y": "x", "per_cell": "x_cells", "events": "x_events"}


@pytest.mark.parametrize("outputs, message", [
    ({"y": {"unit": "A", "description": "y", "table": "Bad-Name"}}, "outputs.y.table: 'Bad-Name' is not a table name"),
    ({"y": {"unit": "A", "description": "y", "table": "t"},
      "z": {"unit": "A", "description": "z", "kind": "columns", "table": "t"}}, "outputs.z.table: table 't'"),
    ({"a": {"unit": "", "description": "a", "kind": "records", "table": "t"},
      "b": {"unit": "", "description": "b", "kind": "records", "table": "t"}}, "only series outputs, or columns outputs"),
])
def test_bad_output_tables_are_manifest_errors(outputs, message):
    with pytest.raises(ManifestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_manifest({**MINIMAL_MANIFEST, "outputs": outputs}, where="m.json")


def test_two_models_writing_one_table_are_refused(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    shared = {"scaled_current": {"unit": "A", "description": "x", "table": "same_table"}}
    package = write_model_package(tmp_path, {"one": scaled_current_manifest("one", outputs=shared),
                                             "two": scaled_current_manifest("two", outputs=shared)})
    with pytest.raises(ModelDiscoveryError, match="table 'same_table' already stores outputs of model 'one'"):
        discover_models(package)


@pytest.fixture(scope="module")
def pack_run():
    sim = simulate_pack(n_cells=5, duration_h=8.0, seed=21)
    settings = load_settings(DEFAULT_SETTINGS_FILE, with_local=False)
    outputs = run_models(sim.telemetry, settings, "pack_telemetry",
                         parameters={"chemistry": "NMC", "nominal_capacity_ah": 3.0})
    return sim, settings, outputs


def test_every_output_survives_the_round_trip_through_its_tables(pack_run):
    sim, settings, outputs = pack_run
    for name, cls in settings.model_classes().items():
        frames = outputs_to_tables(cls.manifest, outputs[name], "p", sim.telemetry["time_s"])
        assert all((f["pack_id"] == "p").all() for f in frames.values())
        back = tables_to_outputs(cls.manifest, frames, sim.telemetry.index)
        for out, value in outputs[name].items():
            if isinstance(value, pd.Series):
                pd.testing.assert_series_equal(back[out], value, check_names=False)
            else:
                pd.testing.assert_frame_equal(back[out], value, check_column_type=False)
    cells = outputs_to_tables(settings.model_classes()["soc_ocv_estimation"].manifest, outputs["soc_ocv_estimation"],
                              "p", sim.telemetry["time_s"])["cell_soc_estimates"]
    assert len(cells) == 5 * len(sim.telemetry) and list(cells.columns[:4]) == ["pack_id", "sample", "time_s", "cell_id"]


def test_a_continued_batch_appended_to_the_stored_rows_equals_one_run(pack_run):
    sim, settings, outputs = pack_run
    manifest = settings.model_classes()["eq_cycles"].manifest
    params = {"nominal_capacity_ah": 3.0}
    split = 1234
    first, state = run_model("eq_cycles", sim.telemetry.iloc[:split], settings, "pack_telemetry", parameters=params)
    rest, _ = run_model("eq_cycles", sim.telemetry.iloc[split:], settings, "pack_telemetry", state=state,
                        parameters=params)
    stored = outputs_to_tables(manifest, first, "p", sim.telemetry["time_s"].iloc[:split])
    new = outputs_to_tables(manifest, rest, "p", sim.telemetry["time_s"].iloc[split:])
    combined = append_tables(manifest, stored, new, split)["equivalent_cycles"]
    np.testing.assert_array_equal(combined["eq_cycles"].to_numpy(), outputs["eq_cycles"]["eq_cycles"].to_numpy())
    assert combined["sample"].tolist() == list(range(len(sim.telemetry)))


def test_inputs_fingerprint_sees_any_change_in_the_prefix_only():
    frame = pd.DataFrame({"time": np.arange(10.0), "current": np.linspace(-1, 1, 10)})
    changed_late = frame.copy()
    changed_late.loc[8, "current"] = 5.0
    assert inputs_fingerprint(frame, 5) == inputs_fingerprint(changed_late, 5)
    changed_early = frame.copy()
    changed_early.loc[2, "current"] += 1e-12
    assert inputs_fingerprint(frame, 5) != inputs_fingerprint(changed_early, 5)
