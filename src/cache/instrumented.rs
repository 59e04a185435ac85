//! One instrumented cache: moka underneath (TinyLFU admission, weighted
//! capacity, per-entry expiry), with exact per-caller accounting, coalesced
//! loads, write-safe freshness, and a capacity that can change at run time.
//! Freshness is by generation stamps ([`super::freshness`]).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use moka::future::Cache;

pub(crate) use super::freshness::{Freshness, Stamped};
use super::metrics::{CacheMetrics, CacheName, SemanticMetrics};
use super::semantic::{DimensionMismatch, SemanticIndex};

/// Heap bytes moka and this module spend per entry beyond the key and the
/// value: moka's entry, its deque and timer-wheel nodes, its hash table's
/// share (which grows in powers of two), and the stamp. Measured with a
/// counting allocator by `cargo bench --features bench --bench memory`.
pub(crate) const ENTRY_OVERHEAD: usize = 400;

/// Heap bytes glibc's malloc takes for a request of `size` bytes: the request
/// and an 8-byte header, rounded up to 16, at least 32.
pub(crate) const fn heap(size: usize) -> usize {
    if size == 0 {
        0
    } else if size + 8 <= 32 {
        32
    } else {
        (size + 8 + 15) & !15
    }
}

/// What a key costs: moka keeps it in an `Arc<String>`.
fn key_cost(key: &str) -> usize {
    heap(16 + 24) + heap(key.len())
}

/// How many bytes a value holds, for the weigher.
pub(crate) trait Weigh {
    /// The heap bytes the value owns, as malloc takes them ([`heap`]).
    fn weight(&self) -> usize;
}

/// What a cache lookup found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// Answered from the cache.
    Hit,
    /// Answered from the cache by the entry of another key nearby in
    /// embedding space (semantic mode).
    SemanticHit,
    /// Loaded from the backend (or from a concurrent caller's load).
    Miss,
}

impl Lookup {
    /// `hit` or `miss`, for logs.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::SemanticHit => "semantic_hit",
            Self::Miss => "miss",
        }
    }
}

/// A moka cache configured as the instrumented ones are, without any
/// instrumentation: the benchmark's baseline.
#[cfg(feature = "bench")]
pub(crate) fn bare_moka<V: Weigh + Clone + Send + Sync + 'static>(
    capacity: u64,
    ttl: Duration,
) -> Cache<String, Stamped<V>> {
    Cache::builder()
        .max_capacity(capacity)
        .weigher(|key: &String, value: &Stamped<V>| {
            u32::try_from(weigh(key, value)).unwrap_or(u32::MAX)
        })
        .time_to_live(ttl)
        .build()
}

/// Why a load produced nothing to cache.
enum LoadError<V, E> {
    /// The backend failed: nothing is cached, the caller sees the error.
    Failed(E),
    /// The value is larger than the cache's whole capacity: every coalesced
    /// caller gets it, the cache does not keep it.
    Oversize(Stamped<V>),
}

/// Loads beyond this many stale coalesced answers go straight to the backend.
const COALESCED_ATTEMPTS: usize = 3;

/// Semantic matching: a lookup the exact key misses may be answered by the
/// cached key nearest in embedding space, within `threshold`.
pub(crate) struct Semantic {
    pub(crate) index: SemanticIndex,
    /// Cosine distance.
    pub(crate) threshold: f32,
    pub(crate) metrics: SemanticMetrics,
}

/// A semantic lookup's query: the matching, the query's embedding, and how
/// a dimension mismatch becomes the caller's error.
struct Near<'a, E> {
    semantic: &'a Semantic,
    embedding: &'a [f32],
    mismatch: fn(DimensionMismatch) -> E,
}

/// A named, instrumented, resizable cache of `String` keys.
pub(crate) struct InstrumentedCache<V> {
    name: CacheName,
    ttl: Duration,
    freshness: Freshness,
    capacity: AtomicU64,
    inner: ArcSwap<Cache<String, Stamped<V>>>,
    resizing: tokio::sync::Mutex<()>,
    metrics: CacheMetrics,
    semantic: Option<Semantic>,
}

