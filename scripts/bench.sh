#!/usr/bin/env bash
# Benchmarks, as ratios against baselines measured in the same run:
#   - the instrumented cache's hit path vs moka get (criterion, one process);
#   - hit ratio on a Zipf(1.1) trace: ours vs LRU vs the offline optimum.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo bench --locked --features bench --bench cache -- --noplot >/dev/null
python3 - <<'PY'
import json
def median(name):
    with open(f"target/criterion/hit_path/{name}/new/estimates.json") as f:
        return json.load(f)["median"]["point_estimate"]
raw = median("raw_moka_get")
bare = median("bare_moka_get_same_config")
ours = median("instrumented_get_or_load")
print("Cache hit path (median ns per lookup, same process):")
print(f"  moka get, default config        {raw:7.1f} ns  1.00x")
print(f"  moka get, configured like ours  {bare:7.1f} ns  {bare / raw:.2f}x")
print(f"  instrumented get_or_load (hit)  {ours:7.1f} ns  {ours / raw:.2f}x   (target <= 1.25x)")
print()
PY
cargo bench --locked --features bench --bench hit_ratio 2>/dev/null
