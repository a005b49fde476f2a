"""Validation rules on dirty fixtures: every row ends valid or quarantined with the right reason."""

import numpy as np
import pandas as pd
import pytest

from battery_pipeline.science.readers.base import finalize_samples
from battery_pipeline.science.validation import CellLimits, FrameShapeError, ValidationRules, validate_samples
from battery_pipeline_tests.fixtures import cycling_frame

LIMITS = CellLimits(voltage_min_v=2.5, voltage_max_v=4.2, nominal_capacity_ah=2.0)


def canonical(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame["source_file"] = "fixture.csv"
    frame["source_row"] = np.arange(len(frame))
    return finalize_samples(frame, "cell_x")


def reasons(result) -> dict[int, str]:
    return dict(zip(result.quarantined["source_row"], result.quarantined["reason_code"]))


def test_clean_frame_passes_untouched():
    frame = canonical(cycling_frame())
    result = validate_samples(frame, LIMITS)
    assert result.quarantined.empty and len(result.valid) == len(frame)


def test_each_rule_catches_its_fault_and_no_row_vanishes():
    frame = canonical(cycling_frame())
    frame.loc[3, "voltage_v"] = 3710.0  # mV read as V
    frame.loc[4, "current_a"] = 1000.0  # mA read as A
    frame.loc[5, "temperature_c"] = -55.0
    frame.loc[6, "voltage_v"] = np.nan
    frame.loc[30, "time_s"] = frame.loc[29, "time_s"]  # duplicate (same cycle, time)
    frame.loc[50, "time_s"] = 1.0  # clock jumped back
    frame.loc[60, "capacity_ah"] = -0.5  # pandera: capacity must be >= 0
    result = validate_samples(frame, LIMITS)
    assert reasons(result) == {
        3: "voltage_out_of_window",
        4: "current_implausible",
        5: "temperature_out_of_range",
        6: "missing_value",
        30: "duplicate_sample",
        50: "time_not_monotonic",
        60: "schema",
    }
    assert len(result.valid) + len(result.quarantined) == len(frame)
    message = result.quarantined.set_index("source_row").loc[3, "reason"]
    assert "3710" in message and "V" in message
    assert result.counts_by_reason()["duplicate_sample"] == 1


def test_a_row_failing_two_rules_is_quarantined_once_under_the_first():
    frame = canonical(cycling_frame())
    frame.loc[10, ["voltage_v", "temperature_c"]] = [9.9, 200.0]
    result = validate_samples(frame, LIMITS)
    assert reasons(result) == {10: "voltage_out_of_window"}


def test_margins_are_configurable():
    frame = canonical(cycling_frame())
    frame.loc[7, "voltage_v"] = 4.25  # inside the default +0.1 V margin
    assert validate_samples(frame, LIMITS).quarantined.empty
    strict = ValidationRules(voltage_margin_high_v=0.0)
    assert reasons(validate_samples(frame, LIMITS, strict)) == {7: "voltage_out_of_window"}


def test_unknown_capacity_skips_the_current_rule_only():
    frame = canonical(cycling_frame())
    frame.loc[4, "current_a"] = 1000.0
    limits = CellLimits(voltage_min_v=2.5, voltage_max_v=4.2, nominal_capacity_ah=None)
    assert validate_samples(frame, limits).quarantined.empty


def test_invalid_step_type_is_a_schema_rejection():
    frame = canonical(cycling_frame())
    frame["step_type"] = frame["step_type"].astype(str)
    frame.loc[2, "step_type"] = "float"
    result = validate_samples(frame, LIMITS)
    assert reasons(result) == {2: "schema"}
    assert "step_type" in result.quarantined["reason"].iloc[0]


def test_wrong_columns_are_a_reader_bug_not_a_row_problem():
    frame = canonical(cycling_frame()).drop(columns=["voltage_v"])
    with pytest.raises(FrameShapeError, match="voltage_v"):
        validate_samples(frame, LIMITS)
