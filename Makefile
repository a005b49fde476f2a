# Two commands for a fresh machine:
#   make run    install, then run the main job on the data (the demo fleet if data/incoming is empty)
#   make test   install with test dependencies, then run the tests
# `make ui` opens the Dagster UI on the same instance and warehouse.

PYTHON ?= python3
VENV ?= .venv
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

$(VENV)/.installed: pyproject.toml setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test,biologic-mpr]'
	touch $@

.PHONY: install run test ui benchmark clean
install: $(VENV)/.installed

run: install
	$(VENV)/bin/battery-pipeline run

test: install
	$(VENV)/bin/python -m pytest

ui: install
	$(VENV)/bin/battery-pipeline ui

benchmark: install
	$(VENV)/bin/python benchmarks/ingest.py

clean:
	rm -rf .dagster_home data/warehouse.duckdb data/demo
