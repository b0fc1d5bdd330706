#!/usr/bin/env bash
# Builds promtool, Prometheus's rule checker and rule unit-test runner, from
# the Go module proxy at the version pinned here, for tests/monitoring.rs:
#
#   ${PODROUTE_TESTENV_CACHE:-/var/cache/podroute-testenv}/promtool-<v>/promtool
#
# Reused when present. Prints the binary's path on stdout, the rest on stderr.
# github.com/prometheus/prometheus v0.316.0 is Prometheus 3.16 (the module's
# tags are v0.<major><minor>.<patch>). Cold: about 5 minutes on 2 cores.
set -euo pipefail

version=v0.316.0
cache="${PODROUTE_TESTENV_CACHE:-/var/cache/podroute-testenv}"
dest="$cache/promtool-$version"

if [[ -x $dest/promtool ]]; then
    echo "$dest/promtool"
    exit 0
fi
if ! command -v go >/dev/null 2>&1; then
    echo "promtool: go is not installed: it is needed to build promtool $version" >&2
    exit 1
fi
mkdir -p "$dest"
echo "promtool: building $version from the Go module proxy into $dest" >&2
GOBIN="$dest.tmp" go install "github.com/prometheus/prometheus/cmd/promtool@$version" >&2
mv "$dest.tmp/promtool" "$dest/promtool"
rmdir "$dest.tmp"
echo "$dest/promtool"
