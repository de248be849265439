# streamsync developer commands. `make help` lists them.
PYTHON ?= python3
# The search engine of make demo / make services: elasticsearch or opensearch.
ENGINE ?= elasticsearch
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
export PYTHON ENGINE

.DEFAULT_GOAL := help
.PHONY: help venv demo bench bench-quick bench-peers lint format test test-fast services services-down lock clean

help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(INSTALLED): pyproject.toml constraints.txt
	@scripts/setup-venv.sh

venv: $(INSTALLED) ## create .venv and install streamsync with its test dependencies

demo: $(INSTALLED) ## streamsync end to end on local services (ENGINE=opensearch for OpenSearch)
	@$(BIN)/python scripts/demo.py

bench: $(INSTALLED) ## benchmarks (not part of make test): throughput, CPU, latency, idle, scale
	@$(BIN)/python bench/run.py

bench-quick: $(INSTALLED) ## the same, smaller: under 5 minutes
	@$(BIN)/python bench/run.py --quick

bench-peers: $(INSTALLED) ## streamsync against the KCL + DynamoDB Streams adapter worker, side by side (builds it with Maven once)
	@$(BIN)/python bench/run_peers.py $(BENCH_PEERS_ARGS)

lint: $(INSTALLED) ## ruff check, ruff format --check, mypy --strict
	$(BIN)/ruff check streamsync tests bench scripts
	$(BIN)/ruff format --check streamsync tests bench scripts
	$(BIN)/mypy --strict streamsync

format: $(INSTALLED) ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix streamsync tests bench scripts
	$(BIN)/ruff format streamsync tests bench scripts

test: lint ## lint, then the whole suite against real Elasticsearch and OpenSearch nodes and moto (CI runs this)
	@scripts/run-tests.sh

test-fast: lint ## like test, without the slow soak and chaos tests
	@scripts/run-tests.sh -m "not slow"

services: $(INSTALLED) ## start a search node (ENGINE) on 127.0.0.1:9200 and DynamoDB + Streams (moto) on :5000
	@scripts/services.sh up

services-down: ## stop what make services started
	@scripts/services.sh down

lock: ## re-resolve and pin every Python dependency in constraints.txt
	@scripts/lock.sh

clean: services-down ## remove .venv and .work (downloads stay cached in ~/.m2)
	rm -rf $(VENV) .work
