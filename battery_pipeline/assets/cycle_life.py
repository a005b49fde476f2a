"""Early-life cycle life (Severson et al. 2019): a cohort -> frozen models -> every cell scored.

The science is `science.ml.cycle_life` and `science.ml.severson`; here we pick the cohort from
the warehouse, store, record and check.

* `cycle_life_training_set`: the cohort's cells (`CycleLifeConfig.cohort_pattern` on cell ids:
  Severson's 41 training cells by default), one row each: the Severson features of cycles
  <= `late_cycle` (100) and the cell's cycle life with where it came from (the life its source
  states, else the labels' end of life). A cohort cell without delta-Q at cycle `late_cycle`, or
  whose life is not beyond it, is left out and named. Fewer than 5 cells: not materialized, the
  reason observed (the run succeeds).
* `cycle_life_models`: each Severson feature set the cohort has fitted on every cohort cell and
  frozen (`fit_frozen`): the model changes only when the cohort's data or the code change, never
  because other cells arrived. Training RMSE against the paper's Table 1, leave-one-cell-out RMSE
  against the dummy's, a jackknife interval. Artifacts in the model store, figures in
  `results/cycle_life_results.json`, the card in `reports/cycle_life_model_card.md`.
* `cycle_life_predictions`: every cell with delta-Q at cycle `late_cycle` scored by the model of
  lowest leave-one-out error, with its interval, whether the cell was in the cohort (then the
  figure is in-sample), and whether it lies inside the model's domain (chemistry, rated
  capacity, feature range), is extrapolated, or lies outside it (another stated chemistry or
  capacity: no figure), with the reason. Cells with fewer cycles are listed, not scored.
  Automated (`automation.CYCLE_LIFE_CONDITION`): rematerialized when a cell's features change or
  the models are refitted, once the models exist.
"""


import hashlib
import json
import re
from datetime import datetime, timezone

import dagster as dg
import numpy as np
import pandas as pd

from battery_pipeline.checks import model_quality
from battery_pipeline.checks.governance import check_spec
from battery_pipeline.checks.outcomes import not_evaluated
from battery_pipeline.provenance import code_version
from battery_pipeline.resources import WAREHOUSE_POOL, ModelStore, Warehouse
from battery_pipeline.science.ml.datasets import TrainingTable, cycle_lives

# The models' modules import scikit-learn, which loading the definitions must not (the UI and
# every run import them): imported where a step needs them.

CYCLE_LIFE_GROUP = "cycle_life"
TRAINING_SET = "cycle_life_training_set"
MODELS = "cycle_life_models"
PREDICTIONS = "cycle_life_predictions"
RESULTS_FILE = "cycle_life_results.json"
CARD_FILE = "cycle_life_model_card.md"
FEATURE_SETS = ("variance", "discharge", "full")  # severson.SEVERSON_FEATURE_SETS (a test checks)
MIN_COHORT_CELLS = 5  # cycle_life.MIN_COHORT_CELLS (a test checks)


class CycleLifeConfig(dg.Config):
    # the cells the frozen models are fitted on (a regular expression on cell ids)
    cohort_pattern: str = r"^severson_train_"
    late_cycle: int = 100
    coverage: float = 0.9  # of the jackknife interval


def _early_features(warehouse: Warehouse, late_cycle: int) -> pd.DataFrame:
    if not warehouse.table_exists("cycle_features"):
        raise dg.Failure(description="table cycle_features does not exist yet: run cell_pipeline_job for some cells first")
    # only cycles up to the late cycle are ever read: nothing later can leak into a prediction
    return warehouse.query("SELECT * FROM cycle_features WHERE cycle_number <= ? ORDER BY cell_id, cycle_number", [late_cycle])


def _table(warehouse: Warehouse, name: str) -> pd.DataFrame:
    if not warehouse.table_exists(name):
        raise dg.Failure(description=f"table {name} does not exist yet: run cell_pipeline_job for some cells first")
    return warehouse.query(f"SELECT * FROM {name}")


