"""Twin settings: which models run, with which parameters, reading which columns of a source.

Files (JSON), the second deep-merged over the first (objects merge key by key; any other value,
lists included, replaces; `null` for an input mapping means "not mapped"):

  data/twin_settings.json        the committed default; path from $BATTERY_PIPELINE_TWIN_SETTINGS
  data/twin_settings.local.json  optional, git-ignored, for one machine or site; path from
                                 $BATTERY_PIPELINE_TWIN_SETTINGS_LOCAL (must then exist)

Layout:

```json
{
  "shared_parameters": {"chemistry": "NMC", "nominal_capacity_ah": 3.0},
  "sources": {
    "pack_telemetry": {"time": "time_s", "current": "pack_current_a",
                       "cell_voltages": {"pattern": "^(cell_\\\\d+)_voltage_v$"}},
    "single_cell":    {"time": "time_s", "current": "current_a",
                       "cell_voltages": {"columns": {"cell": "voltage_v"}}}
  },
  "models": {
    "eq_cycles": {"enabled": true, "parameters": {"coulombic_efficiency": 0.999},
                  "inputs": {"single_cell": {"soh": "soh"}}}
  }
}
```

`shared_parameters` go to every model whose manifest declares them; a model's own `parameters`
win over them. `sources` maps each logical input to source columns per source kind; a model's
`inputs.<kind>` overrides that for the model alone. A one-column input maps to a column name; a
multi-column input (cell voltages, temperature sensors) to `{"pattern": regex}` (id = the first
capture group, else the column name), `{"columns": [names]}` (id = name) or
`{"columns": {id: name}}`. A single cell is a one-cell pack: `{"columns": {"cell": "voltage_v"}}`.
A model missing from `models` is disabled.

Everything is checked at load time; `TwinSettingsError` names the file and the key path.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from battery_pipeline.science.twin.base import TwinModel, column_name
from battery_pipeline.science.twin.manifest import InputSpec, ParameterError, check_parameter, read_json_object
from battery_pipeline.science.twin.registry import MODELS_PACKAGE, dependency_order, discover_models

PROJECT_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_SETTINGS_FILE = PROJECT_ROOT / "data" / "twin_settings.json"
DEFAULT_LOCAL_SETTINGS_FILE = PROJECT_ROOT / "data" / "twin_settings.local.json"
SETTINGS_ENV = "BATTERY_PIPELINE_TWIN_SETTINGS"
LOCAL_SETTINGS_ENV = "BATTERY_PIPELINE_TWIN_SETTINGS_LOCAL"

_TOP_KEYS = {"description", "shared_parameters", "sources", "models"}
_MODEL_KEYS = {"enabled", "parameters", "inputs"}


class TwinSettingsError(ValueError):
    """Settings that cannot be used; the message names the file and the key path."""


class TwinInputError(KeyError):
    """The data lacks a column the settings map an input to."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


@dataclass(frozen=True)
class ModelSettings:
    enabled: bool
    parameters: dict[str, Any]  # manifest defaults < shared_parameters < the model's parameters
    inputs: dict[str, dict[str, Any]]  # source kind -> logical input -> mapping (None: not mapped)


@dataclass(frozen=True)
class TwinSettings:
    models: dict[str, ModelSettings]
    source_kinds: tuple[str, ...]
    files: tuple[Path, ...]
    models_package: str = MODELS_PACKAGE

    def model_classes(self) -> dict[str, type[TwinModel]]:
        return discover_models(self.models_package)


