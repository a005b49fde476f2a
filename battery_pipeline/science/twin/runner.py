"""Run the enabled twin models on one source frame, in dependency order, and check their outputs."""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

from battery_pipeline.science.twin.manifest import ParameterError, resolve_parameters
from battery_pipeline.science.twin.settings import TwinSettings, enabled_models, resolve_inputs


class TwinOutputError(ValueError):
    """A model returned outputs that do not match its manifest."""


class TwinOutputs(dict):
    """model name -> {output name -> Series | DataFrame}; `.state` holds each stateful model's
    state after this batch (model name -> dict), to pass as `state` with the next batch."""

    def __init__(self, *args, state: dict[str, dict[str, Any]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.state: dict[str, dict[str, Any]] = state or {}


def _check_outputs(name: str, manifest, outputs: Any, data: pd.DataFrame) -> None:
    if not isinstance(outputs, Mapping):
        raise TwinOutputError(f"model {name!r}: process() returned {type(outputs).__name__}, expected a dict")
    declared, returned = set(manifest.outputs), set(outputs)
    if declared != returned:
        raise TwinOutputError(
            f"model {name!r}: outputs {sorted(returned)} differ from model.json's {sorted(declared)}"
        )
    for out, spec in manifest.outputs.items():
        value = outputs[out]
        expected = pd.Series if spec.kind == "series" else pd.DataFrame
        if not isinstance(value, expected):
            raise TwinOutputError(
                f"model {name!r}: output {out!r} is declared {spec.kind!r} but is a {type(value).__name__}"
            )
        # Per-sample outputs must line up with the samples they describe.
        if spec.kind in ("series", "columns") and not value.index.equals(data.index):
            raise TwinOutputError(f"model {name!r}: output {out!r} ({spec.kind}) is not indexed like the input data")


def run_models(data: pd.DataFrame, settings: TwinSettings, source_kind: str,
               state: Mapping[str, Mapping[str, Any]] | None = None,
               parameters: Mapping[str, Any] | None = None) -> TwinOutputs:
    """Outputs of every enabled model on `data` (a pack's telemetry or a cell's samples).

    `source_kind` picks the input mapping (a key of the settings' `sources`). `state` is the
    `.state` of the previous batch's result (stateful models continue from it). `parameters`
    are per-run facts such as the pack's chemistry and capacity from its metadata: each goes to
    every enabled model that declares it and wins over the settings; a name no enabled model
    declares is an error.
    """
    classes = settings.model_classes()
    order = enabled_models(settings)
    parameters = dict(parameters or {})
    declared = {p for n in order for p in classes[n].manifest.config}
    unknown = sorted(set(parameters) - declared)
    if unknown:
        raise ParameterError(
            f"run parameters: {unknown[0]}: no enabled twin model declares it (declared: {', '.join(sorted(declared))})"
        )
    results = TwinOutputs()
    for name in order:
        outputs, model_state = run_model(name, data, settings, source_kind, upstream=results,
                                         state=(state or {}).get(name), parameters=parameters)
        if classes[name].manifest.stateful:
            results.state[name] = model_state
        results[name] = outputs
    return results


def run_model(name: str, data: pd.DataFrame, settings: TwinSettings, source_kind: str,
              upstream: Mapping[str, Mapping[str, Any]] | None = None,
              state: Mapping[str, Any] | None = None,
              parameters: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """One model on `data`: (its checked outputs, its state after the batch or None).

    For callers that run each model on its own (one Dagster asset per model): `upstream` holds
    the outputs of the models it depends on (model -> outputs, e.g. read back from storage);
    `parameters` are the run's facts (see run_models), of which the model takes those it declares.
    """
    cls = settings.model_classes()[name]
    params = dict(settings.models[name].parameters)
    params.update({p: v for p, v in (parameters or {}).items() if p in cls.manifest.config})
    params = resolve_parameters(cls.manifest, params, where=f"model {name!r} (settings + run parameters)")
    model = cls(params)
    inputs = resolve_inputs(name, data, settings, source_kind, upstream=upstream)
    if cls.manifest.stateful:
        outputs = model.process(inputs, state=dict(state) if state is not None else None)
    else:
        outputs = model.process(inputs)
    _check_outputs(name, cls.manifest, outputs, data)
    return dict(outputs), model.last_state if cls.manifest.stateful else None