def cohort_rows(features: pd.DataFrame, labels: pd.DataFrame, cells: pd.DataFrame, config: CycleLifeConfig) -> tuple[pd.DataFrame, dict[str, str]]:
    """(one row per usable cohort cell, {left-out cohort cell: why})."""
    from battery_pipeline.science.ml.severson import severson_features

    pattern = re.compile(config.cohort_pattern)
    members = sorted(c for c in cells["cell_id"].astype(str) if pattern.search(c))
    per_cell = severson_features(features, late_cycle=config.late_cycle)
    lives = cycle_lives(labels, cells)
    left_out, keep = {}, []
    for cell in members:
        if cell not in per_cell.index or per_cell.loc[cell, "delta_q_cycle"] != config.late_cycle:
            have = per_cell.loc[cell, "delta_q_cycle"] if cell in per_cell.index else None
            left_out[cell] = f"no delta-Q at cycle {config.late_cycle} (latest: {have if have == have else 'none'})"
        elif cell not in lives.index:
            left_out[cell] = "no cycle life: none stated, and the labels found no end of life"
        elif lives.loc[cell, "cycle_life"] <= config.late_cycle:
            left_out[cell] = f"cycle life {lives.loc[cell, 'cycle_life']:.0f} is not beyond cycle {config.late_cycle}: nothing to predict early"
        else:
            keep.append(cell)
    rows = per_cell.loc[keep].join(lives, how="inner").reset_index()
    return rows, left_out


def life_source_counts(sources: pd.Series) -> dict[str, int]:
    """Cells per kind of cycle-life source (a lives file, not each of its lines)."""
    return sources.str.split(" line ").str[0].value_counts().to_dict()


def training_table(rows: pd.DataFrame) -> TrainingTable:
    """The stored training set as the table `fit_frozen` takes."""
    from battery_pipeline.science.ml.severson import SEVERSON_FEATURE_COLUMNS

    return TrainingTable(
        task="cycle_life",
        target="cycle_life",
        X=rows[SEVERSON_FEATURE_COLUMNS].astype(np.float64).reset_index(drop=True),
        y=rows["cycle_life"].astype(np.float64).reset_index(drop=True),
        cell_id=rows["cell_id"].astype(str).reset_index(drop=True),
        cycle_number=rows["delta_q_cycle"].astype(np.int64).reset_index(drop=True),
        feature_columns=tuple(SEVERSON_FEATURE_COLUMNS),
    )


@dg.asset(
    name=TRAINING_SET,
    deps=["cells", "cycle_features", "cycle_labels"],
    group_name=CYCLE_LIFE_GROUP,
    pool=WAREHOUSE_POOL,
    kinds={"duckdb", "pandas"},
    description=(
        "The cohort the frozen cycle-life models are fitted on (Severson's training cells by default): per cell the "
        "Severson features of its first 100 cycles and its cycle life, with where the life came from."
    ),
    check_specs=[check_spec("cycle_life_no_leakage", TRAINING_SET)],
    output_required=False,
)
def cycle_life_training_set(context: dg.AssetExecutionContext, config: CycleLifeConfig, warehouse: Warehouse):
    from battery_pipeline.science.ml.severson import SEVERSON_FEATURE_COLUMNS

    features = _early_features(warehouse, config.late_cycle)
    rows, left_out = cohort_rows(features, _table(warehouse, "cycle_labels"), _table(warehouse, "cells"), config)
    if len(rows) < MIN_COHORT_CELLS:
        reason = (
            f"cycle-life training skipped: {len(rows)} usable cell(s) match the cohort pattern {config.cohort_pattern!r} "
            f"(needs {MIN_COHORT_CELLS}); left out: {dict(list(left_out.items())[:5]) or 'none'}"
        )
        context.log.warning(reason)
        yield dg.AssetObservation(asset_key=TRAINING_SET, metadata={"skipped": reason})
        yield not_evaluated("cycle_life_no_leakage", TRAINING_SET, reason)
        return
    stored = rows[["cell_id", "cycle_life", "cycle_life_source", "delta_q_cycle", "n_cycles", *SEVERSON_FEATURE_COLUMNS]]
    warehouse.replace_table(TRAINING_SET, stored)
    table = training_table(stored)
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(stored),
            "cohort_pattern": config.cohort_pattern,
            "late_cycle": config.late_cycle,
            "data_hash": table.data_hash(),
            "life_sources": dg.MetadataValue.json(life_source_counts(stored["cycle_life_source"])),
            "left_out": dg.MetadataValue.json(left_out),
            "cycle_life_range": f"{stored['cycle_life'].min():.0f}-{stored['cycle_life'].max():.0f} cycles",
        }
    )
    yield model_quality.cycle_life_no_leakage_check(stored, config.late_cycle, TRAINING_SET)


