"""`cycle_anomalies` through Dagster on a warehouse holding a fleet's per-cycle features: the
injected anomaly is in the table with its reason, the checks say what they found, and the card
and results are written."""

import json

import dagster as dg
import duckdb
import pytest

from battery_pipeline.assets import anomalies
from battery_pipeline.resources import ModelStore, Warehouse
from battery_pipeline_tests.science.test_anomalies import fleet


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("anomalies")
    features, cells = fleet(31)
    at = (features["cell_id"] == "cell_3") & (features["cycle_number"] == 140)
    features.loc[at, "discharge_capacity_ah"] *= 0.9  # a 10 % drop: far beyond warning
    features.loc[features["cell_id"] == "cell_7", "discharge_current_mean_a"] = None
    features.loc[features["cycle_number"] == 77, "cycle_class"] = "diagnostic"
    database = tmp / "warehouse.duckdb"
    warehouse = Warehouse(database=str(database))
    warehouse.replace_table("cycle_features", features)
    warehouse.replace_table("cells", cells)
    store = ModelStore(models_dir=str(tmp / "models"), results_dir=str(tmp / "results"), reports_dir=str(tmp / "reports"))
    with dg.instance_for_test() as instance:
        result = dg.materialize([anomalies.cycle_anomalies], instance=instance, raise_on_error=False,
                                resources={"warehouse": warehouse, "model_store": store})
    with duckdb.connect(str(database), read_only=True) as conn:
        stored = conn.execute(f"SELECT * FROM {anomalies.CYCLE_ANOMALIES}").df()
    return result, stored, features, tmp


def test_every_cycle_has_a_row_and_the_injected_drop_is_critical(run):
    result, stored, features, _ = run
    assert result.success
    assert len(stored) == len(features)
    hit = stored.loc[(stored["cell_id"] == "cell_3") & (stored["cycle_number"] == 140)].iloc[0]
    assert hit["severity"] == "critical" and hit["signal"] == "capacity"
    assert "below the cell's trend" in hit["reason"]
    assert not stored.loc[stored["cycle_number"] == 77, "scored"].any()
    cell7 = stored.loc[stored["cell_id"] == "cell_7"]
    assert cell7["fleet"].str.contains("protocol is unknown").all()


def test_checks_report_what_they_found(run):
    result, _, _, _ = run
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["anomaly_rows_complete"].passed
    assert checks["anomaly_scores_causal"].passed, checks["anomaly_scores_causal"].description
    assert "3 cell(s) probed" in checks["anomaly_scores_causal"].description
    assert checks["anomaly_card_complete"].passed
    assert not checks["no_critical_anomaly"].passed  # warns: cell_3 cycle 140
    assert checks["no_critical_anomaly"].severity == dg.AssetCheckSeverity.WARN
    assert "cell_3 cycle 140" in checks["no_critical_anomaly"].description
    assert checks["anomalies_beat_baseline"].passed, checks["anomalies_beat_baseline"].description


def test_results_and_card_are_written_from_the_run(run):
    _, stored, _, tmp = run
    payload = json.loads((tmp / "results" / anomalies.RESULTS_FILE).read_text())
    assert payload["summary"]["cycles"] == len(stored)
    assert payload["summary"]["by_severity"]["critical"] >= 1
    assert payload["self_test"]["all"]["injected"] > 0
    card = (tmp / "reports" / anomalies.CARD_FILE).read_text()
    for section in ("## Intended use", "## Data", "## Method", "## Self-test on this fleet", "## Limitations"):
        assert section in card
    assert "| capacity |" in card

