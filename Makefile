# make demo  — set everything up and run the demo (the project's main job)
# make test  — set everything up from nothing and run lint, types and every test
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: help install redis-py-tests services test lint typecheck unit integration e2e demo generate bench clean

help:
	@grep -E '^[a-z-]+:.*?## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[all,dev]'
	touch $(STAMP)

install: $(STAMP) redis-py-tests ## create .venv and install the package with every extra

redis-py-tests: $(STAMP) ## fetch redis-py's own test suites for the installed version into .cache/
	$(BIN)/python -m tests.upstream.redis_py_suite fetch

services: ## install (if missing) and start PostgreSQL, MariaDB, Redis, RabbitMQ, promtool, amtool
	bash scripts/ensure-services.sh

lint: $(STAMP) ## ruff
	$(BIN)/ruff check .

typecheck: $(STAMP) ## mypy --strict on the package
	$(BIN)/mypy

unit: $(STAMP) ## fast tests: no network, FakeClock
	$(BIN)/pytest tests/unit -q

test: install services lint typecheck ## everything: lint, types, unit, integration, e2e
	$(BIN)/pytest -q

demo: install services ## run the order-flow demo against the local services
	$(BIN)/instrumented-clients demo

generate: $(STAMP) ## regenerate dashboards/ and alerts/ from the metric catalog
	$(BIN)/instrumented-clients generate
	# The per-client objective's promtool test runs on rules rendered with an override.
	$(BIN)/python -c "from instrumented_clients.observability.generate import render_rules; \
	from instrumented_clients.observability import DEFAULT_CONFIG; \
	print(render_rules(DEFAULT_CONFIG.with_changes(client_objectives={'payments': 0.99})), end='')" \
	> alerts/tests/client-objective/resilient-clients.rules.yml

bench: install services ## run the benchmarks in bench/
	for script in bench/*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
