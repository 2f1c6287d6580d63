#!/usr/bin/env bash
# Build the Go driver program (main.go, gremlin-go from go.mod/go.sum) into the git-ignored cache,
# for tests/integration/test_sidecar_drivers.py:
#
#   $CACHE/go-driver/bin/sidecar-go-driver   (+ a .built marker holding the hash of the inputs)
#
# All Go state (GOPATH, GOMODCACHE, GOCACHE) lives under $CACHE/go, shared with hack/k8s/build.sh,
# so nothing outside the repository is touched. Idempotent: a warm run only hashes three files.
# Environment: GREMLINLB_CACHE (default <repo>/.cache), GO (default: go on PATH, else
# /usr/local/go/bin/go).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
cache="${GREMLINLB_CACHE:-$root/.cache}"
mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"
out="$cache/go-driver"
bin="$out/bin/sidecar-go-driver"

log() { printf 'go driver: %s\n' "$*" >&2; }

hash="$(cat "$here/go.mod" "$here/go.sum" "$here/main.go" | sha256sum | cut -d' ' -f1)"
built_ok() { [[ -x "$bin" && -f "$out/.built" && "$(cat "$out/.built")" == "$hash" ]]; }
if built_ok; then exit 0; fi

go_bin="${GO:-$(command -v go || true)}"
if [[ -z "$go_bin" && -x /usr/local/go/bin/go ]]; then go_bin=/usr/local/go/bin/go; fi
if [[ -z "$go_bin" ]]; then
    log "no Go toolchain found (set GO=/path/to/go; Go >= 1.25 is needed)"
    exit 1
fi

mkdir -p "$out/bin"
exec 9>"$out/.build.lock"
flock 9
if built_ok; then exit 0; fi

export GOPATH="$cache/go"
export GOMODCACHE="$cache/go/mod"
export GOCACHE="$cache/go/build"
export GOENV=off           # ignore any user-level `go env -w` settings
export CGO_ENABLED=0
# -mod=readonly: go.sum is committed and must already list every module.
export GOFLAGS="-mod=readonly -modcacherw -buildvcs=false -trimpath"
unset GOOS GOARCH || true
export GOWORK=off

start=$SECONDS
log "building with $("$go_bin" env GOVERSION) into $bin"
(cd "$here" && "$go_bin" build -o "$bin.partial" .)
mv -f "$bin.partial" "$bin"
echo "$hash" >"$out/.built"
log "ready ($((SECONDS - start)) s)"
