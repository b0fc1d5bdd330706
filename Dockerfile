# syntax=docker/dockerfile:1
# podroute: one image for the agent (DaemonSet) and the coordinator (Deployment).
#
#   docker build -t podroute:latest .
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

FROM rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /src
# Dependencies first, so that a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && cargo build --release --locked \
    && rm -rf src target/release/podroute target/release/deps/podroute-*
COPY src ./src
# Debug info (line tables, for backtraces on a developer's machine) is 3/4 of
# the binary: the image gets it stripped, symbols kept (21 MB instead of 98 MB).
RUN cargo build --release --locked \
    && strip --strip-debug -o /podroute target/release/podroute

# glibc + libgcc_s, nothing else (rustls: no OpenSSL); no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /podroute /podroute
USER 65532:65532
EXPOSE 9469
ENTRYPOINT ["/podroute"]
CMD ["--help"]
