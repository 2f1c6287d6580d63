#!/usr/bin/env bash
# `make test` (or other make targets) in a fresh clone under /tmp, on a view of this machine
# where nothing an earlier run left outside a checkout exists: a CI that passes only because an
# earlier run left a directory, a cache or a process behind is caught here.
#
#   hack/fresh-machine.sh [--runs N] [--log-dir DIR] [make target ...]    (default target: test)
#
# What each run sees (Linux mount and PID namespaces; needs root, as `make test` does):
#   * /tmp, /var/tmp, /run and /dev/shm empty (tmpfs), the clone at /tmp/gremlinlb alone in /tmp;
#   * $HOME without its caches (.cache .npm .m2 go .kube .config), everything else of it as is;
#   * no process of an earlier run (a PID namespace of its own);
#   * the network as it is (the registries the cold install needs).
# Run 1 builds everything cold inside the clone (venv, jars, drivers, etcd and kube-apiserver).
# Later runs keep only what the clone itself holds (its git-ignored .venv/, .cache/, build/);
# everything outside it is fresh again. The clone is HEAD of this checkout: commit first.
# Nothing is written outside the namespaces but the logs (default: .cache/fresh-machine/).
set -euo pipefail

runs=1
log_dir=""
targets=()
while (($#)); do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --log-dir) log_dir="$2"; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) targets+=("$1"); shift ;;
    esac
done
((${#targets[@]})) || targets=(test)
repo="$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)"
log_dir="${log_dir:-$repo/.cache/fresh-machine}"
mkdir -p "$log_dir"
log_dir="$(cd "$log_dir" && pwd)"

if [[ -z "${GREMLINLB_FRESH_STAGE:-}" ]]; then
    if [[ $(id -u) != 0 ]]; then
        echo "hack/fresh-machine.sh: needs root (mount and PID namespaces)" >&2
        exit 2
    fi
    # Stage 1: a private mount namespace whose /tmp holds only the clone, shared by the runs.
    exec env GREMLINLB_FRESH_STAGE=clone GREMLINLB_FRESH_REPO="$repo" \
        GREMLINLB_FRESH_LOGS="$log_dir" GREMLINLB_FRESH_RUNS="$runs" \
        unshare --mount --propagation private "$0" "${targets[@]}"
fi

case "$GREMLINLB_FRESH_STAGE" in
clone)
    mount -t tmpfs -o mode=1777 tmpfs /tmp
    git clone --quiet "$GREMLINLB_FRESH_REPO" /tmp/gremlinlb
    echo "fresh clone of $(git -C /tmp/gremlinlb log -1 --format='%h %s') at /tmp/gremlinlb"
    # Held where each run's fresh /tmp cannot hide it; bound back at /tmp/gremlinlb per run.
    mount --bind /tmp/gremlinlb /mnt
    status=0
    for ((run = 1; run <= GREMLINLB_FRESH_RUNS; run++)); do
        log="$GREMLINLB_FRESH_LOGS/run-$run.log"
        start=$(date +%s)
        set +e
        GREMLINLB_FRESH_STAGE=run unshare --mount --pid --fork --mount-proc \
            --propagation private "$0" "${targets[@]}" >"$log" 2>&1
        code=$?
        set -e
        summary=$(grep -E '^=+ .*(passed|failed|error).* in [0-9.]+s' "$log" | tail -1 || true)
        echo "run $run: make ${targets[*]} exit $code in $(($(date +%s) - start)) s; ${summary:-no pytest summary} ($log)"
        ((code == 0)) || status=1
    done
    exit $status
    ;;
run)
    for dir in /var/tmp /run /dev/shm; do
        mount -t tmpfs -o mode=1777 tmpfs "$dir"
    done
    mkdir -p /run/lock
    mount -t tmpfs -o mode=1777 tmpfs /tmp
    mkdir /tmp/gremlinlb
    mount --rbind /mnt /tmp/gremlinlb
    # $HOME without caches: the rest of it bound back from a view taken before the tmpfs.
    mkdir /run/home-before
    mount --rbind "$HOME" /run/home-before
    mount -t tmpfs -o mode=700 tmpfs "$HOME"
    for entry in /run/home-before/* /run/home-before/.[!.]*; do
        name="${entry##*/}"
        [[ -e "$entry" || -L "$entry" ]] || continue
        case "$name" in .cache|.npm|.m2|go|.kube|.config) continue ;; esac
        if [[ -L "$entry" ]]; then
            ln -s "$(readlink "$entry")" "$HOME/$name"
            continue
        fi
        if [[ -d "$entry" ]]; then mkdir "$HOME/$name"; else touch "$HOME/$name"; fi
        mount --rbind "$entry" "$HOME/$name"
    done
    cd /tmp/gremlinlb
    echo "make ${targets[*]} in $(pwd), $(date -u +%FT%TZ)"
    exec make "${targets[@]}"
    ;;
esac
