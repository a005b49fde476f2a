"""Data cards: one markdown card per dataset, generated from what the run stored.

Pure (pandas in, markdown out; no Dagster): the `data_cards` asset queries the warehouse and the
folders, `card_sections` writes the sections, `missing_facts` says what a card lacks (the
blocking `data_card_complete` check). A card states, per dataset:

  Dataset              cells, chemistries, formats, capacities and voltage windows
  Collection process   the sources' own descriptions (reader defaults or `.cell.json` sidecar)
                       and the documentation files found beside the data (README, CITATION.cff)
  Sources              one row per source (cell): format, files, where the metadata came from
                       (chemistry, rated capacity and voltage window each with its source)
  Cycles and labels    per cell: cycles by class (full, partial, diagnostic, formation,
                       rest only), the SOH reference (rated or relative to the initial
                       capacity), initial SOH, label status and why
  Tasks                which task used the cells and how: SOH / RUL models (split of each
                       cell), cycle-life cohort and predictions (domain), per-cycle anomalies
                       (cycles scored, flagged), temperature forecast (held out, or why not)
  Cleaning rules       the validation rules as run, incl. the seed's gap and outlier rules
  Quarantine and flags raw, validated, quarantined rows (they must add up), quarantine counts
                       by reason, cycles dropped as incomplete, interpolated values, outliers
  Licence and citation as the sources state them
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

DATA_CARD_SECTIONS = (
    "Dataset", "Collection process", "Sources", "Cycles and labels", "Tasks", "Cleaning rules", "Quarantine and flags",
    "Licence and citation",
)
# One row per (cell, task, role) of `card_sections(task_use=...)`: which task used a cell, and how.
TASK_USE_COLUMNS = ("cell_id", "task", "role")
NO_TASK_YET = ("No model, detector or forecaster has used these cells yet (train_models_job, cycle_life_job, "
               "anomalies_job, thermal_job).")
# Per-cell columns of the "Cycles and labels" section (`card_sections(labels=...)`).
LABEL_SUMMARY_COLUMNS = (
    "cell_id", "full", "partial", "diagnostic", "formation", "rest_only",
    "soh_reference", "initial_soh", "label_status", "label_note",
)
UNKNOWN_DATASET = "unnamed dataset"
NOT_STATED = "not stated"
DOC_FILE_PATTERN = re.compile(r"(readme|citation|license|licence)", re.IGNORECASE)
_EXCERPT_CHARS = 600


def dataset_name(value) -> str:
    return UNKNOWN_DATASET if value is None or (isinstance(value, float) and pd.isna(value)) or not str(value).strip() else str(value)


def card_file_name(dataset: str) -> str:
    """`reports/data_cards/<this>.md`: the dataset name made safe for a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset).strip("_") or "dataset"


def documentation_files(directories) -> list[Path]:
    """README / CITATION / LICENSE files in the source folders (not recursive)."""
    found = set()
    for directory in directories:
        directory = Path(directory)
        if directory.is_dir():
            found.update(p for p in directory.iterdir() if p.is_file() and DOC_FILE_PATTERN.search(p.name))
    return sorted(found)


def excerpt(path: Path, chars: int = _EXCERPT_CHARS) -> str:
    """The start of a documentation file as one quoted paragraph (whitespace collapsed)."""
    try:
        text = path.read_text(errors="replace")[: chars * 2]
    except OSError as exc:
        return f"(unreadable: {exc})"
    text = " ".join(text.split())
    return text[:chars] + (" ..." if len(text) > chars else "")


def _stated(values: pd.Series) -> list[str]:
    return sorted({str(v).strip() for v in values.dropna() if str(v).strip()})


def _table(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False) if len(frame) else "_none_"


