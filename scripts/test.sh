#!/usr/bin/env bash
# Installs what the tests need if it is missing (redis-server, prometheus with
# promtool, the Chroma server in .venv), then runs every check: formatting,
# clippy, unit tests, and the integration tests against real servers.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

apt_ensure redis-server:redis-server redis-cli:redis-tools prometheus:prometheus promtool:prometheus
chroma_ensure
export LLMCACHE_TEST_CHROMA_PYTHON="$VENV/bin/python"

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --locked --all-targets --features bench -- -D warnings
echo "==> cargo test"
cargo test --locked
