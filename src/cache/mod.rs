//! The cache manager: three instrumented caches (`chat_history`,
//! `similarity`, `embeddings`) drawing on one memory pool.
//!
//! # The memory pool
//!
//! `cache.memory_budget` is split between the caches by their `share`. The
//! pool's budget can change at run time ([`CacheManager::resize`]): the
//! memory-pressure monitor shrinks it under pressure and restores it after.
//!
//! moka fixes a cache's `max_capacity` when it is built, so a resize
//! *rebuilds and migrates*: for each cache, a new moka cache with the new
//! capacity is built, the live entries are copied into it with their original
//! deadlines, it is swapped in atomically, and moka's maintenance runs on it
//! before `resize` returns, so its weighted size is within the new capacity.
//! Entries that do not fit are evicted by moka's own policy (TinyLFU admission,
//! LRU-ish eviction) and counted as `size` evictions. A grow works the same way
//! and simply has room to spare. Hand-rolled eviction on top of moka was the
//! alternative; it would have meant second-guessing moka's policy and
//! double-counting sizes, for no gain on an operation that runs rarely.
//!
//! # Accounting
//!
//! Every lookup counts one request and one hit or miss, whatever happens under
//! it (coalesced load, failed load, oversize value). Gauges (entries, bytes,
//! pool used) are refreshed by [`CacheManager::run_maintenance`] every 500 ms,
//! never inside a scrape.

mod freshness;
mod instrumented;
mod metrics;
mod semantic;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use tokio_util::sync::CancellationToken;

#[cfg(feature = "bench")]
pub(crate) use instrumented::{bare_moka, weigh_entry, Stamped};
pub(crate) use instrumented::{heap, Freshness, InstrumentedCache, Lookup, Semantic, Weigh};
pub(crate) use metrics::{CacheFamilies, CacheName, SemanticMetrics};
pub(crate) use semantic::{DimensionMismatch, SemanticIndex};

use crate::config::{CacheConfig, SimilarityMode};

/// The semantic index keeps at most this many cached queries' embeddings.
const SEMANTIC_ROWS: usize = 10_000;

/// A session's chat history: the raw JSON entries, oldest first.
pub(crate) type ChatHistory = Arc<[String]>;
/// An embedding vector.
pub(crate) type Embedding = Arc<[f32]>;

impl Weigh for Arc<[String]> {
    fn weight(&self) -> usize {
        heap(16 + 24 * self.len()) + self.iter().map(|s| heap(s.capacity())).sum::<usize>()
    }
}

impl Weigh for Arc<[f32]> {
    fn weight(&self) -> usize {
        heap(16 + 4 * self.len())
    }
}

/// Each cache's capacity: its share of `budget`, in whole bytes.
fn capacities(budget: u64, shares: [f64; 3]) -> [u64; 3] {
    shares.map(|share| (budget as f64 * share).floor() as u64)
}

/// The `/health` `cache.stats` object, read from the same counters and
/// gauges `/metrics` serves.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct CacheStats {
    pub(crate) total_hits: u64,
    pub(crate) total_misses: u64,
    pub(crate) hit_rate: String,
    pub(crate) cache_size: u64,
    pub(crate) memory_usage_mb: f64,
    pub(crate) memory_pressure: bool,
}

impl CacheStats {
    /// Hits per lookup, in percent; 0 before the first lookup.
    pub(crate) fn hit_rate_percent(&self) -> f64 {
        ratio_percent(self.total_hits, self.total_misses)
    }
}

fn ratio_percent(hits: u64, misses: u64) -> f64 {
    let total = hits + misses;
    if total == 0 {
        0.0
    } else {
        hits as f64 * 100.0 / total as f64
    }
}

/// `"87.5%"`: one decimal, as the seed system reported it.
pub(crate) fn format_hit_rate(hits: u64, misses: u64) -> String {
    format!("{:.1}%", ratio_percent(hits, misses))
}

