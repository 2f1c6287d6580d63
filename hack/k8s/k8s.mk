# Real control plane for the integration tests: etcd, kube-apiserver and kubectl (and the rest of
# the cluster end-to-end test's parts, and helm for the chart) built from Go modules into
# .cache/k8s/<KUBERNETES_VERSION>/bin (git-ignored). Include from the Makefile:
#
#   include hack/k8s/k8s.mk
#
# `make k8s-bins` builds once (cold: several minutes on 2 cores, a few GB of Go module and build
# cache under .cache/go; helm alone about 2 minutes) and afterwards returns at once. Versions
# are pinned in versions.env.
K8S_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
include $(K8S_DIR)/versions.env

K8S_CACHE ?= $(if $(GREMLINLB_CACHE),$(GREMLINLB_CACHE),$(CURDIR)/.cache)
K8S_BIN := $(K8S_CACHE)/k8s/$(KUBERNETES_VERSION)/bin
# Read by tests.devcluster.find_binaries() (pytest started from make finds the right build).
export GREMLINLB_K8S_BIN := $(K8S_BIN)

.PHONY: k8s-bins k8s-clean

k8s-bins:
	GREMLINLB_CACHE=$(K8S_CACHE) $(K8S_DIR)/build.sh

# Removes the binaries only (the Go module cache under .cache/go is kept for a quick rebuild).
k8s-clean:
	rm -rf $(K8S_CACHE)/k8s
