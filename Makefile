# Two commands on a fresh machine: `make demo` and `make test`. See README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ASSETS := usage_stats/web/static/vendor/VERSIONS
DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export DAGSTER_HOME
DATA_DIR := $(or $(USAGE_STATS_DATA_DIR),data)
DEMO_START ?= 2026-01-01
DEMO_DAYS ?= 3
DEMO_END := $(shell $(PYTHON) -c "import datetime as d; print(d.date.fromisoformat('$(DEMO_START)') + d.timedelta(days=$(DEMO_DAYS) - 1))")

# The demo's data starts and ends on these days: so do the partitions `make demo` and
# `make dev` show (set USAGE_STATS_START_DATE / USAGE_STATS_END_DATE to see another window).
demo dev: export USAGE_STATS_START_DATE ?= $(DEMO_START)
demo dev: export USAGE_STATS_END_DATE ?= $(DEMO_END)

.PHONY: install assets browser demo test dev bench lint clean dagster-home services services-stop serve stack stack-down

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

# the dashboard's browser libraries and map data (npm registry, PyPI), served by the app itself
$(ASSETS): frontend/package.json frontend/package-lock.json scripts/build_assets.sh $(STAMP)
	PYTHON=$(BIN)/python scripts/build_assets.sh

assets: $(ASSETS)

install: $(STAMP) $(ASSETS)

## browser: Debian's Chromium for the dashboard's browser tests (installed if missing)
browser:
	scripts/browser.sh

dagster-home:
	@mkdir -p $(DAGSTER_HOME)
	@ln -sf $(CURDIR)/instance/dagster.yaml $(DAGSTER_HOME)/dagster.yaml

## demo: sample Matomo-shaped data and OAI-PMH records → harvest, usage, record and breakdown
## jobs (embedded defaults) → summary checked against the planted truth
DEMO_RANGE = --tags '{"dagster/asset_partition_range_start": "$(DEMO_START)", "dagster/asset_partition_range_end": "$(DEMO_END)"}'
DEMO_JOB = @$(BIN)/dagster job execute -f definitions.py -d . -c instance/in_process.yaml
DEMO_FAIL = || (tail -40 $(DATA_DIR)/demo-run.log; echo "the demo run failed: $(DATA_DIR)/demo-run.log"; exit 1)
demo: install dagster-home
	$(BIN)/usage-stats generate --start $(DEMO_START) --days $(DEMO_DAYS)
	$(BIN)/usage-stats db upgrade
	$(BIN)/usage-stats sources import $(DATA_DIR)/sources.csv
	@mkdir -p $(DATA_DIR)
	@: > $(DATA_DIR)/demo-run.log
	@echo "harvesting the repositories' records (item_metadata_job; no server: file:// datasets)"
	$(DEMO_JOB) -j item_metadata_job >> $(DATA_DIR)/demo-run.log 2>&1 $(DEMO_FAIL)
	@echo "running usage_pipeline, record_stats and usage_subcounts over $(DEMO_START)...$(DEMO_END), one run each (log: $(DATA_DIR)/demo-run.log)"
	$(DEMO_JOB) -j usage_pipeline $(DEMO_RANGE) >> $(DATA_DIR)/demo-run.log 2>&1 $(DEMO_FAIL)
	$(DEMO_JOB) -j record_stats $(DEMO_RANGE) >> $(DATA_DIR)/demo-run.log 2>&1 $(DEMO_FAIL)
	$(DEMO_JOB) -j usage_subcounts $(DEMO_RANGE) >> $(DATA_DIR)/demo-run.log 2>&1 $(DEMO_FAIL)
	@grep -oE "Asset check '[a-z_]+' on '[a-z_]+' (passed|failed)" $(DATA_DIR)/demo-run.log || true
	$(BIN)/usage-stats summary
	@echo "see it in the dashboard: make serve, then open http://127.0.0.1:8000/dashboard"

## test: install, start what the tests need (OpenSearch, MinIO, PostgreSQL, MariaDB, Redis, Chromium), run the whole suite
test: install
	$(BIN)/ruff check .
	scripts/browser.sh
	scripts/services.sh start
	eval "$$(scripts/services.sh env)" && $(BIN)/python -m pytest -q -rs

## dev: the Dagster UI on http://127.0.0.1:3000 with the embedded defaults
dev: install dagster-home
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

## serve: the web services (statistics API, LA Referencia widgets, SUSHI) on http://127.0.0.1:8000
serve: install
	$(BIN)/usage-stats serve

## bench: events/second and peak memory per stage (1M and 10M events over 100 sites)
bench: install
	$(BIN)/python bench/run_bench.py --events 1000000 10000000 --sites 100 --with-library

## services: install (cached) and start the test servers on 127.0.0.1 (scripts/services.sh)
services:
	scripts/services.sh start

services-stop:
	scripts/services.sh stop

## stack: the production topology on 127.0.0.1 (servers, code server, daemon, webserver, two
## Celery workers, web services; scripts/stack.sh); stack-down stops its processes
stack: install
	scripts/stack.sh up

stack-down:
	scripts/stack.sh down

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf data .dagster_home bench/results usage_stats/web/static/vendor frontend/node_modules
