"""The twin-model contract: one class per model, registered by name, described by its manifest.

```python
@register_model("my_model")            # the folder name and model.json's "name" must agree
class MyModel(TwinModel):
    def process(self, data, state=None):
        current = data["current"]       # logical input names, never source column names
        return {"my_output": result}    # exactly the outputs model.json declares
```

`data` is the frame `settings.resolve_inputs` builds: one column per logical input of kind
"column" (named like the input) and, for inputs of kind "columns" (cell voltages, temperature
sensors), one column per cell or sensor named ``"<input>:<id>"``; `input_columns` gives them
back as a frame with the ids as column names. Inputs from other models (`"from"` in the
manifest) arrive the same way. The index is the source's index; outputs of kind "series" and
"columns" keep it.

Outputs are `dict[str, pandas.Series | pandas.DataFrame]`: the seed's contract allows Series
only, but per-cell results (one column per cell) and event records (alerts, rests) are tables,
and a Series per cell would make the set of output names depend on the data. Each output's kind
is declared in the manifest and checked by the runner.

Stateful models (manifest `"stateful": true`) take the state left by the previous batch in
`process(data, state)` and leave theirs in `self.last_state` (a JSON-serialisable dict), so that
processing a series in batches gives the same result as processing it whole.
"""

from __future__ import annotations

import abc
import sys
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np
import pandas as pd

from battery_pipeline.science.twin.manifest import Manifest, ManifestError, load_manifest, resolve_parameters

COLUMN_ID_SEPARATOR = ":"

# name -> class, filled by @register_model as model modules are imported (see registry.py).
MODEL_CLASSES: dict[str, type["TwinModel"]] = {}


class TwinModel(abc.ABC):
    """Base of every twin model. Parameters are checked in __init__; all work is in process()."""

    name: ClassVar[str]
    manifest: ClassVar[Manifest]

    def __init__(self, params: Mapping[str, Any] | None = None):
        # Manifest defaults overlaid with the given values (settings.py passes the merged settings).
        self.params: dict[str, Any] = resolve_parameters(self.manifest, params, where=f"model {self.name!r}")
        self.last_state: dict[str, Any] | None = None

    @abc.abstractmethod
    def process(self, data: pd.DataFrame, state: dict[str, Any] | None = None) -> dict[str, pd.Series | pd.DataFrame]:
        """Compute the model's outputs from `data` (logical input columns)."""


def register_model(name: str):
    """Class decorator: attach the model.json beside the class's module and register it by name."""

    def decorate(cls):
        if not (isinstance(cls, type) and issubclass(cls, TwinModel)):
            raise TypeError(f"@register_model({name!r}) decorates a TwinModel subclass, not {cls!r}")
        module_file = getattr(sys.modules.get(cls.__module__), "__file__", None)
        if module_file is None:
            raise ManifestError(f"model {name!r}: module {cls.__module__} has no file, so no model.json beside it")
        manifest = load_manifest(Path(module_file).with_name("model.json"))
        if manifest.name != name:
            raise ManifestError(
                f"{manifest.path}: name: manifest says {manifest.name!r} but {cls.__qualname__} is "
                f"registered as {name!r}"
            )
        existing = MODEL_CLASSES.get(name)
        # Re-importing the same module (reload, a second test session) re-registers the same class.
        if existing is not None and (existing.__module__, existing.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ManifestError(
                f"twin model name {name!r} is registered twice: {existing.__module__} and {cls.__module__}"
            )
        cls.name = name
        cls.manifest = manifest
        MODEL_CLASSES[name] = cls
        return cls

    return decorate


def column_name(logical: str, column_id: str) -> str:
    """Resolved-frame column of one member (cell, sensor) of a multi-column input."""
    return f"{logical}{COLUMN_ID_SEPARATOR}{column_id}"


def input_columns(data: pd.DataFrame, logical: str) -> pd.DataFrame:
    """The members of a multi-column input as a frame whose columns are the cell/sensor ids."""
    prefix = logical + COLUMN_ID_SEPARATOR
    selected = [c for c in data.columns if isinstance(c, str) and c.startswith(prefix)]
    return data[selected].set_axis([c[len(prefix):] for c in selected], axis=1)


def has_input(data: pd.DataFrame, logical: str) -> bool:
    prefix = logical + COLUMN_ID_SEPARATOR
    return logical in data.columns or any(isinstance(c, str) and c.startswith(prefix) for c in data.columns)


def mean_temperature(data: pd.DataFrame, default_c: float, logical: str = "temperatures") -> np.ndarray:
    """Per-sample mean over the temperature sensors; gaps filled from neighbours, else `default_c`."""
    if not has_input(data, logical):
        return np.full(len(data), float(default_c))
    # A dropped-out sensor (NaN) leaves the others' mean; a sample with no reading at all takes
    # the nearest reading in time, which over seconds is far closer than any fixed default.
    mean = input_columns(data, logical).astype("float64").mean(axis=1, skipna=True)
    return mean.ffill().bfill().fillna(float(default_c)).to_numpy()


def soh_per_sample(data: pd.DataFrame, default: float) -> np.ndarray:
    """The `soh` input where mapped (a missing reading keeps the last one), else `default`."""
    if "soh" not in data.columns:
        return np.full(len(data), float(default))
    return data["soh"].astype("float64").ffill().fillna(float(default)).to_numpy()


HOLD_CONVENTIONS = ("backward", "forward")


def held_increments(time_s: np.ndarray, rate: np.ndarray, hold: str, max_gap_s: float | None,
                    previous: tuple[float, float] | None = None) -> np.ndarray:
    """Increment of the integral of a sampled, piecewise-constant `rate` arriving at each sample.

    hold "backward": rate[k] held over (t[k-1], t[k]] (a BMS reporting each interval's mean, as
    pack_sim does); "forward": rate[k] held over [t[k], t[k+1]) (a sampled value that holds until
    the next sample). `previous` is (time, rate) of the sample before this batch; without it the
    first sample's interval is unknown and adds 0. Intervals longer than `max_gap_s` (a logging
    outage: nothing is known about them) add 0. Either way a rate that changes only at sample
    instants, in the chosen convention, is integrated exactly.
    """
    time_s = np.asarray(time_s, dtype="float64")
    rate = np.asarray(rate, dtype="float64")
    if not len(time_s):
        return np.empty(0)
    before_time, before_rate = previous if previous is not None else (time_s[0], 0.0)
    dt = np.diff(time_s, prepend=before_time)
    if np.any(dt < 0):
        raise ValueError("time goes backwards (or the batch starts before the previous one ended); sort by time")
    if max_gap_s is not None:
        dt = np.where(dt > max_gap_s, 0.0, dt)
    if hold == "forward":
        rate = np.concatenate(([before_rate], rate[:-1]))
    elif hold != "backward":
        raise ValueError(f"hold must be one of {', '.join(HOLD_CONVENTIONS)}, got {hold!r}")
    return rate * dt
