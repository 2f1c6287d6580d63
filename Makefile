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

.PHONY: test-pure prometheus setup runtime-deps compile-deps dev-deps package jars janusgraph lock demo test lint typecheck unit integration clean js-driver java-driver go-driver kind-e2e cluster-e2e generate bench bench-deps haproxy bench-micro features features-runner

# Every Python dependency, transitive ones included, comes from a lock file with hashes
# (requirements/*.txt, regenerated from pyproject.toml by `make lock`), so every machine installs
# the same files on any day. The demo needs only the runtime lock; tests add the dev lock and
# the no-deps lock: janusgraphpython (the JanusGraph serializers tests/integration/test_janusgraph.py
# reads JanusGraph with) pins gremlinpython 3.7.3 but works on our 3.8.2, so it is installed
# without its dependencies, from a lock of its own (hashes checked all the same).
LOCK := requirements
PIP_INSTALL := $(PY) -m pip install --quiet --disable-pip-version-check --require-hashes

setup: dev-deps package jars janusgraph js-driver java-driver go-driver features-runner

runtime-deps: $(VENV)/.runtime-stamp
$(VENV)/.runtime-stamp: $(LOCK)/runtime.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PIP_INSTALL) -r $(LOCK)/runtime.txt
	@touch $@

# mypyc (it comes with mypy) for the compiled build, where the dev lock is not installed (`make
# demo`); the dev lock has the same mypy.
compile-deps: $(VENV)/.compile-stamp
$(VENV)/.compile-stamp: $(LOCK)/compile.txt $(VENV)/.runtime-stamp
	@$(PIP_INSTALL) -r $(LOCK)/compile.txt
	@touch $@

dev-deps: $(VENV)/.dev-stamp
$(VENV)/.dev-stamp: $(LOCK)/dev.txt $(LOCK)/dev-no-deps.txt $(VENV)/.runtime-stamp
	$(PIP_INSTALL) -r $(LOCK)/dev.txt
	$(PIP_INSTALL) --no-deps -r $(LOCK)/dev-no-deps.txt
	touch $@

# The package itself, without dependencies (the locks bring them). Re-link on every run: the
# strict editable install links files, so a new module needs a relink. setuptools announces
# every strict editable install with a warning that only repeats what this comment says.
# setup.py compiles the hot path with mypyc (gremlinlb.native.COMPILED) when mypyc and a C
# compiler are there, about a minute, then only when a source changed (build/mypyc/cache);
# GREMLINLB_PURE=1 installs it pure. The link tree's name says which (cp311 or py3-none-any):
# the old one goes first, so LINK_TREE is the one installed.
package: $(VENV)/.runtime-stamp
	@rm -rf build/__editable__.gremlinlb-*
	@PYTHONWARNINGS="ignore:Editable installation" $(PY) -m pip install --quiet \
	    --disable-pip-version-check --no-deps --no-build-isolation -e . \
	    --config-settings editable_mode=strict

# The Gremlin Server jars (Maven, into .cache); quiet unless it fails.
jars: package
	@$(GREMLINLB) --log-level WARNING dev-servers fetch >/dev/null

# JanusGraph 1.1.0 Server (TinkerPop 3.7.3; janusgraph-server, -inmemory, -lucene and their
# runtime jars, about 68 MB, with Maven into .cache/janusgraph/<version>, sharing .cache/m2) for
# tests/integration/test_janusgraph.py; quiet unless it fails, a no-op once cached.
janusgraph: package
	@$(GREMLINLB) --log-level WARNING dev-servers fetch --janusgraph >/dev/null

lock:
	hack/lock.sh

# The JavaScript Gremlin driver (a client that multiplexes many requests on one connection),
# for the sidecar's integration tests; installed once into .cache/js with npm.
JS_DRIVER := $(CACHE)/js/node_modules/gremlin/package.json
js-driver: $(JS_DRIVER)
$(JS_DRIVER):
	mkdir -p $(CACHE)/js
	cd $(CACHE)/js && npm install --no-audit --no-fund --loglevel=error gremlin@3.8.2

# The official Java and Go Gremlin drivers (both multiplex requests on one connection), for the
# sidecar's integration tests: tests/drivers/{java,go}/build.sh fetch gremlin-driver 3.8.1 with
# Maven (into .cache/m2, shared with the dev servers) and gremlin-go v3.8.1 as a Go module (into
# .cache/go, shared with hack/k8s), and build their small programs into .cache/java-driver and
# .cache/go-driver. Each script returns at once when its inputs have not changed.
java-driver:
	tests/drivers/java/build.sh

go-driver:
	tests/drivers/go/build.sh

# TinkerPop's own feature suite (the .feature files and Java step definitions of gremlin-test
# 3.8.1, unchanged, with cucumber; about 40 MB with Maven into .cache/tinkerpop-features, sharing
# .cache/m2) plus the one adapter class that names the endpoint: tests/features/build.sh returns
# at once when built. `make features` runs the whole suite through a sidecar over a Gremlin
# Server holding TinkerPop's test graphs, through a sidecar over two such servers, and direct,
# and fails if a scenario that passes direct does not pass through the sidecar (over two
# servers: one on a loaded test graph); 1 to 4 minutes, tests/feature_support.py.
features-runner:
	tests/features/build.sh

features: package jars features-runner
	$(PY) -m tests.feature_support

# Only what the demo needs (no test tools, no test drivers), and only its narrative: log lines at
# WARNING and above unless asked (make demo DEMO_LOG_LEVEL=INFO).
DEMO_LOG_LEVEL ?= WARNING
demo: runtime-deps compile-deps package jars
	@$(GREMLINLB) --log-level $(DEMO_LOG_LEVEL) demo