/// What the memory monitor and `/health` need of the caches, whatever they
/// hold: the pool's budget, its pressure flag, and the statistics.
pub(crate) trait Pool: Send + Sync {
    /// The budget from the configuration, before any pressure adjustment.
    fn configured_budget(&self) -> u64;
    /// Whether the pool is running shrunk for memory pressure.
    fn memory_pressure(&self) -> bool;
    /// Records whether the memory monitor sees pressure.
    fn set_memory_pressure(&self, pressure: bool);
    /// Gives the pool a new budget. When the future resolves, every cache
    /// has its new capacity and holds no more than it (see the module docs).
    fn resize(&self, budget: u64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
    /// The `/health` statistics, read from the same counters and gauges
    /// `/metrics` serves, so the two always agree.
    fn stats(&self) -> CacheStats;
}

/// How often the gauges are refreshed and moka's maintenance runs.
const MAINTENANCE_INTERVAL: Duration = Duration::from_millis(500);

/// The three caches and their pool. `S` is what the similarity cache holds:
/// the cache names no backend type.
pub(crate) struct CacheManager<S> {
    pub(crate) chat_history: InstrumentedCache<ChatHistory>,
    pub(crate) similarity: InstrumentedCache<S>,
    pub(crate) embeddings: InstrumentedCache<Embedding>,
    shares: [f64; 3],
    configured_budget: u64,
    budget: AtomicU64,
    families: CacheFamilies,
    memory_pressure: AtomicBool,
}

impl<S: Weigh + Clone + Send + Sync + 'static> CacheManager<S> {
    /// Builds the caches at the configured budget, counting into `families`
    /// (registered once per process, so a reload keeps the counts).
    pub(crate) fn new(config: &CacheConfig, families: CacheFamilies) -> Self {
        let budget = config.memory_budget;
        let shares = [
            config.chat_history.share,
            config.similarity.share,
            config.embeddings.share,
        ];
        let [chat_history, similarity, embeddings] = capacities(budget, shares);
        let manager = Self {
            chat_history: InstrumentedCache::new(
                CacheName::ChatHistory,
                config.chat_history.ttl,
                chat_history,
                Freshness::per_key(),
                families.for_cache(CacheName::ChatHistory),
            ),
            similarity: {
                let cache = InstrumentedCache::new(
                    CacheName::Similarity,
                    config.similarity.ttl,
                    similarity,
                    Freshness::global(),
                    families.for_cache(CacheName::Similarity),
                );
                match config.similarity.mode {
                    SimilarityMode::Exact => cache,
                    SimilarityMode::Semantic => cache.with_semantic(Semantic {
                        index: SemanticIndex::new(SEMANTIC_ROWS),
                        threshold: config.similarity.distance_threshold as f32,
                        metrics: families.semantic(CacheName::Similarity),
                    }),
                }
            },
            embeddings: InstrumentedCache::new(
                CacheName::Embeddings,
                config.embeddings.ttl,
                embeddings,
                Freshness::Immutable,
                families.for_cache(CacheName::Embeddings),
            ),
            shares,
            configured_budget: budget,
            budget: AtomicU64::new(budget),
            families,
            memory_pressure: AtomicBool::new(false),
        };
        // Built quietly: the budget and capacities are published by
        // `maintain`, once this generation runs.
        manager
    }

    /// The pool's current budget.
    #[cfg(test)]
    pub(crate) fn budget(&self) -> u64 {
        self.budget.load(Ordering::Relaxed)
    }

    /// Runs every cache's maintenance and refreshes the gauges. Returns the
    /// bytes held in total.
    pub(crate) async fn maintain(&self) -> u64 {
        self.families
            .pool_budget
            .set(i64::try_from(self.budget.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
        let used = self.chat_history.maintain().await
            + self.similarity.maintain().await
            + self.embeddings.maintain().await;
        self.families
            .pool_used
            .set(i64::try_from(used).unwrap_or(i64::MAX));
        used
    }

    /// Keeps the gauges fresh until `cancel`.
    pub(crate) async fn run_maintenance(self: Arc<Self>, cancel: CancellationToken) {
        let mut every = tokio::time::interval(MAINTENANCE_INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        every.tick().await;
        loop {
            self.maintain().await;
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = every.tick() => {}
            }
        }
    }
}

impl<S: Weigh + Clone + Send + Sync + 'static> Pool for CacheManager<S> {
    fn configured_budget(&self) -> u64 {
        self.configured_budget
    }

    fn memory_pressure(&self) -> bool {
        self.memory_pressure.load(Ordering::Relaxed)
    }

    fn set_memory_pressure(&self, pressure: bool) {
        self.memory_pressure.store(pressure, Ordering::Relaxed);
    }

    fn resize(&self, budget: u64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let previous = self.budget.swap(budget, Ordering::Relaxed);
            self.families
                .pool_budget
                .set(i64::try_from(budget).unwrap_or(i64::MAX));
            let [chat_history, similarity, embeddings] = capacities(budget, self.shares);
            self.chat_history.set_capacity(chat_history).await;
            self.similarity.set_capacity(similarity).await;
            self.embeddings.set_capacity(embeddings).await;
            let used = self.maintain().await;
            tracing::info!(previous, budget, used, "memory pool resized");
        })
    }

    fn stats(&self) -> CacheStats {
        let metrics = [
            self.chat_history.metrics(),
            self.similarity.metrics(),
            self.embeddings.metrics(),
        ];
        let hits: u64 = metrics.iter().map(|m| m.hits.get()).sum();
        let requests: u64 = metrics.iter().map(|m| m.requests.get()).sum();
        let entries: i64 = metrics.iter().map(|m| m.entries.get()).sum();
        let misses = requests.saturating_sub(hits);
        CacheStats {
            total_hits: hits,
            total_misses: misses,
            hit_rate: format_hit_rate(hits, misses),
            cache_size: u64::try_from(entries).unwrap_or(0),
            memory_usage_mb: self.families.pool_used.get() as f64 / (1024.0 * 1024.0),
            memory_pressure: self.memory_pressure(),
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod stats_tests {
    use super::format_hit_rate;

    #[test]
    fn hit_rate_has_one_decimal() {
        assert_eq!(format_hit_rate(7, 1), "87.5%");
        assert_eq!(format_hit_rate(0, 0), "0.0%");
        assert_eq!(format_hit_rate(1, 2), "33.3%");
    }
}
