//! Freshness by generation stamps. A write bumps a generation (per key, or
//! global) *before* invalidating; every loaded value carries the generation
//! read *before* its backend read began. A caller reads the generation when it
//! starts and accepts a cached or coalesced value only if the value's stamp is
//! at least that: such a value's backend read began after every write that had
//! finished when the caller started. Invalidation then only frees memory; the
//! stamps are what guarantee that a finished write is never hidden.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// How a cache learns that its entries went stale.
pub(crate) enum Freshness {
    /// Values never change (embeddings of a text).
    Immutable,
    /// A write to one key makes that key stale (chat history of a session).
    /// Keys hash onto stripes, so the table stays small; a write to a key only
    /// costs other keys on its stripe a spurious miss.
    PerKey(Box<[AtomicU64]>),
    /// Any write makes every entry stale (similarity results).
    Global(AtomicU64),
}

impl Freshness {
    /// Per-key freshness with 4096 stripes (32 KiB).
    pub(crate) fn per_key() -> Self {
        Self::PerKey((0..4096).map(|_| AtomicU64::new(0)).collect())
    }

    /// Global freshness.
    pub(crate) fn global() -> Self {
        Self::Global(AtomicU64::new(0))
    }

    fn slot(&self, key: &str) -> Option<&AtomicU64> {
        match self {
            Self::Immutable => None,
            Self::Global(generation) => Some(generation),
            Self::PerKey(stripes) => {
                let mut hasher = DefaultHasher::new();
                key.hash(&mut hasher);
                stripes.get((hasher.finish() % stripes.len() as u64) as usize)
            }
        }
    }

    pub(super) fn current(&self, key: &str) -> u64 {
        self.slot(key).map_or(0, |g| g.load(Ordering::Acquire))
    }

    pub(super) fn bump(&self, key: &str) {
        if let Some(generation) = self.slot(key) {
            generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Makes every entry stale, whichever way keys map to generations.
    pub(super) fn bump_all(&self) {
        let all: &[AtomicU64] = match self {
            Self::Immutable => &[],
            Self::Global(generation) => std::slice::from_ref(generation),
            Self::PerKey(stripes) => stripes,
        };
        for generation in all {
            generation.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// A cached value with the generation its load started at. moka's
/// `time_to_live` expires entries; an entry copied into a new cache by a
/// resize carries its original `deadline`, which lookups enforce, so a resize
/// never extends an entry's life.
#[derive(Clone)]
pub(crate) struct Stamped<V> {
    pub(super) value: V,
    pub(super) generation: u64,
    pub(super) loaded_at: Instant,
    pub(super) deadline: Option<Instant>,
}

impl<V> Stamped<V> {
    pub(super) fn is_current(&self, floor: u64) -> bool {
        self.generation >= floor
            && self
                .deadline
                .is_none_or(|deadline| deadline > Instant::now())
    }
}

impl<V> Stamped<V> {
    /// A value loaded now at generation 0 (for benchmarks).
    #[cfg(feature = "bench")]
    pub(crate) fn new(value: V) -> Self {
        Self {
            value,
            generation: 0,
            loaded_at: Instant::now(),
            deadline: None,
        }
    }
}
