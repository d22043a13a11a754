PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup test test-fast lint typecheck demo readme bench clean

# pip prints what it collects and installs, so the ~2 minutes of a first setup are visible.
setup:
	$(PYTHON) -m venv $(VENV)
	@echo "installing pip, then mlpipe with its dev/test extras into $(VENV) (a first run takes a few minutes)"
	$(BIN)/python -m pip install --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --disable-pip-version-check -e '.[dev]'

test:
	$(BIN)/python -m pytest -n 2 -q

# The in-process lane for iterating: no server processes, no redis-server, no Spark, none of
# the tests measured slow (markers applied in tests/conftest.py). CI runs `make test`.
test-fast:
	$(BIN)/python -m pytest -n 2 -q -m "not slow and not server and not redis and not spark"

lint:
	$(BIN)/ruff check mlpipe_cli tests benchmarks scripts
	$(BIN)/ruff format --check mlpipe_cli tests benchmarks scripts

typecheck:
	$(BIN)/mypy

demo:
	bash scripts/demo.sh

# Regenerate README.md's command reference from --help (tests/test_readme.py fails when stale).
readme:
	$(BIN)/cog -r README.md

# Quick sizes (a few minutes in all); each script's defaults are the full-size runs in the README.
bench:
	$(BIN)/python benchmarks/bench_validate.py --quick
	$(BIN)/python benchmarks/bench_training_set.py --scale 0.05
	$(BIN)/python benchmarks/bench_transform.py --rows 500000
	$(BIN)/python benchmarks/bench_materialize.py --entities 100000
	$(BIN)/python benchmarks/bench_serve.py --quick
	$(BIN)/python benchmarks/bench_psi.py --rows 1000000

clean:
	rm -rf $(VENV) artifacts data/sample data/demo .pytest_cache
