//! Hit ratio on a Zipf(1.1) trace — 1M requests over 100k keys, capacity 10 %
//! of the keys' bytes — for the daemon's cache (moka: TinyLFU admission), a
//! plain LRU of the same byte budget, and Belady's offline optimum.

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroUsize;
use std::sync::Arc;

use llm_cache_exporter::bench::{BenchCache, ZipfRanks};

const KEYS: usize = 100_000;
const REQUESTS: usize = 1_000_000;
const CAPACITY_ENTRIES: usize = KEYS / 10;
const EXPONENT: f64 = 1.1;

fn trace() -> (Vec<u32>, Vec<u32>) {
    let zipf = ZipfRanks::new(KEYS, EXPONENT);
    let mut rng = fastrand::Rng::with_seed(2026);
    // Ranks are scattered over key ids so popularity is not key order.
    let mut ids: Vec<u32> = (0..KEYS as u32).collect();
    rng.shuffle(&mut ids);
    let trace = (0..REQUESTS).map(|_| ids[zipf.rank(rng.f64())]).collect();
    (trace, ids)
}

fn key(id: u32) -> String {
    format!("k{id:06}")
}

fn ours(trace: &[u32], value: &Arc<[f32]>) -> usize {
    let capacity = CAPACITY_ENTRIES as u64 * BenchCache::weight(&key(0), value);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let cache = BenchCache::new(capacity);
        let mut hits = 0;
        for (i, id) in trace.iter().enumerate() {
            hits += usize::from(cache.get_or_load(&key(*id), value).await);
            if i % 1000 == 0 {
                cache.maintain().await;
            }
        }
        hits
    })
}

fn lru(trace: &[u32]) -> usize {
    let mut cache = lru::LruCache::new(NonZeroUsize::new(CAPACITY_ENTRIES).expect("capacity"));
    let mut hits = 0;
    for id in trace {
        if cache.get(id).is_some() {
            hits += 1;
        } else {
            cache.put(*id, ());
        }
    }
    hits
}

/// Belady: on a miss, evict the entry used furthest in the future, or bypass
/// if the newcomer's next use is further still.
fn belady(trace: &[u32]) -> usize {
    let mut next_use = vec![usize::MAX; trace.len()];
    let mut seen: HashMap<u32, usize> = HashMap::new();
    for (i, id) in trace.iter().enumerate().rev() {
        next_use[i] = seen.insert(*id, i).unwrap_or(usize::MAX);
    }
    let mut cached: HashMap<u32, usize> = HashMap::new();
    let mut by_next: BTreeSet<(usize, u32)> = BTreeSet::new();
    let mut hits = 0;
    for (i, id) in trace.iter().enumerate() {
        if let Some(next) = cached.get_mut(id) {
            hits += 1;
            by_next.remove(&(*next, *id));
            *next = next_use[i];
            by_next.insert((next_use[i], *id));
            continue;
        }
        if cached.len() == CAPACITY_ENTRIES {
            let Some(&(furthest, victim)) = by_next.last() else {
                continue;
            };
            if furthest <= next_use[i] {
                continue;
            }
            by_next.remove(&(furthest, victim));
            cached.remove(&victim);
        }
        cached.insert(*id, next_use[i]);
        by_next.insert((next_use[i], *id));
    }
    hits
}

/// The most popular 10 % of keys pinned: the best a cache can do in steady
/// state when requests are independent (what TinyLFU approximates).
fn pinned_top(trace: &[u32], ids_by_rank: &[u32]) -> usize {
    let pinned: std::collections::HashSet<u32> =
        ids_by_rank[..CAPACITY_ENTRIES].iter().copied().collect();
    trace.iter().filter(|id| pinned.contains(id)).count()
}

fn main() {
    let (trace, ids_by_rank) = trace();
    let value: Arc<[f32]> = vec![0.5f32; 64].into();
    let rows = [
        (
            "llm-cache-exporter cache (moka, TinyLFU)",
            ours(&trace, &value),
        ),
        ("plain LRU, same byte budget", lru(&trace)),
        (
            "most popular 10 % pinned (static oracle)",
            pinned_top(&trace, &ids_by_rank),
        ),
        ("Belady offline optimum", belady(&trace)),
    ];
    let lru_hits = rows[1].1 as f64;
    println!("Zipf({EXPONENT}) trace: {REQUESTS} requests, {KEYS} keys, capacity {CAPACITY_ENTRIES} entries (10 %)");
    println!();
    println!("| cache | hit ratio | vs LRU |");
    println!("|---|---|---|");
    for (name, hits) in rows {
        let ratio = hits as f64 * 100.0 / REQUESTS as f64;
        let points = (hits as f64 - lru_hits) * 100.0 / REQUESTS as f64;
        println!(
            "| {name} | {ratio:.2} % | {points:+.2} points ({:.3}x) |",
            hits as f64 / lru_hits
        );
    }
}
