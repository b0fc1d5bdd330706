# syntax=docker/dockerfile:1
# podroute: one image for the agent (DaemonSet) and the coordinator (Deployment).
#
#   docker build -t podroute:latest .
#
# Without docker.io and gcr.io (an air-gapped host, a package mirror only),
# image/build.sh builds it with podman from local bases made of the same
# Debian packages and Rust toolchain (image/bases.sh): README, "Build the
# image offline".
#
# The manifests (manifests/) refer to the placeholder image podroute:latest:
# push this image somewhere and set it with
#   (cd manifests/restricted && kustomize edit set image podroute=REGISTRY/podroute:TAG)
#
# The runtime image runs as a non-root user (65532) by default: right for the
# coordinator. The agent's DaemonSet runs it as uid 0 with only NET_ADMIN
# (manifests/restricted): runtimes hand added capabilities to a non-root user
# only through file capabilities, which no_new_privs switches off.

ARG RUST_VERSION=1.89
ARG BUILDER_IMAGE=docker.io/library/rust:${RUST_VERSION}-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${BUILDER_IMAGE} AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY src ./src
# The registry and target caches survive between builds: a source change
# recompiles podroute, not its dependencies. Debug info (line tables, for
# backtraces on a developer's machine) is 3/4 of the binary: the image gets
# it stripped, symbols kept (21 MB instead of 98 MB).
RUN --mount=type=cache,id=podroute-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=podroute-target,target=/src/target \
    cargo build --release --locked \
    && strip --strip-debug -o /podroute target/release/podroute

# glibc + libgcc_s, nothing else (rustls: no OpenSSL); no shell, no package manager.
FROM ${RUNTIME_IMAGE}
COPY --from=builder /podroute /podroute
USER 65532:65532
EXPOSE 9469
ENTRYPOINT ["/podroute"]
CMD ["--help"]
