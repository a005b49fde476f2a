"""Each data-quality rule, called directly on a clean and a dirty input: it passes, then fails."""

import numpy as np
import pandas as pd

from battery_pipeline.checks import data_quality
from battery_pipeline.science.readers.base import finalize_samples
from battery_pipeline_tests.fixtures import cycling_frame


def clean_samples() -> pd.DataFrame:
    frame = cycling_frame(n_cycles=3)
    frame["source_file"] = "f.csv"
    frame["source_row"] = np.arange(len(frame))
    return finalize_samples(frame, "cell")


def test_frame_shape():
    frame = clean_samples()
    assert data_quality.frame_shape_check(frame).passed
    assert not data_quality.frame_shape_check(frame.drop(columns=["voltage_v"])).passed
    assert not data_quality.frame_shape_check(frame.assign(voltage_v=frame["voltage_v"].astype(str))).passed
    assert not data_quality.frame_shape_check(frame[list(reversed(frame.columns))]).passed


def test_schema_conformance():
    frame = clean_samples()
    assert data_quality.schema_conformance_check(frame).passed
    dirty = frame.copy()
    dirty.loc[3, "time_s"] = -5.0
    result = data_quality.schema_conformance_check(dirty)
    assert not result.passed and result.metadata["failures"].value == 1


def test_row_accounting():
    assert data_quality.row_accounting_check(100, 90, 10).passed
    assert data_quality.row_accounting_check(100, 90, 10, 90).passed
    assert not data_quality.row_accounting_check(100, 90, 10, 91).passed  # stored unlike what validation kept
    result = data_quality.row_accounting_check(100, 90, 9)
    assert not result.passed and result.metadata["unaccounted_rows"].value == 1


def test_no_duplicates():
    frame = clean_samples()
    assert data_quality.no_duplicates_check(frame).passed
    dirty = pd.concat([frame, frame.iloc[[5]]], ignore_index=True)
    result = data_quality.no_duplicates_check(dirty)
    assert not result.passed and result.metadata["duplicated_keys"].value == 1


def test_cycle_continuity():
    assert data_quality.cycle_continuity_check(pd.Series([0, 0, 1, 2, 2])).passed
    result = data_quality.cycle_continuity_check(pd.Series([0, 1, 4, 5]))
    assert not result.passed and result.metadata["gaps"].value == 1


def test_quarantine_rate():
    quarantined = pd.DataFrame({"reason_code": ["duplicate_sample"] * 3, "source_file": "f", "source_row": [1, 2, 3], "reason": "x"})
    assert data_quality.quarantine_rate_check(1000, quarantined, max_rate=0.05).passed
    result = data_quality.quarantine_rate_check(20, quarantined, max_rate=0.05)
    assert not result.passed and result.metadata["by_reason"].value == {"duplicate_sample": 3}


# --- the seed's data rules: sampling gaps and outliers ------------------------------------------


def test_incomplete_cycles_quarantined():
    per_cycle = pd.DataFrame(
        {"cycle_number": [0, 1, 2], "raw_rows": [80, 80, 80], "missing_rows": [0, 9, 8], "validated_rows": [80, 0, 80]}
    )
    result = data_quality.incomplete_cycles_quarantined_check(per_cycle, 0.10)
    assert result.passed and result.metadata["cycles_over_limit"].value == 1  # cycle 1, quarantined
    leaked = per_cycle.assign(validated_rows=[80, 71, 80])  # cycle 1 over the limit but stored
    result = data_quality.incomplete_cycles_quarantined_check(leaked, 0.10)
    assert not result.passed and result.metadata["cycles_over_limit_in_validated"].value == 1


def _flags(rows, flag="interpolated", channel="voltage_v"):
    return pd.DataFrame(
        {"source_file": "f.csv", "source_row": rows, "channel": channel, "flag": flag, "cycle_number": 0,
         "value": 3.7, "reference_value": np.nan, "detail": "x"}
    )


def test_interpolation_marked():
    filled = pd.DataFrame({"source_file": "f.csv", "source_row": [5, 6], "channel": "voltage_v"})
    assert data_quality.interpolation_marked_check(filled, _flags([5, 6])).passed
    unmarked = data_quality.interpolation_marked_check(filled, _flags([5]))
    assert not unmarked.passed and unmarked.metadata["unmarked_values"].value == 1
    stale = data_quality.interpolation_marked_check(filled, _flags([5, 6, 7]))
    assert not stale.passed and stale.metadata["marks_on_measured_values"].value == 1
    other_flags_ignored = pd.concat([_flags([5, 6]), _flags([9], flag="outlier")])
    assert data_quality.interpolation_marked_check(filled, other_flags_ignored).passed


def test_outliers_kept():
    outliers = _flags([10, 50], flag="outlier").assign(value=[3.9, 3.5], reference_value=[3.6, 3.45])
    kept = data_quality.outliers_kept_check(outliers.assign(stored_value=[3.9, 3.5]), validated_rows=240)
    assert kept.passed and kept.metadata["outliers_flagged"].value == 2
    dropped = data_quality.outliers_kept_check(outliers.assign(stored_value=[3.9, np.nan]), validated_rows=239)
    assert not dropped.passed and dropped.metadata["flagged_but_not_stored"].value == 1
