#!/usr/bin/env bash
# The census against redis_exporter's --check-key-groups, on the same data in
# the same run. Writes KEYS keys (default 1,000,000) in 10 groups (lists of 1
# to MAX_LIST entries, default 200; hashes; strings), then runs, one after
# the other:
#   - redis_exporter 1.45 with --check-key-groups (the 10 patterns as Lua
#     regexes), one scrape of /metrics (its key-group pass runs in it);
#   - our census with no budget (max_keys_per_second = 0);
#   - our census at its default budget (5,000 keys/s).
# While each runs, a separate client sends PING every millisecond and times
# it (redis-cli --latency style). Prints, for each: the pass's time, how many
# PINGs took over 1 ms, their p99 and the largest, and Redis's CPU for the
# pass (INFO cpu, less what the PINGs cost at the idle run's rate per PING);
# and an idle baseline of the same PINGs.
#
#   scripts/bench-census.sh
#   KEYS=200000 scripts/bench-census.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
KEYS="${KEYS:-1000000}"
MAX_LIST="${MAX_LIST:-200}"

apt_ensure redis-server:redis-server redis-cli:redis-tools prometheus-redis-exporter:prometheus-redis-exporter
cargo build --release --locked --quiet
BIN="$REPO_ROOT/target/release/llm-cache-exporter"
scratch_begin
PORT="$(free_port)"
redis_scratch "$PORT"

echo "==> writing $KEYS keys in 10 groups"
python3 - "$KEYS" "$MAX_LIST" <<'PY' | redis-cli -p "$PORT" --pipe >/dev/null
import sys
keys, max_list = int(sys.argv[1]), int(sys.argv[2])
out = sys.stdout
def command(*args):
    out.write(f"*{len(args)}\r\n")
    for a in args:
        a = str(a)
        out.write(f"${len(a.encode())}\r\n{a}\r\n")
for i in range(keys):
    group = i % 10
    if group < 6:
        # Lists of 1..max_list messages: chat histories.
        n = 1 + (i * 7919) % max_list
        command("RPUSH", f"g{group}:chat:{i}", *(["m"] * n))
        if i % 3:
            command("EXPIRE", f"g{group}:chat:{i}", 86400)
    elif group < 8:
        command("HSET", f"g{group}:session:{i}", "a", 1, "b", 2, "c", 3)
    else:
        command("SET", f"g{group}:blob:{i}", "x" * (50 + i % 200))
PY
redis-cli -p "$PORT" DBSIZE

KEY_GROUPS=(g0:chat g1:chat g2:chat g3:chat g4:chat g5:chat g6:session g7:session g8:blob g9:blob)

# latency SECONDS NAME: PING every ms for SECONDS (or until $WORK/stop), in
# the background; writes the RTTs to $WORK/NAME.lat.
latency() {
  python3 - "$PORT" "$1" "$WORK/$2.lat" "$WORK/stop" <<'PY' &
import os, socket, sys, time
port, seconds, out, stop = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
rtts, end = [], time.monotonic() + seconds
while time.monotonic() < end and not os.path.exists(stop):
    t = time.perf_counter()
    s.sendall(b"PING\r\n")
    s.recv(64)
    rtts.append(time.perf_counter() - t)
    time.sleep(0.001)
open(out, "w").write("\n".join(f"{r:.6f}" for r in rtts))
PY
  LAT_PID=$!
}

cpu() { redis-cli -p "$PORT" INFO cpu | awk -F: '/used_cpu_(sys|user):/ {s += $2} END {print s}'; }

summary() {
  python3 - "$WORK/$2.lat" "$1" "$3" "$4" <<'PY'
import sys
rtts = sorted(float(x) for x in open(sys.argv[1]).read().split())
name, seconds, cpu = sys.argv[2], sys.argv[3], sys.argv[4]
slow = sum(1 for r in rtts if r > 0.001)
p99 = rtts[int(0.99 * (len(rtts) - 1))] * 1000
print(f"{name:<34}{seconds:>10}{len(rtts):>8}{slow:>8}{p99:>9.2f}ms{rtts[-1] * 1000:>9.2f}ms{cpu:>10}")
PY
}

