# faultline images, from one multi-stage build:
#   docker build --target agent      -t faultline-agent:0.1.0 .
#   docker build --target controller -t faultline-controller:0.1.0 .
# (the manifests in deploy/ use these names; see docs/install.md). The binaries link only glibc,
# so the runtime images use the builder's Debian release. tests/tests/deploy/dockerfile.rs
# checks that what this copies is what the build makes, and the paths the manifests run.

# The toolchain the project is built and tested with; kube 5 needs 1.89 or newer.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
# protoc: proto/ compiles the gRPC definitions in its build script.
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
      -p faultline-agent -p faultline-injector -p faultline-nsexec -p faultline-controller -p faultline-dns-responder -p faultline-http-chaos --bins

# The controller: an API client and an mTLS client; no privileges, no shell tools needed.
FROM debian:bookworm-slim AS controller
COPY --from=build /src/target/release/faultline-controller /usr/local/bin/faultline-controller
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/faultline-controller"]

# The node agent (runs as root, privileged: see deploy/base/agent.yaml). iptables (Debian's
# package has both backends, iptables-legacy-* and iptables-nft-*, which the agent picks per
# node) and ipset are the user-space tools it runs in a pod's network namespace; the injector
# must sit beside the agent binary, where the agent looks for it.
FROM debian:bookworm-slim AS agent
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables ipset \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/faultline-agent /usr/local/bin/faultline-agent
COPY --from=build /src/target/release/faultline-injector /usr/local/bin/faultline-injector
COPY --from=build /src/target/release/faultline-dns-responder /usr/local/bin/faultline-dns-responder
COPY --from=build /src/target/release/faultline-http-proxy /usr/local/bin/faultline-http-proxy
COPY --from=build /src/target/release/faultline /usr/local/bin/faultline
COPY --from=build /src/target/release/nsexec /usr/local/bin/nsexec
# The template sidecar mode runs this image too: init.sh in the init container, then
# `faultline-injector -addr=... -mountpoint=...` as chaosfs (docs/sidecar.md).
COPY injector/scripts/init.sh injector/scripts/wait-fuse.sh /scripts/
ENTRYPOINT ["/usr/local/bin/faultline-agent"]
