# The two commands of the README:
#   make run   — set up and run the application on the embedded default
#                (SQLite, ORM broker, SimSo target) with the example job queued
#   make test  — install what the tests need, lint, and run the whole suite
#   make lint  — ruff, the import contracts (lint-imports: webapp -> distributor
#                -> sessions, no cycles; pyproject.toml) and no model change
#                without its migration
# DATABASE_URL=postgres://… selects PostgreSQL for either.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: run test test-fast lint deps system-deps

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

deps: $(VENV)/.installed

system-deps:
	bash .ci/system-deps

run: deps
	$(PY) manage.py setup --example
	$(PY) manage.py serve --port $(PORT)

lint: deps
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports
	$(PY) manage.py makemigrations --check --dry-run

test: deps system-deps lint
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: deps
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)
