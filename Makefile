# CacheTier — every target installs what it needs (idempotently) and says what it does.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      := .venv
PY        := $(VENV)/bin/python
LOCAL     := .local
KUBECONFIG ?= $(CURDIR)/$(LOCAL)/kubeconfig
export KUBECONFIG
PYTEST_FLAGS ?= -q -p no:cacheprovider

.PHONY: help bootstrap demo test test-unit test-redis test-e2e cluster-up cluster-down node-stop node-start run crds crds-check lint bench golden

help: ## List the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

bootstrap: ## Install apt packages, the venv and the control plane binaries (cached)
	@bash hack/bootstrap.sh

lint: bootstrap ## ruff (lint + format check), mypy --strict and the layer rules
	$(PY) hack/check_layers.py
	$(VENV)/bin/ruff check operator devtools tests hack bench examples
	$(VENV)/bin/ruff format --check operator devtools tests hack bench examples
	$(VENV)/bin/mypy --strict operator/cachetier devtools/ctdev

crds: bootstrap ## Regenerate crds/ from the pydantic models
	$(PY) hack/gen_crds.py

crds-check: bootstrap
	$(PY) hack/gen_crds.py --check

golden: bootstrap ## Regenerate the golden files of the renderer
	$(PY) hack/regen_golden.py

test-unit: bootstrap
	$(PY) -m pytest $(PYTEST_FLAGS) tests/unit

test-redis: bootstrap
	$(PY) -m pytest $(PYTEST_FLAGS) tests/redis

# The e2e session runs with a private /etc/hosts that the node agent keeps cluster names
# in (hack/private-hosts.sh), so clients resolve pod names at run time.
E2E = env -u KUBECONFIG bash hack/private-hosts.sh $(PY) -m pytest $(PYTEST_FLAGS) tests/e2e

test-e2e: bootstrap
	$(E2E)

# Three pytest runs, pure tiers first: the e2e session keeps an operator running in
# a thread, and Hypothesis must not share the process's global random state with it.
test: bootstrap lint crds-check ## Everything CI runs (.ci/run calls exactly this)
	$(PY) -m pytest $(PYTEST_FLAGS) tests/unit
	$(PY) -m pytest $(PYTEST_FLAGS) tests/redis
	$(E2E)

NODES ?= 1
cluster-up: bootstrap ## Start the local control plane (+ node agents; NODES=3: workers in zones a, b, c); writes .local/kubeconfig
	$(PY) -m ctdev.controlplane up --dir $(LOCAL) --nodes $(NODES)

node-stop: ## Stop node NODE the way a machine dies (make node-stop NODE=cachetier-a)
	$(PY) -m ctdev.controlplane node stop $(NODE) --dir $(LOCAL)

node-start: ## Start node NODE again
	$(PY) -m ctdev.controlplane node start $(NODE) --dir $(LOCAL)

cluster-down: ## Stop everything cluster-up (and make demo) started
	@if [ -f $(LOCAL)/pids/operator.pid ]; then kill $$(cat $(LOCAL)/pids/operator.pid) 2>/dev/null || true; rm -f $(LOCAL)/pids/operator.pid; fi
	@if [ -x $(PY) ]; then $(PY) -m ctdev.controlplane down --dir $(LOCAL); fi

run: bootstrap ## Run the operator in the foreground against KUBECONFIG (default .local/kubeconfig)
	$(PY) -m cachetier.main --kubeconfig "$(KUBECONFIG)" --liveness http://127.0.0.1:8081/healthz

demo: bootstrap ## Local control plane, CRD, operator, examples: watch a tier go Ready (FAILOVER=1: and a replication failover)
	FAILOVER=$(FAILOVER) bash hack/demo.sh

bench: bootstrap ## Run the benchmarks; JSON to stdout and bench/results/
	@mkdir -p bench/results
	@set -e; for b in bench/bench_*.py; do echo "== $$b" >&2; env -u KUBECONFIG $(PY) $$b; done