def deep_merge(base: Mapping, override: Mapping) -> dict:
    """`override` over `base`: objects merge recursively, anything else replaces."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def settings_paths() -> tuple[Path, Path, bool]:
    """(default file, local override file, whether the local file was named explicitly)."""
    default = Path(os.environ.get(SETTINGS_ENV) or DEFAULT_SETTINGS_FILE)
    local_env = os.environ.get(LOCAL_SETTINGS_ENV)
    return default, Path(local_env or DEFAULT_LOCAL_SETTINGS_FILE), bool(local_env)


def load_settings(path: Path | str | None = None, local_path: Path | str | None = None, *,
                  with_local: bool = True, models_package: str = MODELS_PACKAGE) -> TwinSettings:
    """Read, merge and validate the settings files (see the module docstring for the defaults).

    `with_local=False` reads the default file alone (tests, or to see what is committed).
    """
    default_path, env_local, local_named = settings_paths()
    default_path = Path(path) if path is not None else default_path
    if local_path is not None:
        local_path, local_named = Path(local_path), True
    else:
        local_path = env_local
    layers = [(default_path, read_json_object(default_path, TwinSettingsError, "settings file not found"))]
    if not with_local:
        pass
    elif local_path.exists():
        layers.append((local_path, read_json_object(local_path, TwinSettingsError, "settings file not found")))
    elif local_named:
        raise TwinSettingsError(f"{local_path}: local settings file not found (named explicitly)")
    return parse_settings(layers, models_package)


class _Origin:
    """Which file a key path comes from: the last layer that sets it, else the default file."""

    def __init__(self, layers: list[tuple[Path, Mapping]]):
        self.layers = layers

    def __call__(self, *path: str) -> Path:
        for file, raw in reversed(self.layers):
            node: Any = raw
            for key in path:
                if not isinstance(node, Mapping) or key not in node:
                    break
                node = node[key]
            else:
                return file
        return self.layers[0][0]

    def error(self, path: tuple[str, ...], message: str) -> TwinSettingsError:
        return TwinSettingsError(f"{self(*path)}: {'.'.join(path)}: {message}")


def _check_object(value: Any, origin: _Origin, path: tuple[str, ...]) -> Mapping:
    if not isinstance(value, Mapping):
        raise origin.error(path, f"expected an object, got {type(value).__name__} {value!r}")
    return value


def _check_mapping(spec: InputSpec, mapping: Any, origin: _Origin, path: tuple[str, ...]) -> None:
    """The form of one input mapping (columns are checked against data in resolve_inputs)."""
    if mapping is None:
        return
    if spec.kind == "column":
        if not isinstance(mapping, str) or not mapping:
            raise origin.error(path, f"input {spec.name!r} is one column: map it to a column name, got {mapping!r}")
        return
    if not isinstance(mapping, Mapping) or len(mapping) != 1 or not set(mapping) <= {"pattern", "columns"}:
        raise origin.error(
            path,
            f"input {spec.name!r} is several columns: map it to {{\"pattern\": regex}}, "
            f"{{\"columns\": [names]}} or {{\"columns\": {{id: name}}}}, got {mapping!r}",
        )
    if "pattern" in mapping:
        try:
            re.compile(mapping["pattern"])
        except (re.error, TypeError) as exc:
            raise origin.error(path + ("pattern",), f"not a valid regular expression ({exc})") from None
        return
    columns = mapping["columns"]
    names = list(columns.values()) if isinstance(columns, Mapping) else columns
    if not isinstance(names, list) or not names or not all(isinstance(c, str) and c for c in names):
        raise origin.error(path + ("columns",), f"expected a non-empty list or object of column names, got {columns!r}")


def parse_settings(layers: list[tuple[Path, Mapping]], models_package: str = MODELS_PACKAGE) -> TwinSettings:
    """Merge the layers (default first) and validate against the discovered models' manifests."""
    origin = _Origin(layers)
    raw: dict = {}
    for _, layer in layers:
        raw = deep_merge(raw, layer)
    models = discover_models(models_package)

    for key in raw:
        if key not in _TOP_KEYS:
            raise origin.error((key,), f"unknown key (allowed: {', '.join(sorted(_TOP_KEYS))})")

    # Inputs any model declares from the data (inputs from other models are never mapped).
    data_inputs: dict[str, InputSpec] = {}
    for cls in models.values():
        for spec in cls.manifest.inputs.values():
            if spec.source is None:
                data_inputs.setdefault(spec.name, spec)

    sources = _check_object(raw.get("sources", {}), origin, ("sources",))
    for kind, mappings in sources.items():
        for logical, mapping in _check_object(mappings, origin, ("sources", kind)).items():
            if logical not in data_inputs:
                raise origin.error(("sources", kind, logical),
                                   f"unknown input (inputs of the models: {', '.join(sorted(data_inputs))})")
            _check_mapping(data_inputs[logical], mapping, origin, ("sources", kind, logical))

    shared = _check_object(raw.get("shared_parameters", {}), origin, ("shared_parameters",))
    for param, value in shared.items():
        owners = [cls for cls in models.values() if param in cls.manifest.config]
        if not owners:
            known = sorted({p for cls in models.values() for p in cls.manifest.config})
            raise origin.error(("shared_parameters", param),
                               f"unknown parameter: no model declares it (known: {', '.join(known)})")
        for cls in owners:
            try:
                check_parameter(cls.manifest.config[param], value,
                                f"{origin('shared_parameters', param)}: shared_parameters.{param}")
            except ParameterError as exc:
                if value is None:  # null shared value: the required check below names the model
                    continue
                raise TwinSettingsError(f"{exc} (as a parameter of model {cls.name!r})") from None

    model_entries = _check_object(raw.get("models", {}), origin, ("models",))
    settings: dict[str, ModelSettings] = {}
    for name, entry in model_entries.items():
        if name not in models:
            raise origin.error(("models", name), f"unknown model (known: {', '.join(models)})")
        entry = _check_object(entry, origin, ("models", name))
        for key in entry:
            if key not in _MODEL_KEYS:
                raise origin.error(("models", name, key), f"unknown key (allowed: {', '.join(sorted(_MODEL_KEYS))})")
        settings[name] = _model_settings(models[name], entry, shared, sources, origin)
    for name in models:
        settings.setdefault(name, ModelSettings(enabled=False, parameters={}, inputs={}))

    for name, ms in settings.items():
        if not ms.enabled:
            continue
        for dep in models[name].manifest.depends_on:
            if not settings[dep].enabled:
                raise origin.error(("models", dep, "enabled"),
                                   f"model {name!r} is enabled and depends on {dep!r}, which is disabled")

    return TwinSettings(models=settings, source_kinds=tuple(sources), files=tuple(f for f, _ in layers),
                        models_package=models_package)


