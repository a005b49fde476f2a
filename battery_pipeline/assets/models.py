"""Models: training sets -> one trained model per estimator and task -> `model_registry` ->
promotion -> `soh_predictions` / `rul_predictions` per cell.

The estimators, splits, tables and metrics are `science.ml`; here we read the warehouse, train,
store artifacts through the `ModelStore` resource, record what each model is, and gate which one
scores the cells.

* `soh_training_set`, `rul_training_set`: every labelled cycle of every cell, with its cell's
  split (train / validation / test of cells, seeded; `SplitConfig`). Blocking checks: the split is
  disjoint by cell, no label or same-cycle capacity is a feature. With fewer than
  `splits.MIN_TRAINING_CELLS` cells for the task (`task_split`) the asset is not materialized:
  the run succeeds, the task's models are skipped, the reason is logged and observed on the asset.
* `<task>_<estimator>_model`, one per estimator of `science.ml.registry` and task: fitted on the
  train cells with cross-conformal intervals (out-of-fold errors over 3 folds of the train
  cells, the point model refitted on all of them; `registry.make_estimator(intervals=True)`), scored on
  every row, predictions and intervals clipped to the physical range (`science.ml.bounds`, the
  count recorded). The out-of-fold predictions on the same folds give `cv_error`, the error over
  held-out training cells that ranks models for promotion (`science.ml.cross_validation`); test
  cells give the reported figures and the gate. The artifact and a JSON sidecar go to the
  model store under a model id that hashes task, estimator, parameters, data hash, seed and code
  version, so retraining on the same data with the same code gives the same id. The model's
  predictions land in `model_predictions` (rows keyed by asset name).
* `model_registry`: one row per model ever trained (history kept), `current` marks the latest of
  each asset and `promoted` the one scoring cells (set by the promotion assets only).
* `promoted_soh_model`, `promoted_rul_model`: pick the candidate with the lowest `cv_error`
  (`rank_candidates`); the blocking `promotion_gate` lets it replace the promoted model only if it beats the
  dummy on the test cells and is not worse than the previous promoted model (re-scored on the
  same test cells) by more than `PromotionConfig.tolerance`. Each decision is kept in
  `model_promotions`.
* `soh_predictions`, `rul_predictions`, per cell partition: the promoted model's prediction and
  interval for every cycle, the truth where known, and which split the cell was in for that
  model ("unseen" for cells that arrived after training).
"""

import hashlib
import json
import math
import time
import warnings
from datetime import datetime, timezone
from typing import Optional

import dagster as dg
import numpy as np
import pandas as pd

from battery_pipeline.checks import model_quality
from battery_pipeline.checks.governance import check_spec
from battery_pipeline.checks.outcomes import not_evaluated
from battery_pipeline.partitions import cell_partitions
from battery_pipeline.provenance import code_version
from battery_pipeline.resources import WAREHOUSE_POOL, ModelStore, Warehouse
from battery_pipeline.science.ml.bounds import describe_range, physical_range
from battery_pipeline.science.ml.cross_validation import out_of_fold_predictions
from battery_pipeline.science.ml.datasets import TrainingTable, rul_dataset, soh_dataset
from battery_pipeline.science.ml.inference import bootstrap_interval, scoring_table
from battery_pipeline.science.ml.metrics import interval_metrics, rul_metrics, soh_metrics
from battery_pipeline.science.ml.registry import ESTIMATORS, estimator_names, fit_on, make_estimator, predict_on, scored_on
from battery_pipeline.science.ml.splits import MIN_TRAINING_CELLS, CellSplit, split_cells, training_shortfall

MODELS_GROUP = "models"
PREDICTIONS_GROUP = "predictions"
TASKS = ("soh", "rul")
TARGETS = {"soh": "soh", "rul": "rul_cycles"}
# The error that selects, gates and is reported first: RMSE, in SOH fraction or in cycles.
ERROR_METRIC = {"soh": "rmse", "rul": "rmse_cycles"}
SPLITS = model_quality.SPLITS
BUILDERS = {"soh": soh_dataset, "rul": rul_dataset}
KEY_COLUMNS = ("cell_id", "cycle_number")
# A feature named like a key (RUL uses cycle_number as an input) is stored under this suffix, so
# the stored table has one column per name; loading strips it again.
KEY_FEATURE_SUFFIX = "_feature"


def model_asset_name(task: str, estimator: str) -> str:
    return f"{task}_{estimator}_model"


MODEL_ASSETS = {task: [model_asset_name(task, name) for name in estimator_names(task)] for task in TASKS}


def task_assets(task: str) -> list[str]:
    """Every asset of one task, from its training set to its per-cell predictions."""
    return [f"{task}_training_set", *MODEL_ASSETS[task], f"promoted_{task}_model", f"{task}_predictions"]


