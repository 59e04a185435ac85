//! `[cache]`: the memory budget, and each cache's TTL and share of it; the
//! similarity cache's matching.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;

use super::values::{any_case, byte_size, duration, float};

/// `[cache]`
#[derive(Debug, Clone, SmartDefault, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct CacheConfig {
    #[default(64 << 20)]
    #[serde(with = "byte_size")]
    pub(crate) memory_budget: u64,
    #[default(CacheTable::new(300, 0.25))]
    pub(crate) chat_history: CacheTable,
    pub(crate) similarity: SimilarityTable,
    #[default(CacheTable::new(3600, 0.5))]
    pub(crate) embeddings: CacheTable,
}

/// `[cache.<name>]`: each table's default is its cache's line above.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CacheTable {
    #[serde(with = "duration")]
    pub(crate) ttl: Duration,
    #[serde(deserialize_with = "float::<_, 0, 1, false>")]
    pub(crate) share: f64,
}

impl CacheTable {
    const fn new(ttl_secs: u64, share: f64) -> Self {
        Self {
            ttl: Duration::from_secs(ttl_secs),
            share,
        }
    }
}

/// `[cache.similarity]`: a cache table, plus how a lookup may match.
#[derive(Debug, Clone, SmartDefault, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct SimilarityTable {
    #[default(Duration::from_secs(600))]
    #[serde(with = "duration")]
    pub(crate) ttl: Duration,
    #[default(0.25)]
    #[serde(deserialize_with = "float::<_, 0, 1, false>")]
    pub(crate) share: f64,
    #[serde(deserialize_with = "any_case")]
    pub(crate) mode: SimilarityMode,
    /// Cosine distance (0 = same direction, 2 = opposite), as RedisVL's.
    #[default(0.1)]
    #[serde(deserialize_with = "float::<_, 0, 2, false>")]
    pub(crate) distance_threshold: f64,
    /// Share of semantic hits also answered by Chroma, to measure precision.
    #[default(0.1)]
    #[serde(deserialize_with = "float::<_, 0, 1, false>")]
    pub(crate) verify_fraction: f64,
}

/// `cache.similarity.mode`: what a lookup may answer with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SimilarityMode {
    /// Only the same normalized query text.
    #[default]
    Exact,
    /// Failing that, the cached query nearest in embedding space, within
    /// `distance_threshold`.
    Semantic,
}
