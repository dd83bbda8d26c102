# The two entry points of the README. Each one sets up .venv on first use from the lock file
# (requirements/cpu.lock: exact, tested versions of every dependency; CPU torch from the local
# wheel, never a CUDA build), then runs. Set PYTHON to choose the interpreter (3.11: the lock's).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements/cpu.lock
PIP := python -m pip install --quiet --disable-pip-version-check
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export PYTHONHASHSEED := 0

.PHONY: setup reproduce test test-heavy test-latest lock bench clean

setup: $(STAMP)

# Exactly the lock (--no-deps: nothing unpinned can slip in; pip check proves it complete).
$(STAMP): pyproject.toml $(LOCK) requirements/no-deps.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/$(PIP) --no-deps -r $(LOCK)
	$(BIN)/$(PIP) --no-deps -e .
	$(BIN)/python -m pip check --disable-pip-version-check
	$(BIN)/$(PIP) --no-deps -r requirements/no-deps.txt
	touch $@

# Every table and figure of the CPU tier, then the HTML report of them (rebuilt only when the
# manifest `reproduce-all` changed, so a second `make reproduce` has nothing to do).
# Snakemake takes a deleted artefact of an up-to-date manifest for a removed intermediate: when a
# file the manifest lists is missing, the manifest's rule is forced, which rebuilds just that file.
reproduce: $(STAMP)
	$(BIN)/snakemake reproduce-all --cores 2 $$(test -f reproduce-all && \
	  awk 'NF == 3 && length($$1) == 64 {print $$3}' reproduce-all | xargs -r ls > /dev/null 2>&1 \
	  || echo --forcerun reproduce_all)
	@$(MAKE) --no-print-directory report.html

report.html: reproduce-all
	$(BIN)/snakemake reproduce-all --report report.html

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q

test-heavy: $(STAMP)
	$(BIN)/python -m pytest -q -m heavy

# The default suite against the newest versions pyproject.toml allows (torch excepted: the CPU
# wheel of requirements/torch-cpu.txt; a newer torch would be a CUDA build here). A fresh
# .venv-latest every time; its versions are printed and kept in .venv-latest/versions.txt.
test-latest:
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/$(PIP) -c requirements/torch-cpu.txt torch
	.venv-latest/bin/$(PIP) -c requirements/torch-cpu.txt --upgrade --upgrade-strategy eager -e '.[test,fast,gguf,flower,slurm]'
	.venv-latest/bin/$(PIP) --no-deps -r requirements/no-deps.txt
	.venv-latest/bin/python -m pip list --format=freeze --disable-pip-version-check > .venv-latest/versions.txt
	grep -iE '^(torch|transformers|datasets|snakemake|numpy|tokenizers|huggingface.hub)=' .venv-latest/versions.txt
	.venv-latest/bin/python -m pytest -n 2 -q

# Re-resolve requirements/cpu.lock from pyproject.toml (newest versions the ranges allow), in a
# throw-away venv so that pip-tools never enters the project's environment.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/$(PIP) pip-tools==7.6.2
	.venv-lock/bin/pip-compile --quiet --upgrade --strip-extras --allow-unsafe --no-emit-index-url \
	  --no-emit-find-links --extra test --extra fast --extra gguf --extra flower --extra slurm -c requirements/torch-cpu.txt -o $(LOCK) pyproject.toml
	rm -rf .venv-lock

bench: $(STAMP)
	$(BIN)/python benchmarks/memory_clients.py
	$(BIN)/python benchmarks/lm_step.py
	$(BIN)/python benchmarks/lm_step.py --directions rademacher_bits
	$(BIN)/python benchmarks/replay.py

clean:
	rm -rf results .snakemake reproduce-all report.html
