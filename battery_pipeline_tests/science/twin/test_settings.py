"""Twin settings: load-time validation with clear errors, local override, input mapping, runner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from battery_pipeline.science.twin.manifest import ParameterError
from battery_pipeline.science.twin.runner import run_models
from battery_pipeline.science.twin.settings import (
    DEFAULT_SETTINGS_FILE,
    LOCAL_SETTINGS_ENV,
    SETTINGS_ENV,
    TwinInputError,
    TwinSettingsError,
    deep_merge,
    enabled_models,
    load_settings,
    resolve_inputs,
)
from battery_pipeline_tests.science.twin.test_registry import (
    scaled_current_manifest,
    write_model_package,
    _unique,
)

ENABLED = ["available_energy", "eq_cycles", "imbalance_analysis", "pack_fault_diagnosis", "soc_ocv_estimation",
           "voltage_monitor"]


def default_raw() -> dict:
    return json.loads(DEFAULT_SETTINGS_FILE.read_text())


def write(path: Path, raw: dict) -> Path:
    path.write_text(json.dumps(raw))
    return path


def pack_frame(n: int = 5, cells: int = 3) -> pd.DataFrame:
    frame = pd.DataFrame({
        "timestamp": pd.date_range("2024-01-01", periods=n, freq="10s", tz="UTC"),
        "time_s": np.arange(n) * 10.0,
        "pack_current_a": np.zeros(n),
        "temperature_01_c": 25.0,
        "temperature_02_c": 26.0,
    })
    for i in range(cells):
        frame[f"cell_{i + 1:02d}_voltage_v"] = 3.7
    return frame


def test_committed_default_loads_and_enables_every_model_in_dependency_order():
    settings = load_settings(DEFAULT_SETTINGS_FILE, with_local=False)
    order = enabled_models(settings)
    assert sorted(order) == ENABLED
    assert order.index("available_energy") > order.index("soc_ocv_estimation")
    assert set(settings.source_kinds) == {"pack_telemetry", "single_cell"}
    # shared_parameters reach every model that declares them
    assert settings.models["eq_cycles"].parameters["nominal_capacity_ah"] == 3.0
    assert settings.models["voltage_monitor"].parameters["chemistry"] == "NMC"
    assert "nominal_capacity_ah" not in settings.models["voltage_monitor"].parameters


@pytest.mark.parametrize(
    ("edit", "key_path", "message"),
    [
        (lambda r: r["models"].update(eq_cycle={"enabled": True}), "models.eq_cycle",
         "unknown model (known: available_energy, eq_cycles, imbalance_analysis"),
        (lambda r: r["sources"]["pack_telemetry"].pop("current"), "models.eq_cycles.inputs.pack_telemetry.current",
         "required input 'current' of model 'eq_cycles'"),
        (lambda r: r["models"]["eq_cycles"]["parameters"].update(coulombic_efficiency="0.99"),
         "models.eq_cycles.parameters.coulombic_efficiency", "must be of type number, got str '0.99'"),
        (lambda r: r["models"]["eq_cycles"]["parameters"].update(coulombic_efficiency=1.2),
         "models.eq_cycles.parameters.coulombic_efficiency", "is out of range (must be <= 1)"),
        (lambda r: r["models"]["eq_cycles"]["parameters"].update(efficiency=0.99),
         "models.eq_cycles.parameters.efficiency", "unknown parameter of model 'eq_cycles'"),
        (lambda r: r["shared_parameters"].update(chemistry="NiMH"), "shared_parameters.chemistry",
         "'NiMH' is not one of"),
        (lambda r: r["shared_parameters"].update(colour="red"), "shared_parameters.colour",
         "unknown parameter: no model declares it"),
        (lambda r: r["shared_parameters"].pop("nominal_capacity_ah"), "models.eq_cycles.parameters.nominal_capacity_ah",
         "needs parameter 'nominal_capacity_ah'"),
        (lambda r: r["models"]["soc_ocv_estimation"].update(enabled=False), "models.soc_ocv_estimation.enabled",
         "'available_energy' is enabled and depends on 'soc_ocv_estimation', which is disabled"),
        (lambda r: r["sources"]["pack_telemetry"].update(cell_voltages="cell_01_voltage_v"),
         "sources.pack_telemetry.cell_voltages", "is several columns"),
        (lambda r: r["sources"]["pack_telemetry"].update(cell_voltages={"pattern": "(unclosed"}),
         "sources.pack_telemetry.cell_voltages.pattern", "not a valid regular expression"),
        (lambda r: r["sources"]["pack_telemetry"].update(pack_voltage="pack_v"), "sources.pack_telemetry.pack_voltage",
         "unknown input"),
        (lambda r: r["models"]["eq_cycles"].update(inputs={"cycler": {"current": "i"}}),
         "models.eq_cycles.inputs.cycler", "unknown source kind"),
        (lambda r: r["models"]["eq_cycles"].update(enabled="yes"), "models.eq_cycles.enabled", "expected true or false"),
    ],
)
def test_settings_errors_name_file_key_and_problem(tmp_path, edit, key_path, message):
    raw = default_raw()
    edit(raw)
    path = write(tmp_path / "twin_settings.json", raw)
    with pytest.raises(TwinSettingsError) as err:
        load_settings(path, with_local=False)
    text = str(err.value)
    assert text.startswith(f"{path}: {key_path}: "), text
    assert message in text, text


def test_local_override_deep_merges_and_errors_name_the_override_file(tmp_path):
    default = write(tmp_path / "twin_settings.json", default_raw())
    local = write(tmp_path / "twin_settings.local.json", {
        "shared_parameters": {"chemistry": "LFP"},
        "models": {"voltage_monitor": {"enabled": False}, "eq_cycles": {"parameters": {"coulombic_efficiency": 0.99}}},
        "sources": {"pack_telemetry": {"temperatures": None}},
    })
    settings = load_settings(default, local_path=local)
    assert settings.files == (default, local)
    assert "voltage_monitor" not in enabled_models(settings)
    eq = settings.models["eq_cycles"]
    # The override changed one parameter; the others come from the default file.
    assert eq.parameters["coulombic_efficiency"] == 0.99
    assert eq.parameters["nominal_capacity_ah"] == 3.0
    assert settings.models["imbalance_analysis"].parameters["chemistry"] == "LFP"
    assert settings.models["imbalance_analysis"].inputs["pack_telemetry"]["temperatures"] is None
    assert settings.models["imbalance_analysis"].inputs["single_cell"]["temperatures"] == {"columns": ["temperature_c"]}

    write(local, {"models": {"eq_cycles": {"parameters": {"coulombic_efficiency": 0}}}})
    with pytest.raises(TwinSettingsError, match=rf"^{local}: models\.eq_cycles\.parameters\.coulombic_efficiency: "):
        load_settings(default, local_path=local)


def test_settings_paths_from_the_environment(tmp_path, monkeypatch):
    default = write(tmp_path / "site.json", default_raw())
    local = tmp_path / "site.local.json"
    monkeypatch.setenv(SETTINGS_ENV, str(default))
    monkeypatch.setenv(LOCAL_SETTINGS_ENV, str(local))
    with pytest.raises(TwinSettingsError, match="local settings file not found"):
        load_settings()  # a local file named explicitly must exist
    write(local, {"models": {"imbalance_analysis": {"enabled": False}}})
    settings = load_settings()
    assert settings.files == (default, local)
    assert "imbalance_analysis" not in enabled_models(settings)


def test_deep_merge_replaces_lists_and_scalars_and_merges_objects():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    assert deep_merge(base, {"a": {"c": [3]}, "e": None}) == {"a": {"b": 1, "c": [3]}, "d": 1, "e": None}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 1}  # inputs untouched


def test_resolve_inputs_relabels_pack_and_single_cell_sources():
    settings = load_settings(DEFAULT_SETTINGS_FILE, with_local=False)
    pack = resolve_inputs("imbalance_analysis", pack_frame(), settings, "pack_telemetry")
    assert list(pack.columns) == ["time", "current", "cell_voltages:cell_01", "cell_voltages:cell_02",
                                  "cell_voltages:cell_03", "temperatures:temperature_01", "temperatures:temperature_02"]
    cell = pd.DataFrame({"time_s": [0.0, 1.0], "current_a": [1.0, 1.0], "voltage_v": [3.6, 3.61],
                         "temperature_c": [25.0, 25.1]})
    single = resolve_inputs("voltage_monitor", cell, settings, "single_cell")
    assert list(single.columns) == ["time", "cell_voltages:cell", "temperatures:temperature_c"]
    assert single["cell_voltages:cell"].tolist() == [3.6, 3.61]


def test_missing_column_error_names_column_input_and_settings_key():
    settings = load_settings(DEFAULT_SETTINGS_FILE, with_local=False)
    frame = pack_frame().drop(columns="pack_current_a")
    with pytest.raises(TwinInputError) as err:
        resolve_inputs("eq_cycles", frame, settings, "pack_telemetry")
    text = str(err.value)
    assert "input 'current' is mapped to column 'pack_current_a'" in text
    assert "sources.pack_telemetry.current" in text
    frame = pack_frame().rename(columns=lambda c: c.replace("cell_", "c"))
    with pytest.raises(TwinInputError, match="input 'cell_voltages' .* needs no column matching"):
        resolve_inputs("voltage_monitor", frame, settings, "pack_telemetry")


def test_runner_runs_enabled_models_and_checks_run_parameters():
    settings = load_settings(DEFAULT_SETTINGS_FILE, with_local=False)
    out = run_models(pack_frame(), settings, "pack_telemetry", parameters={"nominal_capacity_ah": 2.0})
    assert sorted(out) == ENABLED
    assert set(out["soc_ocv_estimation"]) == {"soc_cells", "soc_pack", "ocv_v", "rest_anchor", "soc_sigma", "anchors"}
    assert list(out["available_energy"]["energy_cells_wh"].columns) == ["cell_01", "cell_02", "cell_03"]
    assert set(out.state) == {"eq_cycles"}
    with pytest.raises(ParameterError, match="colour: no enabled twin model declares it"):
        run_models(pack_frame(), settings, "pack_telemetry", parameters={"colour": "red"})
    with pytest.raises(ParameterError, match="'nominal_capacity_ah' = -1.0 is out of range"):
        run_models(pack_frame(), settings, "pack_telemetry", parameters={"nominal_capacity_ah": -1.0})


def test_a_new_model_runs_from_settings_without_other_edits(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    name = f"scaled_current_{next(_unique)}"
    package = write_model_package(tmp_path, {name: scaled_current_manifest(name)})
    path = write(tmp_path / "settings.json", {
        "sources": {"pack_telemetry": {"time": "time_s", "current": "pack_current_a"}},
        "models": {name: {"enabled": True, "parameters": {"gain": 0.5}}},
    })
    settings = load_settings(path, with_local=False, models_package=package)
    frame = pack_frame()
    frame["pack_current_a"] = [1.0, 2.0, 3.0, 4.0, 5.0]
    out = run_models(frame, settings, "pack_telemetry")
    assert out[name]["scaled_current"].tolist() == [0.5, 1.0, 1.5, 2.0, 2.5]


def test_runner_on_single_cell_canonical_samples():
    # Canonical cycler columns (schema.py): a 1 h rest, then 30 min at -1 A, at 60 s sampling.
    n_rest, n_dis = 61, 30
    frame = pd.DataFrame({
        "time_s": np.arange(n_rest + n_dis) * 60.0,
        "current_a": np.r_[np.zeros(n_rest), np.full(n_dis, -1.0)],
        "voltage_v": np.r_[np.full(n_rest, 3.70), np.linspace(3.65, 3.55, n_dis)],
        "temperature_c": 25.0,
    })
    settings = load_settings(DEFAULT_SETTINGS_FILE, with_local=False)
    out = run_models(frame, settings, "single_cell", parameters={"nominal_capacity_ah": 2.0})
    soc = out["soc_ocv_estimation"]["soc_cells"]
    assert list(soc.columns) == ["cell"]
    assert out["soc_ocv_estimation"]["rest_anchor"].sum() == 1
    # 30 min at 1 A from a 2 Ah cell: a quarter of the SOC and of an equivalent cycle.
    assert soc["cell"].iloc[n_rest - 1] - soc["cell"].iloc[-1] == pytest.approx(0.25, abs=1e-12)
    assert out["eq_cycles"]["eq_cycles"].iloc[-1] == pytest.approx(0.25, abs=1e-12)
    assert out["voltage_monitor"]["alerts"].empty
