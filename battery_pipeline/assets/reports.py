"""Reports: the metrics report of every current model against the dummy, and a model card per
model, both generated from what the run recorded (registry, sidecars, stored predictions).

* `model_metrics_report`: per task a comparison table (cross-validated error over the training
  cells, which ranks models for promotion, validation and test error, test metrics, times better
  than the dummy, interval coverage and width, predictions clipped to the physical range) and plots (predicted vs true per
  model, the promoted model's error by cycle, RUL trajectories of the test cells); written to
  `results/soh_results.json` and `results/rul_results.json` for auditing.
* `model_cards`: markdown per current model in `reports/model_cards/<model asset>.md`, the
  promoted models' cards also in the asset metadata. The "Checks" section re-runs the same check
  functions as the assets on the recorded facts, plus the promotion log.
"""

import json
import math
from datetime import datetime, timezone

import dagster as dg
import numpy as np
import pandas as pd

from battery_pipeline.assets.models import ERROR_METRIC, TASKS
from battery_pipeline.assets.plots import error_by_cycle_plot, predicted_vs_true_plot, rul_trajectories_plot
from battery_pipeline.checks import model_quality
from battery_pipeline.checks.governance import check_spec
from battery_pipeline.resources import WAREHOUSE_POOL, ModelStore, Warehouse
from battery_pipeline.science.ml.bounds import describe_range

REPORTS_GROUP = "reports"
UNITS = {"soh": "SOH", "rul": "cycles"}
# The test metrics in the comparison table, per task (all of them go to the JSON).
TABLE_METRICS = {
    "soh": ["rmse", "mae", "r2", "mape_percent", "max_error", "within_3_points", "within_5_points"],
    "rul": ["rmse_cycles", "mae_cycles", "mape_percent", "within_15_percent", "early_rate", "late_rate"],
}
CARD_SECTIONS = ("Model details", "Intended use", "Data", "Features", "Metrics", "Limitations", "Checks")
INTENDED_USE = {
    "soh": (
        "Estimate the state of health (discharge capacity over the reference capacity) of a cycle from "
        "what is measured before and around it without a full discharge: charge-side capacities and "
        "times, charge-curve statistics, temperatures, resistances. For cells like the training cells "
        "(chemistries, datasets and test protocols listed under Data); a screening estimate beside, not "
        "instead of, a capacity check-up."
    ),
    "rul": (
        "Forecast the cycles remaining until end of life (labels: data/label_settings.json) from a cell's "
        "history up to the current cycle, under the same kind of cycling as the training cells. For "
        "planning tests and replacements with the interval, never the point forecast alone."
    ),
}


def current_records(warehouse: Warehouse, model_store: ModelStore, task: str) -> list[dict]:
    """Sidecars of the task's current models, with `promoted` from the registry."""
    if not warehouse.table_exists("model_registry"):
        raise dg.Failure(description="model_registry is not materialized yet: train the models first")
    rows = warehouse.query(
        "SELECT model_id, promoted FROM model_registry WHERE task = ? AND current ORDER BY model_name", [task]
    )
    return [{**model_store.sidecar(r.model_id), "promoted": bool(r.promoted)} for r in rows.itertuples()]


def comparison_table(records: list[dict], task: str) -> pd.DataFrame:
    error = ERROR_METRIC[task]
    rows = []
    for r in records:
        test = r["metrics"]["test"]
        # each model's own dummy: fitted in the same run on the same train cells
        dummy_error = r["dummy_metrics"]["test"].get(error, math.nan)
        rows.append(
            {
                "model": r["model_name"] + (" (promoted)" if r["promoted"] else ""),
                f"cv {error}": r.get("cv_error", math.nan),
                f"validation {error}": r["metrics"]["validation"].get(error, math.nan),
                **{f"test {m}": test.get(m, math.nan) for m in TABLE_METRICS[task]},
                "x better than dummy": dummy_error / test[error] if test.get(error) else math.nan,
                "coverage": test.get("coverage", math.nan),
                "nominal": r["interval_nominal_coverage"],
                "interval width": test.get("mean_interval_width", math.nan),
                "clipped": r.get("clipped", {}).get("prediction", math.nan),
            }
        )
    return pd.DataFrame(rows)


