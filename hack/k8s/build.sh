#!/usr/bin/env bash
# Build the control plane the integration tests run on, from Go modules, into the git-ignored cache:
#
#   $CACHE/k8s/<KUBERNETES_VERSION>/bin/{kube-apiserver,kubectl,etcd}
#   $CACHE/k8s/<KUBERNETES_VERSION>/bin/{kube-controller-manager,kube-scheduler,kwok}
#   $CACHE/k8s/<KUBERNETES_VERSION>/bin/helm
#
# The last three make the cluster of the end-to-end test (tests.devcluster.cluster): the
# real controllers and scheduler, and kwok ("Kubernetes WithOut Kubelet") for nodes and pod IPs.
# helm lints and renders charts/gremlinlb and installs it in the cluster end-to-end test.
#
# Idempotent: a binary that is already there (and, for etcd, reports the pinned version) is kept,
# so a warm run returns in well under a second. All Go state (GOPATH, GOMODCACHE, GOCACHE) lives
# under $CACHE/go, so a fresh clone rebuilds cold and nothing outside the repository is touched.
#
# Why wrapper modules: k8s.io/kubernetes replaces its ~33 staging modules (k8s.io/api, ...) with
# local paths, which `go install ...@version` refuses. The wrapper requires k8s.io/kubernetes and
# replaces every staging module with its published v0.<minor>.<patch> twin; the list is read from
# the pinned version's own go.mod, never written by hand. etcd's server module has local replace
# lines too, so it gets a (replace-free) wrapper of its own.
#
# Environment: GREMLINLB_CACHE (default <repo>/.cache), GO (default: go on PATH, else
# /usr/local/go/bin/go).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=versions.env
. "$here/versions.env"

cache="${GREMLINLB_CACHE:-$root/.cache}"
mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"
base="$cache/k8s/$KUBERNETES_VERSION"
bin="$base/bin"
work="$base/src"

go_bin="${GO:-$(command -v go || true)}"
if [[ -z "$go_bin" && -x /usr/local/go/bin/go ]]; then go_bin=/usr/local/go/bin/go; fi
if [[ -z "$go_bin" ]]; then
    echo "k8s build: no Go toolchain found (set GO=/path/to/go; Go >= 1.26 is needed)" >&2
    exit 1
fi

log() { printf 'k8s build: %s\n' "$*" >&2; }

etcd_ok() {
    # Capture first: `etcd --version | grep -q` races under pipefail (grep exits at the first
    # match and etcd dies of SIGPIPE writing the rest, failing the pipeline).
    local out
    [[ -x "$bin/etcd" ]] && out=$("$bin/etcd" --version 2>/dev/null) \
        && grep -q "^etcd Version: ${ETCD_VERSION#v}\$" <<<"$out"
}
k8s_cmds=(kube-apiserver kubectl kube-controller-manager kube-scheduler)
k8s_missing() {
    local c
    for c in "${k8s_cmds[@]}"; do [[ -x "$bin/$c" ]] || echo "$c"; done
}
kwok_ok() { [[ -x "$bin/kwok" && "$(cat "$bin/.kwok-version" 2>/dev/null)" == "$KWOK_VERSION" ]]; }
helm_ok() { [[ -x "$bin/helm" && "$(cat "$bin/.helm-version" 2>/dev/null)" == "$HELM_VERSION" ]]; }
all_ok() { [[ -z "$(k8s_missing)" ]] && etcd_ok && kwok_ok && helm_ok; }

if all_ok; then exit 0; fi

mkdir -p "$bin" "$work"
# Two `make test` runs at once must not build twice into the same place.
exec 9>"$base/.build.lock"
flock 9
if all_ok; then exit 0; fi

export GOPATH="$cache/go"
export GOMODCACHE="$cache/go/mod"
export GOCACHE="$cache/go/build"
export GOENV=off           # ignore any user-level `go env -w` settings
export CGO_ENABLED=0       # static binaries, no C compiler needed (as upstream releases them)
# -modcacherw: a plain `rm -rf .cache` works without root.
export GOFLAGS="-mod=mod -modcacherw -buildvcs=false -trimpath"
unset GOOS GOARCH GOWORK || true
export GOWORK=off

local_go="$("$go_bin" env GOVERSION)"
log "using $go_bin ($local_go), cache $GOPATH"

# An older local Go lets the go command fetch the required toolchain (itself a module, from the
# same module proxy) into $GOMODCACHE, instead of failing.
ensure_toolchain() {
    local wanted="$1" have="${local_go#go}"
    if [[ "$(printf '%s\n%s\n' "$wanted" "$have" | sort -V | head -n1)" != "$wanted" ]]; then
        log "local Go $have is older than the required $wanted; using toolchain go$wanted"
        export GOTOOLCHAIN="go$wanted"
    fi
}
start=$SECONDS

