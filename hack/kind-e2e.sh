#!/usr/bin/env bash
# End-to-end on a real cluster: kind (Docker) + the gremlinlb image + every manifest, then the
# checks the control-plane tests make, on real kubelets and a real EndpointSlice controller.
#
#   make kind-e2e            # needs docker, kind and kubectl on PATH; ~5-10 minutes
#   KEEP_CLUSTER=1 make kind-e2e   # leave the cluster up afterwards
#
# It cannot run on a machine without a Docker engine (like the project's CI machine).
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${CLUSTER:-gremlinlb-e2e}
IMAGE=${IMAGE:-gremlinlb:0.1.0}
NS=${NS:-gremlinlb-e2e}
export KUBECONFIG=${KUBECONFIG_E2E:-$PWD/.cache/kind-e2e.kubeconfig}

for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || { echo "kind-e2e: $tool is not installed" >&2; exit 2; }
done
docker info >/dev/null 2>&1 || { echo "kind-e2e: no Docker engine is reachable" >&2; exit 2; }

cleanup() {
  if [[ -z "${KEEP_CLUSTER:-}" ]]; then kind delete cluster --name "$CLUSTER" || true; fi
}
trap cleanup EXIT

step() { printf '\n=== %s\n' "$*"; }
fail() { echo "kind-e2e: FAILED: $*" >&2; kubectl -n gremlinlb-system logs deploy/gremlinlb-operator --tail=80 >&2 || true; exit 1; }

step "cluster"
mkdir -p .cache
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --config kind-config.yaml --name "$CLUSTER" --wait 120s

step "image $IMAGE"
docker build -f manifests/Dockerfile -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"

step "CRD and operator"
kubectl apply -f crds/
kubectl wait --for=condition=Established crd/gremlinclusters.gremlinlb.io --timeout=60s
kubectl apply -f manifests/
kubectl -n gremlinlb-system rollout status deploy/gremlinlb-operator --timeout=180s

step "Gremlin Servers, GremlinCluster, app"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$NS" apply -f manifests/examples/gremlin-server.yaml
kubectl -n "$NS" rollout status statefulset/gremlin --timeout=300s
kubectl -n "$NS" apply -f manifests/examples/gremlincluster.yaml
kubectl -n "$NS" wait --for=condition=Ready gremlincluster/graph --timeout=120s
test "$(kubectl -n "$NS" get gremlincluster graph -o jsonpath='{.status.readyEndpoints}')" = 3 \
  || fail "expected 3 ready endpoints"

# The webhook may need a moment after the operator started; a refused pod is retried by its
# ReplicaSet anyway.
kubectl -n "$NS" apply -f manifests/examples/app.yaml
kubectl -n "$NS" rollout status deploy/gremlin-app --timeout=300s

step "the sidecar was injected as a native sidecar"
pod=$(kubectl -n "$NS" get pod -l app.kubernetes.io/name=gremlin-app -o jsonpath='{.items[0].metadata.name}')
policy=$(kubectl -n "$NS" get pod "$pod" -o jsonpath='{.spec.initContainers[?(@.name=="gremlinlb-sidecar")].restartPolicy}')
[[ "$policy" == Always ]] || fail "no native sidecar in $pod"

step "every sidecar holds the list, the app gets answers"
for _ in $(seq 60); do
  synced=$(kubectl -n "$NS" get gremlincluster graph -o jsonpath='{.status.sidecars.inSync}')
  [[ "$synced" == 2 ]] && break; sleep 2
done
[[ "$synced" == 2 ]] || fail "sidecars in sync: $synced of 2"
for _ in $(seq 30); do
  kubectl -n "$NS" logs "$pod" -c app --tail=5 | grep -q '^count 1' && break; sleep 2
done
kubectl -n "$NS" logs "$pod" -c app --tail=5 | grep -q '^count 1' || fail "the app got no answer"

step "scale to 4: the new server appears in every sidecar's list"
kubectl -n "$NS" scale statefulset/gremlin --replicas=4
kubectl -n "$NS" rollout status statefulset/gremlin --timeout=300s
for _ in $(seq 60); do
  ready=$(kubectl -n "$NS" get gremlincluster graph -o jsonpath='{.status.readyEndpoints}')
  [[ "$ready" == 4 ]] && break; sleep 1
done
[[ "$ready" == 4 ]] || fail "ready endpoints after scaling: $ready"
new_ip=$(kubectl -n "$NS" get pod gremlin-3 -o jsonpath='{.status.podIP}')
kubectl -n "$NS" exec "$pod" -c app -- python -c "
import json, ssl, urllib.request
unverified = ssl._create_unverified_context()  # the admin API serves the push CA's certificate
hosts = json.load(urllib.request.urlopen('https://127.0.0.1:9901/v1/hosts', context=unverified))['hosts']
assert any(h['address'].startswith('$new_ip:') for h in hosts), hosts
print('sidecar knows', [h['address'] for h in hosts])"

step "scale to 3: the removed server is drained, then gone"
kubectl -n "$NS" scale statefulset/gremlin --replicas=3
for _ in $(seq 60); do
  total=$(kubectl -n "$NS" get gremlincluster graph -o jsonpath='{.status.totalEndpoints}')
  [[ "$total" == 3 ]] && break; sleep 1
done
[[ "$total" == 3 ]] || fail "endpoints after scaling down: $total"

step "deleting the GremlinCluster removes its token Secret"
kubectl -n "$NS" delete gremlincluster graph --timeout=60s
for _ in $(seq 30); do
  kubectl -n "$NS" get secret graph-gremlinlb-token >/dev/null 2>&1 || break; sleep 1
done
! kubectl -n "$NS" get secret graph-gremlinlb-token >/dev/null 2>&1 || fail "token Secret left behind"

echo; echo "kind-e2e: all checks passed"
