//! The `llmcache_cache_*` and `llmcache_memory_pool_*` metrics. Handles for each
//! cache are resolved once, so the hit path increments plain atomics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::metrics::label_values;

label_values! {
    /// One of the three caches, as the `cache` label spells it.
    pub(crate) enum CacheName {
        ChatHistory => "chat_history",
        Similarity => "similarity",
        Embeddings => "embeddings",
    }
}

label_values! {
    /// Why an entry left a cache, as the `cause` label spells it.
    pub(crate) enum EvictionCause {
        Size => "size",
        Expired => "expired",
        Explicit => "explicit",
        Replaced => "replaced",
    }
}

impl From<moka::notification::RemovalCause> for EvictionCause {
    fn from(cause: moka::notification::RemovalCause) -> Self {
        use moka::notification::RemovalCause as C;
        match cause {
            C::Size => Self::Size,
            C::Expired => Self::Expired,
            C::Explicit => Self::Explicit,
            C::Replaced => Self::Replaced,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    cache: CacheName,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EvictionLabels {
    cache: CacheName,
    cause: EvictionCause,
}

/// Every cache and pool metric family.
#[derive(Clone, Debug)]
pub(crate) struct CacheFamilies {
    requests: Family<CacheLabels, Counter>,
    hits: Family<CacheLabels, Counter>,
    entries: Family<CacheLabels, Gauge>,
    size: Family<CacheLabels, Gauge>,
    capacity: Family<CacheLabels, Gauge>,
    evictions: Family<EvictionLabels, Counter>,
    uncacheable: Family<CacheLabels, Counter>,
    pub(crate) pool_budget: Gauge,
    pub(crate) pool_used: Gauge,
}

impl CacheFamilies {
    /// Registers the families under `registry` (the `llmcache_` namespace),
    /// with every label combination present from the start at zero.
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let families = Self {
            requests: Family::default(),
            hits: Family::default(),
            entries: Family::default(),
            size: Family::default(),
            capacity: Family::default(),
            evictions: Family::default(),
            uncacheable: Family::default(),
            pool_budget: Gauge::default(),
            pool_used: Gauge::default(),
        };
        for cache in CacheName::ALL {
            families.for_cache(*cache);
        }
        registry.register(
            "cache_requests",
            "Cache lookups, one per caller",
            families.requests.clone(),
        );
        registry.register(
            "cache_hits",
            "Cache lookups answered from the cache",
            families.hits.clone(),
        );
        registry.register(
            "cache_entries",
            "Entries in the cache",
            families.entries.clone(),
        );
        registry.register_with_unit(
            "cache_size",
            "Estimated bytes held by the cache (keys, values and per-entry overhead)",
            Unit::Bytes,
            families.size.clone(),
        );
        registry.register_with_unit(
            "cache_capacity",
            "The cache's share of the memory pool budget",
            Unit::Bytes,
            families.capacity.clone(),
        );
        registry.register(
            "cache_evictions",
            "Entries removed from the cache, by cause",
            families.evictions.clone(),
        );
        registry.register(
            "cache_uncacheable",
            "Loaded values larger than the cache's whole capacity, returned but not cached",
            families.uncacheable.clone(),
        );
        registry.register_with_unit(
            "memory_pool_budget",
            "Bytes the caches may hold in total right now",
            Unit::Bytes,
            families.pool_budget.clone(),
        );
        registry.register_with_unit(
            "memory_pool_used",
            "Bytes the caches hold in total",
            Unit::Bytes,
            families.pool_used.clone(),
        );
        families
    }

    /// The handles of one cache.
    pub(crate) fn for_cache(&self, cache: CacheName) -> CacheMetrics {
        let labels = CacheLabels { cache };
        let eviction = |cause| {
            self.evictions
                .get_or_create(&EvictionLabels { cache, cause })
                .clone()
        };
        CacheMetrics {
            requests: self.requests.get_or_create(&labels).clone(),
            hits: self.hits.get_or_create(&labels).clone(),
            entries: self.entries.get_or_create(&labels).clone(),
            size: self.size.get_or_create(&labels).clone(),
            capacity: self.capacity.get_or_create(&labels).clone(),
            uncacheable: self.uncacheable.get_or_create(&labels).clone(),
            // Declaration order, which is `EvictionCause as usize`.
            evicted: [
                EvictionCause::Size,
                EvictionCause::Expired,
                EvictionCause::Explicit,
                EvictionCause::Replaced,
            ]
            .map(eviction),
        }
    }
}

/// One cache's metric handles.
#[derive(Clone, Debug)]
pub(crate) struct CacheMetrics {
    pub(crate) requests: Counter,
    pub(crate) hits: Counter,
    pub(crate) entries: Gauge,
    pub(crate) size: Gauge,
    pub(crate) capacity: Gauge,
    pub(crate) uncacheable: Counter,
    /// Indexed by `EvictionCause as usize`.
    evicted: [Counter; 4],
}

impl CacheMetrics {
    /// Counts one eviction.
    pub(crate) fn evicted(&self, cause: EvictionCause) {
        self.evicted[cause as usize].inc();
    }

    /// Evictions so far for `cause`.
    #[cfg(test)]
    pub(crate) fn evictions(&self, cause: EvictionCause) -> u64 {
        self.evicted[cause as usize].get()
    }
}