class SplitConfig(dg.Config):
    seed: int = 0
    train_fraction: float = 0.70
    validation_fraction: float = 0.15
    test_fraction: float = 0.15


class TrainingConfig(dg.Config):
    seed: int = 0
    # A smoke-test budget (tests, a first look at new data): boosters and forests capped at
    # QUICK_BUDGET iterations / trees, the LSTM at 3 epochs. Off for real training.
    quick: bool = False


QUICK_BUDGET = {"max_iter": 30, "n_estimators": 20, "max_epochs": 3}


def with_quick_budget(estimator):
    """Cap every iteration-like parameter, nested ones too (`estimator__max_iter` of a wrapper)."""
    params = estimator.get_params(deep=True)
    capped = {
        name: min(value, QUICK_BUDGET[name.rsplit("__", 1)[-1]])
        for name, value in params.items()
        if name.rsplit("__", 1)[-1] in QUICK_BUDGET and isinstance(value, int) and not isinstance(value, bool)
    }
    return estimator.set_params(**capped)


class PromotionConfig(dg.Config):
    # Relative: a candidate may be up to 5 % worse than the promoted model on the same test cells
    # (noise between retrainings on grown data), not more.
    tolerance: float = 0.05


# --- training sets ---------------------------------------------------------------------------


def _all_rows(warehouse: Warehouse, table: str) -> pd.DataFrame:
    if not warehouse.table_exists(table):
        raise dg.Failure(description=f"table {table} does not exist yet: run cell_pipeline_job for some cells first")
    return warehouse.query(f"SELECT * FROM {table} ORDER BY cell_id, cycle_number")


# What makes a cell count for a task's training (the builders' rule), for messages.
ELIGIBLE_CELLS = {"soh": "cell(s) with SOH labels", "rul": "uncensored cell(s) with RUL labels"}


def task_split(task: str, features: pd.DataFrame, labels: pd.DataFrame, config: SplitConfig) -> tuple[Optional[CellSplit], str]:
    """(the task's cell split, "") or (None, why its models cannot be trained: how many cells
    there are and how many training needs, `splits.MIN_TRAINING_CELLS`).

    The split is drawn over the cells that have rows for this task (for RUL the uncensored ones),
    so every split of the task gets cells.
    """
    eligible = BUILDERS[task](features, labels).cells
    fractions = (config.train_fraction, config.validation_fraction, config.test_fraction)
    split = split_cells(eligible, fractions, seed=config.seed) if eligible else CellSplit((), (), ())
    shortfall = training_shortfall(split)
    if shortfall is None:
        return split, ""
    named = f" ({', '.join(eligible[:5])}{', ...' if len(eligible) > 5 else ''})" if eligible else ""
    return None, f"{task.upper()} training skipped: {len(eligible)} {ELIGIBLE_CELLS[task]}{named}; {shortfall}"


def training_shortfalls(warehouse: Warehouse, config: Optional[SplitConfig] = None) -> dict[str, str]:
    """Per task, why its models cannot be trained on what the warehouse holds ("" when they can):
    what the CLI asks before it launches train_models_job."""
    features, labels = _all_rows(warehouse, "cycle_features"), _all_rows(warehouse, "cycle_labels")
    return {task: task_split(task, features, labels, config or SplitConfig())[1] for task in TASKS}


def build_training_rows(task: str, features: pd.DataFrame, labels: pd.DataFrame, split: CellSplit):
    """(rows to store, TrainingTable): the task's table with a `split` column (`task_split`);
    columns empty on all train cells are dropped."""
    table = BUILDERS[task](features, labels, train_cells=split.train)
    X = table.X.rename(columns={c: c + KEY_FEATURE_SUFFIX for c in KEY_COLUMNS if c in table.X.columns})
    rows = pd.concat([table.cell_id, table.cycle_number, table.y.rename(table.target), X], axis=1)
    rows.insert(2, "split", split.assign(rows["cell_id"]))
    # what each row's SOH is relative to (rated capacity, or the cell's initial capacity): kept
    # beside the target, never a feature
    reference = labels.assign(cell_id=labels["cell_id"].astype(str)).set_index(list(KEY_COLUMNS))["soh_reference"]
    rows.insert(3, "soh_reference", reference.reindex(pd.MultiIndex.from_frame(rows[list(KEY_COLUMNS)])).to_numpy())
    return rows, table


def soh_reference_cells(rows: pd.DataFrame) -> dict[str, int]:
    """Cells per SOH reference kind (nominal / initial) among training rows."""
    if "soh_reference" not in rows:
        return {}
    return {str(k): int(v) for k, v in rows.groupby(rows["soh_reference"].fillna("not recorded"))["cell_id"].nunique().items()}


