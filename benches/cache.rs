//! The instrumented cache's hit path against moka `get` on the same data, in
//! one process: a default moka cache, and one configured exactly like ours
//! (weigher and per-entry expiry). `scripts/bench.sh` prints the ratios.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use llm_cache_exporter::bench::{BareCache, BenchCache};
use moka::future::Cache;

const KEYS: usize = 1000;

fn hit_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let keys: Vec<String> = (0..KEYS)
        .map(|k| format!("memory text number {k}"))
        .collect();
    let value: Arc<[f32]> = vec![0.25f32; 256].into();
    let capacity = 64 << 20;

    let raw: Cache<String, Arc<[f32]>> = Cache::builder()
        .max_capacity(capacity)
        .weigher(|k: &String, v: &Arc<[f32]>| (k.len() + v.len() * 4) as u32)
        .build();
    let bare = BareCache::new(capacity);
    let ours = BenchCache::new(capacity);
    runtime.block_on(async {
        for key in &keys {
            raw.insert(key.clone(), value.clone()).await;
            bare.insert(key, &value).await;
            ours.get_or_load(key, &value).await;
        }
        raw.run_pending_tasks().await;
        bare.maintain().await;
        ours.maintain().await;
        assert!(bare.get(&keys[0]).await);
        assert!(
            ours.get_or_load(&keys[0], &value).await,
            "prefilled keys hit"
        );
    });

    let mut group = c.benchmark_group("hit_path");
    let mut i = 0usize;
    group.bench_function("raw_moka_get", |b| {
        b.to_async(&runtime).iter(|| {
            i = (i + 1) % KEYS;
            let key = &keys[i];
            let raw = &raw;
            async move { raw.get(key).await }
        })
    });
    let mut h = 0usize;
    group.bench_function("bare_moka_get_same_config", |b| {
        b.to_async(&runtime).iter(|| {
            h = (h + 1) % KEYS;
            let key = &keys[h];
            let bare = &bare;
            async move { bare.get(key).await }
        })
    });
    let mut j = 0usize;
    group.bench_function("instrumented_get_or_load", |b| {
        b.to_async(&runtime).iter(|| {
            j = (j + 1) % KEYS;
            let key = &keys[j];
            let (ours, value) = (&ours, &value);
            async move { ours.get_or_load(key, value).await }
        })
    });
    group.finish();
}

criterion_group!(benches, hit_path);
criterion_main!(benches);
