# make setup: virtual environment, DVC and the source data; make test: the whole test suite;
# make test-fast: the unit tests only (not those marked slow: dvc repro, stages run as processes,
# servers; about a minute); make lint: ruff (settings in pyproject.toml);
# make bench: the tutorial's recipe against `dvc repro` (about 1.5 h on 2 CPU cores);
# make verify: rebuild everything and compare every metric with HEAD's (docs/reproducibility.md);
# make demo: the demo page on http://127.0.0.1:7860/ (docs/demo.md; Ctrl-C stops it).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RAW_SOURCES := data/raw/covid-chestxray-dataset data/raw/chest-xray-pneumonia \
	data/raw/nih-chestxray14 data/raw/hannover-covid-19 data/raw/covid-chestxray-dataset-2020-06-22
# runs a command with the venv's python and kaggle CLI first on PATH, as activating it would
IN_VENV := PATH="$(CURDIR)/$(BIN):$$PATH"

.PHONY: setup test test-fast lint repro bench verify demo

setup: $(BIN)/.installed
	[ -d .dvc ] || $(BIN)/dvc init
	$(IN_VENV) $(BIN)/python scripts/get_data.py
	$(BIN)/dvc add --quiet $(RAW_SOURCES)  # into DVC's cache, for experiments in temporary workspaces

$(BIN)/.installed: requirements.txt pyproject.toml
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps --editable .  # the covidxray command
	touch $@

test: $(BIN)/.installed
	# -n 2: two workers, a test file each at a time, in collection order: the end-to-end file,
	# the longest, first (tests/conftest.py), so it starts at once; -rs: why a test was skipped
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder -v -rs --durations=15 tests

test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest -n 2 --dist loadfile -q -rs --durations=5 -m "not slow" tests

lint: $(BIN)/.installed
	$(BIN)/ruff check .

repro: setup
	$(IN_VENV) $(BIN)/dvc repro

bench: setup
	$(IN_VENV) $(BIN)/python -m bench

verify: setup
	$(IN_VENV) $(BIN)/dvc repro --force
	$(IN_VENV) $(BIN)/covidxray verify

demo: $(BIN)/.installed
	$(BIN)/covidxray demo
