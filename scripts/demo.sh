#!/usr/bin/env bash
# Runs the exporter against a Redis and a Chroma of its own, on loopback ports
# it picks, with their data under .demo/. Installs redis-server and the Chroma
# server if they are missing. The exporter runs in the foreground on :9860;
# Ctrl-C stops everything this script started.
#
#   scripts/demo.sh [--embeddings wordllama] [exporter flags...]
#
# --embeddings wordllama also serves a real embedding model (WordLlama, 256
# dimensions, offline) behind an OpenAI-compatible API and points the
# exporter's openai provider at it, through a config file under .demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

EMBEDDINGS=hash
if [ "${1:-}" = "--embeddings" ]; then
  EMBEDDINGS="${2:?--embeddings takes hash or wordllama}"
  shift 2
fi
case "$EMBEDDINGS" in
  hash | wordllama) ;;
  *) echo "--embeddings takes hash or wordllama, not $EMBEDDINGS" >&2; exit 2 ;;
esac

apt_ensure redis-server:redis-server redis-cli:redis-tools curl:curl
chroma_ensure
[ "$EMBEDDINGS" = hash ] || wordllama_ensure

echo "==> building llm-cache-exporter (release; the first build takes a few minutes)"
cargo build --release --locked --quiet
BIN="$REPO_ROOT/target/release/llm-cache-exporter"

DEMO="$REPO_ROOT/.demo"
mkdir -p "$DEMO/redis" "$DEMO/chroma"
REDIS_PORT="$(free_port)"
CHROMA_PORT="$(free_port)"
PIDS=()
cleanup() {
  trap - EXIT INT TERM
  # The exporter first, so it can still remove its probe data from both.
  if [ -n "${DAEMON_PID:-}" ]; then
    kill "$DAEMON_PID" 2>/dev/null || true
    wait "$DAEMON_PID" 2>/dev/null || true
  fi
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  # A Redis restarted by hand (see the hint below) is ours too.
  redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  wait 2>/dev/null || true
  echo "==> stopped"
}
trap cleanup EXIT INT TERM

# Redis and Chroma run in sessions of their own, so the Ctrl-C meant for the
# exporter does not stop them before it has cleaned up; cleanup stops them.
setsid redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$DEMO/redis" --logfile "$DEMO/redis/redis.log" &
PIDS+=($!)
REDIS_PID=$!
setsid bash -c '. scripts/lib.sh && chroma_run "$1" "$2"' chroma "$CHROMA_PORT" "$DEMO/chroma/data" \
  >"$DEMO/chroma/chroma.log" 2>&1 &
PIDS+=($!)
wait_port "$REDIS_PORT" redis-server
wait_port "$CHROMA_PORT" chroma

EXTRA=()
if [ "$EMBEDDINGS" = wordllama ]; then
  EMBEDDINGS_PORT="$(free_port)"
  setsid "$VENV/bin/python" scripts/embeddings-server.py --port "$EMBEDDINGS_PORT" \
    >"$DEMO/embeddings.log" 2>&1 &
  PIDS+=($!)
  wait_port "$EMBEDDINGS_PORT" embeddings-server
  cat >"$DEMO/embeddings.toml" <<TOML
[embeddings]
provider = "openai"
url = "http://127.0.0.1:$EMBEDDINGS_PORT/v1"
model = "wordllama-l2-supercat-256"
dimensions = 256
TOML
  EXTRA=(--config.file "$DEMO/embeddings.toml")
  echo "==> embeddings: WordLlama on 127.0.0.1:$EMBEDDINGS_PORT (config: $DEMO/embeddings.toml)"
fi

LISTEN=()
[ -n "${LLMCACHE_WEB_LISTEN_ADDRESS:-}" ] || LISTEN=(--web.listen-address 127.0.0.1:9860)
cat <<INFO
==> redis-server on 127.0.0.1:$REDIS_PORT (pid $REDIS_PID), chroma on 127.0.0.1:$CHROMA_PORT
==> exporter: http://localhost:9860/  (metrics: /metrics, health: /health)
    simulate an outage:  redis-cli -p $REDIS_PORT shutdown nosave
    and recover:         redis-server --port $REDIS_PORT --bind 127.0.0.1 --save '' --daemonize yes
    Ctrl-C stops everything.
INFO
"$BIN" "${LISTEN[@]}" \
  --redis.url "redis://127.0.0.1:$REDIS_PORT" \
  --chroma.url "http://127.0.0.1:$CHROMA_PORT" ${EXTRA[@]+"${EXTRA[@]}"} "$@" &
DAEMON_PID=$!
wait "$DAEMON_PID"
