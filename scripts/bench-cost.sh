#!/usr/bin/env bash
# What the canary costs, against real Redis and Chroma it starts itself:
#   - idle cost at the default configuration (20 operations/s): CPU ms per
#     second, CPU µs per operation, RSS;
#   - the floor: the same with one operation a hundred seconds, what the
#     daemon's own loops (probes, samplers, cache upkeep) cost;
#   - CPU µs per operation at 1,000 operations/s;
#   - /metrics: bytes and series per scrape at the default configuration.
# Beside each CPU figure, the same run's redis-server CPU over the same
# window: what serving the canary cost Redis. CPU is each process's threads'
# run time from /proc/PID/task/*/schedstat. And the baseline every figure
# sits on: what one sleep and wake-up costs on this machine, whoever sleeps
# (a Python loop sleeping to a 50 ms and to a 1 ms schedule), next to how
# many times per operation the daemon slept and woke (its voluntary context
# switches over the same window).
#
# With BASELINE_BIN (another build of the daemon, e.g. the last release),
# the script then alternates this build and that one, ROUNDS times each
# (default 3), COMPARE_SECONDS each (default 30), at the defaults and at
# 1,000/s, and gives this build's mean CPU as a ratio to the baseline's:
# on a shared machine one window against another is mostly noise.
#
#   scripts/bench-cost.sh               # 60 s idle, 30 s floor, 30 s busy
#   IDLE_SECONDS=20 FLOOR_SECONDS=10 BUSY_SECONDS=10 scripts/bench-cost.sh
#   BASELINE_BIN=/tmp/old/llm-cache-exporter scripts/bench-cost.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

IDLE="${IDLE_SECONDS:-60}"
BUSY="${BUSY_SECONDS:-30}"
FLOOR="${FLOOR_SECONDS:-30}"
BASELINE="${BASELINE_BIN:-}"
bench_stores

