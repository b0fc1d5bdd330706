#!/usr/bin/env bash
# Moves testenv/go.mod to another Kubernetes release:
#
#   testenv/bump.sh v1.37.2            # etcd: the version that Kubernetes release requires
#   testenv/bump.sh v1.37.2 v3.7.3     # or an explicit etcd server version
#
# Sets k8s.io/kubernetes, replaces every staging module it lists (k8s.io/api,
# apimachinery, ...) with the matching v0.X.Y release, sets
# go.etcd.io/etcd/server/v3, then runs `go mod tidy`. Afterwards: run
# testenv/build.sh, and match the k8s-openapi version feature in Cargo.toml.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

k8s="${1:?usage: $0 v1.X.Y [etcd v3.X.Y]}"
[[ $k8s =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || { echo "not a Kubernetes release: $k8s" >&2; exit 2; }
staging="v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"

modfile="$(go mod download -json "k8s.io/kubernetes@$k8s" | awk -F'"' '$2 == "GoMod" { print $4 }')"
[[ -f $modfile ]] || { echo "cannot fetch k8s.io/kubernetes@$k8s" >&2; exit 1; }

etcd="${2:-$(awk '$1 == "go.etcd.io/etcd/server/v3" { print $2; exit }' "$modfile")}"
[[ -n $etcd ]] || { echo "k8s.io/kubernetes@$k8s does not name an etcd server version; pass one" >&2; exit 1; }

# Rewrite the replace block: each staging module this release lists -> its v0.X.Y.
{
    awk '/^replace \($/ { skip = 1; next } skip && /^\)$/ { skip = 0; next } skip || /^replace / { next } { print }' go.mod |
        sed -e :a -e '/^\n*$/{$d;N;ba' -e '}'
    printf '\nreplace (\n'
    awk -v v="$staging" '$2 == "=>" && $3 ~ /^\.\/staging\// { printf "\t%s => %s %s\n", $1, $1, v }' "$modfile"
    printf ')\n'
} > go.mod.new
mv go.mod.new go.mod
go mod edit -require="k8s.io/kubernetes@$k8s" -require="go.etcd.io/etcd/server/v3@$etcd"
go mod tidy
echo "testenv: k8s.io/kubernetes $k8s (staging $staging), etcd $etcd; now run testenv/build.sh" >&2
