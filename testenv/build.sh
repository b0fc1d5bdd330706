#!/usr/bin/env bash
# Builds the control plane that the kube tests (tests/kube_*.rs, tests/manifests.rs,
# the netns kube tests) run against: kube-apiserver and etcd, plus the kubectl and
# kube-controller-manager of the same Kubernetes release, from the Go module
# proxy, at the versions pinned in testenv/go.mod (+ go.sum). The binaries go to
#
#   ${PODROUTE_TESTENV_CACHE:-/var/cache/podroute-testenv}/k8s-<v>_etcd-<v>/bin/{kube-apiserver,etcd,kubectl,kube-controller-manager}
#
# and are reused when present (a second run exits at once; a missing one, e.g.
# kube-controller-manager in a directory built before it was added, is built alone). The bin
# directory is printed on stdout; everything else goes to stderr. The Rust
# helper (tests/kube_env) looks in $PODROUTE_TESTENV_BIN first, then in this path.
#
# Needs: Go >= the `go` line of testenv/go.mod, and the Go module proxy.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

log() { printf 'testenv: %s\n' "$*" >&2; }

# Versions come from go.mod, the one place that pins them (the Rust helper reads
# the same two lines to find the cache directory).
modver() { awk -v m="$1" '$1 == m && $2 ~ /^v[0-9]/ { print $2; exit }' go.mod; }
k8s_version="$(modver k8s.io/kubernetes)"
etcd_version="$(modver go.etcd.io/etcd/server/v3)"
if [[ -z $k8s_version || -z $etcd_version ]]; then
    log "cannot read the k8s.io/kubernetes and go.etcd.io/etcd/server/v3 versions from $here/go.mod"
    exit 1
fi

cache="${PODROUTE_TESTENV_CACHE:-/var/cache/podroute-testenv}"
dest="$cache/k8s-${k8s_version}_etcd-${etcd_version}"
bin="$dest/bin"

tools=(kube-apiserver etcd kubectl kube-controller-manager)
missing() { for t in "${tools[@]}"; do [[ -x $bin/$t ]] || echo "$t"; done; }

if [[ -z $(missing) ]]; then
    log "kube-apiserver, kubectl, kube-controller-manager $k8s_version and etcd $etcd_version already built in $bin"
    echo "$bin"
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    log "go is not installed: it is needed to build $(missing | xargs)"
    exit 1
fi

mkdir -p "$dest"
# One build at a time per cache directory; a second caller waits, then reuses.
exec 9>"$dest/.lock"
flock 9
mapfile -t todo < <(missing)
if ((${#todo[@]} == 0)); then
    log "built by a concurrent run: $bin"
    echo "$bin"
    exit 0
fi

tmp="$(mktemp -d "$dest/.build.XXXXXX")"
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT

export CGO_ENABLED=0
export GOFLAGS="-trimpath -mod=readonly -buildvcs=false"

# kube-apiserver, kube-controller-manager and kubectl report their version from these variables (upstream
# sets them from git); the compatibility-version logic checks them against the
# binary's own minor version, so they must match the module version.
minor="${k8s_version#v1.}"
minor="${minor%%.*}"
vpkg=k8s.io/component-base/version
k8s_ldflags="-s -w -X $vpkg.gitVersion=$k8s_version -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor"
k8s_ldflags+=" -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=1970-01-01T00:00:00Z"

start=$SECONDS
log "$(go version)"
for t in "${todo[@]}"; do
    t0=$SECONDS
    case $t in
    etcd)
        log "building etcd $etcd_version"
        go build -ldflags="-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3
        "$tmp/etcd" --version >&2
        ;;
    kube-apiserver | kube-controller-manager)
        log "building $t $k8s_version (a cold build takes minutes)"
        go build -ldflags="$k8s_ldflags" -o "$tmp/$t" "k8s.io/kubernetes/cmd/$t"
        "$tmp/$t" --version >&2
        ;;
    kubectl)
        log "building kubectl $k8s_version"
        go build -ldflags="$k8s_ldflags" -o "$tmp/$t" "k8s.io/kubernetes/cmd/$t"
        "$tmp/$t" version --client >&2
        ;;
    esac
    log "$t: built in $((SECONDS - t0))s, $(du -sh "$tmp/$t" | cut -f1)"
done

# Each binary moves in whole (rename within one file system), so a reader sees
# a binary complete or not at all.
mkdir -p "$bin"
for t in "${todo[@]}"; do
    mv "$tmp/$t" "$bin/$t"
done
log "built ${todo[*]} in $((SECONDS - start))s, in $bin"
echo "$bin"