def load_training_table(warehouse: Warehouse, task: str) -> tuple[TrainingTable, pd.DataFrame]:
    """The stored training set as a TrainingTable, and its (cell_id, cycle_number, split,
    soh_reference) rows."""
    name = f"{task}_training_set"
    if not warehouse.table_exists(name):
        raise dg.Failure(description=f"{name} is not materialized yet")
    rows = warehouse.query(f"SELECT * FROM {name} ORDER BY rowid")
    target = TARGETS[task]
    stored = [c for c in rows.columns if c not in (*KEY_COLUMNS, "split", "soh_reference", target)]
    X = rows[stored].astype(np.float64).rename(columns=lambda c: c.removesuffix(KEY_FEATURE_SUFFIX))
    features = list(X.columns)
    table = TrainingTable(
        task=task,
        target=target,
        X=X,
        y=rows[target].astype(np.float64),
        cell_id=rows["cell_id"].astype(str),
        cycle_number=rows["cycle_number"].astype(np.int64),
        feature_columns=tuple(features),
    )
    if "soh_reference" not in rows:  # a training set stored before references were recorded
        rows["soh_reference"] = None
    return table, rows[["cell_id", "cycle_number", "split", "soh_reference"]]


def _training_set_asset(task: str):
    name = f"{task}_training_set"

    @dg.asset(
        name=name,
        deps=["cycle_features", "cycle_labels"],
        group_name=MODELS_GROUP,
        pool=WAREHOUSE_POOL,
        kinds={"duckdb", "pandas"},
        description=(
            f"Every {TARGETS[task]}-labelled cycle of every cell with its features and the cell's split "
            f"(train / validation / test of cells, 70/15/15, seeded). Needs {MIN_TRAINING_CELLS} cells: "
            "with fewer it is not materialized and the task's models are skipped, the reason in the run log."
        ),
        check_specs=[
            check_spec("split_disjoint", name),
            check_spec("no_feature_leakage", name),
        ],
        # Too few cells is a state of the data, not an error: the run (the nightly schedule's
        # too) succeeds, this asset and everything trained from it are skipped, the reason shown.
        output_required=False,
    )
    def training_set(context: dg.AssetExecutionContext, config: SplitConfig, warehouse: Warehouse):
        features, labels = _all_rows(warehouse, "cycle_features"), _all_rows(warehouse, "cycle_labels")
        try:
            split, shortfall = task_split(task, features, labels, config)
        except ValueError as exc:  # e.g. fractions that do not sum to 1
            raise dg.Failure(description=f"{name}: {exc}") from exc
        if split is None:
            context.log.warning(f"{name}: {shortfall}")
            yield dg.AssetObservation(asset_key=name, metadata={"skipped": shortfall, "cells_needed": MIN_TRAINING_CELLS})
            for check_name in ("split_disjoint", "no_feature_leakage"):
                yield not_evaluated(check_name, name, shortfall)
            return
        rows, table = build_training_rows(task, features, labels, split)
        warehouse.replace_table(name, rows)
        yield dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(rows),
                "data_hash": table.data_hash(),
                "code_version": code_version(),
                "cells_by_split": dg.MetadataValue.json(split.to_dict()),
                "rows_by_split": dg.MetadataValue.json(rows["split"].value_counts().to_dict()),
                "features": dg.MetadataValue.json(list(table.feature_columns)),
                "dropped_features": dg.MetadataValue.json(list(table.dropped_columns)),
                # "initial": SOH relative to the cell's own initial capacity (no trustworthy rating)
                "cells_by_soh_reference": dg.MetadataValue.json(soh_reference_cells(rows)),
                "seed": config.seed,
            }
        )
        yield model_quality.split_disjoint_check(rows, name)
        yield model_quality.no_feature_leakage_check(task, list(table.feature_columns), name)

    return training_set


# --- trained models --------------------------------------------------------------------------


def _plain(value):
    """JSON-safe hyperparameter values: nested estimators by their class and parameters."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "get_params"):
        return {"class": type(value).__name__, **{k: _plain(v) for k, v in value.get_params(deep=False).items()}}
    return repr(value)


def split_metrics(task: str, truth: np.ndarray, prediction: np.ndarray, lower=None, upper=None) -> dict:
    """The task's metrics, with interval coverage and width when an interval is given;
    {"n": 0} when there are no rows."""
    if len(truth) == 0:
        return {"n": 0.0}
    if task == "soh":
        return soh_metrics(truth, prediction, lower, upper)
    intervals = interval_metrics(truth, lower, upper) if lower is not None else {}
    return {**rul_metrics(truth, prediction), **intervals}


def metrics_by_split(task: str, truth: np.ndarray, scored, split_of_row: np.ndarray) -> dict:
    """`split_metrics` of scored predictions (point and interval) on each split's rows."""
    return {
        name: split_metrics(task, truth[rows], scored.prediction[rows], scored.lower[rows], scored.upper[rows])
        for name in SPLITS
        for rows in [split_of_row == name]
    }


