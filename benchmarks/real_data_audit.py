"""Audit: every real file in ../shared/datasets through read, validate, features and labels.

    python benchmarks/real_data_audit.py [--datasets DIR] [--only SUBFOLDER ...]

Prints per cell the metadata and where each value came from, the cycle classes, the label
reference, initial SOH, end of life and every warning, and a row for each file that could not be
read and why. Exit code 1 when the rule is broken: no *labelled* cell may have an initial SOH
outside the band, and no SOH may sit on a cycle that is not a comparable full cycle (cells out of
band are listed: their labels are kept out of training, which is the rule working).

The same science functions as the assets (sources, readers, validation, features, cycle classes,
labels_for_cell with data/label_settings.json); no Dagster, no warehouse.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from battery_pipeline.science.cycle_classes import class_counts, classify_cycles  # noqa: E402
from battery_pipeline.science.features import FeatureConfig, compute_cycle_features  # noqa: E402
from battery_pipeline.science.labels import label_config_for, labels_for_cell  # noqa: E402
from battery_pipeline.science.readers import CyclerReader, SourceFormatError  # noqa: E402
from battery_pipeline.science.sources import cell_record, discover  # noqa: E402
from battery_pipeline.science.validation import CellLimits, validate_samples  # noqa: E402

SETTINGS = REPO / "data" / "label_settings.json"


def audit_cell(source) -> dict:
    record = cell_record(source)
    result = source.reader.read(list(source.files), source.partition_key)
    warnings = []
    if len(result.samples):
        validation = validate_samples(result.samples, CellLimits.from_record(record))
        quarantined = len(validation.quarantined)
        reader = CyclerReader.registry[source.format_name]
        features = compute_cycle_features(
            validation.valid, record["nominal_capacity_ah"], result.impedance,
            FeatureConfig(step_end_logging=reader.logs_step_end),
        )
        if quarantined:
            warnings.append(f"{quarantined} samples quarantined")
    else:
        quarantined = 0
        summary = result.cycle_summary
        features = summary.join(classify_cycles(summary))
    config = label_config_for(record["dataset"], SETTINGS)
    labels, config, _ = labels_for_cell(features, record, config, result.cycle_summary)
    first = labels.iloc[0] if len(labels) else None
    counts = class_counts(features["cycle_class"])
    on_other = int((labels["soh"].notna() & (labels["cycle_class"] != "full")).sum())
    status = None if first is None else first["label_status"]
    if status == "out_of_band":
        warnings.append("initial SOH out of band: labels kept out of training")
    if status == "unlabelled":
        warnings.append(str(first["label_note"]))
    if record["nominal_capacity_source"] == "unknown":
        warnings.append("no rated capacity: SOH relative to the initial capacity")
    return {
        "cell": source.partition_key,
        "format": source.format_name,
        "dataset": record["dataset"],
        "chemistry": f"{record['chemistry']} [{record['chemistry_source'].split(':')[0]}]",
        "nominal_ah": f"{record['nominal_capacity_ah']} [{record['nominal_capacity_source'].split(':')[0]}]",
        "window_v": f"{record['voltage_min_v']:g}-{record['voltage_max_v']:g} [{record['voltage_window_source'].split(':')[0]}]",
        "samples": len(result.samples),
        "cycles": len(features),
        "classes": " ".join(f"{k}={v}" for k, v in counts.items() if v),
        "reference": None if first is None else first["soh_reference"],
        "initial_soh": None if first is None or pd.isna(first["initial_soh"]) else round(float(first["initial_soh"]), 3),
        "status": status,
        "eol_cycle": None if first is None or pd.isna(first["eol_cycle"]) else int(first["eol_cycle"]),
        "soh_on_non_full": on_other,
        "band": config.initial_soh_band,
        "warnings": "; ".join(warnings),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = os.environ.get("BATTERY_DATASETS", str(REPO.parent / "shared" / "datasets"))
    parser.add_argument("--datasets", default=default)
    parser.add_argument("--only", nargs="*", help="subfolders of the datasets folder to audit")
    args = parser.parse_args(argv)
    root = Path(args.datasets)
    folders = [root / name for name in args.only] if args.only else sorted(p for p in root.iterdir() if p.is_dir())
    started = time.perf_counter()
    rows, failures = [], []
    for folder in folders:
        for source in discover([folder]):
            if source.problem:
                failures.append({"file": str(source.files[0].relative_to(root)), "why": source.problem})
                continue
            try:
                rows.append(audit_cell(source))
            except (SourceFormatError, ValueError) as exc:
                failures.append({"file": str(source.files[0].relative_to(root)), "why": str(exc)})
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_colwidth", 90)
    pd.set_option("display.max_rows", 1000)
    print(f"# Real-data audit: {len(rows)} cells, {len(failures)} unreadable file(s), {time.perf_counter() - started:.0f} s\n")
    if len(table):
        print(table.drop(columns=["band"]).to_markdown(index=False))
    if failures:
        print("\n## Files that could not be read\n")
        print(pd.DataFrame(failures).to_markdown(index=False))
    broken = []
    if len(table):
        low_high = table["band"]
        labelled = table[table["status"] == "labelled"]
        outside = labelled[[not (b[0] <= s <= b[1]) for s, b in zip(labelled["initial_soh"], low_high[labelled.index])]]
        broken += [f"{c}: labelled with initial SOH {s}" for c, s in zip(outside["cell"], outside["initial_soh"])]
        broken += [f"{c}: {n} SOH label(s) on non-comparable cycles" for c, n in zip(table["cell"], table["soh_on_non_full"]) if n]
        print("\nstatus counts:", table["status"].value_counts().to_dict())
    print("rule (no labelled cell out of band, no SOH on a non-comparable cycle):", "held" if not broken else "BROKEN")
    for line in broken:
        print("  ", line)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
