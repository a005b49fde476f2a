"""The `model.json` manifest of a twin model: its schema, parsing, and parameter validation.

A manifest says what a model needs and gives, so that settings can be checked before any data
is read and the runner can order and verify models without knowing them:

```json
{
  "name": "eq_cycles",                      folder name and registered name, all three equal
  "version": "1.0.0",
  "description": "...",
  "depends_on": [],                         models whose outputs this one reads (optional)
  "stateful": false,                        true: process() takes and leaves a state (optional)
  "inputs": {
    "current": {"unit": "A", "required": true, "description": "...",
                "kind": "column"},          "column" (default): one column;
                                            "columns": one or more columns, each with an id
                                            (cells, sensors), e.g. cell voltages
    "soc": {"unit": "1", "required": true, "description": "...", "kind": "columns",
            "from": "soc_ocv_estimation.soc_cells"}   taken from another model's output, not
                                                       from the data; needs depends_on
  },
  "outputs": {
    "eq_cycles": {"unit": "1", "description": "...", "kind": "series",
                  "table": "equivalent_cycles"}
                 kind "series": one value per input sample, same index as the data;
                 "columns": a DataFrame, same index as the data, one column per cell id;
                 "records": a DataFrame of events/rows with its own index (e.g. alerts)
                 table (optional): the warehouse table that stores the output, named for what
                 it holds. Outputs of one kind may share a table ("series": one row per
                 sample; "columns": one row per sample and cell); a "records" output has its
                 own. Default: <model> for series, <model>_cells for columns,
                 <model>_<output> for records.
  },
  "config": {
    "nominal_capacity_ah": {"type": "number", "default": null, "required": true,
                            "min": 0, "min_exclusive": true, "description": "..."},
    "chemistry": {"type": "string", "default": "NMC", "choices": ["LFP", "NMC"],
                  "description": "..."}
  }
}
```
Parameter types: number, integer, boolean, string. `nullable` admits null; `required` means the
default is null and settings (or the caller) must give a value.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

INPUT_KINDS = ("column", "columns")
TABLE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
OUTPUT_KINDS = ("series", "columns", "records")
PARAM_TYPES = ("number", "integer", "boolean", "string")


class ManifestError(ValueError):
    """A model.json that does not follow the manifest schema; the message names file and key."""


class ParameterError(ValueError):
    """A parameter value that its manifest does not admit; the message names where it came from."""


@dataclass(frozen=True)
class InputSpec:
    name: str
    unit: str
    required: bool
    description: str
    kind: str = "column"
    source: str | None = None  # "model.output" when the input comes from another model

    @property
    def from_model(self) -> str | None:
        return self.source.split(".", 1)[0] if self.source else None

    @property
    def from_output(self) -> str | None:
        return self.source.split(".", 1)[1] if self.source else None


@dataclass(frozen=True)
class OutputSpec:
    name: str
    unit: str
    description: str
    kind: str = "series"
    table: str = ""  # warehouse table; parse_manifest fills the default (see the module docstring)


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str
    default: Any
    description: str
    required: bool = False
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    max_exclusive: bool = False
    choices: tuple | None = None


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    description: str
    inputs: dict[str, InputSpec]
    outputs: dict[str, OutputSpec]
    config: dict[str, ParamSpec]
    depends_on: tuple[str, ...] = ()
    stateful: bool = False
    path: Path | None = field(default=None, compare=False)

    def defaults(self) -> dict[str, Any]:
        return {name: spec.default for name, spec in self.config.items()}


def _fail(where: str, key: str, message: str) -> ManifestError:
    return ManifestError(f"{where}: {key}: {message}")


def _expect(obj: Mapping, key: str, kind, where: str, path: str, required: bool = True):
    if key not in obj:
        if required:
            raise _fail(where, f"{path}{key}", "missing")
        return None
    value = obj[key]
    # bool is an int subclass; a manifest saying `"required": 1` is a typo, not a flag.
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise _fail(where, f"{path}{key}", f"expected {names}, got {type(value).__name__} {value!r}")
    return value


def _no_extra(obj: Mapping, allowed: set[str], where: str, path: str) -> None:
    extra = sorted(set(obj) - allowed)
    if extra:
        raise _fail(where, f"{path}{extra[0]}", f"unknown key (allowed: {', '.join(sorted(allowed))})")


def parse_manifest(raw: Mapping, where: str = "model.json") -> Manifest:
    """Validate a parsed model.json against the manifest schema; ManifestError names the key."""
    if not isinstance(raw, Mapping):
        raise _fail(where, "(top level)", "expected an object")
    _no_extra(raw, {"name", "version", "description", "depends_on", "stateful", "inputs", "outputs", "config"},
              where, "")
    name = _expect(raw, "name", str, where, "")
    version = _expect(raw, "version", str, where, "")
    description = _expect(raw, "description", str, where, "")
    depends_on = _expect(raw, "depends_on", list, where, "", required=False) or []
    for i, dep in enumerate(depends_on):
        if not isinstance(dep, str):
            raise _fail(where, f"depends_on[{i}]", "expected a model name (string)")
    stateful = _expect(raw, "stateful", bool, where, "", required=False) or False

    inputs = {}
    for key, spec in _expect(raw, "inputs", dict, where, "").items():
        path = f"inputs.{key}."
        if not isinstance(spec, dict):
            raise _fail(where, f"inputs.{key}", "expected an object")
        _no_extra(spec, {"unit", "required", "description", "kind", "from"}, where, path)
        kind = _expect(spec, "kind", str, where, path, required=False) or "column"
        if kind not in INPUT_KINDS:
            raise _fail(where, f"{path}kind", f"{kind!r} is not one of {', '.join(INPUT_KINDS)}")
        source = _expect(spec, "from", str, where, path, required=False)
        if source is not None:
            model, _, output = source.partition(".")
            if not model or not output:
                raise _fail(where, f"{path}from", f"{source!r} is not of the form 'model.output'")
            if model not in depends_on:
                raise _fail(where, f"{path}from", f"model {model!r} is not listed in depends_on")
        inputs[key] = InputSpec(
            name=key,
            unit=_expect(spec, "unit", str, where, path),
            required=_expect(spec, "required", bool, where, path),
            description=_expect(spec, "description", str, where, path),
            kind=kind,
            source=source,
        )

    outputs = {}
    for key, spec in _expect(raw, "outputs", dict, where, "").items():
        path = f"outputs.{key}."
        if not isinstance(spec, dict):
            raise _fail(where, f"outputs.{key}", "expected an object")
        _no_extra(spec, {"unit", "description", "kind", "table"}, where, path)
        kind = _expect(spec, "kind", str, where, path, required=False) or "series"
        if kind not in OUTPUT_KINDS:
            raise _fail(where, f"{path}kind", f"{kind!r} is not one of {', '.join(OUTPUT_KINDS)}")
        default_table = {"series": name, "columns": f"{name}_cells", "records": f"{name}_{key}"}[kind]
        table = _expect(spec, "table", str, where, path, required=False) or default_table.lower()
        if not TABLE_NAME.match(table):
            raise _fail(where, f"{path}table", f"{table!r} is not a table name (lower-case letters, digits, _)")
        outputs[key] = OutputSpec(
            name=key,
            unit=_expect(spec, "unit", str, where, path),
            description=_expect(spec, "description", str, where, path),
            kind=kind,
            table=table,
        )
    if not outputs:
        raise _fail(where, "outputs", "a model must declare at least one output")
    _check_output_tables(outputs, where)

    config = {}
    for key, spec in (_expect(raw, "config", dict, where, "", required=False) or {}).items():
        path = f"config.{key}."
        if not isinstance(spec, dict):
            raise _fail(where, f"config.{key}", "expected an object")
        _no_extra(spec, {"type", "default", "description", "required", "nullable", "min", "max",
                         "min_exclusive", "max_exclusive", "choices"}, where, path)
        ptype = _expect(spec, "type", str, where, path)
        if ptype not in PARAM_TYPES:
            raise _fail(where, f"{path}type", f"{ptype!r} is not one of {', '.join(PARAM_TYPES)}")
        if "default" not in spec:
            raise _fail(where, f"{path}default", "missing (use null with \"required\": true)")
        choices = _expect(spec, "choices", list, where, path, required=False)
        param = ParamSpec(
            name=key,
            type=ptype,
            default=spec["default"],
            description=_expect(spec, "description", str, where, path),
            required=_expect(spec, "required", bool, where, path, required=False) or False,
            nullable=_expect(spec, "nullable", bool, where, path, required=False) or False,
            min=_expect(spec, "min", (int, float), where, path, required=False),
            max=_expect(spec, "max", (int, float), where, path, required=False),
            min_exclusive=_expect(spec, "min_exclusive", bool, where, path, required=False) or False,
            max_exclusive=_expect(spec, "max_exclusive", bool, where, path, required=False) or False,
            choices=tuple(choices) if choices is not None else None,
        )
        if param.required:
            if param.default is not None:
                raise _fail(where, f"{path}default", "a required parameter has default null")
        else:
            # The default must itself be admissible, or every model instance would start invalid.
            try:
                check_parameter(param, param.default, f"{where}: {path}default")
            except ParameterError as exc:
                raise ManifestError(str(exc)) from None
        config[key] = param

    return Manifest(name=name, version=version, description=description, inputs=inputs, outputs=outputs,
                    config=config, depends_on=tuple(depends_on), stateful=stateful)


def _check_output_tables(outputs: Mapping[str, OutputSpec], where: str) -> None:
    """Outputs share a table only when they have the same per-sample grain (see the docstring)."""
    kinds: dict[str, tuple[str, str]] = {}
    for spec in outputs.values():
        first = kinds.setdefault(spec.table, (spec.kind, spec.name))
        if first[1] != spec.name and (spec.kind == "records" or first[0] != spec.kind):
            raise _fail(where, f"outputs.{spec.name}.table",
                        f"table {spec.table!r} is also output {first[1]!r}'s ({first[0]}); only "
                        "series outputs, or columns outputs, may share a table")


def read_json_object(path: Path, error: type[Exception], missing: str) -> dict:
    """A JSON file holding an object; `error` (naming the file) if it is absent or malformed."""
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise error(f"{path}: {missing}") from None
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise error(f"{path}: (top level): expected an object")
    return raw


def load_manifest(path: Path) -> Manifest:
    path = Path(path)
    manifest = parse_manifest(read_json_object(path, ManifestError, "model.json is missing"), where=str(path))
    return replace(manifest, path=path)


def check_parameter(spec: ParamSpec, value: Any, where: str) -> Any:
    """The value if the spec admits it (integers accepted for numbers), else ParameterError."""
    if value is None:
        if spec.required:
            raise ParameterError(f"{where}: parameter {spec.name!r} is required ({spec.description})")
        if spec.nullable:
            return None
        raise ParameterError(f"{where}: parameter {spec.name!r} may not be null")
    ok = {
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "string": isinstance(value, str),
    }[spec.type]
    if not ok:
        raise ParameterError(
            f"{where}: parameter {spec.name!r} must be of type {spec.type}, got {type(value).__name__} {value!r}"
        )
    if spec.type == "number":
        value = float(value)
        if not math.isfinite(value):
            raise ParameterError(f"{where}: parameter {spec.name!r} must be finite, got {value!r}")
    if spec.min is not None and (value <= spec.min if spec.min_exclusive else value < spec.min):
        bound = ">" if spec.min_exclusive else ">="
        raise ParameterError(f"{where}: parameter {spec.name!r} = {value!r} is out of range (must be {bound} {spec.min})")
    if spec.max is not None and (value >= spec.max if spec.max_exclusive else value > spec.max):
        bound = "<" if spec.max_exclusive else "<="
        raise ParameterError(f"{where}: parameter {spec.name!r} = {value!r} is out of range (must be {bound} {spec.max})")
    if spec.choices is not None and value not in spec.choices:
        raise ParameterError(
            f"{where}: parameter {spec.name!r} = {value!r} is not one of {', '.join(map(str, spec.choices))}"
        )
    return value


def resolve_parameters(manifest: Manifest, values: Mapping[str, Any] | None, where: str,
                       key_path: str = "parameters") -> dict[str, Any]:
    """Manifest defaults overlaid with `values`, each checked; unknown names are errors."""
    values = dict(values or {})
    unknown = sorted(set(values) - set(manifest.config))
    if unknown:
        known = ", ".join(sorted(manifest.config)) or "none"
        raise ParameterError(
            f"{where}: {key_path}.{unknown[0]}: unknown parameter of model {manifest.name!r} (known: {known})"
        )
    merged = manifest.defaults()
    merged.update(values)
    return {
        name: check_parameter(spec, merged[name], f"{where}: {key_path}.{name}")
        for name, spec in manifest.config.items()
    }
