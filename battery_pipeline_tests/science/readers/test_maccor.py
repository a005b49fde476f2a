"""Maccor raw text reader on TRI's BEEP fixtures (real files) and on small synthetic exports."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from battery_pipeline.science.readers import SourceFormatError, detect_format
from battery_pipeline.science.readers.canonical import CanonicalCsvReader
from battery_pipeline.science.readers.digatron import DigatronCsvReader
from battery_pipeline.science.readers.maccor import MaccorTextReader
from battery_pipeline.science.schema import SAMPLE_COLUMNS, CellCycleSample
from battery_pipeline_tests.conftest import dataset_file

PREDIAG = "cycler_samples/PreDiag_000229_000229_truncated.034"
DIAG = "cycler_samples/PredictionDiagnostics_000109_tztest.010"
BEEP_CSV = "cycler_samples/BEEPDatapath_maccor_parameterized_memloaded.csv"


@pytest.fixture(scope="module")
def prediag(datasets):
    path = dataset_file(datasets, PREDIAG)
    return path, MaccorTextReader.read([path], "prediag").samples


@pytest.fixture(scope="module")
def diag(datasets):
    path = dataset_file(datasets, DIAG)
    return path, MaccorTextReader.read([path], "diag").samples


@pytest.mark.parametrize("relative", [PREDIAG, DIAG])
def test_detected_by_content_not_extension(datasets, relative):
    path = dataset_file(datasets, relative)
    assert detect_format(path) is MaccorTextReader
    assert path.suffix not in MaccorTextReader.extensions  # .034/.010 are channel numbers


def test_beep_processed_csv_is_not_claimed(datasets):
    path = dataset_file(datasets, BEEP_CSV)
    head = path.read_bytes()[: 64 * 1024]
    for reader in (MaccorTextReader, DigatronCsvReader, CanonicalCsvReader):
        assert not reader.sniff(path, head), reader.format_name


def test_canonical_frame_validates(prediag, diag):
    for _, samples in (prediag, diag):
        assert list(samples.columns) == SAMPLE_COLUMNS
        CellCycleSample.validate(samples)


def test_current_sign_follows_state(datasets, prediag, diag):
    for relative, (_, samples) in ((PREDIAG, prediag), (DIAG, diag)):
        raw = pd.read_csv(datasets / relative, sep="\t", skiprows=1, usecols=["State", "Amps"])
        assert len(raw) == len(samples)
        state = raw["State"].to_numpy()
        current = samples["current_a"].to_numpy()
        assert (current[state == "D"] < 0).all()
        assert (current[state == "C"] > 0).all()
        assert (current[state == "R"] == 0).all()
        np.testing.assert_allclose(np.abs(current), np.abs(raw["Amps"].to_numpy()))
        step_type = samples["step_type"].astype(str).to_numpy()
        assert (step_type[state == "D"] == "discharge").all()
        assert (step_type[state == "C"] == "charge").all()
        assert (step_type[state == "R"] == "rest").all()


def test_other_state_record_is_rest(diag):
    _, samples = diag
    last = samples.iloc[-1]  # the `O` record ending the .010 slice: 0 A, Amp-hr repeated
    assert last["step_type"] == "rest"
    assert last["current_a"] == 0
    assert np.isnan(last["capacity_ah"])


def test_time_cycle_step_as_the_file_states(prediag, diag):
    _, a = prediag
    assert a["time_s"].iloc[0] == 0.0
    assert (np.diff(a["time_s"].to_numpy()) > 0).all()
    assert (np.diff(a["cycle_number"].to_numpy()) >= 0).all()
    assert sorted(a["cycle_number"].unique()) == [0, 1]
    assert set(a["step_index"].unique()) == {1, 2, 3, 5, 6}

    _, b = diag
    # A slice of a long test keeps its time since the test start.
    assert b["time_s"].iloc[0] == pytest.approx(1804441.3)
    assert (np.diff(b["time_s"].to_numpy()) >= 0).all()
    assert (np.diff(b["cycle_number"].to_numpy()) >= 0).all()
    assert sorted(b["cycle_number"].unique()) == [86, 87, 88, 89]
    assert b["source_row"].tolist() == list(range(len(b)))
    assert set(b["source_file"].unique()) == {"PredictionDiagnostics_000109_tztest.010"}


def test_capacity_accumulates_over_steps_within_cycle(prediag, diag):
    _, a = prediag
    per = a.groupby(["cycle_number", "step_type"], observed=True)["capacity_ah"].max()
    assert per[(0, "discharge")] == pytest.approx(4.7626, abs=1e-3)
    # Steps 2 (pulse) and 5 of cycle 0 are both charge: 5's Amp-hr restarts, the canonical adds.
    assert per[(0, "charge")] == pytest.approx(0.001344 + 3.851557, abs=1e-5)
    assert a.loc[a["step_type"] == "rest", "capacity_ah"].isna().all()

    _, b = diag
    per = b.groupby(["cycle_number", "step_type"], observed=True)["capacity_ah"].max()
    # Cycle 87 charges in steps 61 (fast), 62 (one record), 63 (CV): 1.451990 + 0 + 1.131308.
    assert per[(87, "charge")] == pytest.approx(1.451990 + 1.131308, abs=1e-5)
    for (cycle, kind), group in b[b["step_type"] != "rest"].groupby(["cycle_number", "step_type"], observed=True):
        assert (np.diff(group["capacity_ah"].to_numpy()) >= -1e-12).all(), (cycle, kind)
        assert (group["capacity_ah"] >= 0).all()


def test_capacity_matches_beep_processing(datasets, diag):
    """BEEP's own processed copy of the .010 file agrees with our per-cycle capacity."""
    beep = pd.read_csv(dataset_file(datasets, BEEP_CSV), usecols=["charge_capacity", "discharge_capacity"])
    _, samples = diag
    kind = samples["step_type"].astype(str).to_numpy()
    ours = samples["capacity_ah"].to_numpy()
    np.testing.assert_allclose(ours[kind == "charge"], beep["charge_capacity"].to_numpy()[kind == "charge"], atol=1e-9)
    np.testing.assert_allclose(
        ours[kind == "discharge"], beep["discharge_capacity"].to_numpy()[kind == "discharge"], atol=1e-9
    )


