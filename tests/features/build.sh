#!/usr/bin/env bash
# Fetch TinkerPop's feature suite and its Java runner with Maven and compile our one adapter
# class, into the git-ignored cache (used by tests/feature_support.py, `make features` and
# tests/integration/test_tinkerpop_features.py):
#
#   $CACHE/tinkerpop-features/lib/*.jar    gremlin-test (the .feature files and TinkerPop's step
#                                          definitions), gremlin-driver, tinkergraph-gremlin,
#                                          cucumber and guice (+ a .complete marker)
#   $CACHE/tinkerpop-features/classes/     GremlinlbWorld.class, its ObjectFactory registration and
#                                          logback.xml (+ a .built marker)
#   $CACHE/tinkerpop-features/data/        the data files the io() scenarios read, taken from the
#                                          gremlin-test jar and checked against TinkerPop's data/
#
# Maven uses the cache's private local repository ($CACHE/m2), shared with the dev servers.
# Idempotent: each marker holds the hash of its inputs. Environment: GREMLINLB_CACHE.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="${GREMLINLB_CACHE:-$root/.cache}"
mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"
out="$cache/tinkerpop-features"
lib="$out/lib"
classes="$out/classes"
data="$out/data"

log() { printf 'tinkerpop features: %s\n' "$*" >&2; }
digest() { cat "$@" | sha256sum | cut -d' ' -f1; }

# The io() scenarios read data/tinkerpop-modern.{kryo,json,xml}: TinkerPop ships them in its
# source tree's data/ and, byte for byte the same (these sha256 sums, of TinkerPop 3.8.1's
# data/ files), in the gremlin-test jar under these names.
data_files=(
    "gryo/tinkerpop-modern-v3.kryo tinkerpop-modern.kryo 5b6438a3c19de262a7278e1ad76a2c86e2e170d8bb05ac8354d36bdd3c48eb81"
    "graphson/tinkerpop-modern-v3.json tinkerpop-modern.json fce96f6b7495ebcc109aaa8cf7cca46a7d1af5d7d759ee821bd012e006d95cf1"
    "graphml/tinkerpop-modern.xml tinkerpop-modern.xml a2b8ebf72eefe624bca842694b87f013167ea1aed531a3b95591a36dbac4ba0a"
)

lib_hash="$(digest "$here/pom.xml")"
classes_hash="$(digest "$here/GremlinlbWorld.java" "$here/logback.xml" "$here/pom.xml" "$here/build.sh")"
lib_ok() { [[ -f "$lib/.complete" && "$(cat "$lib/.complete")" == "$lib_hash" ]]; }
classes_ok() { [[ -f "$classes/.built" && "$(cat "$classes/.built")" == "$classes_hash" ]]; }

if lib_ok && classes_ok; then exit 0; fi

command -v unzip >/dev/null || { log "unzip not found on PATH"; exit 1; }
start=$SECONDS
# shellcheck source=../maven-jars.sh
source "$here/../maven-jars.sh"
maven_jars "$here/pom.xml" runner.lib "$lib" "$lib_hash" 'gremlin-test-*.jar' \
    "gremlin-test and the cucumber runner"

if ! classes_ok; then
    log "compiling GremlinlbWorld.java into $classes"
    rm -rf "$classes" "$data"
    mkdir -p "$classes/META-INF/services" "$data"
    javac -encoding UTF-8 --release 17 -nowarn -cp "$lib/*" -d "$classes" "$here/GremlinlbWorld.java"
    echo 'gremlinlb.features.GremlinlbWorld$Factory' \
        >"$classes/META-INF/services/io.cucumber.core.backend.ObjectFactory"
    cp "$here/logback.xml" "$classes/"
    jar=("$lib"/gremlin-test-*.jar)
    for entry in "${data_files[@]}"; do
        read -r inside name sum <<<"$entry"
        unzip -p "${jar[0]}" "org/apache/tinkerpop/gremlin/structure/io/$inside" >"$data/$name"
        echo "$sum  $data/$name" | sha256sum --check --quiet \
            || { log "$name from ${jar[0]} is not TinkerPop's data/$name"; exit 1; }
    done
    echo "$classes_hash" >"$classes/.built"
fi

log "ready in $out ($((SECONDS - start)) s)"
