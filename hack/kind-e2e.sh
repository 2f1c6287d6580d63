#!/usr/bin/env bash
# The cluster end-to-end checks (tests/integration/test_cluster_e2e.py) on a kind cluster: the
# same test module `make test` runs on the container-less cluster, with the kind back end
# (tests/e2e_backends.py). It applies the README's Kubernetes quick start as written, then checks
# readiness, injection, traffic spread, scaling, pod and operator loss, and clean-up; then the
# README's Helm variant (charts/gremlinlb) and the same first checks on it.
#
#   make kind-e2e                  # needs docker, kind and kubectl on PATH; ~10 minutes
#   KEEP_CLUSTER=1 make kind-e2e   # leave the cluster up afterwards
#
# It cannot run on a machine without a Docker engine (like the project's CI machine).
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${CLUSTER:-gremlinlb-e2e}
IMAGE=gremlinlb:0.1.0   # the image name the manifests use
export KUBECONFIG=${KUBECONFIG_E2E:-$PWD/.cache/kind-e2e.kubeconfig}

# helm (the README's Helm variant, which the test installs too): the one `make k8s-bins` builds.
. hack/k8s/versions.env
export PATH="$PWD/.cache/k8s/$KUBERNETES_VERSION/bin:$PATH"
command -v helm >/dev/null || make k8s-bins
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "kind-e2e: $tool is not installed" >&2; exit 2; }
done
docker info >/dev/null 2>&1 || { echo "kind-e2e: no Docker engine is reachable" >&2; exit 2; }

cleanup() {
  if [[ -z "${KEEP_CLUSTER:-}" ]]; then kind delete cluster --name "$CLUSTER" || true; fi
}
trap cleanup EXIT

mkdir -p .cache
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --config kind-config.yaml --name "$CLUSTER" --wait 120s

# The README's first step (the image), done here: build it and load it onto the nodes.
docker build -f manifests/Dockerfile -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"
docker pull tinkerpop/gremlin-server:3.8.2 >/dev/null 2>&1 || true

GREMLINLB_E2E_BACKEND=kind .venv/bin/python -m pytest tests/integration/test_cluster_e2e.py "$@"
