# Two entry points: `make demo` (the main job on the shared assets) and `make test` (the suite).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ASSETS ?= $(or $(DFQ_ASSETS),../shared/assets)
export HF_HUB_OFFLINE := 1

.PHONY: venv test lint demo bench clean

$(BIN)/dfq: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev,interop,bench]"
	touch $@

venv: $(BIN)/dfq

test: venv
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check dfq calibrators export tests benchmarks

# The main job, data-free, on the shared DeiT-Tiny weights (~10 min on 2 cores): an SMI set (400
# iterations), W8A8 calibrated on it, on 32 real images and on noise, scored on the 468 other sample
# images, the exported Q/DQ graph in ONNX Runtime and its INT8 speedup; summary in runs/demo/summary.md.
demo: venv
	@test -f $(ASSETS)/weights/deit_tiny_patch16_224.pth || { echo "error: demo needs the shared assets at $(ASSETS) (set ASSETS=...)"; exit 2; }
	$(BIN)/python benchmarks/demo.py --assets $(ASSETS) --out runs/demo

# Runs the benchmark steps of benchmarks/bench.py that have no report yet (hours the first time; an
# interrupted run continues), rewrites BENCHMARKS.md's generated tables and redraws its figures in
# docs/img (benchmarks/plots.py, matplotlib from the bench extra). Not part of CI.
bench: venv
	@test -f $(ASSETS)/weights/deit_tiny_patch16_224.pth || { echo "error: bench needs the shared assets at $(ASSETS) (set ASSETS=...)"; exit 2; }
	DFQ_ASSETS=$(ASSETS) $(BIN)/python benchmarks/bench.py
	$(BIN)/python benchmarks/plots.py --bench-dir benchmarks/reports --runs runs --out docs/img

clean:
	rm -rf $(VENV) runs .pytest_cache
