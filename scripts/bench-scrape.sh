#!/usr/bin/env bash
# Scrape storm: 32 concurrent clients fetch /metrics and /health for 10 s,
# first from the daemon (plain, then with TLS and bcrypt basic auth), then
# from Debian's prometheus-redis-exporter pointed at the same Redis. Prints
# requests served, failures, p99, CPU used, and RSS before and after for each.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
apt_ensure redis-server:redis-server prometheus-redis-exporter:prometheus-redis-exporter openssl:openssl
chroma_ensure
cargo build --release --locked --quiet
cargo bench --locked --no-run --bench scrape_storm --quiet 2>/dev/null
STORM="$(ls -t target/release/deps/scrape_storm-* | grep -v '\.d$' | head -1)"
BIN=target/release/llm-cache-exporter
SECONDS_STORM="${SECONDS_STORM:-10}"
CONCURRENCY="${CONCURRENCY:-32}"

scratch_begin
REDIS_PORT="$(free_port)"
redis_scratch "$REDIS_PORT"
CHROMA_PORT="$(free_port)"
(chroma_run "$CHROMA_PORT" "$WORK/chroma" >"$WORK/chroma.log" 2>&1) &
PIDS+=($!)
wait_port "$CHROMA_PORT" chroma

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# storm NAME PID STORM-ARGS...: prints one result row.
storm() {
  local name="$1" pid="$2"; shift 2
  sleep 3 # let the exporter settle (the daemon's workload is running)
  local rss_before cpu_before result cpu_after rss_after
  rss_before="$(rss_kb "$pid")"
  cpu_before="$(cpu_ticks "$pid")"
  result="$("$STORM" --seconds "$SECONDS_STORM" --concurrency "$CONCURRENCY" "$@")"
  cpu_after="$(cpu_ticks "$pid")"
  rss_after="$(rss_kb "$pid")"
  python3 - "$name" "$result" "$rss_before" "$rss_after" "$((cpu_after - cpu_before))" "$(getconf CLK_TCK)" "$SECONDS_STORM" <<'PY'
import sys
name, result, before, after, ticks, hz, seconds = sys.argv[1:]
r = dict(kv.split("=") for kv in result.split())
cpu = int(ticks) / int(hz)
print(f"{name:34} {int(r['requests']):>9} {int(r['failures']):>8} {float(r['rps']):>8.0f} {float(r['p99_ms']):>8.2f} "
      f"{cpu:>7.2f} {cpu * 1e6 / max(int(r['requests']), 1):>8.0f} {int(before) / 1024:>7.1f} {int(after) / 1024:>7.1f}")
PY
}

echo "scrape storm: $CONCURRENCY clients, ${SECONDS_STORM} s, /metrics and /health round-robin, same Redis"
printf "%-34s %9s %8s %8s %8s %7s %8s %7s %7s\n" exporter requests failures req/s p99_ms cpu_s cpu_us/req rss_MB rss_MB
printf "%-34s %9s %8s %8s %8s %7s %8s %7s %7s\n" "" "" "" "" "" "" "" before after

WEB="$(free_port)"
"$BIN" --web.listen-address "127.0.0.1:$WEB" --redis.url "redis://127.0.0.1:$REDIS_PORT" \
  --chroma.url "http://127.0.0.1:$CHROMA_PORT" --log.level warn &
DAEMON=$!
PIDS+=($DAEMON)
wait_port "$WEB" llm-cache-exporter
storm "llm-cache-exporter" "$DAEMON" "http://127.0.0.1:$WEB/metrics" "http://127.0.0.1:$WEB/health"
kill "$DAEMON"; wait "$DAEMON" 2>/dev/null || true

# The same with TLS and basic auth (bcrypt cost 10): verdicts are cached, so
# the storm pays for bcrypt once, not per request.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost -addext basicConstraints=critical,CA:FALSE \
  -addext extendedKeyUsage=serverAuth -keyout "$WORK/web.key" -out "$WORK/web.crt" 2>/dev/null
# Python's crypt (bookworm's 3.11 has it) makes a cost-10 bcrypt hash, $2b$.
HASH="$(python3 -W ignore -c 'import crypt; print(crypt.crypt("storm", crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1024)))')"
cat >"$WORK/web.yml" <<YAML
tls_server_config:
  cert_file: $WORK/web.crt
  key_file: $WORK/web.key
basic_auth_users:
  prometheus: '$HASH'
YAML
WEB="$(free_port)"
"$BIN" --web.listen-address "127.0.0.1:$WEB" --web.config.file "$WORK/web.yml" \
  --redis.url "redis://127.0.0.1:$REDIS_PORT" --chroma.url "http://127.0.0.1:$CHROMA_PORT" --log.level warn &
DAEMON=$!
PIDS+=($DAEMON)
wait_port "$WEB" llm-cache-exporter
storm "llm-cache-exporter (TLS + basic auth)" "$DAEMON" --user prometheus --password storm --ca-file "$WORK/web.crt" \
  "https://localhost:$WEB/metrics" "https://localhost:$WEB/health"
kill "$DAEMON"; wait "$DAEMON" 2>/dev/null || true

EXPORTER="$(free_port)"
prometheus-redis-exporter --redis.addr "redis://127.0.0.1:$REDIS_PORT" \
  --web.listen-address "127.0.0.1:$EXPORTER" >"$WORK/redis_exporter.log" 2>&1 &
REDIS_EXPORTER=$!
PIDS+=($REDIS_EXPORTER)
wait_port "$EXPORTER" prometheus-redis-exporter
storm "prometheus-redis-exporter $(prometheus-redis-exporter --version 2>&1 | grep -o 'Exporter [0-9.]*' | cut -d' ' -f2)" \
  "$REDIS_EXPORTER" "http://127.0.0.1:$EXPORTER/metrics" "http://127.0.0.1:$EXPORTER/health"
