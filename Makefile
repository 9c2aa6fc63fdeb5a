# Every target sets up the virtual environment at .venv first (once), so each works on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARCH := $(shell uname -m)
# torch and torchvision builds that import together (x86_64: CUDA build, runs on CPU too; aarch64: CPU build).
# VENV_MB: the disk a new .venv takes, in MB (seen: 6.0 GB on x86_64, 723 MB on aarch64).
# --no-cache-dir: the CUDA build's ~3 GB of nvidia wheels come from PyPI; a cached copy would double the disk it needs.
ifeq ($(ARCH),aarch64)
TORCH := torch==2.9.1 torchvision==0.24.1
VENV_MB := 1000
else
TORCH := torch==2.14.1 torchvision==0.29.1
VENV_MB := 6000
endif
OUT ?= runs/demo

.PHONY: setup demo test nbtest pytest sync-check docs-check readme clean-nbs bench gpu-check

setup: $(STAMP)

$(STAMP): settings.ini setup.py pyproject.toml
	@test -x $(BIN)/python || tools/check_disk.sh $(VENV_MB)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --no-cache-dir --upgrade pip
	$(BIN)/python -m pip install -q --no-cache-dir $(TORCH)
	$(BIN)/python -m pip install -q --no-cache-dir -e ".[dev]"
	touch $@

## The main job: the whole course pipeline end to end on the built-in toy data, offline.
demo: $(STAMP)
	$(BIN)/simplelxmert_demo --out $(OUT)

## The full test suite: every notebook (nbdev_test) and the pytest suite.
test: $(STAMP)
	$(BIN)/nbdev_test --n_workers 2 --timing
	$(BIN)/python -m pytest -q tests

## Library and notebooks in step: nbdev_export and nbdev_clean must change no file.
sync-check: $(STAMP)
	@before="$$(git status --porcelain)"; \
	$(BIN)/nbdev_export && $(BIN)/nbdev_clean && \
	after="$$(git status --porcelain)"; \
	if [ "$$before" != "$$after" ]; then echo "nbdev_export/nbdev_clean changed files: run them and commit." >&2; git status --porcelain >&2; exit 1; fi; \
	echo "sync-check: library and notebooks in step, notebooks clean."

## The docs a reader sees, checked without Quarto and installing nothing into the project: nbdev's processing (its
## Python API), pages like the site's in _docs_check/, every page opened in headless Chromium (screenshots in
## _docs_check/screenshots/). Fetched once when absent: MathJax (npm) and, as root, Chromium (apt-get).
docs-check: $(STAMP)
	$(BIN)/python tools/docs_check.py

## README.md is index.ipynb's markdown (nbdev_readme needs Quarto, which cannot be installed offline).
readme: $(STAMP)
	$(BIN)/python tools/readme.py

## Benchmarks: each script prints its two figures measured side by side in one run, and their ratio.
bench: $(STAMP)
	for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean-nbs: $(STAMP)
	$(BIN)/nbdev_export && $(BIN)/nbdev_clean

## Every CUDA path on this machine's GPU in minutes (tools/gpu_check.sh): a report, also in $OUT/gpu_report.json when OUT is
## set; without a GPU each part says skipped. No .venv: $(PYTHON) as it is. GPU_CHECK_ARGS="--device cpu --smoke": a dry run.
gpu-check:
	PYTHON=$(PYTHON) bash tools/gpu_check.sh $(GPU_CHECK_ARGS)
