# arxsum developer commands. `make run PAPER=paper.pdf` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
REF_VENV := .venv-ref
BIN := $(VENV)/bin
# torch 2.13.0 (CPU build) is installed first so that nothing pulls a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0
PAPER ?=
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install run test test-fast lint bench fidelity gpu-check ref-venv clean

# Set-up lines are silent and pip's output goes to stderr: `make run` keeps stdout for the summary.
$(BIN)/.installed: pyproject.toml
	@echo "make: setting up $(VENV) (torch 2.13.0 CPU build, then arxsum with its dev extras)" >&2
	@$(PYTHON) -m venv $(VENV) >&2
	@$(BIN)/pip install -q $(TORCH_PIN) >&2
	@$(BIN)/pip install -q -e '.[dev,ray]' >&2
	@touch $@

install: $(BIN)/.installed

$(REF_VENV)/.installed: tests/reference/requirements.txt
	$(PYTHON) -m venv $(REF_VENV)
	$(REF_VENV)/bin/pip install -q $(TORCH_PIN)
	$(REF_VENV)/bin/pip install -q -r tests/reference/requirements.txt
	touch $@

ref-venv: $(REF_VENV)/.installed

run: install
	@test -n "$(PAPER)" || { echo "usage: make run PAPER=paper.pdf [ARGS='--format json']" >&2; exit 2; }
	@$(BIN)/arxsum $(PAPER) $(ARGS)

test: install ref-venv
	ARXSUM_REF_PYTHON=$(abspath $(REF_VENV))/bin/python $(BIN)/pytest $(PYTEST_ARGS)

test-fast: install ref-venv
	ARXSUM_REF_PYTHON=$(abspath $(REF_VENV))/bin/python $(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests benchmarks

# FIDELITY=0 skips the bfloat16-vs-float32 comparison of both sides (benchmarks/fidelity.py, minutes)
FIDELITY ?= 1
FIDELITY_ARGS ?=
bench: install ref-venv
	$(BIN)/python benchmarks/bench.py --ref-python $(REF_VENV)/bin/python $(ARGS)
	@if [ "$(FIDELITY)" != 0 ]; then $(BIN)/python benchmarks/fidelity.py --ref-python $(REF_VENV)/bin/python $(FIDELITY_ARGS); fi

fidelity: install ref-venv
	$(BIN)/python benchmarks/fidelity.py --ref-python $(REF_VENV)/bin/python $(FIDELITY_ARGS)

# On the lent GPU machine nothing can be installed: its image's python3 already has torch (CUDA),
# tokenizers, safetensors, typer, rich and pytest, so the checks run from the source
# tree with that interpreter (GPU_PYTHON), not from .venv. The seed side is CPU-only: not run here.
GPU_PYTHON ?= python3
gpu-check:
	GPU_PYTHON=$(GPU_PYTHON) bash benchmarks/gpu_check.sh

clean:
	rm -rf $(VENV) $(REF_VENV) build *.egg-info .pytest_cache
