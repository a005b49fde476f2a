"""How a check says it could not evaluate: failed at WARN (never Passed), the reason in its
metadata and description. WARN never blocks, so nothing downstream is held back by it."""

from __future__ import annotations

import dagster as dg


def not_evaluated(check_name: str, asset_key: str, reason: str, **metadata) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=check_name,
        asset_key=asset_key,
        passed=False,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"not_evaluated": reason, **metadata},
        description=f"not evaluated: {reason}",
    )