# Redis CPU between BEFORE and AFTER, net of the PINGs of run NAME (at what
# one PING costs idle): net BEFORE AFTER NAME.
pings() { python3 -c "import sys; print(len(open(sys.argv[1]).read().split()))" "$WORK/$1.lat"; }
net() { python3 -c "print(round($2 - $1 - $PING_CPU * $(pings "$3"), 2))"; }

printf '%-34s%10s%8s%8s%11s%11s%10s\n' "run" "pass (s)" "PINGs" ">1 ms" "p99" "max" "CPU (s)"
rm -f "$WORK/stop"
before="$(cpu)"
latency 5 idle
wait "$LAT_PID"
PING_CPU="$(python3 -c "print(($(cpu) - $before) / $(pings idle))")"
summary "idle (no pass)" idle "-" "-"

# redis_exporter --check-key-groups: one scrape runs its whole pass.
REX="$(free_port)"
regexes="$(printf '^%s:.*,' "${KEY_GROUPS[@]}" | sed 's/,$//')"
prometheus-redis-exporter --web.listen-address "127.0.0.1:$REX" --redis.addr "redis://127.0.0.1:$PORT" \
  --check-key-groups "$regexes" --max-distinct-key-groups 100 >"$WORK/rex.log" 2>&1 &
REX_PID=$!
PIDS+=("$REX_PID")
wait_port "$REX" redis_exporter
rm -f "$WORK/stop"
latency 3600 rex
before="$(cpu)"
start="$(date +%s.%N)"
curl -s --max-time 3600 "http://127.0.0.1:$REX/metrics" >"$WORK/rex.txt"
took="$(python3 -c "print($(date +%s.%N) - $start)")"
after="$(cpu)"
touch "$WORK/stop"
wait "$LAT_PID"
grep -c '^redis_key_group_count' "$WORK/rex.txt" >/dev/null || { echo "redis_exporter reported no key groups" >&2; exit 1; }
summary "redis_exporter --check-key-groups" rex "$(printf '%.2f' "$took")" "$(net "$before" "$after" rex)"
kill "$REX_PID"

# Ours: one pass, then read its duration.
census() {
  local name="$1" budget="$2" web
  web="$(free_port)"
  {
    printf '[canary]\nenabled = true\n[workload]\nrate = 0.01\n[workload.mix]\nget_chat_history = 1\nstore_chat_entry = 0\nquery_similar_memories = 0\nstore_memory = 0\n'
    printf '[census]\ninterval = "1h"\n[census.redis]\nmax_keys_per_second = %s\n' "$budget"
    for g in "${KEY_GROUPS[@]}"; do printf '[[census.redis.groups]]\nname = "%s"\npattern = "%s:*"\n' "${g/:/_}" "$g"; done
  } >"$WORK/$name.toml"
  rm -f "$WORK/stop"
  latency 3600 "$name"
  before="$(cpu)"
  "$BIN" --config.file "$WORK/$name.toml" --web.listen-address "127.0.0.1:$web" \
    --redis.url "redis://127.0.0.1:$PORT" --chroma.url "http://127.0.0.1:$(free_port)" --log.level error \
    2>"$WORK/$name.log" &
  local pid=$!
  PIDS+=("$pid")
  wait_port "$web" llm-cache-exporter
  local seconds=""
  while [ -z "$seconds" ]; do
    sleep 0.5
    seconds="$(curl -s "http://127.0.0.1:$web/metrics" | awk '/^llmcache_census_pass_duration_seconds\{store="redis"\}/ {print $2}')"
  done
  after="$(cpu)"
  touch "$WORK/stop"
  wait "$LAT_PID"
  curl -s "http://127.0.0.1:$web/metrics" | grep '^llmcache_census_redis_keys{' >"$WORK/$name.keys"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  summary "$name" "$name" "$(printf '%.2f' "$seconds")" "$(net "$before" "$after" "$name")"
}
census "census, no budget" 0
census "census, default budget of 5000 per s" 5000
echo "keys per group (last census):"
cat "$WORK/census, default budget of 5000 per s.keys" 2>/dev/null | head -12 || true
