# Two commands on a fresh machine: `make demo` and `make test`. Everything else builds on
# the same virtualenv in .venv/, created with python3.11 (or 3.12) on first use.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
BIN := $(VENV)/bin
# Prefer 3.11, accept 3.12; override with `make PYTHON=/path/to/python3.x ...`.
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || echo python3.11-or-3.12-not-found)

# Stamps make the install step cheap when nothing changed: they are rebuilt only when
# pyproject.toml is newer than the last install.
BASE_STAMP := $(VENV)/.installed-base
DEV_STAMP := $(VENV)/.installed-dev
DEV_EXTRAS := test,dev,s3,azure,sftp

PYTEST_ARGS ?=
LINT_PATHS := ticketexport tests $(wildcard bench)

.PHONY: help demo test check lint typecheck format bench screenshots venv clean

help:
	@echo "make demo   - embedded PostgreSQL, migrate, seed, web and worker in one process"
	@echo "make test   - the whole test suite (DATABASE_URL unset: embedded PostgreSQL); runs npm ci when needed"
	@echo "make check  - ruff check, ruff format --check, mypy --strict, then the tests"
	@echo "make lint   - ruff check, ruff format --check and the import layers (lint-imports)"
	@echo "make bench  - run every script in bench/ (files starting with _ are helpers)"
	@echo "make screenshots - run the browser tests, saving the README's pictures in docs/"

$(BIN)/python:
	@"$(PYTHON)" -c 'import sys; assert sys.version_info[:2] in ((3, 11), (3, 12)), sys.version' \
		|| { echo "make: Python 3.11 or 3.12 is required (set PYTHON=...)" >&2; exit 1; }
	"$(PYTHON)" -m venv $(VENV)

$(BASE_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[$(DEV_EXTRAS)]'
	@touch $@ $(BASE_STAMP)

venv: $(DEV_STAMP)

# Azurite (the Azure storage tests) and axe-core (the browser tests' accessibility checks)
# come from npm: installed again whenever package-lock.json is newer than the last install.
# Without npm the tests that need them skip, naming npm ci (and fail under
# TICKETEXPORT_REQUIRE_ALL=1, as in CI).
NPM := $(shell command -v npm)
NODE_STAMP := node_modules/.installed

$(NODE_STAMP): package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

demo: $(BASE_STAMP)
	$(BIN)/ticketexport demo

test: $(DEV_STAMP) $(if $(NPM),$(NODE_STAMP))
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/lint-imports

typecheck: $(DEV_STAMP)
	$(BIN)/mypy --strict ticketexport

check: lint typecheck test

format: $(DEV_STAMP)
	$(BIN)/ruff format $(LINT_PATHS)

# `make bench BENCH_ARGS=--quick` (or BENCH_QUICK=1) is the smoke test: small databases, few
# repetitions, a few minutes. The full run seeds 100k/1M/5M-ticket databases once (cached by
# name and count on the benchmark server; see bench/README.md) and takes about an hour.
BENCH_ARGS ?=

bench: $(DEV_STAMP)
	@shopt -s nullglob; scripts=(); failed=(); \
	for script in bench/*.py; do [[ $$(basename "$$script") == _* ]] || scripts+=("$$script"); done; \
	if [ $${#scripts[@]} -eq 0 ]; then echo "no benchmark scripts in bench/"; exit 0; fi; \
	for script in "$${scripts[@]}"; do \
		echo "== $$script $(BENCH_ARGS) ($$(date -u +%H:%M:%S) UTC, $$(cut -d' ' -f1-3 /proc/loadavg))"; \
		$(BIN)/python "$$script" $(BENCH_ARGS) || failed+=("$$script"); \
	done; \
	if [ $${#failed[@]} -gt 0 ]; then echo "failed: $${failed[*]}"; exit 1; fi

# The browser tests take the README's screenshots on every run; this keeps them.
screenshots: $(DEV_STAMP)
	TICKETEXPORT_SCREENSHOTS=1 $(BIN)/pytest tests/browser/test_export_live.py $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
