"""Discovery of twin models: every folder under `models/` is one model, found without a list.

A model folder holds `model.py` (one `@register_model` class), `model.json` (its manifest) and
`README.md`. `discover_models()` imports every folder's `model.py`, validates its manifest and
checks that folder name, registered name and manifest name agree and that every dependency
exists and the dependency graph has no cycle. Adding a model is adding a folder.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping

from battery_pipeline.science.twin.base import MODEL_CLASSES, TwinModel
from battery_pipeline.science.twin.manifest import ManifestError

MODELS_PACKAGE = "battery_pipeline.science.twin.models"
REQUIRED_FILES = ("model.py", "model.json", "README.md")


class ModelDiscoveryError(ManifestError):
    """A model folder that cannot be used; the message names the folder and what is wrong."""


def _model_folders(package) -> list[Path]:
    folders = []
    for root in package.__path__:
        for child in sorted(Path(root).iterdir()):
            # _private and dotted folders (__pycache__, .ipynb_checkpoints) are not models.
            if child.is_dir() and not child.name.startswith(("_", ".")):
                folders.append(child)
    return folders


def discover_models(package_name: str = MODELS_PACKAGE) -> dict[str, type[TwinModel]]:
    """name -> model class for every model folder of the package, in name order."""
    return dict(_discover(package_name))


@lru_cache(maxsize=None)
def _discover(package_name: str) -> tuple[tuple[str, type[TwinModel]], ...]:
    # Imports happen once per process; callers get a fresh dict they may change.
    package = importlib.import_module(package_name)
    found: dict[str, type[TwinModel]] = {}
    for folder in _model_folders(package):
        missing = [f for f in REQUIRED_FILES if not (folder / f).is_file()]
        if missing:
            raise ModelDiscoveryError(f"{folder}: a model folder needs {', '.join(missing)}")
        module_name = f"{package_name}.{folder.name}.model"
        try:
            importlib.import_module(module_name)
        except ManifestError:
            raise
        except Exception as exc:  # any import failure: say which model, keep the cause chained
            raise ModelDiscoveryError(f"{folder / 'model.py'}: import failed: {type(exc).__name__}: {exc}") from exc
        classes = [cls for cls in MODEL_CLASSES.values() if cls.__module__ == module_name]
        if len(classes) != 1:
            raise ModelDiscoveryError(
                f"{folder / 'model.py'}: expected exactly one @register_model class, found {len(classes)}"
            )
        cls = classes[0]
        if cls.name != folder.name:
            raise ModelDiscoveryError(
                f"{folder / 'model.py'}: model registered as {cls.name!r} lives in folder {folder.name!r}; "
                "the folder name, the registered name and model.json's name must be equal"
            )
        found[cls.name] = cls
    check_dependencies(found)
    return tuple(sorted(found.items()))


def check_dependencies(models: Mapping[str, type[TwinModel]]) -> None:
    """Every depends_on names a known model, every `from` a declared output, no two models
    write the same warehouse table, and no cycles."""
    for name, cls in models.items():
        manifest = cls.manifest
        for dep in manifest.depends_on:
            if dep not in models:
                raise ModelDiscoveryError(
                    f"{manifest.path}: depends_on: unknown model {dep!r} (known: {', '.join(sorted(models))})"
                )
        for spec in manifest.inputs.values():
            if spec.source is None:
                continue
            outputs = models[spec.from_model].manifest.outputs
            if spec.from_output not in outputs:
                raise ModelDiscoveryError(
                    f"{manifest.path}: inputs.{spec.name}.from: model {spec.from_model!r} has no output "
                    f"{spec.from_output!r} (it has: {', '.join(outputs)})"
                )
    owners: dict[str, str] = {}
    for name, cls in sorted(models.items()):
        for spec in cls.manifest.outputs.values():
            owner = owners.setdefault(spec.table, name)
            if owner != name:
                raise ModelDiscoveryError(
                    f"{cls.manifest.path}: outputs.{spec.name}.table: table {spec.table!r} already stores "
                    f"outputs of model {owner!r}; every model writes its own tables"
                )
    dependency_order(models, models)


def dependency_order(names: Iterable[str], models: Mapping[str, type[TwinModel]]) -> list[str]:
    """`names` ordered so that every model comes after the models it depends on (ties by name)."""
    names = sorted(set(names))
    remaining = {n: {d for d in models[n].manifest.depends_on if d in names} for n in names}
    order: list[str] = []
    while remaining:
        ready = sorted(n for n, deps in remaining.items() if not deps)
        if not ready:
            raise ModelDiscoveryError(f"twin models depend on each other in a cycle: {', '.join(sorted(remaining))}")
        for n in ready:
            order.append(n)
            del remaining[n]
        for deps in remaining.values():
            deps.difference_update(ready)
    return order
