"""Digital-twin models for pack telemetry and cell data (battery science; no Dagster here).

base.py      the TwinModel contract and @register_model
manifest.py  the model.json schema and parameter checks
registry.py  discovery of models/<name>/ folders, dependency order
settings.py  data/twin_settings.json (+ local override): enabled models, parameters, input mapping
runner.py    run_models: the enabled models on one source frame, in dependency order
rests.py     rest detection and relaxed-voltage SOC, shared by the models
ocv.py       OCV(SOC) tables per chemistry and temperature
pack_sim.py  pack telemetry simulator with ground truth
"""
