//! The `llmcache_cache_*` and `llmcache_memory_pool_*` metrics. Handles for each
//! cache are resolved once, so the hit path increments plain atomics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
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

label_values! {
    /// Whether a verified semantic hit served what Chroma would have.
    pub(crate) enum Verification {
        Same => "same",
        Different => "different",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerificationLabels {
    cache: CacheName,
    result: Verification,
}

/// Cosine distances from an exact match (0) to opposite (2), fine where
/// thresholds are set (0.02 to 0.4).
const DISTANCE_BUCKETS: [f64; 15] = [
    0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5,
];

/// Shares of k ids in common, in steps of a tenth.
const OVERLAP_BUCKETS: [f64; 10] = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

fn distance_histogram() -> Histogram {
    Histogram::new(DISTANCE_BUCKETS)
}

fn overlap_histogram() -> Histogram {
    Histogram::new(OVERLAP_BUCKETS)
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
    semantic_hits: Family<CacheLabels, Counter>,
    semantic_distance: Family<CacheLabels, Histogram, fn() -> Histogram>,
    semantic_verifications: Family<VerificationLabels, Counter>,
    semantic_overlap: Family<CacheLabels, Histogram, fn() -> Histogram>,
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
            semantic_hits: Family::default(),
            semantic_distance: Family::new_with_constructor(distance_histogram),
            semantic_verifications: Family::default(),
            semantic_overlap: Family::new_with_constructor(overlap_histogram),
            pool_budget: Gauge::default(),
            pool_used: Gauge::default(),
        };
        for cache in CacheName::ALL {
            families.for_cache(*cache);
        }
        // The semantic series exist only in semantic mode: the similarity
        // cache creates them (`CacheFamilies::semantic`) when it is built so.
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
        registry.register(
            "cache_semantic_hits",
            "Lookups answered by the cached query nearest in embedding space (semantic mode); a subset of hits",
            families.semantic_hits.clone(),
        );
        registry.register(
            "cache_semantic_distance",
            "Cosine distance to the nearest cached query, at each lookup the exact key did not answer (semantic mode)",
            families.semantic_distance.clone(),
        );
        registry.register(
            "cache_semantic_verifications",
            "Semantic hits also asked of the backend: whether its top-k ids were the same set",
            families.semantic_verifications.clone(),
        );
        registry.register(
            "cache_semantic_overlap",
            "Share of the top-k ids a verified semantic hit had in common with the backend's answer",
            families.semantic_overlap.clone(),
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

impl CacheFamilies {
    /// The semantic handles of one cache.
    pub(crate) fn semantic(&self, cache: CacheName) -> SemanticMetrics {
        let labels = CacheLabels { cache };
        let verified = |result| {
            self.semantic_verifications
                .get_or_create(&VerificationLabels { cache, result })
                .clone()
        };
        SemanticMetrics {
            hits: self.semantic_hits.get_or_create(&labels).clone(),
            distance: self.semantic_distance.get_or_create(&labels).clone(),
            same: verified(Verification::Same),
            different: verified(Verification::Different),
            overlap: self.semantic_overlap.get_or_create(&labels).clone(),
        }
    }
}

/// One cache's semantic-mode handles.
#[derive(Clone, Debug)]
pub(crate) struct SemanticMetrics {
    pub(crate) hits: Counter,
    pub(crate) distance: Histogram,
    same: Counter,
    different: Counter,
    pub(crate) overlap: Histogram,
}

impl SemanticMetrics {
    /// Records one verification: the cached top-k ids against the backend's.
    /// The overlap is the share of ids in common out of k, or out of the
    /// longer answer when the collection held fewer than k; two empty
    /// answers agree fully.
    pub(crate) fn verified(&self, cached: &[String], fresh: &[String], k: usize) {
        let common = cached.iter().filter(|id| fresh.contains(id)).count();
        let same = common == cached.len() && common == fresh.len();
        if same { &self.same } else { &self.different }.inc();
        let out_of = k.min(cached.len().max(fresh.len()));
        self.overlap.observe(if out_of == 0 {
            1.0
        } else {
            common as f64 / out_of as f64
        });
    }

    /// Verifications so far: (same, different).
    #[cfg(test)]
    pub(crate) fn verifications(&self) -> (u64, u64) {
        (self.same.get(), self.different.get())
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
