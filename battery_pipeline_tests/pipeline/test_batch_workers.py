"""The cell batch's worker plumbing (`battery_pipeline.batch_workers`): results through shared
memory come back equal, writable and without files left behind; workers run below the storing
process."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from battery_pipeline import batch_workers


def _frame(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    voltage = rng.uniform(2.5, 4.2, rows)
    voltage[::97] = np.nan
    return pd.DataFrame({
        "cell_id": pd.Categorical(["A"] * rows),
        "cycle_number": np.arange(rows, dtype=np.int64) // 1000,
        "voltage_v": voltage,
        "step_type": pd.Categorical(rng.choice(["charge", "discharge", "rest"], rows)),
        "note": ["x"] * rows,  # object column: stays in the pickle
    })


def _worker_result(rows: int) -> dict:
    return {"samples": _frame(rows), "rows": rows}


def test_a_result_through_shared_memory_equals_the_original_and_leaves_no_file():
    with batch_workers.SharedFolder() as folder:
        packed = batch_workers.pack(_worker_result(200_000), folder)
        assert packed.path is not None and Path(packed.path).parent == Path(folder)
        assert len(packed.payload) < 2_000_000  # the numeric columns went out of band, not the pickle
        result = batch_workers.unpack(packed)
        assert not Path(packed.path).exists()  # unlinked once mapped; the arrays keep the pages
        pd.testing.assert_frame_equal(result["samples"], _frame(200_000))
        assert result["rows"] == 200_000
        # writable, and a write changes this copy only
        result["samples"].loc[0, "voltage_v"] = 9.0
        assert result["samples"]["voltage_v"].to_numpy().flags.aligned
        assert batch_workers.unpack(batch_workers.pack(_worker_result(200_000), folder))["samples"].loc[0, "voltage_v"] != 9.0
    assert not Path(folder).exists()


def test_a_small_result_needs_no_file():
    with batch_workers.SharedFolder() as folder:
        packed = batch_workers.pack(_worker_result(100), folder)
        assert packed.path is None and os.listdir(folder) == []
        pd.testing.assert_frame_equal(batch_workers.unpack(packed)["samples"], _frame(100))


def test_a_result_that_cannot_be_written_to_shared_memory_goes_through_the_pipe(tmp_path):
    # a folder that cannot take the file (as a full /dev/shm): the result still arrives whole
    packed = batch_workers.pack(_worker_result(200_000), str(tmp_path / "gone"))
    assert packed.path is None
    pd.testing.assert_frame_equal(batch_workers.unpack(packed)["samples"], _frame(200_000))


def test_results_from_worker_processes_come_back_whole():
    context = multiprocessing.get_context("forkserver")
    with batch_workers.SharedFolder() as folder, ProcessPoolExecutor(2, mp_context=context, initializer=batch_workers.lower_priority) as pool:
        futures = [pool.submit(batch_workers.packed_call, _worker_result, folder, rows) for rows in (150_000, 90_000, 10)]
        results = [batch_workers.unpack(f.result()) for f in futures]
        assert [len(r["samples"]) for r in results] == [150_000, 90_000, 10]
        pd.testing.assert_frame_equal(results[1]["samples"], _frame(90_000))
        assert os.listdir(folder) == []


def _niceness() -> int:
    return os.nice(0)


def test_workers_run_below_the_storing_process():
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(1, mp_context=context, initializer=batch_workers.lower_priority) as pool:
        worker = pool.submit(_niceness).result()
    assert worker == min(os.nice(0) + batch_workers.WORKER_NICENESS, 19)


def test_a_folder_left_by_a_dead_storing_process_is_removed_and_a_live_ones_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(batch_workers, "_memory_dir", lambda: str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    orphan = tmp_path / f"{batch_workers._PREFIX}{int(dead.stdout)}-abc"
    orphan.mkdir()
    (orphan / "x.frames").write_bytes(b"left by a killed batch")
    alive = tmp_path / f"{batch_workers._PREFIX}{os.getppid()}-def"
    alive.mkdir()
    unrelated = tmp_path / "someone-elses"
    unrelated.mkdir()
    with batch_workers.SharedFolder() as folder:
        assert Path(folder).is_dir()
        assert not orphan.exists()
    assert alive.exists() and unrelated.exists() and not Path(folder).exists()


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm on this system: results go through the temporary folder")
def test_results_wait_in_memory_not_on_disk():
    with batch_workers.SharedFolder() as folder:
        assert folder.startswith("/dev/shm/")