def model_id_for(task: str, estimator: str, hyperparameters: dict, data_hash: str, seed: int, version: str) -> str:
    identity = json.dumps([task, estimator, hyperparameters, data_hash, seed, version], sort_keys=True)
    return f"{task}-{estimator}-{hashlib.sha256(identity.encode()).hexdigest()[:12]}"


def interval_calibration(estimator) -> dict:
    """How the model's (conformal) intervals were calibrated, for the record and the model card."""
    folds = int(getattr(estimator, "n_folds_", 0))
    return {
        "scheme": f"cross-conformal, {folds} folds of train cells" if folds else "split conformal on held-out train cells",
        "cells": estimator.calibration_groups_,
        "rows": int(estimator.n_calibration_),
    }


def train_and_evaluate(task: str, estimator_name: str, table: TrainingTable, splits: pd.DataFrame, config: TrainingConfig):
    """Fit on the train cells, predict every row; returns (estimator, predictions frame, record)."""
    estimator = make_estimator(estimator_name, task, seed=config.seed, intervals=True)
    if config.quick:
        estimator = with_quick_budget(estimator)
    split_of_row = splits["split"].to_numpy()
    train = table.subset(splits.loc[split_of_row == "train", "cell_id"].unique())
    started = time.perf_counter()
    try:
        fit_on(estimator, train)
        seconds = time.perf_counter() - started
        # the intervals' own fold models where the estimator has them: no second fit
        out_of_fold = out_of_fold_predictions(estimator, train, seed=config.seed)
    except ValueError as exc:  # e.g. one training cell: no fold to hold out (task_split prevents it)
        raise dg.Failure(description=f"{model_asset_name(task, estimator_name)}: {exc}") from exc
    cv_seconds = time.perf_counter() - started - seconds
    scored = scored_on(estimator, table)
    prediction, lower, upper = scored.prediction, scored.lower, scored.upper
    truth = table.y.to_numpy()
    predictions = pd.DataFrame(
        {
            "cell_id": table.cell_id,
            "cycle_number": table.cycle_number,
            "split": split_of_row,
            "truth": truth,
            "prediction": prediction,
            "lower": lower,
            "upper": upper,
        }
    )
    dummy = make_estimator("dummy", task).fit(train.X, train.y.to_numpy())
    dummy_prediction = dummy.predict(table.X)
    metrics = metrics_by_split(task, truth, scored, split_of_row)
    dummy_metrics = {
        name: split_metrics(task, truth[split_of_row == name], dummy_prediction[split_of_row == name])  # a point baseline
        for name in SPLITS
    }
    error = ERROR_METRIC[task]
    cv_metrics = split_metrics(task, train.y.to_numpy(), out_of_fold.prediction)
    test = split_of_row == "test"
    rmse = lambda t, p: float(np.sqrt(np.mean((t - p) ** 2)))  # noqa: E731
    ci = bootstrap_interval(truth[test], prediction[test], table.cell_id.to_numpy()[test], rmse, seed=config.seed)
    hyperparameters = {k: _plain(v) for k, v in estimator.get_params(deep=False).items()}
    record = {
        "task": task,
        "target": table.target,
        "estimator": estimator_name,
        "estimator_class": type(estimator).__name__,
        "description": ESTIMATORS[estimator_name].description,
        "hyperparameters": hyperparameters,
        "feature_columns": list(table.feature_columns),
        "cells": {name: sorted(splits.loc[split_of_row == name, "cell_id"].unique().tolist()) for name in SPLITS},
        "rows": {name: int((split_of_row == name).sum()) for name in SPLITS},
        "data_hash": table.data_hash(),
        "seed": config.seed,
        "metrics": metrics,
        "dummy_metrics": dummy_metrics,
        "error_metric": error,
        # the error that ranks models for promotion: out-of-fold over the training cells
        "cv_error": float(cv_metrics.get(error, math.nan)),
        "cv_metrics": cv_metrics,
        "cross_validation": {
            "folds": len(out_of_fold.fold_cells),
            "cells": len(train.cells),
            "fold_cells": out_of_fold.fold_cells,
            "reused_interval_fold_models": out_of_fold.reused,
        },
        "test_error_95ci": list(ci),
        "interval_nominal_coverage": 1 - float(getattr(estimator, "alpha", 0.1)),
        "interval_calibration": interval_calibration(estimator),
        "physical_range": [bound if math.isfinite(bound) else None for bound in physical_range(task)],  # None: unbounded
        "clipped": {**scored.clipped, "rows": len(table)},
        "soh_reference_cells": {split: soh_reference_cells(splits[split_of_row == split]) for split in SPLITS},
        "training_seconds": round(seconds, 3),
        "cv_seconds": round(cv_seconds, 3),
    }
    if hasattr(getattr(estimator, "estimator_", estimator), "best_epoch_"):
        net = getattr(estimator, "estimator_", estimator)
        record["lstm_epochs"] = {"best_epoch": int(net.best_epoch_), "epochs_run": int(net.n_epochs_)}
    return estimator, predictions, record