def model_id_for(feature_set: str, data_hash: str, coverage: float) -> str:
    identity = json.dumps(["cycle_life", feature_set, data_hash, coverage, code_version()], sort_keys=True)
    return f"cycle_life-severson_{feature_set}-{hashlib.sha256(identity.encode()).hexdigest()[:12]}"


def card_markdown(records: list[dict], skipped: dict[str, str], cohort: dict) -> str:
    """The model card of the frozen cycle-life models: every section from the records."""
    lines = ["# Model card: early-life cycle life (Severson et al. 2019 models, frozen)", ""]
    lines += ["## Intended use",
              "Predict a cell's cycle life (cycles to its end of life, as its cohort defines it) from its first "
              f"{cohort['late_cycle']} cycles, with an interval; for cells like the cohort's (see the domain below).", ""]
    lines += ["## Training data",
              f"{cohort['cells']} cells matching `{cohort['pattern']}`; cycle lives {cohort['life_range']} "
              f"({'; '.join(f'{k}: {v}' for k, v in cohort['life_sources'].items())}); data hash `{cohort['data_hash']}`.", ""]
    lines += ["## Domain",
              f"Chemistry {', '.join(cohort['domain']['chemistry']) or 'not stated'}; rated capacity "
              f"{', '.join(f'{c:g} Ah' for c in cohort['domain']['nominal_capacity_ah']) or 'not stated'}. A cell whose "
              "chemistry or capacity is not stated, or with a feature beyond the cohort's range (+-10 %), is scored and marked "
              "extrapolated; a cell of another stated chemistry or capacity is outside the domain and gets no figure.", ""]
    lines += ["## Metrics (cycles)", "| model | training RMSE | paper (Table 1) | leave-one-cell-out RMSE | dummy, leave-one-out | interval | held-out coverage |",
              "|---|---|---|---|---|---|---|"]
    for r in records:
        s = r["summary"]
        paper = f"{s['paper_train_rmse_cycles']:.0f} ({s['train_rmse_vs_paper']:+.1%})" if s["paper_train_rmse_cycles"] else "-"
        lines.append(f"| {r['feature_set']} (`{r['model_id']}`) | {s['train_rmse_cycles']:.1f} | {paper} | {s['loo_rmse_cycles']:.1f} | "
                     f"{s['dummy_loo_rmse_cycles']:.1f} | x/ {s['interval_factor']:.3f} ({s['interval_coverage_target']:.0%}) | {s['loo_interval_coverage']:.1%} |")
    for name, why in skipped.items():
        lines.append(f"| {name} | not fitted: {why} | | | | | |")
    lines += ["", "## Method",
              "Elastic net on log10(cycle life) (scikit-learn ElasticNetCV, its penalty chosen by 4-fold cross-validation over "
              "the cohort), features of Severson et al.: delta-Q = Q_100(V) - Q_10(V) statistics (log10), capacity features; "
              "fitted once on every cohort cell and frozen. Errors are measured by leave-one-cell-out refits; the interval is the "
              "jackknife's: prediction x/ 10^h, h the ceil((n+1)q)-th smallest held-out |log10 error|.", ""]
    lines += ["## Limitations",
              "The training RMSE is in-sample (it is the paper's figure); expect the leave-one-out figure or worse on new cells, "
              "more on another protocol or lab. Capacity features need the cell's discharge to its cut-off at the cohort's rate.", ""]
    return "\n".join(lines) + "\n"


