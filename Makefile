# Two entry points: `make demo` (the main job on the shared assets) and `make test` (the suite).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ASSETS ?= $(or $(DFQ_ASSETS),../shared/assets)
export HF_HUB_OFFLINE := 1

.PHONY: venv test lint demo clean

$(BIN)/dfq: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

venv: $(BIN)/dfq

test: venv
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check dfq calibrators export tests benchmarks

demo: venv
	$(BIN)/python benchmarks/demo.py --assets $(ASSETS)

clean:
	rm -rf $(VENV) runs .pytest_cache
