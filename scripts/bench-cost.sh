#!/usr/bin/env bash
# What the canary costs, against real Redis and Chroma it starts itself:
#   - idle cost at the default configuration (20 operations/s): CPU ms per
#     second, CPU µs per operation, RSS;
#   - the floor: the same with one operation a hundred seconds, what the
#     daemon's own loops (probes, samplers, cache upkeep) cost;
#   - CPU µs per operation at 1,000 operations/s;
#   - /metrics: bytes and series per scrape at the default configuration.
# Beside each CPU figure, the same run's redis-server CPU over the same
# window: what serving the canary cost Redis.
#
#   scripts/bench-cost.sh               # 60 s idle, 30 s floor, 30 s busy
#   IDLE_SECONDS=20 FLOOR_SECONDS=10 BUSY_SECONDS=10 scripts/bench-cost.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

IDLE="${IDLE_SECONDS:-60}"
BUSY="${BUSY_SECONDS:-30}"
FLOOR="${FLOOR_SECONDS:-30}"
bench_stores

# cpu_ticks PID: user + system clock ticks so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
scheduled() {
  curl -s "http://127.0.0.1:$1/metrics" | awk '/^llmcache_workload_scheduled_total / {print $2}'
}
HZ="$(getconf CLK_TCK)"

# run RATE SECONDS NAME: prints "cpu_ms_per_s us_per_op rss_mib redis_cpu_ms_per_s"
run() {
  local port pid t0 t1 r0 r1 s0 s1
  port="$(free_port)"
  bench_exporter "$port" ${1:+--config.file "$WORK/rate.toml"}
  pid=$EXPORTER_PID
  sleep 10 # warm up: the caches fill, the collection exists
  s0="$(scheduled "$port")"; t0="$(cpu_ticks "$pid")"; r0="$(cpu_ticks "$REDIS_PID")"
  sleep "$2"
  s1="$(scheduled "$port")"; t1="$(cpu_ticks "$pid")"; r1="$(cpu_ticks "$REDIS_PID")"
  curl -s "http://127.0.0.1:$port/metrics" >"$WORK/metrics.txt"
  local rss
  rss="$(rss_kib "$pid")"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$t0" "$t1" "$r0" "$r1" "$s0" "$s1" "$2" "$HZ" "$rss" <<'PY'
import sys
t0, t1, r0, r1, s0, s1, secs, hz, rss = map(float, sys.argv[1:])
cpu_s = (t1 - t0) / hz
ops = s1 - s0
print(f"{cpu_s * 1000 / secs:.2f} {cpu_s * 1e6 / ops if ops else float('nan'):.1f} {rss / 1024:.1f} {(r1 - r0) / hz * 1000 / secs:.2f} {ops / secs:.1f}")
PY
}

echo "==> defaults (20 operations/s), ${IDLE} s"
read -r cpu us rss redis ops < <(run "" "$IDLE")
bytes="$(wc -c <"$WORK/metrics.txt")"
series="$(grep -cv '^#' "$WORK/metrics.txt")"
echo "==> the floor (0.01 operations/s), ${FLOOR} s"
printf '[workload]\nrate = 0.01\n' >"$WORK/rate.toml"
read -r fcpu _ frss fredis _ < <(run "x" "$FLOOR")
echo "==> 1,000 operations/s, ${BUSY} s"
printf '[workload]\nrate = 1000.0\n' >"$WORK/rate.toml"
read -r bcpu bus brss bredis bops < <(run "x" "$BUSY")

cat <<TABLE

| configuration | ops/s | exporter CPU | CPU per operation | RSS | redis-server CPU (same window) | exporter / redis |
|---|---|---|---|---|---|---|
| defaults | $ops | $cpu ms/s | $us µs | $rss MiB | $redis ms/s | $(python3 -c "print(f'{$cpu / $redis:.2f}x' if $redis else 'n/a')") |
| floor | 0.01 | $fcpu ms/s | – | $frss MiB | $fredis ms/s | $(python3 -c "print(f'{$fcpu / $fredis:.2f}x' if $fredis else 'n/a')") |
| rate 1,000/s | $bops | $bcpu ms/s | $bus µs | $brss MiB | $bredis ms/s | $(python3 -c "print(f'{$bcpu / $bredis:.2f}x' if $bredis else 'n/a')") |

Each operation at the defaults adds $(python3 -c "print(f'{($cpu - $fcpu) * 1000 / $ops:.0f}')") µs of CPU to the floor.
/metrics at the defaults: $bytes bytes, $series series per scrape.
TABLE