mapfile -t missing < <(k8s_missing)
if (( ${#missing[@]} )); then
    kv="$KUBERNETES_VERSION"            # v1.36.3
    staging_version="v0.${kv#v1.}"      # v0.36.3
    mod_dir="$work/kubernetes"
    rm -rf "$mod_dir" && mkdir -p "$mod_dir"
    log "fetching k8s.io/kubernetes@$kv go.mod"
    upstream_mod="$(cd "$mod_dir" && "$go_bin" mod download -json "k8s.io/kubernetes@$kv" |
        sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
    [[ -f "$upstream_mod" ]] || { log "could not download go.mod of k8s.io/kubernetes@$kv"; exit 1; }
    # Every `k8s.io/<name> => ./staging/src/k8s.io/<name>` line, in the pinned version's go.mod.
    mapfile -t staging < <(sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._-]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\1#p' "$upstream_mod")
    if (( ${#staging[@]} < 20 )); then
        log "found only ${#staging[@]} staging replace lines in $upstream_mod; the layout changed?"
        exit 1
    fi
    go_line="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$upstream_mod")"
    ensure_toolchain "$go_line"
    {
        echo "// Generated by hack/k8s/build.sh from k8s.io/kubernetes@$kv's go.mod. Do not edit."
        echo "module gremlinlb.invalid/kubewrapper"
        echo
        echo "go $go_line"
        echo
        echo "require k8s.io/kubernetes $kv"
        echo
        echo "replace ("
        for m in "${staging[@]}"; do echo "	$m => $m $staging_version"; done
        echo ")"
    } >"$mod_dir/go.mod"
    log "wrapper module with ${#staging[@]} staging replaces ($staging_version); building ${missing[*]}"
    pkg_version=k8s.io/component-base/version
    client_version=k8s.io/client-go/pkg/version
    minor="${kv#v1.}"; minor="${minor%%.*}"
    ldflags="-s -w"
    for p in "$pkg_version" "$client_version"; do
        ldflags+=" -X $p.gitVersion=$kv -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
        ldflags+=" -X $p.buildDate=1970-01-01T00:00:00Z"
    done
    out="$mod_dir/out"
    mkdir -p "$out"
    (cd "$mod_dir" && "$go_bin" build -ldflags "$ldflags" -o "$out/" \
        "${missing[@]/#/k8s.io/kubernetes/cmd/}")
    for c in "${missing[@]}"; do mv -f "$out/$c" "$bin/"; done
    log "${missing[*]} $kv built ($((SECONDS - start)) s so far)"
fi

if ! etcd_ok; then
    mod_dir="$work/etcd"
    rm -rf "$mod_dir" && mkdir -p "$mod_dir"
    cat >"$mod_dir/go.mod" <<GOMOD
// Generated by hack/k8s/build.sh. Do not edit.
module gremlinlb.invalid/etcdwrapper

go 1.26.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
GOMOD
    ensure_toolchain 1.26.0
    log "building etcd $ETCD_VERSION"
    (cd "$mod_dir" && "$go_bin" build -ldflags "-s -w" -o "$mod_dir/etcd" go.etcd.io/etcd/server/v3)
    mv -f "$mod_dir/etcd" "$bin/etcd"
    etcd_ok || { log "built etcd does not report version $ETCD_VERSION"; exit 1; }
fi

if ! kwok_ok; then
    # kwok's own go.mod, exactly as `go install sigs.k8s.io/kwok/cmd/kwok@<version>` uses it.
    go_line=1.26.0
    ensure_toolchain "$go_line"
    log "building kwok $KWOK_VERSION"
    gobin="$work/kwok-bin"
    rm -rf "$gobin" && mkdir -p "$gobin"
    (cd "$work" && GOBIN="$gobin" GOFLAGS="-modcacherw -buildvcs=false -trimpath" "$go_bin" install -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION")
    mv -f "$gobin/kwok" "$bin/kwok"
    echo "$KWOK_VERSION" >"$bin/.kwok-version"
fi

if ! helm_ok; then
    # Helm's own go.mod (no replace lines), as `go install helm.sh/helm/v4/cmd/helm@<version>`
    # uses it; the -X flag gives `helm version` the release's version instead of its bare "v4.3".
    ensure_toolchain 1.26.0
    log "building helm $HELM_VERSION"
    gobin="$work/helm-bin"
    rm -rf "$gobin" && mkdir -p "$gobin"
    (cd "$work" && GOBIN="$gobin" GOFLAGS="-modcacherw -buildvcs=false -trimpath" "$go_bin" install \
        -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION -X helm.sh/helm/v4/internal/version.gitTreeState=clean" \
        "helm.sh/helm/v4/cmd/helm@$HELM_VERSION")
    mv -f "$gobin/helm" "$bin/helm"
    echo "$HELM_VERSION" >"$bin/.helm-version"
fi

log "done in $((SECONDS - start)) s: $(ls "$bin" | tr '\n' ' ')"
