#!/usr/bin/env bash
# Measurement fidelity: does the canary report Redis latency as Redis gives
# it? At 1,000 operations/s with the cache off, on one session's key, the
# daemon's mean LRANGE (llmcache_backend_request_duration_seconds
# sum / count over the window) beside `redis-benchmark -c 1` running the same
# LRANGE on the same key of the same Redis, measured in the same run.
#
#   scripts/bench-fidelity.sh          # 30 s window
#   SECONDS_WINDOW=10 scripts/bench-fidelity.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

WINDOW="${SECONDS_WINDOW:-30}"
apt_ensure redis-benchmark:redis-tools
bench_stores
PORT="$(free_port)"

cat >"$WORK/config.toml" <<TOML
[cache]
memory_budget = "0"
[workload]
rate = 1000.0
sessions = 1
[workload.mix]
get_chat_history = 0.9
store_chat_entry = 0.1
query_similar_memories = 0
store_memory = 0
TOML
bench_exporter "$PORT" --config.file "$WORK/config.toml"
sleep 5
KEY="$(redis-cli -p "$REDIS_PORT" --scan --pattern 'llmcache:probe:chat:*' | head -1)"
LEN="$(redis-cli -p "$REDIS_PORT" llen "$KEY")"

lrange() {
  curl -s "http://127.0.0.1:$PORT/metrics" |
    awk '/^llmcache_backend_request_duration_seconds_(sum|count)\{backend="redis",request="lrange"\}/ {print $2}' |
    paste -sd' '
}
read -r sum0 count0 < <(lrange)
# redis-benchmark runs alongside, for the same window: the same load on Redis.
N=$((WINDOW * 2000))
redis-benchmark -p "$REDIS_PORT" -c 1 -n "$N" --csv LRANGE "$KEY" -50 -1 >"$WORK/bench.csv" &
BENCH=$!
sleep "$WINDOW"
read -r sum1 count1 < <(lrange)
wait "$BENCH"
python3 - "$sum0" "$count0" "$sum1" "$count1" "$WORK/bench.csv" "$KEY" "$LEN" <<'PY'
import csv, sys
sum0, count0, sum1, count1 = map(float, sys.argv[1:5])
rows = list(csv.reader(open(sys.argv[5])))
header, values = rows[0], rows[1]
bench_ms = float(values[header.index("avg_latency_ms")])
ours_us = (sum1 - sum0) / (count1 - count0) * 1e6
bench_us = bench_ms * 1000
print(f"LRANGE {sys.argv[6]} -50 -1 ({sys.argv[7]} entries), 1,000 operations/s, cache off:")
print(f"  redis-benchmark -c 1 mean     {bench_us:7.1f} µs   1.00x")
print(f"  the daemon's mean LRANGE      {ours_us:7.1f} µs   {ours_us / bench_us:.2f}x   ({ours_us - bench_us:+.1f} µs; target: within 30 µs)")
print(f"  ({int(count1 - count0)} daemon requests in the window)")
PY
