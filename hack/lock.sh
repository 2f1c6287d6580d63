#!/usr/bin/env bash
# Regenerates the lock files in requirements/ (`make lock`): every transitive dependency pinned
# with its hashes, so `make setup` installs the same files on every machine, any day. Run it after
# changing a dependency in pyproject.toml (tests/unit/test_lock.py fails until you do).
#
#   runtime.txt  the product's dependencies (`make demo`), plus pip and setuptools
#   dev.txt      runtime + the dev extra (`make setup`, `make test`)
#   compile.txt  runtime + the compile extra: mypyc for the compiled build of `make demo` and the
#                image (the same mypy as dev.txt)
#   bench.txt    dev + the bench extra (`make bench`)
#   dev-no-deps.txt  the dev-no-deps extra alone, each package with its hashes but without its
#                dependencies (installed with --no-deps: janusgraphpython pins a gremlinpython
#                older than ours, so it cannot be resolved together with the others)
#
# Each is constrained by the one before it, so the three agree on every shared version.
# pip-tools runs from its own venv under .cache (it never enters the project's .venv).
set -euo pipefail
cd "$(dirname "$0")/.."

PIP_TOOLS_VERSION=7.6.2
CACHE=${GREMLINLB_CACHE:-$PWD/.cache}
mkdir -p "$CACHE"
# The physical path: a venv's scripts name their interpreter by the path it was made at, so a
# venv made through a linked .cache (a git worktree sharing it) breaks when that link goes.
TOOLS=$(cd "$CACHE" && pwd -P)/pip-tools-$PIP_TOOLS_VERSION
PYTHON=${PYTHON:-python3}
if ! "$TOOLS/bin/pip-compile" --version >/dev/null 2>&1; then
  rm -rf "$TOOLS"
  "$PYTHON" -m venv "$TOOLS"
  "$TOOLS/bin/pip" install --quiet "pip-tools==$PIP_TOOLS_VERSION"
fi

compile() {  # compile OUTPUT [pip-compile options...]
  local output=$1
  shift
  # Local wheel folders and index settings of this machine stay out of the lock.
  env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL \
    CUSTOM_COMPILE_COMMAND="make lock" "$TOOLS/bin/pip-compile" --quiet \
    --generate-hashes --allow-unsafe --strip-extras --annotation-style=line \
    --no-emit-index-url --no-emit-trusted-host --no-emit-find-links \
    --output-file "requirements/$output" "$@" pyproject.toml requirements/tools.in
}

compile runtime.txt
compile dev.txt --extra dev --constraint requirements/runtime.txt
compile compile.txt --extra compile --constraint requirements/dev.txt
compile bench.txt --extra dev --extra bench --constraint requirements/dev.txt

# The dev-no-deps extra: resolved on its own (its pins may conflict with ours), then only the
# extra's own packages are kept, with every hash pip-compile found for them.
NO_DEPS_TMP=$(mktemp -d)
trap 'rm -rf "$NO_DEPS_TMP"' EXIT
"$PYTHON" - pyproject.toml >"$NO_DEPS_TMP/no-deps.in" <<'PY'
import sys, tomllib
extra = tomllib.load(open(sys.argv[1], "rb"))["project"]["optional-dependencies"]["dev-no-deps"]
print("\n".join(extra))
PY
env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL \
  CUSTOM_COMPILE_COMMAND="make lock" "$TOOLS/bin/pip-compile" --quiet \
  --generate-hashes --strip-extras --annotation-style=line \
  --no-emit-index-url --no-emit-trusted-host --no-emit-find-links \
  --output-file "$NO_DEPS_TMP/all.txt" "$NO_DEPS_TMP/no-deps.in"
"$PYTHON" - "$NO_DEPS_TMP/no-deps.in" "$NO_DEPS_TMP/all.txt" >requirements/dev-no-deps.txt <<'PY'
import re, sys
wanted = {re.split(r"[=<>!~ ;\[]", line)[0].lower() for line in open(sys.argv[1]) if line.strip()}
print("# Made by `make lock` (hack/lock.sh) from pyproject.toml's dev-no-deps extra: these packages")
print("# only, with their hashes; installed with --no-deps (their own pins conflict with ours).")
keep = False
for line in open(sys.argv[2]):
    if line.startswith("#") or not line.strip():
        continue
    if not line[0].isspace():
        keep = re.split(r"[=<>!~ ;\[]", line)[0].lower() in wanted
    if keep:
        sys.stdout.write(re.sub(r"\s+# via .*$", "", line.rstrip("\n")) + "\n")
PY
