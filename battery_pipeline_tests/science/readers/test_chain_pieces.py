"""`base.chain_pieces`: the files of one test, in test order, time and cycles continuing."""

from __future__ import annotations

import pandas as pd

from battery_pipeline.science.readers.base import chain_pieces


def _piece(times, cycles):
    return pd.DataFrame({"time_s": [float(t) for t in times], "cycle_number": cycles})


def test_files_without_a_start_are_chained_end_to_end_and_their_cycles_continue():
    frame, note = chain_pieces([_piece([0, 10], [1, 2]), _piece([0, 5], [1, 1])])
    assert frame["time_s"].tolist() == [0.0, 10.0, 10.0, 15.0]
    assert frame["cycle_number"].tolist() == [1, 2, 3, 3]
    assert "end to end" in note


def test_absolute_starts_order_the_files_and_a_continuing_count_is_kept():
    later, earlier = _piece([0, 5], [3, 4]), _piece([0, 10], [1, 2])
    frame, note = chain_pieces([later, earlier], starts=[1000.0, 900.0])
    assert frame["time_s"].tolist() == [0.0, 10.0, 100.0, 105.0]
    assert frame["cycle_number"].tolist() == [1, 2, 3, 4]
    assert "absolute start" in note


def test_overlapping_starts_fall_back_to_name_order_and_empty_files_are_skipped():
    empty = _piece([], [])
    frame, note = chain_pieces([_piece([0, 100], [1, 1]), empty, _piece([0, 10], [1, 1])], starts=[0.0, None, 50.0])
    assert frame["time_s"].tolist() == [0.0, 100.0, 100.0, 110.0] and "end to end" in note
    assert chain_pieces([empty]) == (None, None)
