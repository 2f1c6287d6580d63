#!/usr/bin/env bash
# Regenerates the lock files in requirements/ (`make lock`): every transitive dependency pinned
# with its hashes, so `make setup` installs the same files on every machine, any day. Run it after
# changing a dependency in pyproject.toml (tests/unit/test_lock.py fails until you do).
#
#   runtime.txt  the product's dependencies (`make demo`), plus pip and setuptools
#   dev.txt      runtime + the dev extra (`make setup`, `make test`)
#   bench.txt    dev + the bench extra (`make bench`)
#
# Each is constrained by the one before it, so the three agree on every shared version.
# pip-tools runs from its own venv under .cache (it never enters the project's .venv).
set -euo pipefail
cd "$(dirname "$0")/.."

PIP_TOOLS_VERSION=7.6.2
TOOLS=${GREMLINLB_CACHE:-$PWD/.cache}/pip-tools-$PIP_TOOLS_VERSION
PYTHON=${PYTHON:-python3}
if [[ ! -x $TOOLS/bin/pip-compile ]]; then
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
compile bench.txt --extra dev --extra bench --constraint requirements/dev.txt
