PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup test lint demo bench clean

setup:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'

test:
	$(BIN)/python -m pytest -n 2 -q

lint:
	$(BIN)/ruff check mlpipe_cli tests benchmarks scripts

demo:
	bash scripts/demo.sh

clean:
	rm -rf $(VENV) artifacts data/sample .pytest_cache
