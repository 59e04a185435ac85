#!/usr/bin/env bash
# The census's memory against the keys it counts. Starts the release daemon
# twice, in the same run: against an empty Redis (the baseline), then against
# one with KEYS keys (default 3,000,000, made by DEBUG POPULATE in a group
# "chat"); each runs one census pass with no budget. Prints each run's peak
# RSS (VmHWM) once its pass has succeeded, and the growth over the baseline:
# what the pass kept per key, if anything.
#
#   scripts/bench-census-memory.sh
#   KEYS=5000000 scripts/bench-census-memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
KEYS="${KEYS:-3000000}"

apt_ensure redis-server:redis-server redis-cli:redis-tools curl:curl bc:bc
cargo build --release --locked --quiet
BIN="$REPO_ROOT/target/release/llm-cache-exporter"
scratch_begin
cat > "$WORK/config.toml" <<'TOML'
[workload]
rate = 1.0
[workload.mix]
get_chat_history = 1
store_chat_entry = 0
query_similar_memories = 0
store_memory = 0
[census]
interval = "1h"
[census.redis]
max_keys_per_second = 0
[[census.redis.groups]]
name = "chat"
pattern = "message_store:*"
TOML

# run KEYS: the daemon's peak RSS in KiB once its first pass succeeded.
run() {
  local keys="$1" port web pid took start
  port="$(free_port)"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --enable-debug-command yes --dir "$WORK" --logfile "$WORK/redis-$port.log" &
  PIDS+=($!)
  wait_port "$port" redis-server
  if [ "$keys" -gt 0 ]; then
    redis-cli -p "$port" DEBUG POPULATE "$keys" "message_store:" 20 >/dev/null
  fi
  web="$(free_port)"
  start="$(date +%s.%N)"
  "$BIN" --web.listen-address "127.0.0.1:$web" --redis.url "redis://127.0.0.1:$port" \
    --chroma.url "http://127.0.0.1:$(free_port)" --config.file "$WORK/config.toml" \
    --log.level warn 2>"$WORK/daemon-$web.log" &
  pid=$!
  PIDS+=("$pid")
  wait_port "$web" llm-cache-exporter
  until curl -sf "http://127.0.0.1:$web/metrics" |
    grep -q '^llmcache_census_last_success_timestamp_seconds{store="redis"}'; do
    sleep 0.2
  done
  took="$(echo "$(date +%s.%N) - $start" | bc)"
  echo "$(awk '/VmHWM/ {print $2}' "/proc/$pid/status") $took"
  kill "$pid"
}

read -r empty empty_took < <(run 0)
read -r full full_took < <(run "$KEYS")
printf '%-28s %12s %10s\n' "Redis" "peak RSS" "until pass"
printf '%-28s %9.1f MiB %9.1f s\n' "empty" "$(echo "$empty/1024" | bc -l)" "$empty_took"
printf '%-28s %9.1f MiB %9.1f s\n' "$KEYS keys" "$(echo "$full/1024" | bc -l)" "$full_took"
printf 'growth: %.1f MiB, %.2f bytes a key\n' "$(echo "($full-$empty)/1024" | bc -l)" \
  "$(echo "($full-$empty)*1024/$KEYS" | bc -l)"