def _model_settings(cls: type[TwinModel], entry: Mapping, shared: Mapping, sources: Mapping,
                    origin: _Origin) -> ModelSettings:
    name, manifest = cls.name, cls.manifest
    enabled = entry.get("enabled", False)
    if not isinstance(enabled, bool):
        raise origin.error(("models", name, "enabled"), f"expected true or false, got {enabled!r}")

    own = _check_object(entry.get("parameters", {}), origin, ("models", name, "parameters"))
    for param in own:
        if param not in manifest.config:
            raise origin.error(("models", name, "parameters", param),
                               f"unknown parameter of model {name!r} (known: {', '.join(manifest.config) or 'none'})")
    values = {p: v for p, v in shared.items() if p in manifest.config}
    values.update(own)
    parameters = {}
    for param, spec in manifest.config.items():
        value = values.get(param, spec.default)
        path = ("models", name, "parameters", param) if param in own else ("shared_parameters", param)
        if value is None and spec.required and not enabled:
            parameters[param] = None  # a disabled model need not be complete
            continue
        try:
            parameters[param] = check_parameter(spec, value, f"{origin(*path)}: {'.'.join(path)}")
        except ParameterError as exc:
            if value is None and spec.required:
                raise origin.error(("models", name, "parameters", param),
                                   f"model {name!r} needs parameter {param!r} ({spec.description}); set it "
                                   "here or in shared_parameters") from None
            raise TwinSettingsError(str(exc)) from None

    own_inputs = _check_object(entry.get("inputs", {}), origin, ("models", name, "inputs"))
    inputs: dict[str, dict[str, Any]] = {}
    for kind in own_inputs:
        if kind not in sources:
            raise origin.error(("models", name, "inputs", kind),
                               f"unknown source kind (known, from sources: {', '.join(sources) or 'none'})")
    for kind in sources:
        overrides = _check_object(own_inputs.get(kind, {}), origin, ("models", name, "inputs", kind))
        mapping: dict[str, Any] = {}
        for logical, value in overrides.items():
            spec = manifest.inputs.get(logical)
            if spec is None or spec.source is not None:
                data_names = [n for n, s in manifest.inputs.items() if s.source is None]
                raise origin.error(("models", name, "inputs", kind, logical),
                                   f"model {name!r} has no input {logical!r} read from the data "
                                   f"(its inputs: {', '.join(data_names)})")
            _check_mapping(spec, value, origin, ("models", name, "inputs", kind, logical))
        for logical, spec in manifest.inputs.items():
            if spec.source is not None:
                continue
            value = overrides.get(logical, sources[kind].get(logical))
            mapping[logical] = value
            if value is None and spec.required and enabled:
                raise origin.error(
                    ("models", name, "inputs", kind, logical),
                    f"required input {logical!r} of model {name!r} ({spec.description}) has no column mapping "
                    f"for source kind {kind!r}: set sources.{kind}.{logical} or models.{name}.inputs.{kind}.{logical}",
                )
        inputs[kind] = mapping
    return ModelSettings(enabled=enabled, parameters=parameters, inputs=inputs)