@dg.asset(
    name=MODELS,
    deps=[TRAINING_SET],
    group_name=CYCLE_LIFE_GROUP,
    pool=WAREHOUSE_POOL,
    kinds={"scikit-learn"},
    description="The Severson variance / discharge / full models fitted on the cohort and frozen; errors held out, against the paper and the dummy.",
    check_specs=[
        check_spec("cycle_life_beats_dummy", MODELS),
        check_spec("cycle_life_matches_paper", MODELS),
        check_spec("cycle_life_card_complete", MODELS),
    ],
)
def cycle_life_models(context: dg.AssetExecutionContext, config: CycleLifeConfig, warehouse: Warehouse, model_store: ModelStore):
    from battery_pipeline.science.ml import cycle_life

    if not warehouse.table_exists(TRAINING_SET):
        raise dg.Failure(description=f"{TRAINING_SET} is not materialized yet (too few cohort cells?)")
    stored = warehouse.query(f"SELECT * FROM {TRAINING_SET} ORDER BY cell_id")
    table = training_table(stored)
    cells = _table(warehouse, "cells")
    cohort_cells = cells[cells["cell_id"].astype(str).isin(table.cell_id)]
    domain = cycle_life.cohort_domain(cohort_cells)
    data_hash = table.data_hash()
    records, skipped = [], {}
    for feature_set in FEATURE_SETS:
        missing = cycle_life.missing_features(table, feature_set)
        if missing:
            skipped[feature_set] = f"no cohort cell has {', '.join(missing)}"
            continue
        fit = cycle_life.fit_frozen(table, feature_set, coverage=config.coverage)
        model_id = model_id_for(feature_set, data_hash, config.coverage)
        record = {
            "model_id": model_id,
            "feature_set": feature_set,
            "data_hash": data_hash,
            "code_version": code_version(),
            "trained_at": datetime.now(timezone.utc).isoformat(),
            "cohort_pattern": config.cohort_pattern,
            "late_cycle": config.late_cycle,
            "cells": fit.cells,
            "summary": fit.summary(),
            "feature_range": fit.feature_range,
            "domain": domain,
            "log_halfwidth": fit.log_halfwidth,
        }
        model_store.save(model_id, fit.model, record)
        model_store.set_current(f"cycle_life_{feature_set}", model_id)
        records.append(record)
    if not records:
        raise dg.Failure(description=f"no cycle-life model could be fitted: {skipped}")
    cohort = {
        "cells": len(table.y), "pattern": config.cohort_pattern, "late_cycle": config.late_cycle, "data_hash": data_hash,
        "life_range": f"{table.y.min():.0f}-{table.y.max():.0f} cycles", "domain": domain,
        "life_sources": life_source_counts(stored["cycle_life_source"]), "cell_ids": table.cell_id.tolist(),
        "datasets": sorted({str(d) for d in cohort_cells["dataset"].dropna()}),
    }
    payload = {"task": "cycle_life", "reference": cycle_life.PAPER_REFERENCE, "cohort": cohort, "models": records, "not_fitted": skipped}
    results_path = model_store.write_result(RESULTS_FILE, payload)
    card = card_markdown(records, skipped, cohort)
    card_path = model_store.write_report(CARD_FILE, card)
    best = min(records, key=lambda r: r["summary"]["loo_rmse_cycles"])
    yield dg.MaterializeResult(
        metadata={
            "models": dg.MetadataValue.json({r["feature_set"]: r["model_id"] for r in records}),
            "scoring_model": best["model_id"],
            "figures": dg.MetadataValue.json({r["feature_set"]: r["summary"] for r in records}),
            "not_fitted": dg.MetadataValue.json(skipped),
            "results": dg.MetadataValue.path(str(results_path)),
            "model_card": dg.MetadataValue.md(card),
            "model_card_path": dg.MetadataValue.path(str(card_path)),
            "data_hash": data_hash,
        }
    )
    yield model_quality.cycle_life_beats_dummy_check(records, MODELS)
    yield model_quality.cycle_life_matches_paper_check(records, cohort, MODELS)
    yield model_quality.cycle_life_card_complete_check(card, MODELS)


def best_record(model_store: ModelStore) -> dict:
    records = []
    for feature_set in FEATURE_SETS:
        model_id = model_store.current(f"cycle_life_{feature_set}")
        if model_id and model_store.has(model_id):
            records.append(model_store.sidecar(model_id))
    if not records:
        raise dg.Failure(description=f"no cycle-life model in {model_store.models_dir}: materialize {MODELS} first")
    return min(records, key=lambda r: r["summary"]["loo_rmse_cycles"])


