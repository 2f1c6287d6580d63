#!/usr/bin/env bash
# Fetch the official Java Gremlin driver with Maven and compile SidecarClient.java, into the
# git-ignored cache (used by tests/integration/test_sidecar_drivers.py):
#
#   $CACHE/java-driver/lib/*.jar       gremlin-driver and its runtime jars (+ a .complete marker)
#   $CACHE/java-driver/classes/        SidecarClient.class and logback.xml (+ a .built marker)
#
# Maven uses the same private local repository as `gremlinlb dev-servers fetch` ($CACHE/m2), so
# the jars the servers already brought are not fetched again. Idempotent: each marker holds the
# hash of its inputs, so a warm run only hashes three files; an edited input redoes its step.
# Environment: GREMLINLB_CACHE (default <repo>/.cache).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
cache="${GREMLINLB_CACHE:-$root/.cache}"
mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"
out="$cache/java-driver"
lib="$out/lib"
classes="$out/classes"

log() { printf 'java driver: %s\n' "$*" >&2; }
digest() { cat "$@" | sha256sum | cut -d' ' -f1; }

lib_hash="$(digest "$here/pom.xml")"
classes_hash="$(digest "$here/SidecarClient.java" "$here/logback.xml" "$here/pom.xml")"
lib_ok() { [[ -f "$lib/.complete" && "$(cat "$lib/.complete")" == "$lib_hash" ]]; }
classes_ok() { [[ -f "$classes/.built" && "$(cat "$classes/.built")" == "$classes_hash" ]]; }

if lib_ok && classes_ok; then exit 0; fi

start=$SECONDS
# shellcheck source=../../maven-jars.sh
source "$here/../../maven-jars.sh"
maven_jars "$here/pom.xml" driver.lib "$lib" "$lib_hash" 'gremlin-driver-*.jar' gremlin-driver

if ! classes_ok; then
    log "compiling SidecarClient.java into $classes"
    rm -rf "$classes"
    mkdir -p "$classes"
    javac -encoding UTF-8 --release 17 -nowarn -cp "$lib/*" -d "$classes" "$here/SidecarClient.java"
    cp "$here/logback.xml" "$classes/"
    echo "$classes_hash" >"$classes/.built"
fi

log "ready in $out ($((SECONDS - start)) s)"
