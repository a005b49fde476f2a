"""Train / validation / test splits by cell, never by row.

Why: consecutive cycles of one cell are nearly identical, so a row-wise split puts the neighbours
of every test cycle in the training set and measures interpolation inside known cells, not the
error on a cell the model has never seen, which is what a lab or a fleet operator needs.

`split_cells(cell_ids, fractions=(0.70, 0.15, 0.15), seed=0)`: the distinct cell ids are sorted
(so the input order and duplicates do not matter), shuffled with `numpy.random.default_rng(seed)`
and cut into three consecutive parts. Sizes: validation and test get round(fraction x n) cells,
at least one each when their fraction is > 0 and there are at least 3 cells, and train gets the
rest (at least one). With 2 cells: one train, one test (the validation split is empty); with 1
cell: train only. Same ids and seed -> same split; each list is sorted.

How many cells training needs (`MIN_TRAINING_CELLS`): the cross-validation folds of the training
cells (cross-conformal intervals, and the cross-validated error that ranks models for
promotion) need `MIN_TRAIN_CELLS` = 2 training cells, so that one is unseen while the other
trains; the promotion gate needs a test cell and the split gives a validation cell. The default
70/15/15 split of 4 cells is 2 / 1 / 1; of 3 cells it is 1 / 1 / 1, one training cell too few.
`training_shortfall` says, for a given split, what is missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

SPLIT_NAMES = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.70, 0.15, 0.15)
MIN_TRAIN_CELLS = 2
MIN_TRAINING_CELLS = 4  # cells with labels for a task: 2 train + 1 validation + 1 test at DEFAULT_FRACTIONS


@dataclass(frozen=True)
class CellSplit:
    """Cell ids of each split (sorted tuples of str) and how they were drawn."""

    train: tuple[str, ...]
    validation: tuple[str, ...]
    test: tuple[str, ...]
    seed: int | None = None
    fractions: tuple[float, ...] | None = None

    def cells(self, name: str) -> tuple[str, ...]:
        if name not in SPLIT_NAMES:
            raise ValueError(f"split must be one of {SPLIT_NAMES}, got {name!r}")
        return getattr(self, name)

    def assign(self, cell_ids: Iterable) -> np.ndarray:
        """Split name per entry of `cell_ids` (a row's cell column): "train", "validation",
        "test", or "" for a cell in none of them."""
        names = np.asarray([str(c) for c in cell_ids], dtype=object)
        out = np.full(len(names), "", dtype=object)
        for split in SPLIT_NAMES:
            out[np.isin(names, list(self.cells(split)))] = split
        return out

    def to_dict(self) -> dict:
        """JSON-ready record (model cards, run metadata)."""
        return {
            "train": list(self.train),
            "validation": list(self.validation),
            "test": list(self.test),
            "seed": self.seed,
            "fractions": None if self.fractions is None else list(self.fractions),
        }


def _distinct(cell_ids: Iterable) -> list[str]:
    return sorted({str(c) for c in cell_ids})


def _sizes(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    _, f_val, f_test = fractions
    if n >= 3:
        n_val = max(1, round(f_val * n)) if f_val > 0 else 0
        n_test = max(1, round(f_test * n)) if f_test > 0 else 0
        while n - n_val - n_test < 1:  # train keeps at least one cell; shrink the larger one
            if n_val >= n_test:
                n_val -= 1
            else:
                n_test -= 1
        return n - n_val - n_test, n_val, n_test
    if n == 2:
        return (1, 0, 1) if f_test > 0 else (1, 1, 0) if f_val > 0 else (2, 0, 0)
    return n, 0, 0


def split_cells(cell_ids: Iterable, fractions=DEFAULT_FRACTIONS, seed: int = 0) -> CellSplit:
    """Deterministic train/validation/test split of the distinct cells (module docstring)."""
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or any(not np.isfinite(f) or f < 0 for f in fractions):
        raise ValueError(f"fractions must be three non-negative numbers, got {fractions!r}")
    if abs(sum(fractions) - 1.0) > 1e-9 or fractions[0] <= 0:
        raise ValueError(f"fractions must sum to 1 with a positive train share, got {fractions!r}")
    cells = _distinct(cell_ids)
    if not cells:
        raise ValueError("no cells to split")
    n_train, n_val, _ = _sizes(len(cells), fractions)
    shuffled = [cells[i] for i in np.random.default_rng(seed).permutation(len(cells))]
    return CellSplit(
        train=tuple(sorted(shuffled[:n_train])),
        validation=tuple(sorted(shuffled[n_train : n_train + n_val])),
        test=tuple(sorted(shuffled[n_train + n_val :])),
        seed=int(seed),
        fractions=fractions,
    )


def training_shortfall(split: CellSplit) -> str | None:
    """What training lacks on this split (module docstring), or None when it has enough."""
    n = sum(len(split.cells(name)) for name in SPLIT_NAMES)
    if n < MIN_TRAINING_CELLS:
        return f"training needs at least {MIN_TRAINING_CELLS} cells"
    if len(split.train) < MIN_TRAIN_CELLS or not split.test:
        return (
            f"training needs at least {MIN_TRAIN_CELLS} train cells and 1 test cell, "
            f"the split gives {len(split.train)} and {len(split.test)}"
        )
    return None


def leave_one_cell_out(cell_ids: Iterable) -> Iterator[CellSplit]:
    """One split per distinct cell (sorted order): that cell is the test set, all others train."""
    cells = _distinct(cell_ids)
    for held_out in cells:
        yield CellSplit(
            train=tuple(c for c in cells if c != held_out),
            validation=(),
            test=(held_out,),
        )


@dataclass(frozen=True)
class DisjointResult:
    """Outcome of `check_disjoint`: `passed`, the cells found in more than one split, sizes."""

    passed: bool
    overlaps: dict[str, list[str]] = field(default_factory=dict)  # "train&test" -> cells
    counts: dict[str, int] = field(default_factory=dict)
    description: str = ""

    def to_metadata(self) -> dict:
        """Plain values for an asset check's metadata."""
        return {"passed": self.passed, "overlaps": self.overlaps, "counts": self.counts}


def check_disjoint(split: CellSplit) -> DisjointResult:
    """No cell in two splits (a cell's rows must never be on both sides of an evaluation)."""
    overlaps: dict[str, list[str]] = {}
    for i, a in enumerate(SPLIT_NAMES):
        for b in SPLIT_NAMES[i + 1 :]:
            common = sorted(set(split.cells(a)) & set(split.cells(b)))
            if common:
                overlaps[f"{a}&{b}"] = common
    counts = {name: len(set(split.cells(name))) for name in SPLIT_NAMES}
    if overlaps:
        description = "; ".join(f"{k}: {', '.join(v[:3])}" + (" ..." if len(v) > 3 else "") for k, v in overlaps.items())
        description = f"cells in more than one split: {description}"
    else:
        description = f"disjoint: {counts['train']} train, {counts['validation']} validation, {counts['test']} test cells"
    return DisjointResult(passed=not overlaps, overlaps=overlaps, counts=counts, description=description)


def assert_disjoint(split: CellSplit) -> None:
    """Raise ValueError naming the shared cells when a cell is in more than one split."""
    result = check_disjoint(split)
    if not result.passed:
        raise ValueError(result.description)
