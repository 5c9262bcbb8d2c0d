# syntax=docker/dockerfile:1
# The Sluice agent image: one static-enough binary (glibc only; the BPF objects are embedded) on
# debian:bookworm-slim, whose shell, grep, mount and nsenter the chart's init container uses to
# mount the bpffs and cgroup2. Build: docs/image.md.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# --- build ------------------------------------------------------------------------------------
FROM docker.io/library/rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
ARG DEBIAN_RELEASE
# clang-19 compiles the datapath (controller/datapath/build.rs runs `clang-19 -target bpf`);
# libbpf-dev has bpf_helpers.h; linux-libc-dev (already in the image) has the UAPI headers.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends clang-19 llvm-19 libbpf-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what the build reads: the workspace manifests, the Rust crates and the C datapath (so
# e2e/, docs/, charts/ or a local target/ never invalidate the layer cache or bloat the context).
COPY Cargo.toml Cargo.lock ./
COPY controller ./controller
COPY bpf ./bpf
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p sluice \
 && install -D -m 0755 target/release/sluice /out/sluice

# --- runtime ----------------------------------------------------------------------------------
# Same Debian release as the build stage, so the binary's glibc requirement is met.
FROM docker.io/library/debian:${DEBIAN_RELEASE}-slim
ARG RUST_VERSION
LABEL org.opencontainers.image.title="sluice" \
      org.opencontainers.image.description="Sluice: an eBPF kube-proxy replacement (node agent and CLI)" \
      org.opencontainers.image.source="https://github.com/sluice-dev/sluice" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/sluice /usr/bin/sluice
# The agent runs as uid 0 with a handful of capabilities (see charts/sluice); it owns the bpffs
# and cgroupfs directories it writes as root, not through CAP_DAC_OVERRIDE.
ENTRYPOINT ["/usr/bin/sluice"]
CMD ["--help"]
