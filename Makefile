# The two entry points of the README. Each one sets up .venv on first use (CPU torch from the
# local wheel, never a CUDA build), then runs. Set PYTHON to choose the interpreter.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export PYTHONHASHSEED := 0

.PHONY: setup reproduce test test-heavy bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

reproduce: $(STAMP)
	$(BIN)/snakemake reproduce-all --cores 2

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q

test-heavy: $(STAMP)
	$(BIN)/python -m pytest -q -m heavy

bench: $(STAMP)
	$(BIN)/python benchmarks/memory_clients.py
	$(BIN)/python benchmarks/lm_step.py
	$(BIN)/python benchmarks/lm_step.py --directions rademacher_bits

clean:
	rm -rf results .snakemake reproduce-all
