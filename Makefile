# cryoset: `make demo` and `make test` set everything up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo-output
PYTEST_ARGS ?=

.PHONY: venv test demo bench lint clean voxel-model ssl-model

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first, from the CPU wheel, so nothing pulls a CUDA build
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[dev]'
	# every numba kernel compiled into its cache now, not on a user's first command
	$(PY) -m cryoset._compile
	touch $(STAMP)

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

demo: venv
	$(VENV)/bin/cryoset demo --out $(DEMO_OUT)
	@echo "demo report: $(DEMO_OUT)/report.html"

bench: venv
	$(PY) benchmarks/run_all.py

# The voxel network shipped in the package: corpus from ../shared/data, 8 epochs on the CPU
# (about 50 minutes on 2 cores), then the weights copied into the package.
voxel-model: venv
	$(VENV)/bin/cryoset train voxel-corpus --shared-data ../shared/data -o build/voxel-corpus --variants 2 --seed 0
	$(VENV)/bin/cryoset train voxel examples/voxel-train.yaml -o build/voxel-run --device cpu
	install -m 0644 build/voxel-run/model.safetensors src/cryoset/data/models/voxelnet_unet.safetensors

# The ViT particle encoder shipped in the package: the SSL corpus from ../shared/data, then
# examples/ssl-tiny-cpu.yaml (DINO + iBOT + KoLeo, about 15-20 minutes on 2 cores), then the
# teacher backbone copied into the package.
ssl-model: venv
	$(VENV)/bin/cryoset train ssl-corpus --shared-data ../shared/data -o build/ssl-corpus --seed 0
	$(VENV)/bin/cryoset train ssl examples/ssl-tiny-cpu.yaml -o build/ssl-tiny --device cpu
	install -m 0644 build/ssl-tiny/model.safetensors src/cryoset/data/models/vit_tiny_ssl.safetensors

lint: venv
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .mypy_cache .ruff_cache