def _model_asset(task: str, estimator_name: str):
    name = model_asset_name(task, estimator_name)
    checks = [check_spec("interval_coverage", name), check_spec("reproducible", name)]
    if estimator_name != "dummy":
        checks.append(check_spec("beats_dummy", name))

    @dg.asset(
        name=name,
        deps=[f"{task}_training_set"],
        group_name=MODELS_GROUP,
        pool=WAREHOUSE_POOL,
        kinds={"pytorch" if estimator_name == "lstm" else "scikitlearn"},
        description=f"{ESTIMATORS[estimator_name].description}, trained for {task.upper()} on the train cells.",
        check_specs=checks,
    )
    def trained_model(context: dg.AssetExecutionContext, config: TrainingConfig, warehouse: Warehouse, model_store: ModelStore):
        table, splits = load_training_table(warehouse, task)
        estimator, predictions, record = train_and_evaluate(task, estimator_name, table, splits, config)
        version = code_version()
        model_id = model_id_for(task, estimator_name, record["hyperparameters"], record["data_hash"], config.seed, version)
        record.update(
            model_id=model_id,
            model_name=name,
            code_version=version,
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            run_id=context.run.run_id,
        )
        # The same id means the same data, code, parameters and seed: the metrics must be too.
        earlier = model_store.sidecar(model_id)["metrics"] if model_store.has(model_id) else None
        path = model_store.save(model_id, estimator, record)
        # What scoring will load: the stored artifact must give the metrics just reported.
        stored_metrics = metrics_by_split(task, table.y.to_numpy(), scored_on(model_store.load(model_id), table),
                                          predictions["split"].to_numpy())
        predictions.insert(0, "model_name", name)
        predictions.insert(1, "model_id", model_id)
        warehouse.replace_partition("model_predictions", predictions, "model_name", name)
        model_store.set_current(name, model_id)

        error = record["error_metric"]
        test, dummy = record["metrics"]["test"], record["dummy_metrics"]["test"]
        yield dg.MaterializeResult(
            metadata={
                "model_id": model_id,
                "artifact": dg.MetadataValue.path(str(path)),
                "data_hash": record["data_hash"],
                "code_version": version,
                f"test_{error}": test.get(error, math.nan),
                f"dummy_test_{error}": dummy.get(error, math.nan),
                f"validation_{error}": record["metrics"]["validation"].get(error, math.nan),
                f"cv_{error}": record["cv_error"],
                "cross_validation": dg.MetadataValue.json(record["cross_validation"]),
                "test_coverage": test.get("coverage", math.nan),
                "metrics": dg.MetadataValue.json(record["metrics"]),
                "clipped_to_physical_range": dg.MetadataValue.json(
                    {"range": describe_range(task), **record["clipped"]}
                ),
                "training_seconds": record["training_seconds"],
                "cv_seconds": record["cv_seconds"],
            }
        )
        yield model_quality.interval_coverage_check(test.get("coverage", math.nan), record["interval_nominal_coverage"], name)
        yield model_quality.reproducible_check(earlier, record["metrics"], stored_metrics, name)
        if estimator_name != "dummy":
            yield model_quality.beats_dummy_check(test.get(error, math.nan), dummy.get(error, math.nan), error, name)

    return trained_model


# --- registry and promotion ------------------------------------------------------------------

REGISTRY_COLUMNS = [
    "model_id", "model_name", "task", "estimator", "hyperparameters", "feature_columns", "train_cells",
    "validation_cells", "test_cells", "data_hash", "code_version", "seed", "metrics", "cv_error", "cv_folds",
    "cv_cells", "validation_error", "test_error", "dummy_test_error", "clipped_predictions", "created_at",
    "artifact_path", "current", "promoted",
]


def registry_row(record: dict, artifact_path: str) -> dict:
    """The registry row of a sidecar; sidecars from before cross-validated errors and clipping
    get NaN / 0 there."""
    error = record["error_metric"]
    cv = record.get("cross_validation", {})
    return {
        "model_id": record["model_id"],
        "model_name": record["model_name"],
        "task": record["task"],
        "estimator": record["estimator"],
        "hyperparameters": json.dumps(record["hyperparameters"], sort_keys=True),
        "feature_columns": json.dumps(record["feature_columns"]),
        "train_cells": json.dumps(record["cells"]["train"]),
        "validation_cells": json.dumps(record["cells"]["validation"]),
        "test_cells": json.dumps(record["cells"]["test"]),
        "data_hash": record["data_hash"],
        "code_version": record["code_version"],
        "seed": int(record["seed"]),
        "metrics": json.dumps(record["metrics"], sort_keys=True),
        "cv_error": float(record.get("cv_error", math.nan)),
        "cv_folds": int(cv.get("folds", 0)),
        "cv_cells": int(cv.get("cells", 0)),
        "validation_error": float(record["metrics"]["validation"].get(error, math.nan)),
        "test_error": float(record["metrics"]["test"].get(error, math.nan)),
        "dummy_test_error": float(record["dummy_metrics"]["test"].get(error, math.nan)),
        "clipped_predictions": int(record.get("clipped", {}).get("prediction", 0)),
        "created_at": pd.Timestamp(record["created_at"]).tz_convert(None),  # naive UTC, as DuckDB stores it
        "artifact_path": artifact_path,
    }


