"""Cell-wise splits: deterministic, disjoint, every split filled from three cells on."""

from __future__ import annotations

import pytest

from battery_pipeline.science.ml.splits import (
    CellSplit,
    assert_disjoint,
    check_disjoint,
    leave_one_cell_out,
    split_cells,
)

CELLS = [f"cell_{i:02d}" for i in range(20)]


def test_split_is_deterministic_and_ignores_order_and_duplicates():
    split = split_cells(CELLS, seed=42)
    assert split == split_cells(list(reversed(CELLS)) + CELLS[:5], seed=42)
    assert split != split_cells(CELLS, seed=43)
    # 20 cells at 70/15/15: 3 validation and 3 test cells (round(0.15 x 20) = 3), 14 train
    assert (len(split.train), len(split.validation), len(split.test)) == (14, 3, 3)
    assert sorted(split.train + split.validation + split.test) == CELLS
    assert list(split.train) == sorted(split.train)
    assert check_disjoint(split).passed


@pytest.mark.parametrize("n", range(3, 12))
def test_every_split_non_empty_from_three_cells(n):
    cells = CELLS[:n]
    for seed in range(5):
        split = split_cells(cells, seed=seed)
        assert split.train and split.validation and split.test
        assert sorted(split.train + split.validation + split.test) == cells
        assert_disjoint(split)


def test_small_and_unusual_inputs():
    assert split_cells(["a", "b"]) in (
        CellSplit(("a",), (), ("b",), 0, (0.7, 0.15, 0.15)),
        CellSplit(("b",), (), ("a",), 0, (0.7, 0.15, 0.15)),
    )
    one = split_cells(["only"])
    assert one.train == ("only",) and not one.validation and not one.test
    no_validation = split_cells(CELLS, fractions=(0.8, 0.0, 0.2))
    assert not no_validation.validation and len(no_validation.test) == 4
    with pytest.raises(ValueError, match="sum to 1"):
        split_cells(CELLS, fractions=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="no cells"):
        split_cells([])


def test_assign_labels_rows_by_their_cell():
    split = split_cells(["a", "b", "c"], seed=0)
    rows = ["a", "a", "b", "c", "zzz"]
    labels = split.assign(rows)
    assert labels[-1] == ""
    for cell, label in zip(rows[:-1], labels[:-1]):
        assert cell in split.cells(label)
    assert split.to_dict()["seed"] == 0


def test_leave_one_cell_out():
    folds = list(leave_one_cell_out(["c", "a", "b", "a"]))
    assert [f.test for f in folds] == [("a",), ("b",), ("c",)]
    assert folds[0].train == ("b", "c")
    assert all(check_disjoint(f).passed for f in folds)


def test_overlap_is_reported_for_an_asset_check():
    bad = CellSplit(train=("a", "b"), validation=("b",), test=("a", "c"))
    result = check_disjoint(bad)
    assert not result.passed
    assert result.overlaps == {"train&validation": ["b"], "train&test": ["a"]}
    assert result.counts == {"train": 2, "validation": 1, "test": 2}
    assert result.to_metadata()["passed"] is False
    with pytest.raises(ValueError, match="more than one split"):
        assert_disjoint(bad)
