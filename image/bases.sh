#!/usr/bin/env bash
# Builds, from Debian packages and the Rust toolchain the project pins, local
# stand-ins for the Dockerfile's two base images, for machines that cannot
# pull from docker.io or gcr.io (air-gapped, or behind a package mirror only):
#
#   builder: Debian bookworm (minbase) with gcc and libc6-dev, and Rust
#            $RUST_VERSION at /usr/local/cargo as in rust:$RUST_VERSION-slim-bookworm
#   runtime: the packages distroless/cc-debian12 is made of (libc6, libgcc-s1,
#            libgomp1, libstdc++6, libssl3, ca-certificates, netbase, tzdata,
#            base-files), unpacked, with its users (root, nobody, nonroot 65532)
#
# Each is built once and kept under its tag. Prints the --build-arg flags that
# select them, one per line, for image/build.sh:
#
#   BUILDER_IMAGE=localhost/podroute-builder-base:1.89-bookworm
#   RUNTIME_IMAGE=localhost/podroute-runtime-base:debian12
#
# Needs root, podman, debootstrap and apt; the toolchain comes from rustup
# (`rustup toolchain install`, or one already installed for an offline host).
# PODROUTE_DEBIAN_MIRROR (default http://deb.debian.org/debian) selects the mirror.
set -euo pipefail
cd "$(dirname "$0")/.."

rust_version=$(sed -n 's/^ARG RUST_VERSION=//p' Dockerfile)
mirror=${PODROUTE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
builder_tag=localhost/podroute-builder-base:$rust_version-bookworm
runtime_tag=localhost/podroute-runtime-base:debian12
podman=("$PWD/image/podman")

log() { printf '==> %s\n' "$*" >&2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

build_builder() {
    local root=$work/builder toolchain
    log "builder base: debootstrap bookworm + gcc, Rust $rust_version"
    debootstrap --variant=minbase --include=gcc,libc6-dev,ca-certificates \
        bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
        { cat "$work/debootstrap.log" >&2; return 1; }
    rustup toolchain install "$rust_version" --profile minimal >&2
    toolchain=$(rustup run "$rust_version" rustc --print sysroot)
    mkdir -p "$root/usr/local/cargo/bin" "$root/usr/local/rust"
    cp -a "$toolchain/." "$root/usr/local/rust/"
    for tool in cargo rustc rustdoc; do
        ln -s ../../rust/bin/$tool "$root/usr/local/cargo/bin/$tool"
    done
    # Cargo fetches crates in the build: trust what this host trusts (a
    # mirror or an egress proxy may present a site CA). The builder only;
    # nothing of it reaches the runtime image.
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    rm -rf "$root/var/cache/apt/archives"/*.deb "$root/var/lib/apt/lists"/*
    tar -C "$root" -c . | "${podman[@]}" import -q \
        --change 'ENV CARGO_HOME=/usr/local/cargo' \
        --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/bash"]' \
        - "$builder_tag" >/dev/null
}

build_runtime() {
    local root=$work/runtime debs=$work/debs
    log "runtime base: the Debian packages of distroless/cc-debian12"
    mkdir -p "$root" "$debs"
    (cd "$debs" && apt-get download -qq base-files netbase tzdata ca-certificates \
        libc6 libgcc-s1 libgomp1 libstdc++6 libssl3 >&2)
    for deb in "$debs"/*.deb; do
        dpkg-deb -x "$deb" "$root"
    done
    # What distroless adds beyond the packages: its users and groups, the
    # CA bundle (update-ca-certificates does not run on an unpacked tree),
    # and /tmp and the home directories.
    printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
        'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
        'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$root/etc/passwd"
    printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'tty:x:5:' 'staff:x:50:' \
        'nonroot:x:65532:' >"$root/etc/group"
    mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$root/root" "$root/home/nonroot"
    find "$root/usr/share/ca-certificates" -name '*.crt' -exec cat {} + \
        >"$root/etc/ssl/certs/ca-certificates.crt"
    chmod 1777 "$root/tmp"
    chown 65532:65532 "$root/home/nonroot"
    # Documentation and the shells' share are not in distroless either.
    rm -rf "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/info" \
        "$root/usr/share/lintian"
    tar -C "$root" -c . | "${podman[@]}" import -q \
        --change 'USER 65532' --change 'WORKDIR /home/nonroot' \
        - "$runtime_tag" >/dev/null
}

"${podman[@]}" image exists "$builder_tag" || build_builder
"${podman[@]}" image exists "$runtime_tag" || build_runtime
echo "BUILDER_IMAGE=$builder_tag"
echo "RUNTIME_IMAGE=$runtime_tag"
