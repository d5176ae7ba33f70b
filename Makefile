# Two entry points a new machine needs: `make serve` and `make test`. Each builds/refreshes .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test stress lint venv clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

serve: $(STAMP)
	$(BIN)/voxserve serve $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest $(PYTEST_ARGS)

# The whole suite 5 times in a row while a CPU hog keeps every core busy (about an hour on 2 cores).
stress: $(STAMP)
	$(BIN)/python benchmarks/stress_suite.py --runs 5 -o docs/bench/stress_suite.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
