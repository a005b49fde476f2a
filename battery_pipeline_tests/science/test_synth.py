"""The battery simulator: reproducible, physically sane, with the ground truth it claims.

Most tests share one default fleet (8 cells, ~160k rows, generated in well under a second).
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from battery_pipeline.science import synth
from battery_pipeline.science.schema import SAMPLE_COLUMNS, CellCycleSample

SIDECAR_KEYS = {
    "dataset",
    "chemistry",
    "nominal_capacity_ah",
    "voltage_min_v",
    "voltage_max_v",
    "licence",
    "citation",
    "description",
}
NOISE_TOLERANCE_V = 0.01  # 10 sigma of the 1 mV voltage noise


@pytest.fixture(scope="module")
def fleet() -> synth.Fleet:
    started = time.perf_counter()
    generated = synth.generate_fleet()
    print(f"default fleet: {generated.n_rows} rows in {time.perf_counter() - started:.2f} s")
    return generated


@pytest.fixture(scope="module")
def written(fleet, tmp_path_factory):
    directory = tmp_path_factory.mktemp("fleet")
    synth.write_fleet(fleet, directory)
    return directory


def _clean_cells(fleet: synth.Fleet) -> list[str]:
    return list(fleet.cells.loc[fleet.cells["n_faults"] == 0, "cell_id"])


def _limits(fleet: synth.Fleet, cell_id: str):
    return fleet.cells.set_index("cell_id").loc[cell_id]


# --- reproducibility -------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files_and_other_seed_differs(tmp_path):
    a = synth.generate_fleet(n_cells=3, seed=5, cycles=6)
    b = synth.generate_fleet(n_cells=3, seed=5, cycles=6)
    c = synth.generate_fleet(n_cells=3, seed=6, cycles=6)
    for cell_id in a.samples:
        pd.testing.assert_frame_equal(a.samples[cell_id], b.samples[cell_id])
    pd.testing.assert_frame_equal(a.cycles, b.cycles)
    pd.testing.assert_frame_equal(a.faults, b.faults)
    synth.write_fleet(a, tmp_path / "a")
    synth.write_fleet(b, tmp_path / "b")
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    first = next(iter(a.samples))
    assert not a.samples[first]["voltage_v"].equals(c.samples[first]["voltage_v"])
    assert not np.allclose(a.cycles["true_capacity_ah"], c.cycles["true_capacity_ah"])


def test_a_cell_does_not_depend_on_fleet_size_and_truth_not_on_cycle_count(fleet):
    small = synth.generate_fleet(n_cells=2, seed=synth.DEFAULT_SEED, cycles=15)
    assert list(small.samples) == list(fleet.samples)[:2]
    for cell_id in small.samples:
        full = fleet.cycles[fleet.cycles["cell_id"] == cell_id].head(15).reset_index(drop=True)
        short = small.cycles[small.cycles["cell_id"] == cell_id].reset_index(drop=True)
        pd.testing.assert_series_equal(full["true_capacity_ah"], short["true_capacity_ah"])
        pd.testing.assert_series_equal(full["true_r0_ohm"], short["true_r0_ohm"])


# --- shape of the fleet ----------------------------------------------------------------------


def test_default_fleet_is_eight_cells_two_chemistries_hundreds_of_cycles(fleet):
    cells = fleet.cells
    assert len(cells) >= 8 and len(fleet.samples) == len(cells)
    assert set(cells["chemistry"]) == {"NMC", "LFP"}
    assert set(cells["ambient_c"]) >= {25.0, 45.0}
    assert cells["n_cycles"].between(300, 600).all()
    assert cells["n_cycles"].nunique() > 1  # cell-to-cell variation
    per_cycle = cells["n_rows"] / cells["n_cycles"]
    assert per_cycle.between(20, 60).all()
    assert 100_000 <= fleet.n_rows <= 300_000
    nmc = cells[cells["chemistry"] == "NMC"].iloc[0]
    lfp = cells[cells["chemistry"] == "LFP"].iloc[0]
    assert (nmc.nominal_capacity_ah, nmc.voltage_min_v, nmc.voltage_max_v) == (3.0, 2.5, 4.2)
    assert (lfp.nominal_capacity_ah, lfp.voltage_min_v, lfp.voltage_max_v) == (1.1, 2.0, 3.6)


def test_frames_are_canonical_and_a_clean_cell_validates(fleet):
    clean = _clean_cells(fleet)
    assert clean, "at least one completely clean cell"
    for cell_id, frame in fleet.samples.items():
        assert list(frame.columns) == SAMPLE_COLUMNS
        assert (frame["source_file"] == f"{cell_id}.parquet").all()
        assert (frame["source_row"].to_numpy() == np.arange(len(frame))).all()
    frame = fleet.samples[clean[0]]
    CellCycleSample.validate(frame)
    dtypes = frame.dtypes.astype(str).to_dict()
    assert dtypes["cycle_number"] == dtypes["step_index"] == dtypes["source_row"] == "int64"
    assert dtypes["time_s"] == dtypes["voltage_v"] == dtypes["capacity_ah"] == "float64"


def test_ocv_curves_are_monotone_and_span_the_window():
    soc = np.linspace(0.0, 1.0, 20001)
    for chem in synth.CHEMISTRIES:
        ocv = chem.ocv(soc)
        assert np.all(np.diff(ocv) > 0), chem.name
        assert ocv[0] == pytest.approx(chem.voltage_min_v, abs=1e-9)
        assert ocv[-1] == pytest.approx(chem.voltage_max_v, abs=1e-9)
    plateau = synth.LFP.ocv(np.linspace(0.2, 0.9, 50))
    assert plateau.min() > 3.25 and plateau.max() < 3.36  # LFP: flat ~3.3 V
    assert synth.NMC.ocv(0.9) - synth.NMC.ocv(0.2) > 0.4  # NMC: sloped


# --- physics ---------------------------------------------------------------------------------


def test_signs_windows_time_and_relaxation_on_clean_cells(fleet):
    for cell_id in _clean_cells(fleet):
        frame = fleet.samples[cell_id]
        limits = _limits(fleet, cell_id)
        step, current = frame["step_type"], frame["current_a"]
        assert (current[step == "discharge"] < 0).all()
        assert (current[step == "charge"] > 0).all()
        assert (current[step == "rest"] == 0).all()
        voltage = frame["voltage_v"]
        assert voltage.min() >= limits.voltage_min_v - NOISE_TOLERANCE_V
        assert voltage.max() <= limits.voltage_max_v + NOISE_TOLERANCE_V
        assert (np.diff(frame["time_s"].to_numpy()) > 0).all()
        assert frame["temperature_c"].notna().all()
        # cells heat up under load: hotter than ambient on average during discharge
        discharge_temp = frame.loc[step == "discharge", "temperature_c"].mean()
        assert discharge_temp > limits.ambient_c + (1.5 if limits.chemistry == "NMC" else 0.3)
        # rest after discharge: an instant IR rebound, then an RC relaxation upwards
        rest = frame[frame["step_index"] == 5].groupby("cycle_number")["voltage_v"]
        end_of_discharge = frame[frame["step_index"] == 4].groupby("cycle_number")["voltage_v"].last()
        assert ((rest.first() - end_of_discharge) > 0.02).all()
        assert ((rest.last() - rest.first()) > 0.005).mean() > 0.95
        # CV current tapers off within every cycle
        cv = frame[frame["step_index"] == 2]
        assert (cv.groupby("cycle_number")["current_a"].apply(lambda s: s.iloc[-1] < 0.1 * s.iloc[0])).all()


def _integrated_discharge_ah(frame: pd.DataFrame) -> pd.Series:
    """Trapezoidal integral of the measured discharge current per cycle (what a user would do)."""
    discharge = frame[frame["step_type"] == "discharge"]
    time_s = discharge["time_s"].to_numpy()
    current = -discharge["current_a"].to_numpy()
    cycle = discharge["cycle_number"].to_numpy()
    same = cycle[1:] == cycle[:-1]
    pieces = np.where(same, 0.5 * (current[1:] + current[:-1]) * np.diff(time_s), 0.0) / 3600.0
    # the first sample of the step is logged 1 s after the step began
    first = np.concatenate([[True], ~same])
    ah = pd.Series(pieces).groupby(cycle[1:]).sum()
    start = pd.Series(current[first] * 1.0 / 3600.0, index=cycle[first])
    return ah.add(start, fill_value=0.0)


def test_integrated_discharge_capacity_matches_ground_truth_within_one_percent(fleet):
    truth = fleet.cycles.set_index(["cell_id", "cycle_number"])
    ratio = truth["measured_discharge_capacity_ah"] / truth["true_capacity_ah"]
    assert ratio.between(0.99, 1.0).all(), ratio.describe()
    for cell_id in _clean_cells(fleet):
        integrated = _integrated_discharge_ah(fleet.samples[cell_id])
        true = truth.loc[cell_id, "true_capacity_ah"]
        assert len(integrated) == len(true)
        relative = (integrated.to_numpy() - true.to_numpy()) / true.to_numpy()
        assert np.abs(relative).max() < 0.01, cell_id
        # the cycler's own coulomb count; ours sees 1-2 mA noise on ~12 samples per discharge
        reported = truth.loc[cell_id, "measured_discharge_capacity_ah"].to_numpy()
        assert np.abs(integrated.to_numpy() / reported - 1.0).max() < 3e-3


def test_capacity_fades_with_a_knee_and_faster_when_hot(fleet):
    cells = fleet.cells.set_index("cell_id")
    for cell_id, cycles in fleet.cycles.groupby("cell_id"):
        soh = cycles["true_soh"].to_numpy()
        n = len(soh)
        assert soh[-1] < 0.85 and soh[0] > 0.98
        assert soh[-1] < soh[n // 2] < soh[n // 10]
        smooth = pd.Series(soh).rolling(10, center=True, min_periods=1).mean().to_numpy()
        early = (smooth[n // 5] - smooth[n // 2]) / (n // 2 - n // 5)
        late = (smooth[(17 * n) // 20] - smooth[n - 1]) / (n - 1 - (17 * n) // 20)
        assert late > 3.0 * early > 0, cell_id
        knee = cells.loc[cell_id, "knee_cycle"]
        assert 0.3 * n < knee < 0.9 * n
        eol = cells.loc[cell_id, "eol_cycle"]
        assert soh[eol - 1] < synth.EOL_SOH <= soh[: eol - 1].min()
        r0 = cycles["true_r0_ohm"].to_numpy()
        assert r0[-1] > 1.3 * r0[0]  # resistance grows with fade
    for chemistry, group in fleet.cells.groupby("chemistry"):
        by_temp = group.groupby("ambient_c")["eol_cycle"].mean()
        assert by_temp.loc[45.0] < by_temp.loc[25.0], chemistry


# --- injected faults -------------------------------------------------------------------------


def test_injected_faults_are_where_the_ground_truth_says(fleet):
    faults = fleet.faults
    kinds = {"voltage_spike", "duplicated_block", "temperature_dropout", "time_backwards"}
    assert set(faults["kind"]) == kinds
    assert faults["n_rows"].sum() < 0.001 * fleet.n_rows
    for fault in faults.itertuples():
        frame = fleet.samples[fault.cell_id]
        limits = _limits(fleet, fault.cell_id)
        rows = slice(fault.source_row, fault.source_row + fault.n_rows)
        assert fault.source_file == f"{fault.cell_id}.parquet"
        if fault.kind == "voltage_spike":
            value = frame["voltage_v"].iloc[fault.source_row]
            assert value > limits.voltage_max_v + 1.0
        elif fault.kind == "temperature_dropout":
            assert frame["temperature_c"].iloc[rows].isna().all()
            assert pd.notna(frame["temperature_c"].iloc[fault.source_row - 1])
        elif fault.kind == "time_backwards":
            time_s = frame["time_s"].to_numpy()
            assert time_s[fault.source_row] < time_s[fault.source_row - 1]
            assert time_s[fault.source_row + 1] > time_s[fault.source_row - 1]
        elif fault.kind == "duplicated_block":
            copy = frame.iloc[rows].drop(columns="source_row").reset_index(drop=True)
            original = frame.iloc[fault.source_row - fault.n_rows : fault.source_row]
            pd.testing.assert_frame_equal(copy, original.drop(columns="source_row").reset_index(drop=True))
    # and nowhere else: every spike, gap and time reversal in the data is a recorded fault
    for cell_id, frame in fleet.samples.items():
        mine = faults[faults["cell_id"] == cell_id]
        spikes = set(np.flatnonzero(frame["voltage_v"].to_numpy() > 5.0))
        assert spikes == set(mine.loc[mine["kind"] == "voltage_spike", "source_row"])
        reversals = set(np.flatnonzero(np.diff(frame["time_s"].to_numpy()) < 0) + 1)
        expected = set(mine.loc[mine["kind"].isin(["time_backwards", "duplicated_block"]), "source_row"])
        assert reversals == expected, cell_id
        gaps = frame["temperature_c"].isna().sum()
        assert gaps == mine.loc[mine["kind"] == "temperature_dropout", "n_rows"].sum()
    counts = fleet.cells.set_index("cell_id")["n_faults"]
    assert counts.sum() == len(faults) and (counts == 0).sum() >= 1


# --- output ----------------------------------------------------------------------------------


def test_written_directory_has_parquet_sidecars_and_truth_and_is_small(fleet, written):
    parquet = sorted(written.glob("*.parquet"))
    assert [p.stem for p in parquet] == sorted(fleet.samples)
    total_mb = sum(p.stat().st_size for p in parquet) / 1e6
    print(f"default fleet Parquet: {total_mb:.2f} MB")
    assert total_mb < 5.0
    for path in parquet:
        sidecar = json.loads((written / f"{path.stem}.cell.json").read_text())
        assert set(sidecar) == SIDECAR_KEYS
        assert sidecar["chemistry"] == _limits(fleet, path.stem).chemistry
    cell_id = parquet[0].stem
    back = pd.read_parquet(parquet[0])
    pd.testing.assert_frame_equal(back, fleet.samples[cell_id], check_dtype=False)
    assert list(back.columns) == SAMPLE_COLUMNS
    cells = pd.read_csv(written / "ground_truth_cells.csv")
    assert {"cell_id", "chemistry", "nominal_capacity_ah", "voltage_min_v", "voltage_max_v", "ambient_c",
            "knee_cycle", "eol_cycle", "seed"} <= set(cells.columns)
    cycles = pd.read_csv(written / "ground_truth_cycles.csv")
    assert {"cell_id", "cycle_number", "true_capacity_ah", "true_soh", "true_r0_ohm",
            "measured_discharge_capacity_ah"} <= set(cycles.columns)
    assert len(cycles) == len(fleet.cycles)
    faults = pd.read_csv(written / "injected_faults.csv")
    assert list(faults.columns) == synth.FAULT_COLUMNS and len(faults) == len(fleet.faults)


def test_cell_seed_reproduces_a_cell_alone(fleet):
    row = fleet.cells.iloc[3]
    spec = synth.make_cell_spec(3, synth.DEFAULT_SEED)
    assert spec.seed == row["seed"] and spec.cell_id == row["cell_id"]


def test_cli_writes_a_small_fleet(tmp_path, capsys):
    assert synth.main([str(tmp_path), "--cells", "2", "--seed", "3", "--cycles", "4"]) == 0
    assert len(list(tmp_path.glob("*.parquet"))) == 2
    assert (tmp_path / "ground_truth_cycles.csv").exists()
    assert "2 cells" in capsys.readouterr().out


# --- benchmark fast path ---------------------------------------------------------------------


def test_fast_path_makes_a_large_canonical_frame():
    frame = synth.generate_samples(400_000, seed=1, n_cells=4)
    assert 400_000 <= len(frame) < 400_000 + 4 * 200
    assert list(frame.columns) == SAMPLE_COLUMNS
    assert isinstance(frame["cell_id"].dtype, pd.CategoricalDtype)
    assert frame["cell_id"].nunique() == 4
    plain = frame.head(50_000).astype({c: str for c in ("cell_id", "step_type", "source_file")})
    CellCycleSample.validate(plain)
    for _, cell in frame.groupby("cell_id", observed=True):
        assert (np.diff(cell["time_s"].to_numpy()) > 0).all()
        assert (cell["source_row"].to_numpy() == np.arange(len(cell))).all()
    assert (frame.loc[frame["step_type"] == "discharge", "current_a"] < 0).all()


def test_benchmark_frames_match_the_fast_frame():
    frames = list(synth.iter_benchmark_frames(50_000, seed=2, n_cells=2))
    assert len(frames) == 2
    fast = synth.generate_samples(50_000, seed=2, n_cells=2)
    stitched = pd.concat(frames, ignore_index=True)
    pd.testing.assert_frame_equal(
        fast.astype({c: str for c in ("cell_id", "step_type", "source_file")}).astype({"cell_id": object}),
        stitched,
        check_dtype=False,
    )
