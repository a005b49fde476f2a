"""The JSON Schema in data/ and the pandera model are one contract, and the example obeys it."""

import json

import pandas as pd
import pytest

from battery_pipeline.science.readers import detect_format
from battery_pipeline.science.schema import SAMPLE_COLUMNS, CellCycleSample, sample_json_schema
from battery_pipeline.science.validation import CellLimits, validate_samples
from battery_pipeline_tests.conftest import REPO_ROOT

SCHEMA_FILE = REPO_ROOT / "data" / "cell_cycle_schema.json"
EXAMPLE_FILE = REPO_ROOT / "data" / "cycles_example.csv"


def test_committed_json_schema_equals_the_pandera_export():
    assert json.loads(SCHEMA_FILE.read_text()) == sample_json_schema()


def test_json_schema_and_pandera_agree_field_by_field():
    schema = json.loads(SCHEMA_FILE.read_text())
    model = CellCycleSample.to_schema()
    assert list(schema["properties"]) == list(model.columns) == SAMPLE_COLUMNS
    for name, column in model.columns.items():
        prop = schema["properties"][name]
        types = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
        assert ("null" in types) == column.nullable, name
        assert (name in schema["required"]) == (not column.nullable), name
    assert schema["properties"]["step_type"]["enum"] == ["charge", "discharge", "rest"]
    assert {"cell_id", "cycle_number", "step_type", "time_s", "voltage_v", "current_a", "temperature_c", "capacity_ah", "source_file", "source_row"} <= set(schema["properties"])


def test_unmapped_pandera_check_is_refused(monkeypatch):
    import pandera.pandas as pa

    original = CellCycleSample.to_schema()
    patched = original.update_column("voltage_v", checks=[pa.Check.str_length(1, 3)])
    monkeypatch.setattr(CellCycleSample, "to_schema", classmethod(lambda cls: patched))
    with pytest.raises(ValueError, match="no JSON Schema mapping"):
        sample_json_schema()


def test_example_csv_is_readable_canonical_data_that_validates_completely():
    reader = detect_format(EXAMPLE_FILE)
    assert reader.format_name == "canonical_csv"
    frame = reader.read([EXAMPLE_FILE], "example_cell").samples
    CellCycleSample.validate(frame)
    raw = pd.read_csv(EXAMPLE_FILE)
    assert len(frame) == len(raw) and 20 <= len(raw) <= 400
    result = validate_samples(frame, CellLimits(voltage_min_v=2.5, voltage_max_v=4.2, nominal_capacity_ah=3.0))
    assert result.quarantined.empty
    assert set(frame["step_type"]) == {"charge", "discharge", "rest"}
