"""BioLogic EC-Lab .mpt reader on the two zoo exports (real files) and on small edge-case files.

Reference values come from the files' own columns, parsed here independently with pandas:
`<I>/mA`, `Ewe/V`, `time/s`, `cycle number`, and the per-half-cycle signed
`Q charge/discharge/mA.h` (charge = largest positive value of a half cycle, discharge = the
magnitude of the most negative one). The peer check against yadg (.mpt) and galvani (.mpr) is
`benchmarks/biologic_peer_check.py` (GPL-3.0 peers, so outside the test suite).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from battery_pipeline.science.readers import SNIFF_BYTES, SourceFormatError, detect_format
from battery_pipeline.science.readers.biologic_mpt import BiologicMptReader
from battery_pipeline.science.schema import SAMPLE_COLUMNS, CellCycleSample
from battery_pipeline_tests.conftest import dataset_file

GCPL = "cycler_zoo/biologic_mpt/gcpl.pr_182.1.mpt"
NO_HEADER = "cycler_zoo/biologic_mpt/Sample_data_biologic_no_header.mpt"


def file_columns(path: Path) -> pd.DataFrame:
    """The file's data table as pandas reads it, skipping the header its second line declares."""
    lines = path.read_text(encoding="latin-1").splitlines()
    skip = int(lines[1].split(":")[1]) - 1 if lines[0].startswith("EC-Lab ASCII FILE") else 0
    return pd.read_csv(path, sep="\t", skiprows=skip, encoding="latin-1")


def capacities_per_cycle(cycle: np.ndarray, signed_q_mah: np.ndarray, half_cycle: np.ndarray) -> dict:
    """{(cycle, 'charge'|'discharge'): Ah} from EC-Lab's signed per-half-cycle counter."""
    table = pd.DataFrame({"cycle": cycle, "half": half_cycle, "q": signed_q_mah / 1000})
    out: dict = {}
    for (c, _), group in table.groupby(["cycle", "half"]):
        for direction, value in (("charge", group["q"].max()), ("discharge", -group["q"].min())):
            if value > 1e-9:
                out[(int(c), direction)] = out.get((int(c), direction), 0.0) + value
    return out


@pytest.fixture(scope="module")
def gcpl(datasets):
    path = dataset_file(datasets, GCPL)
    return path, file_columns(path), BiologicMptReader.read([path], "gcpl").samples


@pytest.fixture(scope="module")
def no_header(datasets):
    path = dataset_file(datasets, NO_HEADER)
    return path, file_columns(path), BiologicMptReader.read([path], "no_header").samples


@pytest.mark.parametrize("relative", [GCPL, NO_HEADER])
def test_detected_by_content(datasets, tmp_path, relative):
    path = dataset_file(datasets, relative)
    assert detect_format(path) is BiologicMptReader
    renamed = tmp_path / "export.txt"  # the content alone decides
    renamed.write_bytes(path.read_bytes())
    assert BiologicMptReader.sniff(renamed, renamed.read_bytes()[:SNIFF_BYTES])


def test_no_other_dataset_file_is_claimed(datasets):
    claimed = []
    for path in sorted(datasets.rglob("*")):
        if path.is_file() and path.parent.name != "biologic_mpt":
            with path.open("rb") as handle:
                if BiologicMptReader.sniff(path, handle.read(SNIFF_BYTES)):
                    claimed.append(path.name)
    assert claimed == []


def test_rows_and_si_values_equal_the_file(gcpl, no_header):
    for path, raw, samples in (gcpl, no_header):
        assert list(samples.columns) == SAMPLE_COLUMNS
        CellCycleSample.validate(samples)
        assert len(samples) == len(raw)
        assert (samples["source_file"] == path.name).all()
        np.testing.assert_array_equal(samples["source_row"], np.arange(len(raw)))
        np.testing.assert_allclose(samples["time_s"], raw["time/s"], rtol=0, atol=1e-9)
        np.testing.assert_array_equal(samples["cycle_number"], raw["cycle number"].astype(int))
    _, raw, samples = gcpl
    np.testing.assert_allclose(samples["voltage_v"], raw["Ewe/V"])
    np.testing.assert_allclose(samples["current_a"], raw["<I>/mA"] / 1000)
    _, raw, samples = no_header
    np.testing.assert_allclose(samples["voltage_v"], raw["Ecell/V"])
    np.testing.assert_allclose(samples["current_a"], raw["I/mA"] / 1000)
    np.testing.assert_allclose(samples["temperature_c"], raw[[c for c in raw if c.startswith("Temperature")][0]])


def test_positive_current_is_charge_and_raises_the_voltage(gcpl):
    _, raw, samples = gcpl
    active = raw["mode"] != 3
    assert ((raw["ox/red"][active] == 1) == (raw["<I>/mA"][active] > 0)).all()
    step_type = samples["step_type"].astype(str).to_numpy()
    assert (step_type[(raw["mode"] == 3).to_numpy()] == "rest").all()
    for half, group in raw[active].groupby("half cycle"):
        rise = group["Ewe/V"].iloc[-1] - group["Ewe/V"].iloc[0]
        charging = group["<I>/mA"].mean() > 0
        assert (rise > 0) == charging, half
        expected = "charge" if charging else "discharge"
        assert (step_type[group.index] == expected).all()