LINT_PATHS = setup.py src tests hack $(wildcard sidecar operator bench)

lint: dev-deps package
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	# The layering contracts (.importlinter, docs/architecture.md), on the installed package tree.
	cd $(LINK_TREE) && $(CURDIR)/$(VENV)/bin/lint-imports --no-cache $(CURDIR)/.importlinter

typecheck: dev-deps package
	cd $(LINK_TREE) && $(CURDIR)/$(VENV)/bin/mypy --config-file $(CURDIR)/pyproject.toml -p gremlinlb
	$(VENV)/bin/mypy setup.py tests $(wildcard bench/*.py) $(wildcard bench/compare/*.py) $(wildcard bench/micro/*.py)

# `make bench`: connection-level balancers (HAProxy, a kube-proxy-like TCP round-robin) against
# gremlinlb (in-process client, sidecar) on the same real Gremlin Servers, in one run; writes
# bench/results/<date>.md and PNG plots. BENCH_QUICK=1 for a 2-3 minute smoke run; BENCH_ARGS
# passes anything else to bench/compare/run.py (see its --help).
bench: package jars js-driver bench-deps haproxy
	$(PY) bench/compare/run.py $(if $(filter 1 yes true,$(BENCH_QUICK)),--quick) $(BENCH_ARGS)

bench-deps: $(VENV)/.bench-stamp
$(VENV)/.bench-stamp: $(LOCK)/bench.txt $(VENV)/.dev-stamp
	$(PIP_INSTALL) -r $(LOCK)/bench.txt
	touch $@

# HAProxy from Debian's packages (a contender in `make bench`), installed once.
HAPROXY := /usr/sbin/haproxy
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
haproxy: $(HAPROXY)
$(HAPROXY):
	$(SUDO) apt-get update
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y haproxy

# Prometheus 2.42 and promtool from Debian's `prometheus` package, unpacked into .cache (no root
# unless the package lists must be fetched first; about 2 s and 95 MB), for the monitoring specs:
# promtool checks and unit-tests the alert rules, and a real Prometheus scrapes a live sidecar and
# operator to evaluate every dashboard query and every PromQL line of the docs.
PROMETHEUS_DIR := $(CACHE)/prometheus
export GREMLINLB_PROMETHEUS_BIN := $(PROMETHEUS_DIR)/usr/bin
prometheus:
	@hack/monitoring/prometheus.sh $(PROMETHEUS_DIR) >/dev/null

# The unit suite runs on both builds: the one installed (compiled when `make package` could) and
# the pure-Python source of the same modules (GREMLINLB_PURE=1, gremlinlb.native); the
# integration suite once, on the installed build.
unit: dev-deps package
	$(PY) -m pytest tests/unit
	GREMLINLB_PURE=1 $(PY) -m pytest -q tests/unit

test: setup k8s-bins prometheus lint typecheck
	$(PY) -m pytest
	GREMLINLB_PURE=1 $(PY) -m pytest -q tests/unit

# The whole suite again with every compiled module loaded as its Python source: what a machine
# without a C compiler runs (issue 26). Not part of `make test` (it doubles the integration time).
test-pure: setup k8s-bins prometheus
	GREMLINLB_PURE=1 $(PY) -m pytest

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis

# Regenerate the CRD (for manifests and, the same file, for the Helm chart's crds/), the webhook
# configuration from the code, and manifests/monitoring/ from the chart's dashboard and rules
# (unit tests check they match).
generate: package
	$(PY) -m hack.monitoring.manifests
	$(GREMLINLB) operator --print crd > crds/gremlincluster.yaml
	cp crds/gremlincluster.yaml charts/gremlinlb/crds/gremlincluster.yaml
	{ printf '%s\n' "# Generated by \`gremlinlb operator --print webhook\`; the operator fills in caBundle at start." \
	    "# Only pods labelled gremlinlb.io/inject are ever sent here (objectSelector), so a broken" \
	    "# webhook cannot block any other pod."; $(GREMLINLB) operator --print webhook; } > manifests/30-webhook.yaml

# The README's Kubernetes quick start (manifests, then the Helm chart), applied as written, then
# checked end to end with real traffic (tests/integration/test_cluster_e2e.py), on a cluster
# without containers: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok for
# the node and a node agent running every pod as real processes in a network namespace at its
# IP. Part of `make test` too.
cluster-e2e: setup k8s-bins
	$(PY) -m pytest tests/integration/test_cluster_e2e.py

# The same checks on a kind cluster (needs Docker, kind and kubectl; cannot run on the CI machine).
kind-e2e: dev-deps package
	hack/kind-e2e.sh

# `make bench-micro`: the data plane's own cost (issue 10). A Go load generator replays
# g.inject(1) against direct, HAProxy (mode tcp) and the sidecar (1 and 3 servers) at three
# shapes, in one run; writes bench/results/<date>-micro.md. BENCH_MICRO_ARGS passes anything
# else to bench/micro_bench.py (e.g. --label micro-after --profile --baseline main=PATH).
MICRO_LOADGEN := $(CACHE)/bench/micro-loadgen
bench-micro: package jars bench-deps haproxy $(MICRO_LOADGEN)
	$(PY) bench/micro_bench.py $(BENCH_MICRO_ARGS)

$(MICRO_LOADGEN): bench/micro/loadgen/main.go bench/micro/loadgen/go.mod bench/micro/loadgen/go.sum
	cd bench/micro/loadgen && GOPATH=$(CACHE)/go GOMODCACHE=$(CACHE)/go/mod GOCACHE=$(CACHE)/go/build \
	    GOENV=off CGO_ENABLED=0 GOFLAGS="-mod=readonly -modcacherw -buildvcs=false -trimpath" \
	    go build -o $(MICRO_LOADGEN) .
