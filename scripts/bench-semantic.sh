#!/usr/bin/env bash
# The threshold guide: sweeps [cache.similarity] distance_threshold against a
# real Chroma, with the built-in hash embedder and a real embedding model,
# and prints, per threshold, the semantic hit rate (semantic hits per
# similarity lookup), the share of verified semantic hits whose top-k ids
# were the same as Chroma's own answer, and their mean overlap.
#
#   scripts/bench-semantic.sh                  # hash, then WordLlama (offline, installed into .venv)
#   scripts/bench-semantic.sh --url URL --model NAME --dimensions N [--api-key-file F]
#                                              # hash, then any OpenAI-compatible endpoint
#   SECONDS_PER_POINT=20 scripts/bench-semantic.sh
#
# Each point runs the release daemon for SECONDS_PER_POINT (default 15) at
# 100 operations/s, verify_fraction = 1, with a query-heavy mix (69 % similarity
# queries, 1 % memory writes: each write empties the cache) so that every
# point verifies enough hits to compare.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

URL="" MODEL="" DIMENSIONS="" KEY_FILE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --url) URL="$2"; shift 2 ;;
    --model) MODEL="$2"; shift 2 ;;
    --dimensions) DIMENSIONS="$2"; shift 2 ;;
    --api-key-file) KEY_FILE="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
THRESHOLDS="0.02 0.05 0.1 0.15 0.2 0.3 0.4"
PER_POINT="${SECONDS_PER_POINT:-15}"

bench_stores
[ -n "$URL" ] || wordllama_ensure

MODEL_TABLE=""
if [ -z "$URL" ]; then
  EMBEDDINGS_PORT="$(free_port)"
  "$VENV/bin/python" scripts/embeddings-server.py --port "$EMBEDDINGS_PORT" >"$WORK/embeddings.log" 2>&1 &
  PIDS+=($!)
  wait_port "$EMBEDDINGS_PORT" embeddings-server
  URL="http://127.0.0.1:$EMBEDDINGS_PORT/v1" MODEL="wordllama-l2-supercat-256" DIMENSIONS=256
fi
MODEL_TABLE="[embeddings]
provider = \"openai\"
url = \"$URL\"
model = \"$MODEL\"
dimensions = ${DIMENSIONS:-256}
timeout = \"10s\"
${KEY_FILE:+api_key_file = \"$KEY_FILE\"}"

# point EMBEDDER_TABLE THRESHOLD: one run; prints "hits same overlap".
point() {
  local port config
  port="$(free_port)"
  config="$WORK/point.toml"
  cat >"$config" <<TOML
$1
[cache.similarity]
mode = "semantic"
distance_threshold = $2
verify_fraction = 1.0
[workload]
rate = 100.0
[workload.mix]
get_chat_history = 0.2
store_chat_entry = 0.1
query_similar_memories = 0.69
store_memory = 0.01
TOML
  bench_exporter "$port" --config.file "$config"
  local pid=$EXPORTER_PID
  sleep "$PER_POINT"
  curl -s "http://127.0.0.1:$port/metrics" >"$WORK/metrics.txt"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  python3 - "$WORK/metrics.txt" <<'PY'
import sys
values = {}
for line in open(sys.argv[1]):
    if line.startswith("#") or " " not in line:
        continue
    name, value = line.rsplit(" ", 1)
    values[name] = float(value)
def v(name):
    return values.get(name, 0.0)
lookups = v('llmcache_cache_requests_total{cache="similarity"}')
hits = v('llmcache_cache_semantic_hits_total{cache="similarity"}')
same = v('llmcache_cache_semantic_verifications_total{cache="similarity",result="same"}')
different = v('llmcache_cache_semantic_verifications_total{cache="similarity",result="different"}')
overlap_n = v('llmcache_cache_semantic_overlap_count{cache="similarity"}')
overlap = v('llmcache_cache_semantic_overlap_sum{cache="similarity"}') / overlap_n if overlap_n else float("nan")
verified = same + different
print(f"{hits / lookups if lookups else float('nan'):.3f} {same / verified if verified else float('nan'):.3f} {overlap:.3f} {int(verified)}")
PY
}

sweep() {
  echo
  echo "$1"
  echo
  echo "| distance_threshold | semantic hit rate | same | mean overlap | verified |"
  echo "|---|---|---|---|---|"
  for threshold in $THRESHOLDS; do
    read -r hits same overlap verified < <(point "$2" "$threshold")
    echo "| $threshold | $hits | $same | $overlap | $verified |"
  done
}

sweep "hash embedder (256 dimensions, the default)" "[embeddings]
provider = \"hash\""
sweep "$MODEL at $URL" "$MODEL_TABLE"
