"""Shared reader helpers (readers/base.py) against the pandas operations they stand in for."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from battery_pipeline.science.readers.base import finalize_samples, running_total
from battery_pipeline.science.schema import SAMPLE_COLUMNS


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.floats(0, 1e3), st.just(float("nan"))), st.booleans()), max_size=60))
def test_running_total_is_a_groupby_cumsum(rows):
    values = np.array([v for v, _ in rows], dtype="float64")
    new_block = np.array([b for _, b in rows], dtype=bool)
    if len(new_block):
        new_block[0] = True
    expected = pd.Series(values, dtype="float64").groupby(np.cumsum(new_block)).cumsum().to_numpy()
    np.testing.assert_allclose(running_total(values, new_block), expected, rtol=1e-12, atol=1e-9)


def test_finalize_samples_takes_a_frame_or_a_dict_of_arrays():
    columns = {
        "time_s": np.array([0.0, 1.0, 2.0]),
        "voltage_v": np.array([3.5, 3.6, 3.7]),
        "current_a": np.array([1.0, 0.0, -1.0]),
        "cycle_number": np.array([1, 1, 1]),
        "source_file": np.array(["a.csv"] * 3, dtype=object),
        "source_row": np.arange(3),
    }
    from_dict = finalize_samples(columns, "cell")
    from_frame = finalize_samples(pd.DataFrame(columns), "cell")
    pd.testing.assert_frame_equal(from_dict, from_frame)
    assert list(from_dict.columns) == SAMPLE_COLUMNS
    assert list(from_dict["step_type"]) == ["charge", "rest", "discharge"]
    assert from_dict["cell_id"].cat.categories.tolist() == ["cell"]


def test_finalize_samples_refuses_a_missing_cycle_number_instead_of_inventing_one():
    frame = pd.DataFrame({"time_s": [0.0, 1.0], "voltage_v": [3.5, 3.6], "current_a": [1.0, 1.0],
                          "cycle_number": [1.0, np.nan], "source_file": ["a.csv"] * 2, "source_row": [0, 1]})
    with pytest.raises((ValueError, TypeError)):
        finalize_samples(frame, "cell")
