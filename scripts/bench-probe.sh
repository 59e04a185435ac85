#!/usr/bin/env bash
# /probe?module=redis against redis_exporter's /scrape?target= (Debian's
# prometheus-redis-exporter), on the same TARGETS redis-servers (default 50)
# in the same run. Each exporter is scraped for every target, ROUNDS times
# (default 10), CONCURRENCY at a time (default 10), the two alternating round
# by round. Prints, for each: CPU per scrape (from /proc/PID/stat), p50 and
# p99 wall time per scrape, and RSS with every target seen (ours pools a
# client per target); then our figures over redis_exporter's. Ours does
# round_trips (5) MULTI writes and LRANGE reads on top of PING and INFO;
# redis_exporter does INFO and its other reads.
#
#   scripts/bench-probe.sh
#   TARGETS=20 ROUNDS=20 scripts/bench-probe.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
TARGETS="${TARGETS:-50}"
ROUNDS="${ROUNDS:-10}"
CONCURRENCY="${CONCURRENCY:-10}"

apt_ensure redis-server:redis-server prometheus-redis-exporter:prometheus-redis-exporter curl:curl
cargo build --release --locked --quiet
BIN="$REPO_ROOT/target/release/llm-cache-exporter"
scratch_begin

PORTS=()
for _ in $(seq 1 "$TARGETS"); do
  port="$(free_port)"
  redis_scratch "$port"
  PORTS+=("$port")
done

OURS="$(free_port)"
cat >"$WORK/config.toml" <<TOML
[canary]
enabled = false
[log]
level = "warn"
[probe]
max_concurrent = 64
[probe.modules.redis]
prober = "redis"
allowed_targets = ["127.0.0.1/32"]
TOML
"$BIN" --config.file "$WORK/config.toml" --web.listen-address "127.0.0.1:$OURS" >"$WORK/ours.log" 2>&1 &
OURS_PID=$!
PIDS+=("$OURS_PID")
wait_port "$OURS" llm-cache-exporter

THEIRS="$(free_port)"
prometheus-redis-exporter --web.listen-address "127.0.0.1:$THEIRS" --redis.addr "" >"$WORK/theirs.log" 2>&1 &
THEIRS_PID=$!
PIDS+=("$THEIRS_PID")
wait_port "$THEIRS" redis_exporter

python3 - "$OURS" "$OURS_PID" "$THEIRS" "$THEIRS_PID" "$ROUNDS" "$CONCURRENCY" "${PORTS[@]}" <<'PY'
import os, sys, time, urllib.request
from concurrent.futures import ThreadPoolExecutor

ours, ours_pid, theirs, theirs_pid, rounds, concurrency = sys.argv[1:7]
ports = sys.argv[7:]
rounds, concurrency = int(rounds), int(concurrency)
tick = os.sysconf("SC_CLK_TCK")

def cpu(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick

def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

exporters = {
    "llm-cache-exporter /probe": (ours_pid, lambda p: f"http://127.0.0.1:{ours}/probe?module=redis&target=127.0.0.1:{p}",
                                  "probe_success 1"),
    "redis_exporter /scrape": (theirs_pid, lambda p: f"http://127.0.0.1:{theirs}/scrape?target=redis://127.0.0.1:{p}",
                               "redis_up 1"),
}
results = {name: {"cpu": 0.0, "walls": [], "scrapes": 0} for name in exporters}

def scrape(url, expect):
    started = time.monotonic()
    body = urllib.request.urlopen(url, timeout=10).read().decode()
    wall = time.monotonic() - started
    if expect not in body:
        raise SystemExit(f"{url}: no {expect!r} in the answer")
    return wall

with ThreadPoolExecutor(concurrency) as pool:
    # Warm up: every target once (ours pools a client for each).
    for name, (pid, url, expect) in exporters.items():
        list(pool.map(lambda p: scrape(url(p), expect), ports))
    for _ in range(rounds):
        for name, (pid, url, expect) in exporters.items():
            before = cpu(pid)
            walls = list(pool.map(lambda p: scrape(url(p), expect), ports))
            results[name]["cpu"] += cpu(pid) - before
            results[name]["walls"] += walls
            results[name]["scrapes"] += len(walls)

def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]

print(f"{len(ports)} redis-server targets, {rounds} rounds, {concurrency} at a time, alternating")
print(f"{'exporter':<28}{'CPU/scrape':>12}{'p50 wall':>11}{'p99 wall':>11}{'RSS':>10}")
figures = {}
for name, (pid, _, _) in exporters.items():
    r = results[name]
    per = r["cpu"] / r["scrapes"] * 1000
    p50, p99 = pct(r["walls"], 0.5) * 1000, pct(r["walls"], 0.99) * 1000
    memory = rss(pid)
    figures[name] = (per, p50, p99, memory)
    print(f"{name:<28}{per:>9.3f} ms{p50:>8.2f} ms{p99:>8.2f} ms{memory:>7.1f} MiB")
o, t = figures["llm-cache-exporter /probe"], figures["redis_exporter /scrape"]
print(f"ours / redis_exporter: CPU {o[0] / t[0]:.2f}x, p50 {o[1] / t[1]:.2f}x, "
      f"p99 {o[2] / t[2]:.2f}x, RSS {o[3] / t[3]:.2f}x")
PY