def test_cycles_and_capacity_match_the_files_own_counter(gcpl):
    _, raw, samples = gcpl
    expected = capacities_per_cycle(
        raw["cycle number"].to_numpy(), raw["Q charge/discharge/mA.h"].to_numpy(), raw["half cycle"].to_numpy()
    )
    moving = samples[samples["step_type"] != "rest"]
    ours = moving.groupby(["cycle_number", "step_type"], observed=True)["capacity_ah"].max().to_dict()
    assert samples["cycle_number"].nunique() == raw["cycle number"].nunique() == 5
    assert set(ours) == set(expected)
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, rel=0.005), key
    # (Q-Qo) is the same charge counted from the start: a discharge half cycle moves it by -Q.
    qqo = raw["(Q-Qo)/mA.h"].to_numpy() / 1000
    half = raw["half cycle"].to_numpy()
    for h in (3, 5, 7):
        rows = np.flatnonzero(half == h)
        moved = qqo[rows[0] - 1] - qqo[rows[-1]]
        cycle = int(raw["cycle number"].iloc[rows[0]])
        assert ours[(cycle, "discharge")] == pytest.approx(moved, rel=0.005)
    assert samples.loc[samples["step_type"] == "rest", "capacity_ah"].isna().all()


def test_file_states_no_chemistry_or_capacity(datasets):
    for relative in (GCPL, NO_HEADER):
        cell = BiologicMptReader.describe([dataset_file(datasets, relative)])
        assert cell.chemistry is None and cell.nominal_capacity_ah is None and cell.origin == {}


# --- edge cases written into tmp_path -------------------------------------------------------

COLUMNS = ["mode", "ox/red", "Ns", "time/s", "control/V/mA", "Ewe/V", "<I>/mA",
           "Q charge/discharge/mA.h", "half cycle", "cycle number"]
FOUR_ROWS = [
    [3, 0, 0, 0.0, 0.0, 3.40, 0.0, 0.0, 0, 0],
    [1, 1, 1, 10.0, 1.0, 3.60, 1.0, 0.0, 0, 0],
    [1, 1, 1, 3610.0, 1.0, 4.10, 1.0, 1.0, 0, 0],
    [1, 0, 2, 3620.0, -2.0, 3.90, -2.0, -0.5, 1, 0],
]


def write_mpt(directory: Path, name: str, rows, columns=COLUMNS, header_lines=None, decimal=".",
              extra_header=()) -> Path:
    def cell(value):
        return f"{value:.7E}".replace(".", decimal) if isinstance(value, float) else str(value)

    body = ["\t".join(columns) + "\t"] + ["\t".join(cell(v) for v in row) for row in rows]
    settings = ["", "Galvanostatic Cycling with Potential Limitation", "", *extra_header]
    count = header_lines if header_lines is not None else 2 + len(settings) + 1
    text = "\r\n".join(["EC-Lab ASCII FILE", f"Nb header lines : {count}", *settings, *body]) + "\r\n"
    path = directory / name
    path.write_bytes(text.encode("latin-1"))
    return path


def test_four_row_file(tmp_path):
    path = write_mpt(tmp_path, "four.mpt", FOUR_ROWS)
    assert detect_format(path) is BiologicMptReader
    samples = BiologicMptReader.read([path], "four").samples
    CellCycleSample.validate(samples)
    assert samples["step_type"].astype(str).tolist() == ["rest", "charge", "charge", "discharge"]
    np.testing.assert_allclose(samples["current_a"], [0, 1e-3, 1e-3, -2e-3])
    np.testing.assert_allclose(samples["capacity_ah"], [np.nan, 0, 1e-3, 0.5e-3])


def test_decimal_comma_export_reads_like_decimal_point(tmp_path):
    extra = ("Battery capacity : 2,200 mA.h", "Electrode material : NMC811")
    point = BiologicMptReader.read([write_mpt(tmp_path, "point.mpt", FOUR_ROWS, extra_header=extra)], "p")
    comma_path = write_mpt(tmp_path, "comma.mpt", FOUR_ROWS, decimal=",", extra_header=extra)
    assert "3,6000000E+00\t" in comma_path.read_text(encoding="latin-1")
    comma = BiologicMptReader.read([comma_path], "c")
    pd.testing.assert_frame_equal(
        point.samples.drop(columns=["cell_id", "source_file"]), comma.samples.drop(columns=["cell_id", "source_file"])
    )
    assert comma.cell.nominal_capacity_ah == pytest.approx(2.2e-3)
    assert comma.cell.chemistry == "NMC811"
    assert comma.cell.origin["nominal_capacity_ah"].startswith("file: ")
    assert comma.cell.origin["chemistry"].startswith("file: ")


def test_rest_only_file(tmp_path):
    rows = [[3, 0, 0, float(10 * i), 0.0, 3.3, 0.0, 0.0, 0, 0] for i in range(6)]
    samples = BiologicMptReader.read([write_mpt(tmp_path, "rest.mpt", rows)], "rest").samples
    CellCycleSample.validate(samples)
    assert (samples["step_type"] == "rest").all()
    assert samples["capacity_ah"].isna().all()
    assert len(samples) == 6


def test_file_without_current_column_is_refused(tmp_path):
    columns = [c for c in COLUMNS if c != "<I>/mA"]
    rows = [[v for c, v in zip(COLUMNS, row) if c != "<I>/mA"] for row in FOUR_ROWS]
    path = write_mpt(tmp_path, "nocurrent.mpt", rows, columns=columns)
    with pytest.raises(SourceFormatError, match=r"nocurrent\.mpt: no measured current column"):
        BiologicMptReader.read([path], "x")


@pytest.mark.parametrize("declared", [4, 9, 500])
def test_damaged_header_count_is_refused(tmp_path, declared):
    path = write_mpt(tmp_path, "damaged.mpt", FOUR_ROWS, header_lines=declared)
    assert detect_format(path) is BiologicMptReader  # still an EC-Lab file, just damaged
    with pytest.raises(SourceFormatError, match=rf"damaged\.mpt: damaged header: 'Nb header lines : {declared}'.*column row is line 6"):
        BiologicMptReader.read([path], "x")