@dg.asset(
    deps=[name for task in TASKS for name in MODEL_ASSETS[task]],
    group_name=MODELS_GROUP,
    pool=WAREHOUSE_POOL,
    kinds={"duckdb"},
    description=(
        "One row per trained model (history kept): task, estimator, hyperparameters, features, "
        "train/validation/test cells, data hash, code version, seed, metrics, created at; `current` "
        "marks each model asset's latest, `promoted` the model scoring cells."
    ),
)
def model_registry(context: dg.AssetExecutionContext, warehouse: Warehouse, model_store: ModelStore):
    fresh = []
    for task in TASKS:
        for name in MODEL_ASSETS[task]:
            model_id = model_store.current(name)
            if model_id is None:
                context.log.warning(f"{name} has not been trained yet: not in the registry")
                continue
            fresh.append(registry_row(model_store.sidecar(model_id), str(model_store.model_dir(model_id))))
    fresh = pd.DataFrame(fresh, columns=REGISTRY_COLUMNS[:-2])
    if warehouse.table_exists("model_registry"):
        # a registry written before a column existed gets it empty (NaN), the rows kept
        old = warehouse.query("SELECT * FROM model_registry").reindex(columns=REGISTRY_COLUMNS)
    else:
        old = pd.DataFrame(columns=REGISTRY_COLUMNS)
    promoted = set(old.loc[old["promoted"].astype(bool), "model_id"])
    history = old[~old["model_id"].isin(set(fresh["model_id"]))].assign(current=False)
    fresh = fresh.assign(current=True, promoted=fresh["model_id"].isin(promoted))
    # an empty history (first training) must not decide the column types of the concatenation
    registry = (pd.concat([history, fresh], ignore_index=True) if len(history) else fresh)[REGISTRY_COLUMNS]
    registry = registry.astype(
        {"current": bool, "promoted": bool, "seed": "int64", "cv_error": "float64",
         "cv_folds": "Int64", "cv_cells": "Int64", "clipped_predictions": "Int64"}
    ).sort_values(["task", "model_name", "created_at"])
    warehouse.replace_table("model_registry", registry.reset_index(drop=True))
    overview = fresh[["model_name", "model_id", "cv_error", "validation_error", "test_error", "dummy_test_error", "clipped_predictions"]]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(registry),
            "current_models": len(fresh),
            "current": dg.MetadataValue.md(overview.round(5).to_markdown(index=False)),
        }
    )


# What ranks the candidates, best first: the error over held-out training cells (every cell a
# turn as the unseen one), then, for registry rows from before it was recorded, the validation
# cells, and with neither the test cells.
RANKING = (
    ("cv_error", "cv_error (cross-validated over the training cells)"),
    ("validation_error", "validation_error (no cross-validated error recorded)"),
    ("test_error", "test_error (no cross-validated or validation error)"),
)


def rank_candidates(candidates: pd.DataFrame) -> tuple[pd.DataFrame, str, str]:
    """(the non-dummy candidates with a test error, best first; the column that ranked them;
    why that one)."""
    pool = candidates[candidates["estimator"] != "dummy"]
    pool = pool[np.isfinite(pool["test_error"].astype(float))]
    for column, text in RANKING:
        if column in pool.columns:
            ranked = pool[np.isfinite(pool[column].astype(float))]
            if len(ranked):
                return ranked.sort_values([column, "model_name"]), column, text
    return pool, "", ""


