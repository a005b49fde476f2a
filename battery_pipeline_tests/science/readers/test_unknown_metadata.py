"""Files that state no chemistry or capacity (the zoo's Neware, BioLogic and BDF exports) get
none invented, and validation's voltage window is then only lithium's envelope: a half cell or
a 5 V-class cathode is data, not a fault."""

from __future__ import annotations

import pandas as pd
import pytest

from battery_pipeline.science.readers import detect_format
from battery_pipeline.science.schema import CellRecord
from battery_pipeline.science.sources import CellSource, cell_record
from battery_pipeline.science.validation import CellLimits, validate_samples
from battery_pipeline_tests.conftest import dataset_file

# file, its measured voltage range (what the window must not cut)
UNDESCRIBED = {
    "cycler_zoo/biologic_mpt/gcpl.pr_182.1.mpt": (0.004, 2.36),  # anode half cell against lithium
    "cycler_zoo/bdf_csv/DLR__LiLNMOHydra0b__20221125__POCV__25degC__Basytec.bdf.csv": (2.99, 4.90),  # LNMO
    "cycler_zoo/neware_csv/neware_uio.csv": (0.05, 2.96),
    "cycler_zoo/neware_ndax/test_2.ndax": (0.20, 3.41),
}


@pytest.mark.parametrize("relative", list(UNDESCRIBED))
def test_nothing_invented_and_no_sample_quarantined_for_a_guessed_window(datasets, relative):
    path = dataset_file(datasets, relative)
    reader = detect_format(path)
    record = cell_record(CellSource("cell", path.stem, reader.format_name, (path,)))
    CellRecord.validate(pd.DataFrame([record]))  # what the `cells` asset stores
    assert record["chemistry"] is None and record["nominal_capacity_ah"] is None
    assert record["chemistry_source"] == record["nominal_capacity_source"] == "unknown"
    assert record["voltage_window_source"].startswith("unknown: ")
    samples = reader.read([path], "cell").samples
    low, high = UNDESCRIBED[relative]
    assert samples["voltage_v"].min() == pytest.approx(low, abs=0.01)
    assert samples["voltage_v"].max() == pytest.approx(high, abs=0.01)
    result = validate_samples(samples, CellLimits.from_record(record))
    assert "voltage_out_of_window" not in result.counts_by_reason()
