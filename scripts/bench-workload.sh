#!/usr/bin/env bash
# Throughput of the daemon's read path against redis-benchmark, same Redis,
# same run. The daemon runs with the cache off and 100 % get_chat_history at
# concurrency 16, at a series of scheduled rates (RATES); the highest rate it
# completes with under 1 % of ticks skipped is its sustained throughput.
# redis-benchmark runs LRANGE of 100 elements with 16 clients. The daemon's lists hold 100 three-byte entries,
# like redis-benchmark's. Prints both throughputs, the ratio, and the
# daemon's CPU seconds per operation.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
apt_ensure redis-server:redis-server redis-cli:redis-tools redis-benchmark:redis-tools
cargo build --release --locked --quiet
BIN=target/release/llm-cache-exporter
SECONDS_MEASURED="${SECONDS_MEASURED:-5}"

scratch_begin
PORT="$(free_port)"
WEB="$(free_port)"
redis_scratch "$PORT"

python3 - "$WORK/fill.txt" <<'PY'
import sys
with open(sys.argv[1], "w") as out:
    for session in range(1000):
        key = f"llmcache:probe:chat:{{{session}}}"
        out.write(f"DEL {key}\r\n")
        out.write(f"RPUSH {key} " + " ".join(["xxx"] * 100) + "\r\n")
PY
redis-cli -p "$PORT" --pipe <"$WORK/fill.txt" >/dev/null

# measure RATE: run the daemon at RATE for SECONDS_MEASURED and append
# "rate ops skipped errors cpu_seconds" to $WORK/runs.
measure() {
  cat >"$WORK/config.toml" <<TOML
[cache]
memory_budget = "0"
[workload]
rate = $1.0
concurrency = 16
sessions = 1000
history_limit = 100
cleanup_on_exit = false
[workload.mix]
get_chat_history = 1.0
store_chat_entry = 0.0
query_similar_memories = 0.0
store_memory = 0.0
TOML
  "$BIN" --config.file "$WORK/config.toml" --web.listen-address "127.0.0.1:$WEB" \
    --redis.url "redis://127.0.0.1:$PORT" --chroma.url "http://127.0.0.1:$(free_port)" --log.level error &
  local daemon=$!
  wait_port "$WEB" llm-cache-exporter
  sleep 1
  curl -s "http://127.0.0.1:$WEB/metrics" >"$WORK/before.txt"
  sleep "$SECONDS_MEASURED"
  curl -s "http://127.0.0.1:$WEB/metrics" >"$WORK/after.txt"
  kill "$daemon"
  wait "$daemon" 2>/dev/null || true
  python3 - "$WORK" "$1" "$SECONDS_MEASURED" >>"$WORK/runs" <<'PY'
import sys
work, rate, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
def read(name):
    values = {}
    for line in open(f"{work}/{name}"):
        if line.startswith("#") or " " not in line:
            continue
        series, value = line.rsplit(" ", 1)
        values[series] = float(value)
    return values
a, b = read("before.txt"), read("after.txt")
d = lambda k: b.get(k, 0) - a.get(k, 0)
ops = d('llmcache_operation_duration_seconds_count{operation="get_chat_history",outcome="cache_miss"}')
errors = sum(v - a.get(k, 0) for k, v in b.items() if k.startswith("llmcache_operation_errors_total"))
print(rate, ops / seconds, d("llmcache_workload_skipped_total") / seconds, errors, d("process_cpu_seconds_total") / max(ops, 1))
PY
}

: >"$WORK/runs"
for rate in ${RATES:-8000 16000 24000 32000 40000 44000 48000 52000 56000}; do
  measure "$rate"
done

redis-benchmark -p "$PORT" -c 16 -n 400000 -t lrange_100 --csv -q >"$WORK/redis-benchmark.csv"

python3 - "$WORK" <<'PY'
import csv, sys
work = sys.argv[1]
runs = [tuple(map(float, line.split())) for line in open(f"{work}/runs")]
rows = list(csv.reader(open(f"{work}/redis-benchmark.csv")))
bench = next(float(r[1]) for r in rows if r and r[0].startswith("LRANGE_100"))
print("daemon, cache off, 100 % get_chat_history (LRANGE of 100), concurrency 16:")
print("  scheduled/s   done/s  skipped/s  errors  CPU/op")
for rate, done, skipped, errors, cpu in runs:
    print(f"  {rate:11.0f} {done:8.0f} {skipped:10.0f} {errors:7.0f} {cpu * 1e6:5.1f} us")
sustained = [r for r in runs if r[2] <= 0.01 * r[0] and r[3] == 0]
print()
print(f"redis-benchmark -c 16 -t lrange_100:    {bench:8.0f} req/s")
if not sustained:
    print("no rate was sustained (every run skipped >= 1 % of ticks or had errors); lower RATES")
    sys.exit(1)
best = max(sustained, key=lambda r: r[1])
print(f"highest rate sustained (< 1 % skipped): {best[1]:8.0f} ops/s, {best[4] * 1e6:.1f} us CPU per operation")
print(f"ratio daemon / redis-benchmark:         {best[1] / bench:8.2f}x   (target >= 0.5x)")
PY
