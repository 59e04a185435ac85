//! A narrow, unstable facade over internals for `benches/` (feature `bench`).
//! Not part of the public API.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;

use crate::cache::{
    CacheFamilies, CacheName, Embedding, Freshness, InstrumentedCache, Lookup, SemanticIndex,
};

/// The embeddings cache exactly as the daemon builds it.
pub struct BenchCache(InstrumentedCache<Embedding>);

impl BenchCache {
    /// An instrumented cache of `capacity` bytes with a one-hour TTL.
    pub fn new(capacity: u64) -> Self {
        let families = CacheFamilies::register(&mut Registry::default());
        Self(InstrumentedCache::new(
            CacheName::Embeddings,
            Duration::from_secs(3600),
            capacity,
            Freshness::Immutable,
            families.for_cache(CacheName::Embeddings),
        ))
    }

    /// Looks `key` up, loading `value` on a miss; true on a hit.
    pub async fn get_or_load(&self, key: &str, value: &Arc<[f32]>) -> bool {
        let result = self
            .0
            .get_or_load(key, || async { Ok::<_, Arc<str>>(value.clone()) })
            .await;
        matches!(result, Ok((_, Lookup::Hit)))
    }

    /// Runs moka's pending maintenance.
    pub async fn maintain(&self) {
        self.0.maintain().await;
    }

    /// Runs moka's maintenance; returns the bytes the cache accounts for.
    pub async fn accounted(&self) -> u64 {
        self.0.maintain().await
    }

    /// Entries held.
    pub fn entries(&self) -> u64 {
        self.0.metrics().entries.get() as u64
    }

    /// The weight the daemon's weigher gives `key` with `value`.
    pub fn weight(key: &str, value: &Arc<[f32]>) -> u64 {
        crate::cache::weigh_entry(key, value)
    }
}

/// A bare moka cache configured exactly like the daemon's (weigher and
/// TTL), without the instrumentation.
pub struct BareCache(moka::future::Cache<String, crate::cache::Stamped<Embedding>>);

impl BareCache {
    /// A bare cache of `capacity` bytes.
    pub fn new(capacity: u64) -> Self {
        Self(crate::cache::bare_moka(capacity, Duration::from_secs(3600)))
    }

    /// Inserts `key`.
    pub async fn insert(&self, key: &str, value: &Arc<[f32]>) {
        self.0
            .insert(key.to_owned(), crate::cache::Stamped::new(value.clone()))
            .await;
    }

    /// A plain moka `get`; true when present.
    pub async fn get(&self, key: &str) -> bool {
        self.0.get(key).await.is_some()
    }

    /// Runs moka's pending maintenance.
    pub async fn maintain(&self) {
        self.0.run_pending_tasks().await;
    }
}

/// Zipf ranks over `0..n` with exponent `s`, from uniform draws in `[0, 1)`.
pub struct ZipfRanks(crate::zipf::Zipf);

impl ZipfRanks {
    /// The distribution.
    pub fn new(n: usize, s: f64) -> Self {
        Self(crate::zipf::Zipf::new(n, s))
    }

    /// The rank for `u`.
    pub fn rank(&self, u: f64) -> usize {
        self.0.rank(u)
    }
}

/// The similarity cache's semantic index.
pub struct BenchSemanticIndex(SemanticIndex);

impl BenchSemanticIndex {
    /// An empty index of at most `cap` rows.
    pub fn new(cap: usize) -> Self {
        Self(SemanticIndex::new(cap))
    }

    /// Remembers `key`'s embedding.
    pub fn insert(&self, key: &str, embedding: &[f32]) {
        self.0.insert(key, embedding);
    }

    /// Forgets `key`.
    pub fn remove(&self, key: &str) {
        self.0.remove(key);
    }

    /// The cosine distance to the nearest row, if any.
    pub fn nearest(&self, query: &[f32]) -> Option<f32> {
        self.0.nearest(query).ok().flatten().map(|(_, d)| d)
    }
}

/// The chat-history cache exactly as the daemon builds it, for the memory
/// accounting bench.
pub struct BenchChatCache(InstrumentedCache<crate::cache::ChatHistory>);

impl BenchChatCache {
    /// An instrumented chat-history cache of `capacity` bytes, one-hour TTL.
    pub fn new(capacity: u64) -> Self {
        let families = CacheFamilies::register(&mut Registry::default());
        Self(InstrumentedCache::new(
            CacheName::ChatHistory,
            Duration::from_secs(3600),
            capacity,
            Freshness::per_key(),
            families.for_cache(CacheName::ChatHistory),
        ))
    }

    /// Caches `history` under `key` (a miss that loads it).
    pub async fn insert(&self, key: &str, history: Vec<String>) {
        let history: crate::cache::ChatHistory = history.into();
        let _ = self
            .0
            .get_or_load(key, || async { Ok::<_, Arc<str>>(history.clone()) })
            .await;
    }

    /// Runs moka's maintenance; returns the bytes the cache accounts for
    /// (what `llmcache_memory_pool_used_bytes` sums).
    pub async fn accounted(&self) -> u64 {
        self.0.maintain().await
    }

    /// Entries held.
    pub fn entries(&self) -> u64 {
        self.0.metrics().entries.get() as u64
    }
}
