#!/usr/bin/env bash
# Prometheus and promtool for the monitoring specs (tests/integration/test_monitoring.py, the
# promtool rule tests): Debian's `prometheus` package, downloaded with apt-get and unpacked with
# dpkg-deb into $1 (git-ignored cache). Nothing is installed system-wide, no service starts, and
# no root is needed unless the package lists must be fetched first (a fresh machine).
# A no-op once $1/usr/bin/prometheus runs.
set -euo pipefail
dest=${1:?usage: prometheus.sh DEST_DIR}
if "$dest/usr/bin/prometheus" --version >/dev/null 2>&1 && "$dest/usr/bin/promtool" --version >/dev/null 2>&1; then
    exit 0
fi
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get download prometheus 2>/dev/null; then
    $sudo apt-get update -qq
    apt-get download prometheus
fi
rm -rf "$dest.new"
dpkg-deb -x prometheus_*.deb "$dest.new"
rm -rf "$dest"
mv "$dest.new" "$dest"
"$dest/usr/bin/prometheus" --version | head -1
