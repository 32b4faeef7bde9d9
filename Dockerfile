# syntax=docker/dockerfile:1
# The one `confab` image: every role (standalone, migrate, gateway,
# dispatcher, operator) is a subcommand of the same binary; the kubectl
# plugin `kubectl-confab` sits next to it.
#
#   docker build -t confab:dev .
#   docker run --rm -p 8080:8080 confab:dev standalone
#
# Build: Debian bookworm with what the bundled librdkafka needs (a C
# toolchain, make, perl, zlib, pkg-config, OpenSSL headers for TLS and SASL
# to the brokers). Runtime: distroless `cc` (glibc, libgcc, libssl, CA
# certificates; no shell), as the non-root user 65532.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential make perl zlib1g-dev pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The whole workspace: cargo needs every member's manifest, and the gateway
# embeds the committed web client (web/dist). .dockerignore keeps target/,
# node_modules/ and .git/ out of the context.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p confab -p confab-operator --bin confab --bin kubectl-confab \
 && install -D -m 0755 target/release/confab /out/confab \
 && install -D -m 0755 target/release/kubectl-confab /out/kubectl-confab \
 && mkdir -p /out/data

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="confab" \
      org.opencontainers.image.description="Confab instant messaging: standalone, gateway, dispatcher, migrate and the Kubernetes operator in one binary" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/confab /usr/local/bin/confab
# The kubectl plugin (`kubectl confab status|drain|report`), for a shell in
# the operator's pod or to copy out: `docker cp`, `kubectl cp`.
COPY --from=build /out/kubectl-confab /usr/local/bin/kubectl-confab
# Standalone's data directory (the other roles keep no local state).
COPY --from=build --chown=65532:65532 /out/data /var/lib/confab
# In a container, listen on every interface; the operator sets these for
# the pods it runs anyway.
ENV CONFAB_LISTEN=0.0.0.0:8080 \
    CONFAB_ADMIN_LISTEN=0.0.0.0:9090 \
    CONFAB_DATA=/var/lib/confab
USER 65532:65532
EXPOSE 8080 7070 9090
ENTRYPOINT ["/usr/local/bin/confab"]
CMD ["standalone"]