@dg.asset(
    name=PREDICTIONS,
    deps=[MODELS, "cells", "cycle_features", "cycle_labels"],
    group_name=CYCLE_LIFE_GROUP,
    pool=WAREHOUSE_POOL,
    kinds={"duckdb", "scikit-learn"},
    description="Every cell with delta-Q at cycle 100 scored by the frozen cycle-life model: life, interval, cohort or unseen, inside the model's domain, extrapolated, or outside it (no figure), with why.",
    check_specs=[check_spec("cycle_life_in_domain", PREDICTIONS)],
)
def cycle_life_predictions(context: dg.AssetExecutionContext, warehouse: Warehouse, model_store: ModelStore):
    from battery_pipeline.science.ml import cycle_life
    from battery_pipeline.science.ml.severson import severson_features

    record = best_record(model_store)
    model = model_store.load(record["model_id"])
    late = int(record["late_cycle"])
    per_cell = severson_features(_early_features(warehouse, late), late_cycle=late)
    cells = _table(warehouse, "cells").assign(cell_id=lambda f: f["cell_id"].astype(str)).set_index("cell_id")
    lives = cycle_lives(_table(warehouse, "cycle_labels"), cells.reset_index())
    scored = per_cell[per_cell["delta_q_cycle"] == late]
    not_scored = {c: f"delta-Q only up to cycle {v if v == v else 'none'} (needs {late})" for c, v in per_cell.loc[per_cell["delta_q_cycle"] != late, "delta_q_cycle"].items()}
    feature_range = {k: tuple(v) for k, v in record["feature_range"].items()}
    rows = []
    prediction = model.predict(scored) if len(scored) else np.zeros(0)
    lower, upper = cycle_life.interval(prediction, float(record["log_halfwidth"]))
    cohort = set(record["cells"])
    for i, cell in enumerate(scored.index):
        status, why = cycle_life.applicability(scored.loc[cell], cells.loc[cell] if cell in cells.index else None, feature_range, record["domain"])
        known = lives.loc[cell] if cell in lives.index else None
        given = status != "outside"  # a figure for another chemistry or capacity would be a number, not a prediction
        rows.append({
            "cell_id": cell,
            "predicted_cycle_life": float(prediction[i]) if given else np.nan,
            "lower": float(lower[i]) if given else np.nan,
            "upper": float(upper[i]) if given else np.nan,
            "model_id": record["model_id"],
            "feature_set": record["feature_set"],
            "in_cohort": cell in cohort,
            "domain": status,
            "in_domain": status == "inside",
            "domain_note": why,
            "known_cycle_life": float(known["cycle_life"]) if known is not None else np.nan,
            "known_cycle_life_source": str(known["cycle_life_source"]) if known is not None else "unknown",
        })
    frame = pd.DataFrame(rows, columns=["cell_id", "predicted_cycle_life", "lower", "upper", "model_id", "feature_set", "in_cohort",
                                        "domain", "in_domain", "domain_note", "known_cycle_life", "known_cycle_life_source"])
    warehouse.replace_table(PREDICTIONS, frame)
    # the error on cells the model never saw, of those inside its domain only (an extrapolation's
    # error says how far outside it was, not how good the model is)
    unseen = frame[~frame["in_cohort"] & frame["known_cycle_life"].notna() & frame["in_domain"]]
    unseen_rmse = float(np.sqrt(np.mean((unseen["predicted_cycle_life"] - unseen["known_cycle_life"]) ** 2))) if len(unseen) else None
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(frame),
            "scoring_model": record["model_id"],
            "cells_in_cohort": int(frame["in_cohort"].sum()),
            "cells_by_domain": dg.MetadataValue.json(frame["domain"].value_counts().to_dict()),
            "not_scored": dg.MetadataValue.json(dict(list(not_scored.items())[:50])),
            "not_scored_count": len(not_scored),
            "unseen_cells_inside_with_known_life": len(unseen),
            "unseen_rmse_cycles_inside": unseen_rmse if unseen_rmse is not None else "no unseen cell inside the domain has a known life",
            "preview": dg.MetadataValue.md(frame.drop(columns=["domain_note"]).head(20).to_markdown(index=False)),
        }
    )
    yield model_quality.cycle_life_in_domain_check(frame, PREDICTIONS)
