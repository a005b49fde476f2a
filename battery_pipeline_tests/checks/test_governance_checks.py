"""The governance registry matches the definitions, and the documentation checks pass on a
complete card and fail on an incomplete one."""

import json

import pandas as pd

from battery_pipeline.checks import documentation, governance
from battery_pipeline.definitions import defs
from battery_pipeline.science import data_cards


def defined_checks() -> dict[tuple[str, str], bool]:
    graph = defs.resolve_asset_graph()
    out = {}
    for assets_def in graph.assets_defs:
        for spec in assets_def.check_specs:
            out[(spec.asset_key.to_user_string(), spec.name)] = bool(spec.blocking)
    return out


def listed_checks() -> dict[tuple[str, str], bool]:
    return {(asset, rule.check): rule.blocking for rule in governance.rules() for asset in rule.assets}


def test_every_listed_rule_is_a_check_of_the_definitions_with_its_blocking_flag_and_vice_versa():
    defined, listed = defined_checks(), listed_checks()
    assert set(listed) - set(defined) == set(), "listed in checks/governance.py but not defined"
    assert set(defined) - set(listed) == set(), "defined but not listed in checks/governance.py"
    assert {k: v for k, v in listed.items() if defined[k] != v} == {}, "blocking flag differs"
    assert {r.guards for r in governance.rules()} == set(governance.GUARDS)


def test_rules_markdown_groups_by_what_they_guard():
    text = governance.rules_markdown()
    guards = [line.split("|")[1].strip() for line in text.splitlines()[2:]]
    assert guards == sorted(guards, key=governance.GUARDS.index)
    assert "`interpolation_marked`" in text and "`data_card_complete`" in text


CELLS = pd.DataFrame(
    {
        "cell_id": ["a", "b"], "dataset": "lab", "source_format": "canonical_csv", "chemistry": "NMC",
        "nominal_capacity_ah": 2.0, "voltage_min_v": 2.5, "voltage_max_v": 4.2, "max_abs_current_a": None,
        "licence": "CC-BY-4.0", "citation": "Lab (2025) cycling data", "description": "25 degC, 1C/1C",
        "source_files": [json.dumps(["a.csv"]), json.dumps(["b.csv"])], "metadata_origin": "reader defaults; sidecar",
    }
)
COUNTS = pd.DataFrame({"cell_id": ["a", "b"], "raw_rows": [100, 50], "validated_rows": [90, 50], "quarantined_rows": [10, 0], "dropped_cycles": [1, 0]})
REASONS = pd.DataFrame({"reason_code": ["cycle_incomplete", "missing_value"], "rows": [8, 2]})
FLAGS = pd.DataFrame({"flag": ["interpolated"], "channel": ["voltage_v"], "values": [3]})
RULES = {"a": {"max_gap_points": 4}, "b": {"max_gap_points": 4}}


def sections(cells=CELLS, counts=COUNTS):
    return data_cards.card_sections("lab", cells, counts, REASONS, FLAGS, RULES, [])


def test_card_states_counts_rules_licence_and_accounting():
    text = data_cards.render_card("lab", sections(), "now")
    assert "every raw sample is accounted for" in text
    assert "| cycle_incomplete |" in text and "CC-BY-4.0" in text and "`max_gap_points` = 4" in text
    assert "Cycles dropped as incomplete (over the missing-sample limit): 1" in text
    broken = sections(counts=COUNTS.assign(validated_rows=[80, 50]))
    assert "10 raw samples unaccounted for" in broken["Quarantine and flags"]


def test_data_card_complete():
    assert documentation.data_card_complete_check({"lab": data_cards.missing_facts(sections())}).passed
    no_licence = sections(cells=CELLS.assign(licence=None, description=None))
    problems = data_cards.missing_facts(no_licence)
    assert problems == ["section 'Collection process' is empty", "no licence stated"]
    result = documentation.data_card_complete_check({"lab": problems})
    assert not result.passed and result.metadata["incomplete_cards"].value == 1
    assert not documentation.data_card_complete_check({}).passed  # no dataset: no card
