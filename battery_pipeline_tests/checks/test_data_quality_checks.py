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
