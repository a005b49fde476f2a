"""Twin models, one folder each (model.py, model.json, README.md); found by registry.discover_models."""