def test_resistance_zero_means_not_measured(prediag):
    _, samples = prediag
    assert samples["internal_resistance_ohm"].isna().all()
    assert samples["temperature_c"].isna().all()


def test_describe_and_cell_key(datasets):
    path = dataset_file(datasets, DIAG)
    cell = MaccorTextReader.describe([path])
    assert cell.licence == "Apache-2.0"
    assert "BEEP" in cell.citation
    assert (cell.voltage_min_v, cell.voltage_max_v) == (2.7, 4.4)
    assert cell.nominal_capacity_ah is None and cell.chemistry is None
    assert "PredictionDiagnostics_000109.000" in cell.description
    assert MaccorTextReader.cell_key(path) == path.name  # channel extension kept


HEADER = "Today's Date 01/02/2020  Date of Test:\t01/01/2020\t Filename:\tC:\\x\\Test.001 Procedure: P.000\tComment/Barcode: X"
COLUMNS = "Rec#\tCyc#\tStep\tTest (Sec)\tStep (Sec)\tAmp-hr\tWatt-hr\tAmps\tVolts\tState\tES\tDPt Time\tACImp/Ohms\tDCIR/Ohms"


def _maccor(tmp_path, rows, name="Test.001"):
    lines = [HEADER, COLUMNS] + ["\t".join(str(v) for v in row) for row in rows]
    path = tmp_path / name
    path.write_text("\r\n".join(lines) + "\r\n")
    return path


def test_unsigned_export_gets_sign_from_state(tmp_path):
    rows = [
        (1, 0, 1, 0.0, 0.0, 0.0, 0.0, 0.0, 3.5, "R", 0, "01/01/2020 00:00:00", 0, 0),
        (2, 0, 2, 10.0, 10.0, 0.01, 0.04, 1.0, 3.6, "C", 5, "01/01/2020 00:00:10", 0, 0.021),
        (3, 0, 2, 20.0, 20.0, 0.02, 0.08, 1.0, 3.7, "C", 5, "01/01/2020 00:00:20", 0.05, 0),
        (4, 0, 3, 30.0, 10.0, 0.01, 0.04, 2.0, 3.6, "D", 5, "01/01/2020 00:00:30", 0, 0),
        (5, 1, 4, 40.0, 0.0, 0.01, 0.04, 0.0, 3.6, "S", 193, "01/01/2020 00:00:40", 0, 0),
    ]
    path = _maccor(tmp_path, rows)
    assert detect_format(path) is MaccorTextReader
    samples = MaccorTextReader.read([path], "t").samples
    CellCycleSample.validate(samples)
    assert samples["current_a"].tolist() == [0.0, 1.0, 1.0, -2.0, 0.0]
    assert samples["step_type"].astype(str).tolist() == ["rest", "charge", "charge", "discharge", "rest"]
    assert samples["capacity_ah"].tolist()[1:4] == [0.01, 0.02, 0.01]
    # DCIR preferred, AC impedance where only it was measured, 0 = not measured.
    r = samples["internal_resistance_ohm"].tolist()
    assert r[1] == 0.021 and r[2] == 0.05 and np.isnan(r[0]) and np.isnan(r[3])


def test_file_without_data_rows(tmp_path):
    path = _maccor(tmp_path, [])
    with pytest.raises(SourceFormatError, match="no data rows"):
        MaccorTextReader.read([path], "t")
