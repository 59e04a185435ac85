#!/usr/bin/env bash
# What reloads cost the workload's schedule. The release daemon runs 100 %
# get_chat_history at 100/s with the cache off (every operation is an
# LRANGE). Over WINDOW seconds (default 10) it samples
# llmcache_workload_lag_seconds every 50 ms and takes the mean Redis LRANGE
# from llmcache_backend_request_duration_seconds; once quiet and once with
# 20 SIGHUPs spread over the window, alternating ROUNDS times (default 3),
# same daemon, same Redis. Prints each window and the mean ratios.
#
#   scripts/bench-reload.sh
#   WINDOW=20 ROUNDS=5 scripts/bench-reload.sh
#
# The other half of "nothing blocks the worker", a writer against scans of a
# full 10,000-row semantic index, is `cargo bench --features bench --bench
# semantic`: the workload asks too few distinct questions to fill the index.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
WINDOW="${WINDOW:-10}"
ROUNDS="${ROUNDS:-3}"

bench_stores
cat >"$WORK/config.toml" <<TOML
[cache]
memory_budget = "0"
[workload]
rate = 100.0
[workload.mix]
get_chat_history = 1.0
store_chat_entry = 0.0
query_similar_memories = 0.0
store_memory = 0.0
TOML
WEB="$(free_port)"
bench_exporter "$WEB" --config.file "$WORK/config.toml"
sleep 2

python3 - "$WEB" "$EXPORTER_PID" "$WINDOW" "$ROUNDS" <<'PY'
import os, signal, sys, time, urllib.request

port, pid, window, rounds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
LAG = "llmcache_workload_lag_seconds"
LRANGE = '{backend="redis",request="lrange"}'

def scrape():
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values = {}
    for line in text.splitlines():
        if not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            values[series] = float(value)
    return values

def window_of(reloads):
    before, lags, sent = scrape(), [], 0
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < window:
        if reloads and sent < 20 and elapsed >= sent * window / 20:
            os.kill(pid, signal.SIGHUP)
            sent += 1
        lags.append(scrape()[LAG])
        time.sleep(0.05)
    time.sleep(1)  # the last reload's first requests land in this window
    after = scrape()
    part = lambda name: after[name + LRANGE] - before[name + LRANGE]
    count = part("llmcache_backend_request_duration_seconds_count")
    mean = part("llmcache_backend_request_duration_seconds_sum") / count
    return max(lags), sum(lags) / len(lags), mean, count

print(f"{'window':<16}{'lag max':>12}{'lag mean':>12}{'LRANGE mean':>14}{'LRANGEs':>10}")
results = {False: [], True: []}
for _ in range(rounds):
    for reloads in (False, True):
        lag_max, lag_mean, mean, count = window_of(reloads)
        results[reloads].append((lag_max, lag_mean, mean))
        name = "20 reloads" if reloads else "quiet"
        print(f"{name:<16}{lag_max * 1e3:>10.2f}ms{lag_mean * 1e3:>10.3f}ms"
              f"{mean * 1e6:>12.1f}µs{count:>10.0f}")
avg = lambda rows, i: sum(r[i] for r in rows) / len(rows)
quiet, reloading = results[False], results[True]
print(f"mean over {rounds} rounds, 20 reloads against quiet: "
      f"lag max {avg(reloading, 0) * 1e3:.2f} against {avg(quiet, 0) * 1e3:.2f} ms, "
      f"lag mean {avg(reloading, 1) * 1e3:.3f} against {avg(quiet, 1) * 1e3:.3f} ms, "
      f"LRANGE mean {avg(reloading, 2) * 1e6:.1f} against {avg(quiet, 2) * 1e6:.1f} µs "
      f"({avg(reloading, 2) / avg(quiet, 2):.2f}x)")
PY
