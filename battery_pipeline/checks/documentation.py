"""Documentation governance: a data card states everything a user of the data must know.

(The model-card rule is `model_quality.model_card_complete_check`.)
"""

from __future__ import annotations

import dagster as dg


def data_card_complete_check(problems_by_dataset: dict[str, list[str]]) -> dg.AssetCheckResult:
    """Every dataset has a card, every card every section, a licence and a citation
    (`problems_by_dataset`: dataset -> what its card lacks, from `science.data_cards.missing_facts`)."""
    incomplete = {d: p for d, p in problems_by_dataset.items() if p}
    passed = bool(problems_by_dataset) and not incomplete
    return dg.AssetCheckResult(
        check_name="data_card_complete",
        asset_key="data_cards",
        passed=passed,
        metadata={
            "cards": len(problems_by_dataset),
            "incomplete_cards": len(incomplete),
            "missing": dg.MetadataValue.json(incomplete),
        },
        description=(
            "no dataset in the cells table: no card written" if not problems_by_dataset
            else None if passed
            else "; ".join(f"{d}: {', '.join(p)}" for d, p in incomplete.items())
        ),
    )


def card_sections_check(check_name: str, card: str, sections: tuple[str, ...], asset: str) -> dg.AssetCheckResult:
    """Blocks: a markdown card has every `## ` section named, each with content."""
    parts = {}
    for block in card.split("\n## ")[1:]:
        title, _, body = block.partition("\n")
        parts[title.strip()] = body.strip()
    empty = [s for s in sections if not parts.get(s)]
    return dg.AssetCheckResult(
        check_name=check_name,
        asset_key=asset,
        passed=not empty,
        metadata={"sections": list(parts), "missing_or_empty": empty},
        description="every section has content" if not empty else f"missing or empty: {empty}",
    )
