# Throughline developer commands. Every target creates what it needs (.venv, .venv-sam) from pinned requirements.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Lambda runs python3.13: use it for the venv and for `sam build` when the machine has it (pyenv included).
PYTHON313 := $(shell for p in python3.13 $$HOME/.pyenv/versions/3.13*/bin/python3.13; do \
	PYENV_VERSION=$$(ls $$HOME/.pyenv/versions 2>/dev/null | grep '^3\.13' | head -n1) $$p -c 'import sys' >/dev/null 2>&1 \
	&& { PYENV_VERSION=$$(ls $$HOME/.pyenv/versions 2>/dev/null | grep '^3\.13' | head -n1) $$p -c 'import sys; print(sys.executable)'; break; }; done)
PYTHON ?= $(if $(PYTHON313),$(PYTHON313),python3)
VENV := .venv
VENV_SAM := .venv-sam
# checkov pins its own dependencies (boto3, pyyaml, …): a venv of its own too.
VENV_LINT := .venv-lint
PY := $(VENV)/bin/python
SAM := $(VENV_SAM)/bin/sam
PORT ?= 3000
# Parallel test workers: most integration tests wait on sandboxes and queues (four workers kept 1.34 of two cores busy:
# 7 min 36 s where three took 9 min 11 s), so five fit two cores.
TEST_WORKERS ?= 5
STACK ?= throughline-dev

.PHONY: help venv demo serve test test-unit test-integration test-e2e lint checkov format build validate bench \
	bitrix-setup replay-dlq clean

help: ## Show this help
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-nodeps.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq --upgrade pip
	$(PY) -m pip install -qq -r requirements-dev.txt
	$(PY) -m pip install -qq --no-deps -r requirements-nodeps.txt
	touch $@

$(VENV_SAM)/.installed: requirements-sam.txt
	$(PYTHON) -m venv $(VENV_SAM)
	$(VENV_SAM)/bin/pip install -qq --upgrade pip
	$(VENV_SAM)/bin/pip install -qq -r requirements-sam.txt
	touch $@

$(VENV_LINT)/.installed: requirements-lint.txt
	$(PYTHON) -m venv $(VENV_LINT)
	$(VENV_LINT)/bin/pip install -qq --upgrade pip
	$(VENV_LINT)/bin/pip install -qq -r requirements-lint.txt
	touch $@

# The snippet's pinned minifier (dev only), for the size test; skipped where npm is missing (the test then says so).
WEB_TOOLS := $(if $(shell command -v npm 2>/dev/null),web/node_modules/.installed)
web/node_modules/.installed: web/package.json web/package-lock.json
	npm ci --prefix web --no-audit --no-fund --silent
	touch $@

venv: $(VENV)/.installed $(WEB_TOOLS) ## Create .venv from the pinned requirements (and web/'s dev tools)

demo: venv ## Run the main job offline: local AWS, Bitrix24 sandbox, a burst of form posts, a table of leads
	PYTHONPATH=layers/core:. $(PY) -m local.demo

serve: venv ## Keep the local stack up at http://127.0.0.1:3000 (another port: PORT=…)
	PYTHONPATH=layers/core:. $(PY) -m local.serve --port $(PORT)

test: venv ## Run every test: unit, integration (moto + sandboxes) and end-to-end over HTTP (TEST_WORKERS=5)
	$(PY) -m pytest -n $(TEST_WORKERS) --maxschedchunk 1 --durations=15

test-unit: venv ## Unit tests only
	$(PY) -m pytest tests/unit

test-integration: venv ## Integration tests only
	$(PY) -m pytest tests/integration

test-e2e: venv ## End-to-end tests only
	$(PY) -m pytest tests/e2e

lint: venv $(VENV_SAM)/.installed $(VENV_LINT)/.installed ## ruff, `sam validate --lint` (cfn-lint) and checkov on template.yaml
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	AWS_DEFAULT_REGION=eu-central-1 $(SAM) validate --lint
	$(VENV_LINT)/bin/checkov --file template.yaml --framework cloudformation --compact --quiet --skip-download

checkov: $(VENV_LINT)/.installed ## checkov on template.yaml only (offline; each skipped check carries its reason inline)
	$(VENV_LINT)/bin/checkov --file template.yaml --framework cloudformation --compact --quiet --skip-download

format: venv ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

validate: $(VENV_SAM)/.installed ## `sam validate --lint` only
	AWS_DEFAULT_REGION=eu-central-1 $(SAM) validate --lint

build: $(VENV_SAM)/.installed ## `sam build` (needs python3.13; builds arm64 wheels without Docker)
	@test -n "$(PYTHON313)" || { echo "sam build needs python3.13 on PATH (pyenv: PYENV_VERSION=3.13.0)"; exit 1; }
	PATH="$(dir $(PYTHON313)):$$PATH" AWS_DEFAULT_REGION=eu-central-1 $(SAM) build
	@# Lambda mounts layers read-only: ship the byte code, or every cold start compiles the sources.
	$(PYTHON313) -m local.precompile .aws-sam/build

bench: venv ## Every benchmark's figures, then one table: each target beside its figure (BENCH_ARGS=--quick: CI's smoke run)
	PYTHONPATH=layers/core:. $(PY) -m benchmarks.summary $(BENCH_ARGS)

bitrix-setup: venv ## Create the journey field on leads and deals (idempotent); print the source dictionary
	PYTHONPATH=layers/core $(PY) -m throughline bitrix-setup

replay-dlq: venv ## Move messages from the writer's DLQ back to its queue: STACK=<stack> or QUEUE_URL=… DLQ_URL=…
	PYTHONPATH=layers/core $(PY) -m throughline replay-dlq $(if $(QUEUE_URL),--queue-url $(QUEUE_URL) --dlq-url $(DLQ_URL),--stack-name $(STACK))

clean: ## Remove build output and local run output
	rm -rf .aws-sam out .pytest_cache .ruff_cache