def card_sections(
    dataset: str,
    cells: pd.DataFrame,
    counts: pd.DataFrame,
    reasons: pd.DataFrame,
    flags: pd.DataFrame,
    rules_by_cell: dict[str, dict],
    docs: list[Path],
    labels: pd.DataFrame | None = None,
    task_use: pd.DataFrame | None = None,
) -> dict[str, str]:
    """The card's sections (keys `DATA_CARD_SECTIONS`) for one dataset.

    cells:   the dataset's rows of the `cells` table
    counts:  per cell_id: raw_rows, validated_rows, quarantined_rows, dropped_cycles
    reasons: per reason_code: rows (quarantined_samples of the dataset)
    flags:   per (flag, channel): values (sample_flags of the dataset)
    rules_by_cell: the validation rules each cell was validated with (from its materialization)
    docs:    documentation files found beside the dataset's sources
    labels:  per cell_id: `LABEL_SUMMARY_COLUMNS` (cycle classes from cycle_features, the label
             reference and status from cycle_labels); cells without features are listed as such
    task_use: `TASK_USE_COLUMNS` rows of the dataset's cells (the tasks' stored tables)
    """
    chemistries = _stated(cells["chemistry"]) or [NOT_STATED]
    formats = _stated(cells["source_format"])
    capacity = cells["nominal_capacity_ah"].dropna()
    overview = [
        f"- **cells**: {len(cells)}",
        f"- **chemistries**: {', '.join(chemistries)}",
        f"- **source formats**: {', '.join(formats)}",
        "- **rated capacity**: " + (
            NOT_STATED if capacity.empty
            else f"{capacity.min():g} Ah" if capacity.min() == capacity.max()
            else f"{capacity.min():g}-{capacity.max():g} Ah"
        ),
        "- **voltage windows**: " + ", ".join(
            sorted({f"{lo:g}-{hi:g} V" for lo, hi in zip(cells["voltage_min_v"], cells["voltage_max_v"])})
        ),
    ]
    descriptions = _stated(cells["description"])
    collection = [f"- {d}" for d in descriptions]
    if docs:
        collection += ["", "Documentation found beside the data:"]
        collection += [f"- `{p.name}`: \"{excerpt(p)}\"" for p in docs]
    sources = cells.assign(files=cells["source_files"].map(lambda s: ", ".join(json.loads(s)) if isinstance(s, str) else ""))
    traced = [c for c in ("chemistry_source", "nominal_capacity_source", "voltage_window_source") if c in sources]
    sources = sources[["cell_id", "source_format", "files", *traced]].sort_values("cell_id")
    summary = cells[["cell_id"]].astype(str).merge(
        labels.astype({"cell_id": str}) if labels is not None else pd.DataFrame(columns=list(LABEL_SUMMARY_COLUMNS)),
        on="cell_id", how="left",
    ).sort_values("cell_id")
    summary["label_status"] = summary["label_status"].fillna("not labelled yet")
    relative = int((summary["soh_reference"] == "initial").sum())
    cycles_section = [
        "Only comparable full cycles (the cell's regular discharge current, to its regular cut-off, "
        "after a balanced charge) carry an SOH and enter training (science/cycle_classes.py, "
        "science/labels.py).",
        f"- **cells with SOH relative to their initial capacity** (no trustworthy rated capacity): {relative}",
        "",
        _table(summary[list(LABEL_SUMMARY_COLUMNS)]),
    ]
    rules = _rules_text(rules_by_cell, cells["cell_id"].astype(str).tolist())
    totals = counts[["raw_rows", "validated_rows", "quarantined_rows"]].sum() if len(counts) else pd.Series(
        {"raw_rows": 0, "validated_rows": 0, "quarantined_rows": 0}
    )
    unaccounted = int(totals["raw_rows"] - totals["validated_rows"] - totals["quarantined_rows"])
    quarantine = [
        f"- **raw samples**: {int(totals['raw_rows'])}; **validated**: {int(totals['validated_rows'])}; "
        f"**quarantined**: {int(totals['quarantined_rows'])}; "
        + ("every raw sample is accounted for." if unaccounted == 0 else f"**{unaccounted} raw samples unaccounted for**."),
        f"- **cells ingested**: {len(counts)} of {len(cells)}",
        "",
        "Quarantined samples by reason:",
        "",
        _table(reasons.sort_values("rows", ascending=False) if len(reasons) else reasons),
        "",
        "Flagged values in validated_samples (`sample_flags`):",
        "",
        _table(flags),
    ]
    if len(counts) and "dropped_cycles" in counts and counts["dropped_cycles"].sum():
        quarantine += ["", f"Cycles dropped as incomplete (over the missing-sample limit): {int(counts['dropped_cycles'].sum())}."]
    licences = _stated(cells["licence"]) or [NOT_STATED]
    citations = _stated(cells["citation"]) or [NOT_STATED]
    legal = [f"- **licence**: {'; '.join(licences)}", "- **citation**: " + " / ".join(citations)]
    return {
        "Dataset": "\n".join(overview),
        "Collection process": "\n".join(collection),
        "Sources": _table(sources),
        "Cycles and labels": "\n".join(cycles_section),
        "Tasks": tasks_text(task_use, cells["cell_id"].astype(str).tolist()),
        "Cleaning rules": rules,
        "Quarantine and flags": "\n".join(quarantine),
        "Licence and citation": "\n".join(legal),
    }


def tasks_text(task_use: pd.DataFrame | None, cell_ids: list[str]) -> str:
    """Per task: how many of the dataset's cells it used, and in which roles."""
    if task_use is None or task_use.empty:
        return NO_TASK_YET
    mine = task_use[task_use["cell_id"].astype(str).isin(set(cell_ids))]
    if mine.empty:
        return NO_TASK_YET
    rows = []
    for task, group in mine.groupby("task", sort=False):
        roles = group["role"].value_counts()
        rows.append({"task": task, "cells": group["cell_id"].nunique(),
                     "roles": "; ".join(f"{role}: {n}" for role, n in roles.items())})
    return _table(pd.DataFrame(rows, columns=["task", "cells", "roles"]))