def enabled_models(settings: TwinSettings) -> list[str]:
    """Names of the enabled models, each after the models it depends on."""
    names = [n for n, ms in settings.models.items() if ms.enabled]
    return dependency_order(names, settings.model_classes())


def _select_columns(data: pd.DataFrame, mapping: Mapping) -> dict[str, str]:
    """id -> source column for a multi-column mapping; empty if nothing matches."""
    if "pattern" in mapping:
        regex = re.compile(mapping["pattern"])
        selected = {}
        for column in data.columns:
            match = regex.search(str(column)) if isinstance(column, str) else None
            if match:
                selected[match.group(1) if regex.groups else column] = column
        return selected
    columns = mapping["columns"]
    return dict(columns) if isinstance(columns, Mapping) else {c: c for c in columns}


def resolve_inputs(model: str | type[TwinModel] | TwinModel, data: pd.DataFrame, settings: TwinSettings,
                   source_kind: str, upstream: Mapping[str, Mapping[str, Any]] | None = None) -> pd.DataFrame:
    """`data` re-labelled with the model's logical input names (see base.py for the layout).

    Inputs that come from other models are taken from `upstream` (model -> outputs).
    TwinInputError names the missing column and the settings key that maps it.
    """
    name = model if isinstance(model, str) else model.name
    cls = settings.model_classes()[name]
    if source_kind not in settings.source_kinds:
        raise TwinSettingsError(
            f"{settings.files[0]}: sources.{source_kind}: unknown source kind "
            f"(known: {', '.join(settings.source_kinds) or 'none'})"
        )
    mappings = settings.models[name].inputs.get(source_kind, {})
    columns: dict[str, pd.Series] = {}
    for logical, spec in cls.manifest.inputs.items():
        if spec.source is not None:
            output = (upstream or {}).get(spec.from_model, {}).get(spec.from_output)
            if output is None:
                if spec.required:
                    raise TwinInputError(f"model {name!r}: input {logical!r} needs output {spec.source!r}, "
                                         f"which has not been computed (run {spec.from_model!r} first)")
                continue
            if isinstance(output, pd.Series):
                columns[logical] = output
            else:
                for cid in output.columns:
                    columns[column_name(logical, str(cid))] = output[cid]
            continue
        mapping = mappings.get(logical)
        if mapping is None:
            continue  # optional and not mapped (required ones were checked at load time)
        key = f"sources.{source_kind}.{logical} / models.{name}.inputs.{source_kind}.{logical}"
        if spec.kind == "column":
            if mapping not in data.columns:
                raise TwinInputError(
                    f"model {name!r}: input {logical!r} is mapped to column {mapping!r} ({key}), which the "
                    f"{source_kind} data does not have (its columns: {', '.join(map(str, data.columns))})"
                )
            columns[logical] = data[mapping]
            continue
        selected = _select_columns(data, mapping)
        absent = [c for c in selected.values() if c not in data.columns]
        if absent or not selected:
            what = f"column {absent[0]!r}" if absent else f"no column matching {mapping!r}"
            raise TwinInputError(
                f"model {name!r}: input {logical!r} ({key}) needs {what}, which the {source_kind} data does not "
                f"have (its columns: {', '.join(map(str, data.columns))})"
            )
        for cid, column in selected.items():
            columns[column_name(logical, str(cid))] = data[column]
    return pd.DataFrame(columns, index=data.index)