/// The weight of `key` holding `value`, as the weigher sees it.
#[cfg(feature = "bench")]
pub(crate) fn weigh_entry<V: Weigh>(key: &str, value: &V) -> u64 {
    (ENTRY_OVERHEAD + key_cost(key) + value.weight()) as u64
}

fn weigh<V: Weigh>(key: &str, value: &Stamped<V>) -> u64 {
    (ENTRY_OVERHEAD + key_cost(key) + value.value.weight()) as u64
}

impl<V: Weigh + Clone + Send + Sync + 'static> InstrumentedCache<V> {
    /// An empty cache holding at most `capacity` bytes.
    pub(crate) fn new(
        name: CacheName,
        ttl: Duration,
        capacity: u64,
        freshness: Freshness,
        metrics: CacheMetrics,
    ) -> Self {
        // Nothing is published here: a reload may build a cache that never
        // runs. The gauges are written by `maintain`, from `start` on.
        Self {
            name,
            ttl,
            freshness,
            capacity: AtomicU64::new(capacity),
            inner: ArcSwap::from_pointee(build(capacity, ttl, &metrics)),
            resizing: tokio::sync::Mutex::new(()),
            metrics,
            semantic: None,
        }
    }

    /// The same cache, answering misses from near keys too.
    pub(crate) fn with_semantic(mut self, semantic: Semantic) -> Self {
        self.semantic = Some(semantic);
        self
    }

    /// The semantic matching, in semantic mode.
    pub(crate) fn semantic(&self) -> Option<&Semantic> {
        self.semantic.as_ref()
    }

    /// `key`'s value if the cache holds a current one; a stale one is dropped.
    async fn cached(&self, cache: &Cache<String, Stamped<V>>, key: &str, floor: u64) -> Option<V> {
        match cache.get(key).await {
            Some(stamped) if stamped.is_current(floor) => Some(stamped.value),
            Some(_) => {
                // Loaded before a write that has finished since, or past
                // its deadline: never serve it.
                cache.invalidate(key).await;
                None
            }
            None => None,
        }
    }

    /// As [`Self::get_or_load`], but a miss on `key` is answered by the
    /// cached key nearest `embedding` when it lies within the semantic
    /// threshold (a [`Lookup::SemanticHit`], counted as a hit), and a loaded
    /// value is remembered under `embedding`. Without semantic matching this
    /// is `get_or_load`. An embedding of another dimension than the cached
    /// ones fails this lookup.
    pub(crate) async fn get_or_load_near<F, Fut, E>(
        &self,
        key: &str,
        embedding: &[f32],
        load: F,
    ) -> Result<(V, Lookup), E>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<V, E>>,
        E: Clone + Send + Sync + 'static + From<DimensionMismatch>,
    {
        let near = self.semantic.as_ref().map(|semantic| Near {
            semantic,
            embedding,
            mismatch: E::from,
        });
        self.lookup(key, near, load).await
    }

    /// The cached value for `key`, or the value `load` produces (cached unless
    /// it is larger than the whole capacity). Counts one request and one hit
    /// or miss for this caller. Concurrent misses on one key share one load; a
    /// failed load caches nothing and every caller sharing it gets the error.
    pub(crate) async fn get_or_load<F, Fut, E>(&self, key: &str, load: F) -> Result<(V, Lookup), E>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<V, E>>,
        E: Clone + Send + Sync + 'static,
    {
        self.lookup(key, None, load).await
    }

    /// One lookup: `key`'s own entry, then (with `near`) its semantic
    /// neighbour's, then `load`.
    async fn lookup<F, Fut, E>(
        &self,
        key: &str,
        near: Option<Near<'_, E>>,
        load: F,
    ) -> Result<(V, Lookup), E>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<V, E>>,
        E: Clone + Send + Sync + 'static,
    {
        // The clock and size reads feed only the debug event; skip them when
        // it is off, so the hit path stays close to a bare moka get.
        let debug = tracing::enabled!(tracing::Level::DEBUG);
        let started = debug.then(Instant::now);
        // A guard, not a refcount: arc-swap's fast path, and a fallback to a
        // full reference when this thread's guard slots are all in use.
        let cache = self.inner.load();
        let floor = self.freshness.current(key);
        let bytes_before = if debug { cache.weighted_size() } else { 0 };
        self.metrics.requests.inc();
        let mut lookup = Lookup::Miss;
        let result = match self.cached(&cache, key, floor).await {
            Some(value) => {
                self.metrics.hits.inc();
                lookup = Lookup::Hit;
                Ok(value)
            }
            None => match self.neighbour(&cache, near.as_ref()).await {
                Ok(Some(value)) => {
                    self.metrics.hits.inc();
                    lookup = Lookup::SemanticHit;
                    Ok(value)
                }
                Ok(None) => {
                    let loaded = self.load(&cache, key, floor, &load).await;
                    // With caching off nothing is kept: nothing to find.
                    if let (Ok(_), Some(near)) = (&loaded, &near) {
                        if self.capacity.load(Ordering::Relaxed) > 0 {
                            near.semantic.index.insert(key, near.embedding);
                        }
                    }
                    loaded
                }
                Err(err) => Err(err),
            },
        };
        if let Some(started) = started {
            tracing::debug!(
                operation = "get_or_load",
                cache = self.name.as_str(),
                outcome = lookup.as_str(),
                ok = result.is_ok(),
                duration_us = started.elapsed().as_micros() as u64,
                bytes_before,
                bytes_after = cache.weighted_size(),
                "cache lookup"
            );
        }
        result.map(|value| (value, lookup))
    }

    /// The current value of the cached key nearest `near.embedding`, if it
    /// lies within the threshold; a neighbour found gone is forgotten.
    async fn neighbour<E>(
        &self,
        cache: &Cache<String, Stamped<V>>,
        near: Option<&Near<'_, E>>,
    ) -> Result<Option<V>, E> {
        let Some(Near {
            semantic,
            embedding,
            mismatch,
        }) = near
        else {
            return Ok(None);
        };
        let Some((key, distance)) = semantic.index.nearest(embedding).map_err(mismatch)? else {
            return Ok(None);
        };
        semantic.metrics.distance.observe(f64::from(distance));
        if distance > semantic.threshold {
            return Ok(None);
        }
        let value = self.cached(cache, &key, self.freshness.current(&key)).await;
        match &value {
            Some(_) => {
                semantic.metrics.hits.inc();
            }
            // Evicted, expired or stale since it was indexed.
            None => semantic.index.remove(&key),
        }
        Ok(value)
    }

    async fn load<F, Fut, E>(
        &self,
        cache: &Cache<String, Stamped<V>>,
        key: &str,
        floor: u64,
        load: &F,
    ) -> Result<V, E>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<V, E>>,
        E: Clone + Send + Sync + 'static,
    {
        if self.capacity.load(Ordering::Relaxed) == 0 {
            // Caching is off: nothing could be kept, so skip moka entirely.
            return load().await;
        }
        for _ in 0..COALESCED_ATTEMPTS {
            let capacity = self.capacity.load(Ordering::Relaxed);
            let init = async {
                let generation = self.freshness.current(key);
                let value = load().await.map_err(LoadError::Failed)?;
                let stamped = Stamped {
                    value,
                    generation,
                    loaded_at: Instant::now(),
                    deadline: None,
                };
                if weigh(key, &stamped) > capacity {
                    Err(LoadError::Oversize(stamped))
                } else {
                    Ok(stamped)
                }
            };
            let stamped = match cache.entry(key.to_owned()).or_try_insert_with(init).await {
                Ok(entry) => entry.into_value(),
                Err(err) => match &*err {
                    LoadError::Failed(err) => return Err(err.clone()),
                    LoadError::Oversize(stamped) => {
                        self.metrics.uncacheable.inc();
                        tracing::debug!(
                            cache = self.name.as_str(),
                            bytes = weigh(key, stamped),
                            capacity,
                            "value larger than the cache's capacity; not cached"
                        );
                        stamped.clone()
                    }
                },
            };
            if stamped.is_current(floor) {
                return Ok(stamped.value);
            }
            cache.invalidate(key).await;
        }
        // Writes keep racing this key; answer from the backend directly.
        load().await
    }

    /// Marks `key` stale (for every caller that starts from now on) and drops it.
    pub(crate) async fn invalidate(&self, key: &str) {
        self.freshness.bump(key);
        self.inner.load().invalidate(key).await;
    }

    /// Marks every entry stale and drops them all.
    pub(crate) fn invalidate_all(&self) {
        self.freshness.bump_all();
        self.inner.load().invalidate_all();
        if let Some(semantic) = &self.semantic {
            semantic.index.clear();
        }
    }

    /// Moves the cache to a new capacity. moka cannot change a cache's
    /// capacity in place, so this builds a cache of the new size, copies the
    /// live entries over (keeping their deadlines), swaps it in, and runs
    /// moka's maintenance so the new cache evicts down to its capacity before
    /// this returns. Lookups during the copy keep using the old cache.
    pub(crate) async fn set_capacity(&self, capacity: u64) {
        let _one_at_a_time = self.resizing.lock().await;
        if self.capacity.load(Ordering::Relaxed) == capacity {
            return;
        }
        let old = self.inner.load_full();
        let new = build(capacity, self.ttl, &self.metrics);
        let now = Instant::now();
        for (key, mut stamped) in old.iter() {
            let deadline = stamped.deadline.unwrap_or(stamped.loaded_at + self.ttl);
            if deadline > now && weigh(&key, &stamped) <= capacity {
                stamped.deadline = Some(deadline);
                new.insert(key.as_ref().clone(), stamped).await;
            }
        }
        self.capacity.store(capacity, Ordering::Relaxed);
        self.inner.store(Arc::new(new.clone()));
        new.run_pending_tasks().await;
        self.metrics
            .capacity
            .set(i64::try_from(capacity).unwrap_or(i64::MAX));
        self.publish(&new);
    }

    /// Runs moka's pending maintenance (evictions, expiries) and updates the
    /// gauges. Returns the bytes held.
    pub(crate) async fn maintain(&self) -> u64 {
        let cache = self.inner.load_full();
        cache.run_pending_tasks().await;
        self.publish(&cache)
    }

    fn publish(&self, cache: &Cache<String, Stamped<V>>) -> u64 {
        let bytes = cache.weighted_size();
        self.metrics
            .capacity
            .set(i64::try_from(self.capacity.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
        self.metrics
            .entries
            .set(i64::try_from(cache.entry_count()).unwrap_or(i64::MAX));
        self.metrics
            .size
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        bytes
    }

    /// The current capacity in bytes.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> u64 {
        self.capacity.load(Ordering::Relaxed)
    }

    /// The metric handles (for `/health` and tests).
    pub(crate) fn metrics(&self) -> &CacheMetrics {
        &self.metrics
    }
}

fn build<V: Weigh + Clone + Send + Sync + 'static>(
    capacity: u64,
    ttl: Duration,
    metrics: &CacheMetrics,
) -> Cache<String, Stamped<V>> {
    let listener_metrics = metrics.clone();
    Cache::builder()
        .max_capacity(capacity)
        .weigher(|key: &String, value: &Stamped<V>| {
            u32::try_from(weigh(key, value)).unwrap_or(u32::MAX)
        })
        .time_to_live(ttl)
        .eviction_listener(move |_key, _value, cause| listener_metrics.evicted(cause.into()))
        .build()
}
