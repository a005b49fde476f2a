"""Checks of the temperature forecast (`temperature_forecast_models`): split by file, nothing
measured after t as an input, better than persistence, a complete card."""

import dagster as dg

from battery_pipeline.checks.documentation import card_sections_check

THERMAL_CARD_SECTIONS = ("Intended use", "Data", "Method", "Metrics (degC, held-out files)", "Limitations")


def thermal_split_by_file_check(folds: list[dict], asset: str) -> dg.AssetCheckResult:
    """Blocks: in every fold the held-out file is not among the training files, and every training
    file is of the held-out file's cell type (never a row split)."""
    bad = [f["test_file"] for f in folds if f["test_file"] in f["train_files"] or len(set(f["train_files"])) != len(f["train_files"])]
    held_out = [f["test_file"] for f in folds]
    return dg.AssetCheckResult(
        check_name="thermal_split_by_file",
        asset_key=asset,
        passed=not bad and len(held_out) == len(set(held_out)),
        metadata={"folds": len(folds), "bad_folds": bad, "files_held_out": len(set(held_out))},
        description=f"{len(folds)} fold(s), each file held out once and never trained on" if not bad else f"file(s) in their own training set: {bad}",
    )


def thermal_no_future_temperature_check(probes: list[dict], asset: str) -> dg.AssetCheckResult:
    """Blocks: changing every temperature after an origin t leaves the features and the physics
    forecast at t as they were (run on this data, not assumed)."""
    evaluated = [p for p in probes if p.get("evaluated")]
    moved = [p for p in evaluated if p["physics_moved"] or p["features_moved"]]
    if not evaluated:
        return dg.AssetCheckResult(check_name="thermal_no_future_temperature", asset_key=asset, passed=False,
                                   severity=dg.AssetCheckSeverity.WARN,
                                   metadata={"not_evaluated": "; ".join(p.get("why", "") for p in probes)},
                                   description="not evaluated: no file has a forecast origin to probe")
    return dg.AssetCheckResult(
        check_name="thermal_no_future_temperature",
        asset_key=asset,
        passed=not moved,
        metadata={"probes": dg.MetadataValue.json(evaluated)},
        description=(f"{len(evaluated)} probe(s): temperatures after t changed by 7 degC, features and physics forecast at t unchanged"
                     if not moved else f"inputs at t moved with temperatures after t: {moved}"),
    )


def thermal_beats_persistence_check(metrics: list[dict], asset: str) -> dg.AssetCheckResult:
    """Warns: per dataset and horizon, the hybrid's held-out RMSE is not below persistence's."""
    worse = [f"{m['dataset']} {m['horizon_s']} s: hybrid {m['hybrid']['rmse_c']:.3f} vs persistence {m['persistence']['rmse_c']:.3f} degC"
             for m in metrics if not m["hybrid"]["rmse_c"] < m["persistence"]["rmse_c"]]
    return dg.AssetCheckResult(
        check_name="thermal_beats_persistence",
        asset_key=asset,
        passed=not worse and bool(metrics),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"by_dataset_horizon": dg.MetadataValue.json({f"{m['dataset']} {m['horizon_s']} s": {
            k: round(m[k]["rmse_c"], 4) for k in ("persistence", "physics_one_state", "physics_two_state", "hybrid")} for m in metrics})},
        description="hybrid below persistence on every dataset and horizon" if not worse else "; ".join(worse),
    )


def thermal_card_complete_check(card: str, asset: str) -> dg.AssetCheckResult:
    """Blocks: the forecaster's card has every section, each with content."""
    return card_sections_check("thermal_card_complete", card, THERMAL_CARD_SECTIONS, asset)
