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
	$(BIN)/pip install -q -e ".[dev,interop]"
	touch $@

venv: $(BIN)/dfq

test: venv
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check dfq calibrators export tests benchmarks

# The main job on the shared DeiT-Tiny weights: W8A8 (TensorRT numerics) calibrated on 32 real
# images, then on 32 Gaussian-noise images, both evaluated on the 500-image ImageNet sample.
DEMO_ARGS = --model deit_tiny --checkpoint $(ASSETS)/weights/deit_tiny_patch16_224.pth --scheme w8a8 \
	--num-images 32 --eval-folder $(ASSETS)/data/imagenet-sample/val --force

demo: venv
	@test -f $(ASSETS)/weights/deit_tiny_patch16_224.pth || { echo "demo needs the shared assets at $(ASSETS) (set ASSETS=...)"; exit 2; }
	$(BIN)/dfq calibrate $(DEMO_ARGS) --calib-folder $(ASSETS)/data/imagenet-sample/val --out runs/demo-w8a8-real
	$(BIN)/dfq calibrate $(DEMO_ARGS) --inversion noise --out runs/demo-w8a8-noise
	@cat runs/demo-w8a8-real/report.md runs/demo-w8a8-noise/report.md

clean:
	rm -rf $(VENV) runs .pytest_cache
