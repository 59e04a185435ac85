//! The `/health` document: what each probe loop last published, plus the cache
//! summary, combined without any backend I/O.
//!
//! The overall status is the worst component's: `unhealthy` (HTTP 503) when any
//! backend is down, `degraded` when something needs a look but the canary still
//! measures (a foreign Chroma collection, INFO refused, memory pressure).

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::watch;

use crate::backends::{ComponentHealth, Status};
use crate::cache::CacheManager;

/// The `cache.stats` object.
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
    fn hit_ratio_percent(&self) -> f64 {
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

/// The `cache` object.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct CacheHealth {
    pub(crate) status: Status,
    pub(crate) details: String,
    pub(crate) stats: CacheStats,
}

impl CacheHealth {
    fn from_stats(stats: CacheStats) -> Self {
        let status = if stats.memory_pressure {
            Status::Degraded
        } else {
            Status::Healthy
        };
        let details = if stats.memory_pressure {
            format!(
                "Cache under memory pressure - {:.1}% hit rate",
                stats.hit_ratio_percent()
            )
        } else {
            format!(
                "Cache operational - {:.1}% hit rate",
                stats.hit_ratio_percent()
            )
        };
        Self {
            status,
            details,
            stats,
        }
    }
}

/// The whole `/health` document.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct HealthReport {
    pub(crate) status: Status,
    pub(crate) redis: ComponentHealth,
    pub(crate) chromadb: ComponentHealth,
    pub(crate) embeddings: ComponentHealth,
    pub(crate) cache: CacheHealth,
}

/// Where the report's parts come from.
#[derive(Clone)]
pub(crate) struct HealthSources {
    pub(crate) redis: watch::Receiver<ComponentHealth>,
    pub(crate) chroma: watch::Receiver<ComponentHealth>,
    pub(crate) embeddings: watch::Receiver<ComponentHealth>,
    pub(crate) cache: Arc<CacheManager>,
}

impl HealthSources {
    /// Assembles the report from the latest snapshots.
    pub(crate) fn report(&self) -> HealthReport {
        let redis = self.redis.borrow().clone();
        let chromadb = self.chroma.borrow().clone();
        let embeddings = self.embeddings.borrow().clone();
        let cache = CacheHealth::from_stats(self.cache.stats());
        let status = [
            redis.status,
            chromadb.status,
            embeddings.status,
            cache.status,
        ]
        .into_iter()
        .max()
        .unwrap_or(Status::Unhealthy);
        HealthReport {
            status,
            redis,
            chromadb,
            embeddings,
            cache,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_rate_has_one_decimal() {
        assert_eq!(format_hit_rate(7, 1), "87.5%");
        assert_eq!(format_hit_rate(0, 0), "0.0%");
        assert_eq!(format_hit_rate(1, 2), "33.3%");
    }

    #[test]
    fn overall_status_is_the_worst_component() {
        let config = crate::config::Config::from_args(["llm-cache-exporter"])
            .unwrap()
            .config;
        let cache = Arc::new(CacheManager::new(
            &config.cache,
            crate::cache::CacheFamilies::register(
                &mut prometheus_client::registry::Registry::default(),
            ),
        ));
        let ok = ComponentHealth {
            status: Status::Healthy,
            details: String::new(),
            latency_ms: None,
            used_memory_mb: None,
        };
        let mut foreign = ok.clone();
        foreign.status = Status::Degraded;
        let embeddings = ok.clone();
        let sources = move |r: ComponentHealth, c: ComponentHealth| HealthSources {
            redis: watch::Sender::new(r).subscribe(),
            chroma: watch::Sender::new(c).subscribe(),
            embeddings: watch::Sender::new(embeddings.clone()).subscribe(),
            cache: cache.clone(),
        };
        assert_eq!(
            sources(ok.clone(), ok.clone()).report().status,
            Status::Healthy
        );
        assert_eq!(
            sources(ok.clone(), foreign).report().status,
            Status::Degraded
        );
        assert_eq!(
            sources(ComponentHealth::down("x".into()), ok)
                .report()
                .status,
            Status::Unhealthy
        );
    }
}
