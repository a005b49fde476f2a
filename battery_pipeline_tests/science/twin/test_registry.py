"""Twin-model discovery and manifest validation: models are found by folder, never by a list."""

from __future__ import annotations

import itertools
import json
import textwrap
from pathlib import Path

import pytest

from battery_pipeline.science.chemistry import VOLTAGE_WINDOWS_V
from battery_pipeline.science.twin.manifest import ManifestError, parse_manifest
from battery_pipeline.science.twin.ocv import CHEMISTRIES
from battery_pipeline.science.twin.registry import (
    MODELS_PACKAGE,
    ModelDiscoveryError,
    dependency_order,
    discover_models,
)

MODELS_DIR = Path(__file__).resolve().parents[3] / "battery_pipeline" / "science" / "twin" / "models"
_unique = itertools.count()

MINIMAL_MANIFEST = {
    "name": "x",
    "version": "1.0.0",
    "description": "test model",
    "inputs": {"current": {"unit": "A", "required": True, "description": "current"}},
    "outputs": {"y": {"unit": "A", "description": "y"}},
    "config": {"gain": {"type": "number", "default": 2.0, "min": 0, "description": "gain"}},
}

MODEL_SOURCE = textwrap.dedent(
    '''
    from battery_pipeline.science.twin.base import TwinModel, register_model


    @register_model("{name}")
    class Model(TwinModel):
        def process(self, data, state=None):
            return {{"scaled_current": data["current"] * self.params["gain"]}}
    '''
)


def write_model_package(root: Path, models: dict[str, dict | None], source: str = MODEL_SOURCE) -> str:
    """A fresh importable package under `root` holding one folder per model (name -> manifest).

    Package and model names are unique per call: registrations are process-wide.
    """
    package = f"extra_twin_models_{next(_unique)}"
    pkg_dir = root / package
    pkg_dir.mkdir()
    (pkg_dir / "__init__.py").write_text("")
    for folder, manifest in models.items():
        model_dir = pkg_dir / folder
        model_dir.mkdir()
        (model_dir / "README.md").write_text(f"# {folder}\n")
        (model_dir / "model.py").write_text(source.format(name=folder))
        if manifest is not None:
            (model_dir / "model.json").write_text(json.dumps(manifest))
    return package


def scaled_current_manifest(name: str, **changes) -> dict:
    manifest = {
        "name": name,
        "version": "0.1.0",
        "description": "current times a gain (a throwaway model for the discovery tests)",
        "inputs": {
            "time": {"unit": "s", "required": True, "description": "time"},
            "current": {"unit": "A", "required": True, "description": "current"},
        },
        "outputs": {"scaled_current": {"unit": "A", "description": "current x gain"}},
        "config": {"gain": {"type": "number", "default": 2.0, "min": 0, "description": "gain"}},
    }
    manifest.update(changes)
    return manifest


def test_discovery_finds_the_five_models_from_their_folders():
    models = discover_models()
    folders = sorted(p.name for p in MODELS_DIR.iterdir() if (p / "model.json").is_file())
    assert sorted(models) == folders
    assert set(models) >= {"eq_cycles", "soc_ocv_estimation", "voltage_monitor", "imbalance_analysis",
                           "available_energy"}
    for name, cls in models.items():
        assert cls.name == cls.manifest.name == name
        assert cls.manifest.path == MODELS_DIR / name / "model.json"
        assert (MODELS_DIR / name / "README.md").read_text().startswith(f"# {name}")


def test_a_new_model_folder_is_discovered_without_any_other_edit(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    name = f"scaled_current_{next(_unique)}"
    package = write_model_package(tmp_path, {name: scaled_current_manifest(name)})
    models = discover_models(package)
    assert list(models) == [name]
    model = models[name]({"gain": 3.0})
    assert model.params == {"gain": 3.0}


def test_manifest_chemistry_choices_match_the_ocv_tables_and_voltage_windows():
    models = discover_models(MODELS_PACKAGE)
    for name, cls in models.items():
        spec = cls.manifest.config.get("chemistry")
        if spec is None:
            continue
        # Models reading OCV tables may offer exactly the tabulated chemistries; the voltage
        # monitor needs only a voltage window.
        expected = set(VOLTAGE_WINDOWS_V) if name == "voltage_monitor" else set(CHEMISTRIES)
        assert set(spec.choices) == expected, name


def test_dependency_order_puts_available_energy_after_soc():
    models = discover_models()
    order = dependency_order(models, models)
    assert order.index("available_energy") > order.index("soc_ocv_estimation")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 1}, "version: expected str"),
        ({"outputs": {}}, "outputs: a model must declare at least one output"),
        ({"inputs": {"current": {"unit": "A", "description": "c"}}}, "inputs.current.required: missing"),
        ({"inputs": {"current": {"unit": "A", "required": "yes", "description": "c"}}},
         "inputs.current.required: expected bool"),
        ({"inputs": {"v": {"unit": "V", "required": True, "description": "v", "kind": "matrix"}}},
         "inputs.v.kind: 'matrix' is not one of column, columns"),
        ({"inputs": {"soc": {"unit": "1", "required": True, "description": "s", "from": "other.soc"}}},
         "inputs.soc.from: model 'other' is not listed in depends_on"),
        ({"config": {"gain": {"type": "float", "default": 1.0, "description": "g"}}},
         "config.gain.type: 'float' is not one of"),
        ({"config": {"gain": {"type": "number", "default": -1.0, "min": 0, "description": "g"}}},
         "config.gain.default: parameter 'gain' = -1.0 is out of range (must be >= 0)"),
        ({"config": {"gain": {"type": "number", "description": "g"}}}, "config.gain.default: missing"),
        ({"colour": "red"}, "colour: unknown key"),
    ],
)
def test_manifest_errors_name_the_key(change, message):
    with pytest.raises(ManifestError) as err:
        parse_manifest({**MINIMAL_MANIFEST, **change}, where="models/x/model.json")
    assert str(err.value).startswith("models/x/model.json: ")
    assert message in str(err.value)


def test_folder_name_must_equal_the_registered_name(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    name = f"scaled_current_{next(_unique)}"
    # The folder is called differently from the name the class registers and the manifest says.
    source = MODEL_SOURCE.replace('register_model("{name}")', f'register_model("{name}")')
    package = write_model_package(tmp_path, {"other_folder": scaled_current_manifest(name)}, source=source)
    with pytest.raises(ModelDiscoveryError, match=f"registered as '{name}' lives in folder 'other_folder'"):
        discover_models(package)


def test_manifest_name_must_equal_the_registered_name(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    name = f"scaled_current_{next(_unique)}"
    package = write_model_package(tmp_path, {name: scaled_current_manifest("something_else")})
    with pytest.raises(ManifestError, match=f"manifest says 'something_else' but Model is registered as '{name}'"):
        discover_models(package)


def test_a_folder_without_a_manifest_is_an_error(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    name = f"scaled_current_{next(_unique)}"
    package = write_model_package(tmp_path, {name: None})
    with pytest.raises(ModelDiscoveryError, match=f"{name}: a model folder needs model.json"):
        discover_models(package)


def test_unknown_dependency_is_an_error(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    name = f"scaled_current_{next(_unique)}"
    package = write_model_package(tmp_path, {name: scaled_current_manifest(name, depends_on=["no_such_model"])})
    with pytest.raises(ModelDiscoveryError, match="depends_on: unknown model 'no_such_model'"):
        discover_models(package)
