#!/usr/bin/env bash
# Builds the image from the Dockerfile with podman and checks what it ships:
# its size, its user (65532, non-root), its entrypoint (/podroute), and that
# the binary runs in it with no capability but NET_ADMIN on a read-only root.
#
#   image/build.sh [TAG]                the Dockerfile's bases (docker.io,
#                                       gcr.io) when they can be pulled, else
#                                       local ones
#   image/build.sh --local-bases [TAG]  bases built here from Debian packages
#                                       and the pinned Rust (image/bases.sh)
#
# TAG defaults to localhost/podroute:dev. Cargo's registry and target
# directory are cache mounts: the first build downloads and compiles every
# crate, later ones only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

local_bases=false
if [[ ${1:-} == --local-bases ]]; then
    local_bases=true
    shift
fi
tag=${1:-localhost/podroute:dev}

# The Dockerfile's default bases, pulled unless present; any that cannot be
# pulled (no registry access) switches to the local bases.
if ! $local_bases; then
    rust_version=$(sed -n 's/^ARG RUST_VERSION=//p' Dockerfile)
    while read -r base; do
        base=${base//\$\{RUST_VERSION\}/$rust_version}
        if ! image/podman image exists "$base" &&
            ! timeout 120 image/podman pull -q "$base" >/dev/null 2>&1; then
            echo "==> $base cannot be pulled: using local bases (image/bases.sh)" >&2
            local_bases=true
            break
        fi
    done < <(sed -n 's/^ARG \(BUILDER\|RUNTIME\)_IMAGE=//p' Dockerfile)
fi
build_args=()
if $local_bases; then
    while read -r arg; do
        build_args+=(--build-arg "$arg")
    done < <(image/bases.sh)
fi

start=$(date +%s%N)
# Host network for the build: cargo fetches crates (a cache mount keeps them).
image/podman build --network host "${build_args[@]}" -t "$tag" -f Dockerfile . >&2
build_seconds=$((($(date +%s%N) - start) / 1000000000))

fail() {
    echo "image $tag: $*" >&2
    exit 1
}
size=$(image/podman image inspect "$tag" --format '{{.Size}}')
user=$(image/podman image inspect "$tag" --format '{{.Config.User}}')
entrypoint=$(image/podman image inspect "$tag" --format '{{json .Config.Entrypoint}}')
printf 'image %s: %s MB, user %s, entrypoint %s, built in %s s\n' \
    "$tag" "$((size / 1000000))" "$user" "$entrypoint" "$build_seconds" >&2
[[ $user == 65532:65532 ]] || fail "runs as '$user', want 65532:65532 (non-root by default)"
[[ $entrypoint == '["/podroute"]' ]] || fail "entrypoint $entrypoint, want [\"/podroute\"]"
((size < 60000000)) || fail "$size bytes: over 60 MB (distroless/cc and a 21 MB binary)"
version=$(image/podman run --rm --network none --read-only --cap-drop ALL --cap-add NET_ADMIN \
    "$tag" --version) || fail "podroute --version does not run in it"
[[ $version == "podroute $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)" ]] ||
    fail "--version says '$version'"
echo "image $tag: $version runs with NET_ADMIN only on a read-only root" >&2
echo "$tag"
