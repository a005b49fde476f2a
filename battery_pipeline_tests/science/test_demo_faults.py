"""The demo fleet's injected faults are exactly what validation quarantines.

The simulator records every fault it injects; validation must find each one (and nothing in the
clean rows). A temperature dropout is NaN in a nullable column: kept, not quarantined.
"""

import json

import pandas as pd
import pytest

from battery_pipeline.science.demo import ensure_demo_fleet
from battery_pipeline.science.readers import detect_format
from battery_pipeline.science.validation import CellLimits, validate_samples

EXPECTED_REASON = {
    "voltage_spike": {"voltage_out_of_window"},
    "duplicated_block": {"duplicate_sample", "time_not_monotonic"},
    "time_backwards": {"time_not_monotonic"},
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    return ensure_demo_fleet(root), root / "ground_truth"


def test_demo_fleet_is_small_reproducible_and_has_two_chemistries(demo):
    cells_dir, truth_dir = demo
    files = sorted(cells_dir.glob("*.parquet"))
    assert len(files) >= 8
    assert sum(f.stat().st_size for f in files) < 8e6
    chemistries = {json.loads(f.with_name(f.stem + ".cell.json").read_text())["chemistry"] for f in files}
    assert len(chemistries) >= 2
    truth = pd.read_csv(truth_dir / "ground_truth_cycles.csv")
    assert truth.groupby("cell_id")["cycle_number"].nunique().min() >= 200


def test_validation_catches_every_injected_fault_and_nothing_else(demo):
    cells_dir, truth_dir = demo
    faults = pd.read_csv(truth_dir / "injected_faults.csv")
    assert len(faults) >= 3
    for path in sorted(cells_dir.glob("*.parquet")):
        sidecar = json.loads(path.with_name(path.stem + ".cell.json").read_text())
        samples = detect_format(path).read([path], path.stem).samples
        result = validate_samples(samples, CellLimits.from_record(sidecar))
        quarantined = dict(zip(result.quarantined["source_row"], result.quarantined["reason_code"]))
        expected_rows = set()
        for fault in faults[faults["cell_id"] == path.stem].itertuples():
            if fault.kind == "temperature_dropout":
                rows = range(fault.source_row, fault.source_row + fault.n_rows)
                assert not set(rows) & set(quarantined), "nullable temperature gaps are not rejected"
                continue
            rows = set(range(fault.source_row, fault.source_row + fault.n_rows))
            expected_rows |= rows
            assert {quarantined.get(r) for r in rows} <= EXPECTED_REASON[fault.kind], (fault, quarantined)
        assert set(quarantined) == expected_rows, path.name
