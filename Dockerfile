# syntax=docker/dockerfile:1
# Multi-stage build of the production image: vlab-courses (server) and expire-courses (the
# daily job). vlab-dev and the emulators are not in it. Build for linux/amd64 and linux/arm64
# with `docker buildx build --platform linux/amd64,linux/arm64 .`.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
ENV CARGO_TERM_COLOR=never SQLX_OFFLINE=true
# Dependencies first, in their own layer: build a dummy target with the real manifests.
COPY Cargo.toml Cargo.lock ./
COPY crates/vlab-emulators/Cargo.toml crates/vlab-emulators/Cargo.toml
COPY crates/vlab-dev/Cargo.toml crates/vlab-dev/Cargo.toml
COPY crates/vlab-bench/Cargo.toml crates/vlab-bench/Cargo.toml
RUN mkdir -p src/bin crates/vlab-emulators/src crates/vlab-dev/src crates/vlab-bench/src \
 && echo 'fn main() {}' > src/bin/vlab-courses.rs \
 && echo 'fn main() {}' > src/bin/expire-courses.rs \
 && touch src/lib.rs crates/vlab-emulators/src/lib.rs \
 && echo 'fn main() {}' > crates/vlab-dev/src/main.rs \
 && echo 'fn main() {}' > crates/vlab-bench/src/main.rs \
 && cargo build --release --locked -p vlab-courses || true
COPY . .
# Make sure cargo sees the real sources as newer than the dummy ones.
RUN touch src/lib.rs src/bin/*.rs \
 && cargo build --release --locked -p vlab-courses --bins

FROM debian:bookworm-slim AS runtime
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="vlab-courses" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 vlab \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin vlab
COPY --from=build /src/target/release/vlab-courses /usr/local/bin/vlab-courses
COPY --from=build /src/target/release/expire-courses /usr/local/bin/expire-courses
USER 10001:10001
# Two malloc arenas keep the server's resident memory low under concurrent load (BENCHMARKS.md).
ENV BIND_ADDR=0.0.0.0:8000 LOG_FORMAT=json MALLOC_ARENA_MAX=2
EXPOSE 8000
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/vlab-courses"]