# cpu_ns PID: nanoseconds its threads have run so far (schedstat: exact,
# where /proc/PID/stat counts 10 ms ticks).
cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{n += $1} END {printf "%.0f\n", n}'; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
# sleeps PID: how many times the process's threads have slept so far.
sleeps() { cat /proc/"$1"/task/*/status | awk '/^voluntary_ctxt_switches/ {n += $2} END {print n}'; }
scheduled() {
  curl -s "http://127.0.0.1:$1/metrics" | awk '/^llmcache_workload_scheduled_total / {print $2}'
}

# run RATE SECONDS: prints "cpu_ms_per_s us_per_op rss_mib redis_cpu_ms_per_s
# ops_per_s wakes_per_op"
run() {
  local port pid t0 t1 r0 r1 s0 s1 w0 w1
  port="$(free_port)"
  bench_exporter "$port" ${1:+--config.file "$WORK/rate.toml"}
  pid=$EXPORTER_PID
  sleep 10 # warm up: the caches fill, the collection exists
  s0="$(scheduled "$port")"; t0="$(cpu_ns "$pid")"; r0="$(cpu_ns "$REDIS_PID")"; w0="$(sleeps "$pid")"
  sleep "$2"
  s1="$(scheduled "$port")"; t1="$(cpu_ns "$pid")"; r1="$(cpu_ns "$REDIS_PID")"; w1="$(sleeps "$pid")"
  curl -s "http://127.0.0.1:$port/metrics" >"$WORK/metrics.txt"
  local rss
  rss="$(rss_kib "$pid")"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$t0" "$t1" "$r0" "$r1" "$s0" "$s1" "$2" "$rss" "$w0" "$w1" <<'PY'
import sys
t0, t1, r0, r1, s0, s1, secs, rss, w0, w1 = map(float, sys.argv[1:])
cpu_s = (t1 - t0) / 1e9
ops = s1 - s0
nan = float("nan")
print(f"{cpu_s * 1000 / secs:.2f} {cpu_s * 1e6 / ops if ops else nan:.1f} {rss / 1024:.1f} "
      f"{(r1 - r0) / 1e9 * 1000 / secs:.2f} {ops / secs:.1f} {(w1 - w0) / ops if ops else nan:.2f}")
PY
}

echo "==> the baseline: one sleep and wake-up on this machine"
read -r wake50 wake1 < <(python3 - <<'PY'
import time
def cost(period, n):
    """CPU µs per sleep and wake-up, sleeping to a schedule `period` apart."""
    cpu0 = time.process_time()  # CLOCK_PROCESS_CPUTIME_ID: the same run time as schedstat
    due = time.monotonic()
    for _ in range(n):
        due += period
        left = due - time.monotonic()
        if left > 0:
            time.sleep(left)
    return (time.process_time() - cpu0) / n * 1e6
print(f"{cost(0.05, 200):.1f} {cost(0.001, 5000):.1f}")
PY
)
echo "==> defaults (20 operations/s), ${IDLE} s"
read -r cpu us rss redis ops wakes < <(run "" "$IDLE")
bytes="$(wc -c <"$WORK/metrics.txt")"
series="$(grep -cv '^#' "$WORK/metrics.txt")"
echo "==> the floor (0.01 operations/s), ${FLOOR} s"
printf '[workload]\nrate = 0.01\n' >"$WORK/rate.toml"
read -r fcpu _ frss fredis _ < <(run "x" "$FLOOR")
echo "==> 1,000 operations/s, ${BUSY} s"
printf '[workload]\nrate = 1000.0\n' >"$WORK/rate.toml"
read -r bcpu bus brss bredis bops bwakes < <(run "x" "$BUSY")

cat <<TABLE

| configuration | ops/s | exporter CPU | CPU per operation | RSS | redis-server CPU (same window) | exporter / redis | wake-ups per operation | CPU per operation / its wake-ups' baseline |
|---|---|---|---|---|---|---|---|---|
| defaults | $ops | $cpu ms/s | $us µs | $rss MiB | $redis ms/s | $(python3 -c "print(f'{$cpu / $redis:.2f}x' if $redis else 'n/a')") | $wakes | $(python3 -c "print(f'{$us / ($wakes * $wake50):.2f}x')") |
| floor | 0.01 | $fcpu ms/s | – | $frss MiB | $fredis ms/s | $(python3 -c "print(f'{$fcpu / $fredis:.2f}x' if $fredis else 'n/a')") | – | – |
| rate 1,000/s | $bops | $bcpu ms/s | $bus µs | $brss MiB | $bredis ms/s | $(python3 -c "print(f'{$bcpu / $bredis:.2f}x' if $bredis else 'n/a')") | $bwakes | $(python3 -c "print(f'{$bus / ($bwakes * $wake1):.2f}x')") |

One sleep and wake-up on this machine (the baseline, same run): $wake50 µs of
CPU when sleeping 50 ms at a time (the defaults' tick), $wake1 µs when
sleeping 1 ms at a time (1,000/s). At that price the daemon's wake-ups come
to $(python3 -c "print(f'{$wakes * $wake50:.0f}')") µs of each operation at the defaults and
$(python3 -c "print(f'{$bwakes * $wake1:.0f}')") µs at 1,000/s.

Each operation at the defaults adds $(python3 -c "print(f'{($cpu - $fcpu) * 1000 / $ops:.0f}')") µs of CPU to the floor.
/metrics at the defaults: $bytes bytes, $series series per scrape.
TABLE
[ -n "$BASELINE" ] || exit 0
ROUNDS="${ROUNDS:-3}"
COMPARE="${COMPARE_SECONDS:-30}"
# compare NAME RATE_FILE_FLAG: alternates the builds; prints the table row.
compare() {
  local round this=() base=() cpu us rss redis ops wakes
  for ((round = 1; round <= ROUNDS; round++)); do
    echo "==> $1, round $round of $ROUNDS: this build, then the baseline" >&2
    read -r cpu us rss redis ops wakes < <(run "$2" "$COMPARE")
    this+=("$cpu:$us:$wakes:$rss")
    read -r cpu us rss redis ops wakes < <(BIN="$BASELINE" run "$2" "$COMPARE")
    base+=("$cpu:$us:$wakes:$rss")
  done
  python3 - "$1" "${this[*]}" "${base[*]}" <<'PY'
import sys
from statistics import mean
name, this, base = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
def col(runs, i):
    return [float(r.split(":")[i]) for r in runs]
cpu, ocpu = col(this, 0), col(base, 0)
runs = " ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(cpu, ocpu))
print(f"| {name} | {mean(cpu):.2f} ms/s | {mean(ocpu):.2f} ms/s | {mean(cpu) / mean(ocpu):.2f}x | "
      f"{mean(col(this, 1)):.1f} / {mean(col(base, 1)):.1f} µs | "
      f"{mean(col(this, 2)):.2f} / {mean(col(base, 2)):.2f} | "
      f"{mean(col(this, 3)):.1f} / {mean(col(base, 3)):.1f} MiB | {runs} |")
PY
}
echo "==> against $BASELINE"
row_idle="$(compare defaults "")"
printf '[workload]\nrate = 1000.0\n' >"$WORK/rate.toml"
row_busy="$(compare "rate 1,000/s" x)"
cat <<TABLE

This build against the baseline ($BASELINE), alternating, $ROUNDS rounds of
$COMPARE s each (means; each round's CPU, this/baseline, in the last column):

| configuration | CPU, this build | CPU, baseline | ratio | per operation, this / baseline | wake-ups per operation, this / baseline | RSS, this / baseline | rounds (ms/s) |
|---|---|---|---|---|---|---|---|
$row_idle
$row_busy
TABLE
