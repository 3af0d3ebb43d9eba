# The two commands of the README:
#   make run   — set up and run the application on the embedded default
#                (SQLite, ORM broker, SimSo target) with the example job queued
#   make test  — install what the tests need, lint, and run the whole suite
#   make lint  — ruff, the import contracts (lint-imports: webapp -> distributor
#                -> sessions, no cycles; pyproject.toml) and no model change
#                without its migration
# DATABASE_URL=postgres://… selects PostgreSQL for either.
# make run installs requirements.txt alone (the application); make test,
# test-fast and lint also install requirements-dev.txt (the test and lint tools).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: run test test-fast lint deps dev-deps system-deps

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

# Two stamps: the application's packages, then the test and lint tools on top.
$(VENV)/.installed-dev: requirements-dev.txt $(VENV)/.installed
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

deps: $(VENV)/.installed

dev-deps: $(VENV)/.installed-dev

system-deps:
	bash .ci/system-deps

run: deps
	$(PY) manage.py setup --example
	$(PY) manage.py serve --port $(PORT)

lint: dev-deps
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports
	$(PY) manage.py makemigrations --check --dry-run

test: dev-deps system-deps lint
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: dev-deps
	$(PY) -m pytest -m "not slow and not corpus" $(PYTEST_ARGS)