def _rules_text(rules_by_cell: dict[str, dict], cell_ids: list[str]) -> str:
    validated = {c: rules_by_cell[c] for c in cell_ids if c in rules_by_cell}
    if not validated:
        return ""
    groups: dict[str, list[str]] = {}
    for cell, rules in validated.items():
        groups.setdefault(json.dumps(rules, sort_keys=True), []).append(cell)
    lines = [
        "Every raw sample ends validated or quarantined with a reason (science/validation.py): pandera "
        "schema; time, voltage and current present; voltage inside the cell's window with a margin; "
        "|current| within the C-rate limit of the rated capacity; temperature in range; no duplicate "
        "(cycle, time); time never going backwards. The seed's data rules (science/sample_quality.py): "
        "gaps of at most `max_gap_points` missing samples inside one step are interpolated linearly in "
        "time and marked in `sample_flags`; a cycle with over `max_missing_share` of its samples missing "
        "is quarantined whole (`cycle_incomplete`); samples over `outlier_sigma` standard deviations "
        "from their local median are flagged `outlier` and kept.",
        "",
    ]
    for text, cells in sorted(groups.items(), key=lambda item: -len(item[1])):
        rules = json.loads(text)
        settings = ", ".join(f"`{k}` = {v}" for k, v in sorted(rules.items()))
        scope = "all cells" if len(cells) == len(cell_ids) else f"{len(cells)} cells ({', '.join(sorted(cells)[:5])}{' ...' if len(cells) > 5 else ''})"
        lines.append(f"- {scope}: {settings}")
    missing = sorted(set(cell_ids) - set(validated))
    if missing:
        lines.append(f"- not validated yet: {', '.join(missing)}")
    return "\n".join(lines)


def render_card(dataset: str, sections: dict[str, str], generated: str) -> str:
    head = f"# Data card: {dataset}\n\n_Generated from the warehouse by the `data_cards` asset, {generated}._"
    return "\n\n".join([head, *(f"## {name}\n\n{sections.get(name) or '_missing_'}" for name in DATA_CARD_SECTIONS)]) + "\n"


def missing_facts(sections: dict[str, str]) -> list[str]:
    """What a card lacks: an empty section, or a licence / citation / collection process that no
    source states."""
    problems = [f"section '{name}' is empty" for name in DATA_CARD_SECTIONS if not (sections.get(name) or "").strip()]
    legal = sections.get("Licence and citation", "")
    if f"**licence**: {NOT_STATED}" in legal:
        problems.append("no licence stated")
    if f"**citation**: {NOT_STATED}" in legal:
        problems.append("no citation stated")
    return problems


PACK_CARD_SECTIONS = ("Packs", "Tasks", "Limits of this card")


def pack_card_sections(packs: pd.DataFrame, faults: pd.DataFrame, twin_tables: dict[str, int]) -> dict[str, str]:
    """The card of the pack telemetry the twin read: one row per pack (where from, chemistry and
    cells with where they came from, samples, hours) and what each task made of it.

    packs:  the `packs` table; faults: `pack_fault_summary` (may be empty); twin_tables: rows per
    twin output table (the twin models that ran)."""
    table = packs[["pack_id", "source_kind", "chemistry", "nominal_capacity_ah", "n_cells", "samples", "duration_h", "metadata_origin"]]
    rows = []
    if len(faults):
        diagnosed = faults.set_index("pack_id")
        for pack in packs["pack_id"]:
            if pack in diagnosed.index:
                r = diagnosed.loc[pack]
                rows.append({"task": "fault diagnosis", "pack_id": pack,
                             "result": f"{int(r['open_faults'])} open fault(s) {r['open_by_kind']}; not testable: {r['not_evaluable'] or 'none'}"})
    for name, n in sorted(twin_tables.items()):
        rows.append({"task": "twin output", "pack_id": "all", "result": f"`{name}`: {n} row(s)"})
    tasks = _table(pd.DataFrame(rows, columns=["task", "pack_id", "result"])) if rows else "No twin model has run on these packs yet (pack_pipeline_job)."
    return {
        "Packs": _table(table),
        "Tasks": tasks,
        "Limits of this card": ("Pack files carry no licence or citation field: state them in the pack's sidecar description. "
                                "Which samples each twin model used is in its own tables (keyed by pack_id and sample)."),
    }


def render_pack_card(sections: dict[str, str], generated: str) -> str:
    head = f"# Data card: pack telemetry\n\n_Generated from the warehouse by the `data_cards` asset, {generated}._"
    return "\n\n".join([head, *(f"## {name}\n\n{sections.get(name) or '_missing_'}" for name in PACK_CARD_SECTIONS)]) + "\n"
