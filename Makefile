# gremlinlb: two commands matter, `make demo` and `make test`. Both install what they need into
# git-ignored caches (.venv/, .cache/, build/) on first use and reuse them afterwards.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
GREMLINLB := $(VENV)/bin/gremlinlb
CACHE := $(CURDIR)/.cache
export GREMLINLB_CACHE := $(CACHE)
include hack/k8s/k8s.mk

# mypy must see the package as installed (the link tree of the strict editable install), because
# gremlinlb.sidecar and gremlinlb.operator live outside src/.
LINK_TREE = $(firstword $(wildcard build/__editable__.gremlinlb-*))

.PHONY: setup demo test lint typecheck unit integration clean js-driver bench bench-deps haproxy

setup: $(VENV)/.deps-stamp package jars js-driver

$(VENV)/.deps-stamp: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools
	$(PY) -m pip install --quiet -e '.[dev]' --config-settings editable_mode=strict
	touch $@

# Re-link on every run: the strict editable install links files, so a new module needs a relink.
package: $(VENV)/.deps-stamp
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e . --config-settings editable_mode=strict

jars: package
	$(GREMLINLB) dev-servers fetch

# The JavaScript Gremlin driver (a client that multiplexes many requests on one connection),
# for the sidecar's integration tests; installed once into .cache/js with npm.
JS_DRIVER := $(CACHE)/js/node_modules/gremlin/package.json
js-driver: $(JS_DRIVER)
$(JS_DRIVER):
	mkdir -p $(CACHE)/js
	cd $(CACHE)/js && npm install --no-audit --no-fund --loglevel=error gremlin@3.8.2

demo: setup
	$(GREMLINLB) demo

LINT_PATHS = src tests $(wildcard sidecar operator bench)

lint: package
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)

typecheck: package
	cd $(LINK_TREE) && $(CURDIR)/$(VENV)/bin/mypy --config-file $(CURDIR)/pyproject.toml -p gremlinlb
	$(VENV)/bin/mypy tests $(wildcard bench/*.py) $(wildcard bench/compare/*.py)

# `make bench`: connection-level balancers (HAProxy, a kube-proxy-like TCP round-robin) against
# gremlinlb (in-process client, sidecar) on the same real Gremlin Servers, in one run; writes
# bench/results/<date>.md and PNG plots. BENCH_QUICK=1 for a ~2 minute smoke run; BENCH_ARGS
# passes anything else to bench/compare/run.py (see its --help).
bench: setup bench-deps haproxy
	$(PY) bench/compare/run.py $(if $(filter 1 yes true,$(BENCH_QUICK)),--quick) $(BENCH_ARGS)

bench-deps: $(VENV)/.bench-stamp
$(VENV)/.bench-stamp: pyproject.toml $(VENV)/.deps-stamp
	$(PY) -m pip install --quiet -e '.[dev,bench]' --config-settings editable_mode=strict
	touch $@

# HAProxy from Debian's packages (a contender in `make bench`), installed once.
HAPROXY := /usr/sbin/haproxy
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
haproxy: $(HAPROXY)
$(HAPROXY):
	$(SUDO) apt-get update
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y haproxy

unit: package
	$(PY) -m pytest tests/unit

test: setup k8s-bins lint typecheck
	$(PY) -m pytest

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
