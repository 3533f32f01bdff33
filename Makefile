# snowkit: every target sets up what it needs; a fresh clone needs only Python >= 3.11.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.snowkit-installed

.PHONY: help demo test test-lib test-notebooks lint format lab bench bench-quick drill clean

help:
	@echo "make demo   - start the embedded ServiceNow instance and UniFi lab, run the notebooks, print the reports"
	@echo "make test   - the whole suite: library tests and notebooks (nbmake)"
	@echo "make lint   - ruff check and format check (code and notebooks)"
	@echo "make lab    - JupyterLab with a registered 'snowkit' kernel"
	@echo "make bench  - the benchmarks (long); make bench-quick for a smoke run"
	@echo "make drill  - the long reliability and security drills"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (snowkit)" >/dev/null
	$(BIN)/python -m ipykernel install --sys-prefix --name snowkit --display-name "snowkit" >/dev/null
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/snowkit demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -n 2 --dist loadfile tests
	$(BIN)/python -m pytest --nbmake --nbmake-timeout=300 -n 2 notebooks/

test-lib: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile tests

test-notebooks: $(STAMP)
	$(BIN)/python -m pytest --nbmake --nbmake-timeout=300 -n 2 notebooks/

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

lab: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,lab]'
	$(BIN)/jupyter lab notebooks/

bench: $(STAMP)
	$(BIN)/python -m benchmarks

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks --quick

drill: $(STAMP)
	$(BIN)/python -m pytest -m drill --run-drills tests/drills

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