def promotion_decision(candidates: pd.DataFrame, previous: Optional[dict], tolerance: float) -> dict:
    """Which current model to promote and whether the gate lets it (pure: tests call it).

    `candidates`: the task's current registry rows (dummy included, it is never chosen), ranked
    by `rank_candidates`. `previous`: {"model_id", "test_error"} of the promoted model, its error
    re-scored on the candidate's test cells where possible; None when nothing was promoted yet.
    """
    ranked, column, selected_by = rank_candidates(candidates)
    if ranked.empty:
        return {"passed": False, "model_id": None, "reasons": ["no trained candidate with test rows"]}
    best = ranked.iloc[0]
    decision = {
        "model_id": best["model_id"],
        "model_name": best["model_name"],
        "selected_by": selected_by,
        "ranking": dict(zip(ranked["model_name"], ranked[column].astype(float))),  # best first
        "test_error": float(best["test_error"]),
        "dummy_test_error": float(best["dummy_test_error"]),
        "previous_model_id": previous["model_id"] if previous else None,
        "previous_test_error": previous["test_error"] if previous else None,
        "tolerance": tolerance,
    }
    reasons = []
    beats_dummy = decision["test_error"] < decision["dummy_test_error"]
    reasons.append(
        f"test error {decision['test_error']:.4g} {'<' if beats_dummy else '>='} dummy {decision['dummy_test_error']:.4g}"
    )
    keeps_up = True
    if previous and previous["model_id"] != best["model_id"] and math.isfinite(previous["test_error"]):
        limit = previous["test_error"] * (1 + tolerance)
        keeps_up = decision["test_error"] <= limit
        reasons.append(
            f"{'within' if keeps_up else 'worse than'} {tolerance:.0%} of the promoted {previous['model_id']} "
            f"({previous['test_error']:.4g}, limit {limit:.4g})"
        )
    decision["passed"] = bool(beats_dummy and keeps_up)
    decision["reasons"] = reasons
    return decision


def rescored_error(task: str, model_id: str, table: TrainingTable, test_cells: list[str], model_store: ModelStore):
    """The test error of a stored model on the given test cells, or None if it cannot score them
    (a feature it was trained on is no longer in the table)."""
    sidecar = model_store.sidecar(model_id)
    if not set(sidecar["feature_columns"]) <= set(table.feature_columns) or not test_cells:
        return None
    test = table.subset(test_cells)
    X = test.X[sidecar["feature_columns"]]
    aligned = TrainingTable(task, test.target, X, test.y, test.cell_id, test.cycle_number, tuple(sidecar["feature_columns"]))
    prediction = predict_on(model_store.load(model_id), aligned)
    return float(np.sqrt(np.mean((aligned.y.to_numpy() - prediction) ** 2)))


def _promotion_asset(task: str):
    name = f"promoted_{task}_model"

    @dg.asset(
        name=name,
        deps=["model_registry", f"{task}_training_set"],
        group_name=MODELS_GROUP,
        pool=WAREHOUSE_POOL,
        kinds={"duckdb"},
        description=(
            f"The {task.upper()} model that scores cells: the current model with the lowest error over "
            "held-out training cells (cv_error, the cross-conformal folds), promoted only through the "
            "blocking promotion_gate."
        ),
        check_specs=[check_spec("promotion_gate", name)],
    )
    def promoted_model(context: dg.AssetExecutionContext, config: PromotionConfig, warehouse: Warehouse, model_store: ModelStore):
        registry = warehouse.query("SELECT * FROM model_registry WHERE task = ?", [task])
        candidates = registry[registry["current"]]
        promoted = registry[registry["promoted"]]
        previous = None
        if len(promoted):
            old = promoted.iloc[0]
            table, _ = load_training_table(warehouse, task)
            ranked = rank_candidates(candidates)[0]
            best_test_cells = json.loads(ranked.iloc[0]["test_cells"]) if len(ranked) else []
            error = rescored_error(task, old["model_id"], table, best_test_cells, model_store)
            previous = {"model_id": old["model_id"], "test_error": float(old["test_error"]) if error is None else error}
        decision = promotion_decision(candidates, previous, config.tolerance)
        decided_at = pd.Timestamp.now(tz="UTC").tz_localize(None)
        log = pd.DataFrame(
            [{
                "task": task, "decided_at": decided_at, "run_id": context.run.run_id, "candidate_model_id": decision["model_id"],
                "passed": decision["passed"], "reasons": "; ".join(decision["reasons"]),
                "previous_model_id": decision.get("previous_model_id"),
            }]
        )
        promote = ("UPDATE model_registry SET promoted = (model_id = ?) WHERE task = ?", [decision["model_id"], task])
        warehouse.append_rows("model_promotions", log, then=promote if decision["passed"] else None)
        in_force = decision["model_id"] if decision["passed"] else (previous or {}).get("model_id")
        yield dg.MaterializeResult(
            metadata={
                "promoted_model_id": in_force or "none",
                "candidate_model_id": decision["model_id"] or "none",
                "decision": "promoted" if decision["passed"] else "rejected: the promoted model is unchanged",
                "reasons": dg.MetadataValue.json(decision["reasons"]),
                "selected_by": decision.get("selected_by") or "none",
                "ranking": dg.MetadataValue.json(decision.get("ranking", {})),
            }
        )
        yield model_quality.promotion_gate_check(decision, name)

    return promoted_model


# --- inference per cell ------------------------------------------------------------------------


