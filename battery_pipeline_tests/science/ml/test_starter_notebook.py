"""The starter notebook runs top to bottom on a warehouse holding pipeline tables.

Its code cells are executed in order in one namespace, as a kernel would (no Jupyter needed in
CI); the warehouse holds `cycle_features` / `cycle_labels` made by the pipeline's own science
functions from simulated cells.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

NOTEBOOK = Path(__file__).resolve().parents[3] / "notebooks" / "starter_baseline_lstm_soh.ipynb"


def test_starter_notebook_trains_the_lstm_from_the_warehouse(tmp_path, monkeypatch, fleet_tables):
    features, labels, _ = fleet_tables
    small = features["cycle_number"] <= 120  # a short run: the test checks the workflow, not accuracy
    db = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(db)) as conn:
        conn.register("f", features[small])
        conn.register("l", labels[small.to_numpy()])
        conn.execute("CREATE TABLE cycle_features AS SELECT * FROM f")
        conn.execute("CREATE TABLE cycle_labels AS SELECT * FROM l")
    monkeypatch.setenv("BATTERY_PIPELINE_DUCKDB", str(db))
    monkeypatch.setenv("BATTERY_PIPELINE_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("NOTEBOOK_MAX_EPOCHS", "3")

    notebook = json.loads(NOTEBOOK.read_text())
    namespace: dict = {}
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), f"{NOTEBOOK.name}:{cell['id']}", "exec"), namespace)

    results = json.loads((tmp_path / "results" / "soh_estimation_complete_results.json").read_text())
    assert set(results["split"]["test"]).isdisjoint(results["split"]["train"])
    assert len(results["training_history"]) <= 3
    assert {"rmse", "mae", "r2", "mape_percent", "within_3_points", "within_5_points"} <= set(results["metrics"]["test"])
    assert "discharge_capacity_ah" not in results["features"]
    assert (tmp_path / "results" / "starter_lstm_soh" / "lstm_state.pt").exists()