def results_payload(records: list[dict], task: str) -> dict:
    promoted = next((r["model_id"] for r in records if r["promoted"]), None)
    keep = ("model_name", "model_id", "estimator", "hyperparameters", "data_hash", "code_version", "seed",
            "cells", "rows", "cv_error", "cross_validation", "test_error_95ci", "interval_nominal_coverage",
            "physical_range", "clipped", "created_at")
    return {
        "task": task,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "error_metric": ERROR_METRIC[task],
        "ranked_by": "cv_error: the error metric over out-of-fold predictions of the training cells",
        "physical_range": describe_range(task),
        "promoted_model_id": promoted,
        "models": [
            {**{k: r.get(k) for k in keep}, **r["metrics"], "cv": r.get("cv_metrics", {}),
             "dummy_test": r["dummy_metrics"]["test"]}
            for r in records
        ],
    }


def _json_safe(value):
    """NaN and infinity are not JSON: null, so every JSON reader can load the audit files."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dg.asset(
    deps=["model_registry", "promoted_soh_model", "promoted_rul_model"],
    group_name=REPORTS_GROUP,
    pool=WAREHOUSE_POOL,
    kinds={"duckdb", "json"},
    description=(
        "Every current model against the dummy per task: cross-validated (ranks for promotion), "
        "validation and test metrics, interval coverage, clipped predictions, plots; also "
        "results/soh_results.json and results/rul_results.json."
    ),
)
def model_metrics_report(context: dg.AssetExecutionContext, warehouse: Warehouse, model_store: ModelStore):
    metadata = {}
    for task in TASKS:
        records = current_records(warehouse, model_store, task)
        if not records:
            context.log.warning(f"no current {task} models: nothing to report")
            continue
        path = model_store.write_result(f"{task}_results.json", _json_safe(results_payload(records, task)))
        table = comparison_table(records, task)
        metadata[f"{task}_results_file"] = dg.MetadataValue.path(str(path))
        metadata[f"{task}_comparison"] = dg.MetadataValue.md(table.round(4).to_markdown(index=False))
        ids = [r["model_id"] for r in records]
        predictions = warehouse.query(
            "SELECT * FROM model_predictions WHERE model_id IN (SELECT unnest(?)) AND split = 'test'", [ids]
        )
        if predictions.empty:
            continue
        metadata[f"{task}_predicted_vs_true"] = predicted_vs_true_plot(
            predictions, f"{task.upper()}: test cells, every model", UNITS[task]
        )
        promoted = next((r for r in records if r["promoted"]), None)
        if promoted is not None:
            rows = predictions[predictions["model_id"] == promoted["model_id"]]
            metadata[f"{task}_error_by_cycle"] = error_by_cycle_plot(
                rows, f"{task.upper()} error by cycle: {promoted['model_name']}", UNITS[task]
            )
            if task == "rul":
                metadata["rul_trajectories"] = rul_trajectories_plot(rows, f"RUL on test cells: {promoted['model_name']}")
    return dg.MaterializeResult(metadata=metadata)


# --- model cards -------------------------------------------------------------------------------


def card_sections(record: dict, cells: pd.DataFrame, promotions: pd.DataFrame) -> dict[str, str]:
    """The card's sections as markdown (keys `CARD_SECTIONS`), from the model's record only."""
    task, error = record["task"], record["error_metric"]
    all_cells = sorted({c for split in record["cells"].values() for c in split})
    facts = cells.reindex(columns=["cell_id", "dataset", "chemistry", "licence", "citation"])
    facts = facts[facts["cell_id"].astype(str).isin(all_cells)]
    details = "\n".join(
        f"- **{k}**: {v}"
        for k, v in (
            ("model id", f"`{record['model_id']}`"),
            ("asset", f"`{record['model_name']}`"),
            ("task", f"{task.upper()} (target `{record['target']}`)"),
            ("estimator", f"{record['estimator']} ({record['estimator_class']}): {record['description']}"),
            ("hyperparameters", f"`{json.dumps(record['hyperparameters'], sort_keys=True)}`"),
            ("seed", record["seed"]),
            ("code version", f"`{record['code_version']}`"),
            ("training data hash", f"`{record['data_hash']}`"),
            ("created at", record["created_at"]),
            ("promoted", "yes" if record.get("promoted") else "no"),
        )
    )
    split_lines = []
    for name in ("train", "validation", "test"):
        ids = record["cells"][name]
        split_lines.append(f"| {name} | {len(ids)} | {record['rows'][name]} | {', '.join(ids) or '-'} |")
    data = ["| split | cells | cycles | cell ids |", "|---|---|---|---|", *split_lines, ""]
    references = record.get("soh_reference_cells")
    if references:
        data.append("SOH reference of the cells (nominal: the rated capacity; initial: relative to the cell's own "
                    "initial capacity, no trustworthy rating known): " + "; ".join(
                        f"{split} " + (", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) or "-")
                        for split, kinds in references.items()) + ".")
        data.append("")
    if len(facts):
        described = facts.groupby(["dataset", "chemistry"], dropna=False).size().reset_index(name="cells")
        data.append("Datasets and chemistries: " + "; ".join(
            f"{r.dataset} {r.chemistry} ({r.cells} cells)" for r in described.itertuples()
        ) + ".")
        licences = facts[["dataset", "licence", "citation"]].drop_duplicates()
        data += ["", "Licences and citations:"] + [
            f"- {r.dataset}: {r.licence or 'licence not stated'}; {r.citation or 'no citation given'}" for r in licences.itertuples()
        ]
    else:
        data.append("The `cells` table has no record of these cells: datasets and licences unknown.")
    metric_names = sorted({m for split in record["metrics"].values() for m in split if m != "n"})
    metrics = [
        "| metric | train | cross-validated (train cells, out of fold) | validation | test | dummy (test) |",
        "|---|---|---|---|---|---|",
    ]
    for m in metric_names:
        values = [record["metrics"]["train"].get(m, math.nan), record.get("cv_metrics", {}).get(m, math.nan)]
        values += [record["metrics"][s].get(m, math.nan) for s in ("validation", "test")]
        values.append(record["dummy_metrics"]["test"].get(m, math.nan))
        metrics.append(f"| {m} | " + " | ".join(f"{v:.4g}" for v in values) + " |")
    low, high = record["test_error_95ci"]
    metrics.append("")
    metrics.append(
        f"Test {error} 95 % interval over resampled test cells: "
        + (f"[{low:.4g}, {high:.4g}]." if np.isfinite([low, high]).all() else "not available (fewer than 2 test cells).")
    )
    metrics.append(
        f"Prediction intervals: nominal coverage {record['interval_nominal_coverage']:.0%}, "
        f"achieved on test cells {record['metrics']['test'].get('coverage', math.nan):.1%}"
        + _calibration_text(record)
    )
    metrics += _cross_validation_lines(record) + _clipping_lines(record)
    checks = _card_checks(record, promotions)
    return {
        "Model details": details,
        "Intended use": INTENDED_USE[task],
        "Data": "\n".join(data),
        "Features": f"{len(record['feature_columns'])} columns: " + ", ".join(f"`{c}`" for c in record["feature_columns"]),
        "Metrics": "\n".join(metrics),
        "Limitations": "\n".join(f"- {line}" for line in _limitations(record, facts)),
        "Checks": "\n".join(f"- {'passed' if ok else 'FAILED'}: {name}: {text}" for name, ok, text in checks),
    }


def _limitations(record: dict, facts: pd.DataFrame) -> list[str]:
    error = record["error_metric"]
    test = record["metrics"]["test"]
    lines = [
        f"Trained on {len(record['cells']['train'])} cells; accuracy on a new cell is estimated from "
        f"{len(record['cells']['test'])} test cells, so it is uncertain (see the interval above).",
    ]
    if len(facts):
        lines.append(
            "Only seen: chemistries " + ", ".join(sorted(facts["chemistry"].dropna().astype(str).unique()))
            + "; datasets " + ", ".join(sorted(facts["dataset"].dropna().astype(str).unique()))
            + ". Other chemistries, temperatures or protocols are extrapolation."
        )
    coverage, nominal = test.get("coverage", math.nan), record["interval_nominal_coverage"]
    if math.isfinite(coverage) and coverage < nominal - 0.05:
        lines.append(f"Intervals under-cover on the test cells ({coverage:.0%} vs nominal {nominal:.0%}): widen before relying on them.")
    dummy = record["dummy_metrics"]["test"].get(error, math.nan)
    if not test.get(error, math.nan) < dummy:
        lines.append("Does not beat the dummy baseline on the test cells: not fit for use.")
    if record["task"] == "rul":
        lines.append("RUL labels exist only for cells that reached end of life; censored cells are scored, never trained on.")
    return lines


def _cross_validation_lines(record: dict) -> list[str]:
    """What ranks the model for promotion (records from before cv_error: nothing)."""
    cv = record.get("cross_validation")
    if not cv:
        return []
    return [
        f"Cross-validated {record['error_metric']} {record['cv_error']:.4g}: each of {cv['cells']} training cells "
        f"scored by a model fitted without it ({cv['folds']} folds of cells, the folds of the cross-conformal "
        "intervals). This error ranks the models for promotion."
    ]


def _clipping_lines(record: dict) -> list[str]:
    """How many predictions the physical range clipped (records from before clipping: nothing)."""
    clipped = record.get("clipped")
    if not clipped:
        return []
    return [
        f"Predictions and interval bounds are clipped to the physical range {describe_range(record['task'])}: "
        f"{clipped['prediction']} of {clipped['rows']} predictions, {clipped['lower']} lower and "
        f"{clipped['upper']} upper bounds were outside it."
    ]


def _calibration_text(record: dict) -> str:
    """How the intervals were calibrated (records from before this field: nothing)."""
    calibration = record.get("interval_calibration")
    if not calibration:
        return "."
    cells = calibration.get("cells")
    return f"; {calibration['scheme']}" + (f", scores of {len(cells)} cells ({', '.join(cells)})." if cells else ".")


def _card_checks(record: dict, promotions: pd.DataFrame) -> list[tuple[str, bool, str]]:
    name, task, error = record["model_name"], record["task"], record["error_metric"]
    split_rows = pd.DataFrame(
        [{"cell_id": c, "split": s} for s, cells in record["cells"].items() for c in cells], columns=["cell_id", "split"]
    )
    results = [
        model_quality.split_disjoint_check(split_rows, name),
        model_quality.no_feature_leakage_check(task, record["feature_columns"], name),
        model_quality.interval_coverage_check(record["metrics"]["test"].get("coverage", math.nan), record["interval_nominal_coverage"], name),
    ]
    if record["estimator"] != "dummy":
        results.append(model_quality.beats_dummy_check(
            record["metrics"]["test"].get(error, math.nan), record["dummy_metrics"]["test"].get(error, math.nan), error, name
        ))
    out = [(r.check_name, r.passed, r.description or "") for r in results]
    if len(promotions):
        mine = promotions[promotions["candidate_model_id"] == record["model_id"]]
        if len(mine):
            last = mine.sort_values("decided_at").iloc[-1]
            out.append(("promotion_gate", bool(last["passed"]), str(last["reasons"])))
    return out


def render_card(record: dict, sections: dict[str, str]) -> str:
    title = f"# Model card: {record['model_name']}"
    return "\n\n".join([title, *(f"## {name}\n\n{sections[name]}" for name in CARD_SECTIONS)]) + "\n"


@dg.asset(
    deps=["model_registry", "promoted_soh_model", "promoted_rul_model"],
    group_name=REPORTS_GROUP,
    pool=WAREHOUSE_POOL,
    kinds={"markdown"},
    description="A model card per current model (reports/model_cards/), generated from what the run recorded.",
    check_specs=[check_spec("model_card_complete", "model_cards")],
)
def model_cards(context: dg.AssetExecutionContext, warehouse: Warehouse, model_store: ModelStore):
    cells = warehouse.query("SELECT * FROM cells") if warehouse.table_exists("cells") else pd.DataFrame()
    promotions = warehouse.query("SELECT * FROM model_promotions") if warehouse.table_exists("model_promotions") else pd.DataFrame()
    sections_by_model, metadata = {}, {}
    for task in TASKS:
        for record in current_records(warehouse, model_store, task):
            sections = card_sections(record, cells, promotions)
            sections_by_model[record["model_name"]] = sections
            path = model_store.write_report(f"model_cards/{record['model_name']}.md", render_card(record, sections))
            if record["promoted"]:
                metadata[f"promoted_{task}_card"] = dg.MetadataValue.md(render_card(record, sections))
                metadata[f"promoted_{task}_card_file"] = dg.MetadataValue.path(str(path))
    metadata["cards"] = len(sections_by_model)
    yield dg.MaterializeResult(metadata=metadata)
    yield model_quality.model_card_complete_check(sections_by_model, CARD_SECTIONS, "model_cards")

