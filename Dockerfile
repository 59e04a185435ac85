# Multi-stage build: a Rust builder, then a distroless runtime with glibc,
# running as a non-root user. No secrets are baked in: pass them as files
# (--redis.password-file, --chroma.token-file) mounted at run time.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY benches ./benches
ARG LLMCACHE_BUILD_REVISION=unknown
ENV LLMCACHE_BUILD_REVISION=${LLMCACHE_BUILD_REVISION}
RUN cargo build --release --locked --bin llm-cache-exporter

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/llm-cache-exporter /usr/local/bin/llm-cache-exporter
# distroless "nonroot"
USER 65532:65532
EXPOSE 9860
ENTRYPOINT ["/usr/local/bin/llm-cache-exporter"]