def promoted_model_id(warehouse: Warehouse, task: str) -> str:
    if warehouse.table_exists("model_registry"):
        found = warehouse.query("SELECT model_id FROM model_registry WHERE task = ? AND promoted", [task])
        if len(found):
            return str(found["model_id"].iloc[0])
    raise dg.Failure(
        description=f"no promoted {task.upper()} model yet: run train_models_job (or materialize promoted_{task}_model) first"
    )


def score_cell(task: str, features: pd.DataFrame, labels: pd.DataFrame, sidecar: dict, estimator) -> tuple[pd.DataFrame, dict]:
    """Predictions with intervals for every cycle of one cell, and how many values the physical
    range clipped ("prediction", "lower", "upper")."""
    keys, X = scoring_table(task, features, labels, sidecar["feature_columns"])
    table = TrainingTable(
        task, TARGETS[task], X, keys["truth"], keys["cell_id"], keys["cycle_number"], tuple(sidecar["feature_columns"])
    )
    scored = scored_on(estimator, table)
    prediction, lower, upper = scored.prediction, scored.lower, scored.upper
    split_of_cell = {cell: name for name, cells in sidecar["cells"].items() for cell in cells}
    out = pd.DataFrame(
        {
            "cell_id": keys["cell_id"],
            "cycle_number": keys["cycle_number"],
            "truth": keys["truth"],
            "prediction": prediction,
            "lower": lower,
            "upper": upper,
            "model_id": sidecar["model_id"],
            "split": keys["cell_id"].map(split_of_cell).fillna("unseen"),
        }
    )
    if task == "rul":
        out["predicted_eol_cycle"] = out["cycle_number"] + out["prediction"]
    return out, scored.clipped


def _predictions_asset(task: str):
    name = f"{task}_predictions"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)  # backfill_policy: beta in dagster 1.13, relied on knowingly
        decorator = dg.asset(
            name=name,
            deps=["cycle_features", "cycle_labels", f"promoted_{task}_model"],
            partitions_def=cell_partitions,
            group_name=PREDICTIONS_GROUP,
            pool=WAREHOUSE_POOL,
            kinds={"duckdb"},
            # a rescoring of every cell after a promotion, or a burst of new cells: one run
            backfill_policy=dg.BackfillPolicy.single_run(),
            # materializations are yielded per cell partition, not as the step's output
            output_required=False,
            description=(
                f"The promoted {task.upper()} model on every cycle of the cell: prediction, interval, truth where "
                "known, model id, and the cell's split for that model (unseen: arrived after training)."
            ),
        )

    @decorator
    def predictions(context: dg.AssetExecutionContext, warehouse: Warehouse, model_store: ModelStore):
        model_id = promoted_model_id(warehouse, task)
        sidecar = model_store.sidecar(model_id)
        estimator = model_store.load(model_id)
        keys = list(context.partition_keys)
        with warehouse.session():
            features = warehouse.read_partitions("cycle_features", "cell_id", keys)
            labels = warehouse.read_partitions("cycle_labels", "cell_id", keys)
            scored_cells, described = [], []
            for key in keys:
                try:
                    scored, clipped = score_cell(task, features.get(key), labels.get(key), sidecar, estimator)
                except Exception as exc:
                    if sidecar["code_version"] == code_version():
                        raise
                    # A pickled model can break when the code that defined it changed: say so, and how to fix it.
                    raise dg.Failure(
                        description=(
                            f"promoted model {model_id} was trained with {sidecar['code_version']} and cannot score with "
                            f"{code_version()} ({type(exc).__name__}: {exc}); retrain with train_models_job"
                        )
                    ) from exc
                scored_cells.append(scored)
                described.append((key, scored, clipped))
            warehouse.replace_partitions({name: pd.concat(scored_cells, ignore_index=True)}, "cell_id", keys)
        for key, scored, clipped in described:
            known = scored["truth"].notna()
            error = np.sqrt(np.mean((scored.loc[known, "truth"] - scored.loc[known, "prediction"]) ** 2)) if known.any() else math.nan
            yield dg.AssetMaterialization(
                name,
                partition=key,
                metadata={
                    "dagster/row_count": len(scored),
                    "model_id": model_id,
                    "split": str(scored["split"].iloc[0]) if len(scored) else "none",
                    "rmse_where_truth_known": float(error),
                    "clipped_to_physical_range": dg.MetadataValue.json({"range": describe_range(task), **clipped}),
                    "last_prediction": float(scored["prediction"].iloc[-1]) if len(scored) else math.nan,
                },
            )

    return predictions


training_sets = [_training_set_asset(task) for task in TASKS]
trained_models = [_model_asset(task, name) for task in TASKS for name in estimator_names(task)]
promotions = [_promotion_asset(task) for task in TASKS]
predictions = [_predictions_asset(task) for task in TASKS]
