"""Pack telemetry and every enabled twin model materialized in-process on a temporary DuckDB,
judged against pack_sim's ground truth."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest

from battery_pipeline.assets import twin
from battery_pipeline.pack_resources import PackSourceCatalog
from battery_pipeline.partitions import pack_partitions
from battery_pipeline.resources import Warehouse
from battery_pipeline.science.twin.pack_sim import simulate_pack, write_pack
from battery_pipeline.science.twin.packs import discover_packs
from battery_pipeline.science.twin.rests import true_runs
from battery_pipeline_tests.conftest import REPO_ROOT
from battery_pipeline_tests.pipeline.test_ingest_pipeline import checksum

ASSETS = [twin.telemetry, *twin.twin_model_assets]


def materialize(instance, pack_dir, db, key, assets=ASSETS):
    return dg.materialize(
        assets,
        partition_key=key,
        instance=instance,
        resources={
            "warehouse": Warehouse(database=str(db)),
            "pack_catalog": PackSourceCatalog(pack_dirs=[str(pack_dir)], use_demo_when_empty=False, twin_cells=[]),
        },
        raise_on_error=False,
    )


def register(instance, pack_dir) -> list[str]:
    keys = discover_packs([pack_dir]).keys()
    instance.add_dynamic_partitions(pack_partitions.name, keys)
    return keys


def query(db, sql, params=()):
    with duckdb.connect(str(db), read_only=True) as conn:
        return conn.execute(sql, list(params)).df()


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def test_a_pack_with_a_loose_connection_gets_its_fault_alert_and_a_warning(tmp_path, instance):
    sim = simulate_pack(n_cells=8, chemistry="NMC", duration_h=36.0, seed=504, pack_id="loose_8s",
                        faults=[{"kind": "loose_connection", "cell": "cell_03", "onset_time_s": 8 * 3600.0, "magnitude": 0.02}])
    packs = tmp_path / "packs"
    write_pack(sim, packs)
    db = tmp_path / "warehouse.duckdb"
    assert register(instance, packs) == ["loose_8s"]
    result = materialize(instance, packs, db, "loose_8s")
    assert result.success  # a fault warns; it never fails the run
    check = {e.check_name: e for e in result.get_asset_check_evaluations()}["no_open_fault"]
    assert not check.passed and check.severity.value == "WARN"
    assert "cell_03: loose_connection" in check.description
    alerts = query(db, "SELECT * FROM fault_alerts WHERE pack_id = 'loose_8s'")
    assert list(alerts["cell"]) == ["cell_03"] and alerts["category"].iloc[0] == "connection"
    assert alerts["detected_time_s"].iloc[0] > 8 * 3600.0

    # Across packs: the summary names the open fault; the self-test at this fleet's configuration
    # (NMC, 10 s, 8 cells) finds the injected faults and beats the threshold baseline.
    from battery_pipeline.assets import fault_report
    from battery_pipeline.resources import ModelStore

    store = ModelStore(models_dir=str(tmp_path / "models"), results_dir=str(tmp_path / "results"), reports_dir=str(tmp_path / "reports"))
    report = dg.materialize([fault_report.pack_fault_report], instance=instance, raise_on_error=False,
                            resources={"warehouse": Warehouse(database=str(db)), "model_store": store},
                            run_config={"ops": {"pack_fault_report": {"config": {"self_test_hours": 24.0}}}})
    assert report.success
    summary = query(db, "SELECT * FROM pack_fault_summary")
    assert summary.set_index("pack_id").loc["loose_8s", "open_faults"] == 1
    checks = {e.check_name: e for e in report.get_asset_check_evaluations()}
    assert checks["pack_faults_beat_baseline"].passed, checks["pack_faults_beat_baseline"].description
    assert checks["pack_fault_card_complete"].passed
    assert checks["fault_detection_causal"].passed, checks["fault_detection_causal"].description
    assert len(payload_probes := json.loads((tmp_path / "results" / fault_report.RESULTS_FILE).read_text())["self_test"]["truncation_probes"]) >= 3
    assert all(p["found_again"] for p in payload_probes)

    # The pack telemetry's data card says what the fault task made of each pack.
    from battery_pipeline.assets import governance
    from battery_pipeline.resources import SourceCatalog

    cards = dg.materialize([governance.data_cards], instance=instance, raise_on_error=False, resources={
        "warehouse": Warehouse(database=str(db)), "model_store": store,
        "catalog": SourceCatalog(data_dirs=[str(tmp_path / "no_cells")], use_demo_when_empty=False)})
    # (no cell dataset here, so data_card_complete fails: the pack card is written all the same)
    assert cards.get_asset_materialization_events()
    card = (tmp_path / "reports" / "data_cards" / "pack_telemetry.md").read_text()
    tasks = card.split("## Tasks", 1)[1].split("\n## ", 1)[0]
    assert "| fault diagnosis | loose_8s  | 1 open fault(s)" in tasks or "| fault diagnosis | loose_8s | 1 open fault(s)" in tasks, tasks
    assert "`fault_alerts`: 1 row(s)" in tasks
    payload = json.loads((tmp_path / "results" / fault_report.RESULTS_FILE).read_text())
    assert payload["self_test"]["configurations"] == [["NMC", 10.0, 8]]
    assert {r["kind"] for r in payload["self_test"]["per_kind"]} == {"internal_short", "voltage_sensor_offset",
                                                                     "voltage_sensor_stuck", "loose_connection"}


def test_simulated_pack_through_telemetry_and_every_twin_model_matches_ground_truth(tmp_path, instance):
    sim = simulate_pack(n_cells=6, chemistry="NMC", duration_h=30.0, seed=3, pack_id="nmc_6s")
    packs = tmp_path / "packs"
    write_pack(sim, packs)
    db = tmp_path / "warehouse.duckdb"
    assert register(instance, packs) == ["nmc_6s"]  # the ground-truth companions are not packs
    result = materialize(instance, packs, db, "nmc_6s")
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(checks) == {"telemetry_row_accounting", "eq_cycles_non_decreasing", "soc_within_bounds",
                           "alerts_complete", "imbalance_confidence_within_bounds", "no_open_fault"}
    assert all(e.passed for e in checks.values()), {k: e.metadata for k, e in checks.items() if not e.passed}
    metadata = {m.asset_key.to_user_string(): m.step_materialization_data.materialization.metadata
                for m in result.get_asset_materialization_events()}
    assert metadata["telemetry"]["rows_in_source"].value == len(sim.telemetry) == metadata["telemetry"]["samples"].value
    for asset, plot in (("telemetry", "cell_voltage_spread"), ("soc_ocv_estimation", "soc_trace"),
                        ("voltage_monitor", "alert_timeline")):
        assert "data:image/png;base64," in metadata[asset][plot].value

    # Equivalent cycles: exact, sample by sample.
    eq = query(db, "SELECT eq_cycles FROM equivalent_cycles WHERE pack_id = 'nmc_6s' ORDER BY sample")["eq_cycles"].to_numpy()
    truth = sim.truth["eq_cycles_measured"].to_numpy()
    assert truth[-1] > 1.0
    assert np.max(np.abs(eq - truth)) <= 1e-9 * truth[-1]

    # SOC: anchored exactly at the ends of the >= 30 min rests, within 3 % there.
    anchors = query(db, "SELECT sample FROM soc_estimates WHERE pack_id = 'nmc_6s' AND rest_anchor ORDER BY sample")
    _, rest_ends = true_runs(sim.truth["in_long_rest"].to_numpy())
    assert anchors["sample"].tolist() == rest_ends.tolist() and len(rest_ends) >= 2
    soc = query(db, "SELECT sample, cell_id, soc_cells FROM cell_soc_estimates WHERE pack_id = 'nmc_6s' "
                    "AND sample IN (SELECT sample FROM soc_estimates WHERE pack_id = 'nmc_6s' AND rest_anchor)")
    true_soc = sim.truth.loc[soc["sample"], [f"soc_{c}" for c in soc["cell_id"]]].to_numpy()
    error = np.abs(soc["soc_cells"].to_numpy() - np.diag(true_soc))
    assert len(soc) == 6 * len(rest_ends) and error.max() <= 0.03

    # Alerts: exactly the injected excursions, none for the short spikes.
    key = ["cell", "kind", "start_time_s", "end_time_s"]
    found = query(db, "SELECT * FROM voltage_alerts WHERE pack_id = 'nmc_6s'")[key].sort_values(key, ignore_index=True)
    injected = sim.alerts[key].sort_values(key, ignore_index=True)
    assert len(injected) and len(sim.spikes)
    pd.testing.assert_frame_equal(found, injected, check_dtype=False)

    # Dependent model read its upstream's stored outputs; long tables hold every cell.
    energy = query(db, "SELECT count(*) AS n, count(DISTINCT cell_id) AS cells FROM cell_available_energy")
    assert energy["n"].iloc[0] == 6 * len(sim.telemetry) and energy["cells"].iloc[0] == 6


def test_a_bad_pack_file_fails_only_its_own_partition_and_sources_stay_untouched(tmp_path, instance):
    packs = tmp_path / "packs"
    sim = simulate_pack(n_cells=3, duration_h=3.0, seed=5, excursions=False, pack_id="good")
    write_pack(sim, packs)
    sim.telemetry.drop(columns=["pack_current_a"]).to_csv(packs / "no_current.csv", index=False)
    bad_values = sim.telemetry.astype({"cell_02_voltage_v": object})
    bad_values.loc[7, "cell_02_voltage_v"] = "OVL"
    bad_values.to_csv(packs / "text_in_voltage.csv", index=False)
    (packs / "garbage.parquet").write_bytes(b"not parquet at all")
    before = {p.name: checksum(p) for p in packs.iterdir()}
    db = tmp_path / "warehouse.duckdb"
    keys = register(instance, packs)
    assert set(keys) == {"good", "no_current", "text_in_voltage", "garbage"}

    outcomes = {k: materialize(instance, packs, db, k, assets=[twin.telemetry]) for k in keys}
    assert outcomes["good"].success
    expected = {"no_current": "no current column 'pack_current_a'",
                "text_in_voltage": "column 'cell_02_voltage_v' is not numeric (data row 7: 'OVL')",
                "garbage": "cannot be read as parquet"}
    for k, problem in expected.items():
        assert not outcomes[k].success
        (failure,) = [e for e in outcomes[k].all_events if e.is_step_failure]
        description = failure.step_failure_data.user_failure_data.description
        assert problem in description and f"{k}." in description, description
    stored = query(db, "SELECT pack_id, count(DISTINCT sample) AS samples FROM telemetry GROUP BY pack_id")
    assert dict(zip(stored.pack_id, stored.samples)) == {"good": len(sim.telemetry)}
    assert {p.name: checksum(p) for p in packs.iterdir()} == before


def test_eq_cycles_continue_from_the_stored_state_when_the_pack_file_grows(tmp_path, instance):
    sim = simulate_pack(n_cells=4, duration_h=12.0, seed=8, excursions=False, current_noise_a=0.01)
    packs = tmp_path / "packs"
    packs.mkdir()
    path = packs / "growing.parquet"
    half = len(sim.telemetry) // 2
    sim.telemetry.iloc[:half].to_parquet(path, index=False)
    db = tmp_path / "warehouse.duckdb"
    (key,) = register(instance, packs)
    assets = [twin.telemetry, *[a for a in twin.twin_model_assets if a.key.to_user_string() == "eq_cycles"]]

    def run_and_read():
        result = materialize(instance, packs, db, key, assets=assets)
        assert result.success
        (event,) = [m for m in result.get_asset_materialization_events() if m.asset_key.to_user_string() == "eq_cycles"]
        eq = query(db, "SELECT eq_cycles FROM equivalent_cycles WHERE pack_id = ? ORDER BY sample", [key])
        return event.step_materialization_data.materialization.metadata, eq["eq_cycles"].to_numpy()

    first, _ = run_and_read()
    assert first["run"].value == "full run (no stored state)"
    sim.telemetry.to_parquet(path, index=False)  # the logger appended the second half
    grown, eq = run_and_read()
    assert grown["run"].value == f"continued from the stored state after sample {half - 1}"
    assert grown["samples_processed"].value == len(sim.telemetry) - half
    truth = sim.truth["eq_cycles_measured"].to_numpy()
    assert len(eq) == len(truth) and np.max(np.abs(eq - truth)) <= 1e-9 * truth[-1]

    corrected = sim.telemetry.copy()
    before = corrected.loc[10, "pack_current_a"]
    corrected.loc[10, "pack_current_a"] = before - 1.0  # history rewritten: the stored state no longer applies
    corrected.to_parquet(path, index=False)
    rerun, eq = run_and_read()
    assert rerun["run"].value == f"full run (the {len(sim.telemetry)} samples processed before have changed)"
    extra_ah = (max(1.0 - before, 0.0) - max(-before, 0.0)) * 10.0 / 3600.0  # sample period 10 s
    assert eq[-1] == pytest.approx(truth[-1] + extra_ah / 3.0, rel=1e-9)  # nominal 3 Ah (settings default)


def test_bad_twin_settings_stop_the_code_location_from_loading(tmp_path):
    settings = json.loads((REPO_ROOT / "data" / "twin_settings.json").read_text())
    settings["models"]["eq_cycles"]["parameters"]["throughput"] = "both"
    bad = tmp_path / "twin_settings.json"
    bad.write_text(json.dumps(settings))
    env = {**os.environ, "BATTERY_PIPELINE_TWIN_SETTINGS": str(bad),
           "BATTERY_PIPELINE_TWIN_SETTINGS_LOCAL": "", "PYTHONPATH": str(REPO_ROOT)}
    completed = subprocess.run([sys.executable, "-c", "import battery_pipeline.definitions"], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode != 0
    last = completed.stderr.strip().splitlines()[-1]
    assert last.startswith("battery_pipeline.science.twin.settings.TwinSettingsError") and str(bad) in last, last
    assert "models.eq_cycles.parameters.throughput" in last, last


def test_a_new_model_folder_becomes_an_asset_with_its_deps_and_no_other_edit(tmp_path, monkeypatch):
    from battery_pipeline.science.twin.settings import load_settings
    from battery_pipeline_tests.science.twin.test_registry import scaled_current_manifest, write_model_package

    monkeypatch.syspath_prepend(str(tmp_path))
    first, second = "pipeline_new_model", "pipeline_new_model_after"
    package = write_model_package(tmp_path, {
        first: scaled_current_manifest(first),
        second: scaled_current_manifest(second, depends_on=[first]),
    })
    settings_file = tmp_path / "twin_settings.json"
    settings_file.write_text(json.dumps({
        "sources": {"pack_telemetry": {"time": "time_s", "current": "pack_current_a"}},
        "models": {first: {"enabled": True}, second: {"enabled": True}},
    }))
    assets = twin.build_twin_assets(load_settings(settings_file, with_local=False, models_package=package))
    graph = {a.key.to_user_string(): {d.to_user_string() for d in a.asset_deps[a.key]} for a in assets}
    assert graph == {first: {"telemetry", "packs"}, second: {"telemetry", "packs", first}}
    assert all(a.group_names_by_key[a.key] == "twin" and a.partitions_def == pack_partitions for a in assets)
    assert assets[0].metadata_by_key[assets[0].key]["tables"].value == [first]  # default table: the model's name
