//! The `/health` document: what each probe loop last published, plus the cache
//! summary, combined without any backend I/O.
//!
//! The overall status is the worst component's: `unhealthy` (HTTP 503) when any
//! backend is down, `degraded` when something needs a look but the canary still
//! measures (a foreign Chroma collection, INFO refused, memory pressure).

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::watch;

use crate::backends::probe::{ComponentHealth, Status};
use crate::cache::{CacheStats, Pool};

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
                stats.hit_rate_percent()
            )
        } else {
            format!(
                "Cache operational - {:.1}% hit rate",
                stats.hit_rate_percent()
            )
        };
        Self {
            status,
            details,
            stats,
        }
    }
}

/// The whole `/health` document: the canary's components, or (with
/// `canary.enabled = false`) none, since those backends do not exist.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct HealthReport {
    pub(crate) status: Status,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub(crate) canary: Option<CanaryHealth>,
}

/// The canary's components in `/health`.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct CanaryHealth {
    pub(crate) redis: ComponentHealth,
    pub(crate) chromadb: ComponentHealth,
    pub(crate) embeddings: ComponentHealth,
    pub(crate) cache: CacheHealth,
}

impl HealthReport {
    /// Whether `/health` answers 200 (healthy or degraded) rather than 503.
    pub(crate) fn serves_ok(&self) -> bool {
        self.status != Status::Unhealthy
    }
}

/// Where the report's parts come from: the canary's, if it runs.
#[derive(Clone, Default)]
pub(crate) struct HealthSources {
    pub(crate) canary: Option<CanarySources>,
}

/// The canary's components' published states, and its cache.
#[derive(Clone)]
pub(crate) struct CanarySources {
    pub(crate) redis: watch::Receiver<ComponentHealth>,
    pub(crate) chroma: watch::Receiver<ComponentHealth>,
    pub(crate) embeddings: watch::Receiver<ComponentHealth>,
    pub(crate) cache: Arc<dyn Pool>,
}

impl HealthSources {
    /// Assembles the report from the latest snapshots. Without a canary the
    /// daemon is healthy while it serves.
    pub(crate) fn report(&self) -> HealthReport {
        let Some(sources) = &self.canary else {
            return HealthReport {
                status: Status::Healthy,
                canary: None,
            };
        };
        let redis = sources.redis.borrow().clone();
        let chromadb = sources.chroma.borrow().clone();
        let embeddings = sources.embeddings.borrow().clone();
        let cache = CacheHealth::from_stats(sources.cache.stats());
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
            canary: Some(CanaryHealth {
                redis,
                chromadb,
                embeddings,
                cache,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;

    use super::*;

    /// Aggregation needs only the numbers: a pool that never had a lookup.
    struct Idle;

    impl Pool for Idle {
        fn configured_budget(&self) -> u64 {
            0
        }
        fn memory_pressure(&self) -> bool {
            false
        }
        fn set_memory_pressure(&self, _: bool) {}
        fn resize(&self, _: u64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
            Box::pin(async {})
        }
        fn stats(&self) -> CacheStats {
            CacheStats::default()
        }
    }

    #[test]
    fn overall_status_is_the_worst_component() {
        let ok = ComponentHealth::new(Status::Healthy, String::new(), None);
        let foreign = ComponentHealth::new(Status::Degraded, String::new(), None);
        let sources = |r: &ComponentHealth, c: &ComponentHealth| HealthSources {
            canary: Some(CanarySources {
                redis: watch::Sender::new(r.clone()).subscribe(),
                chroma: watch::Sender::new(c.clone()).subscribe(),
                embeddings: watch::Sender::new(ok.clone()).subscribe(),
                cache: Arc::new(Idle),
            }),
        };
        assert_eq!(sources(&ok, &ok).report().status, Status::Healthy);
        assert_eq!(sources(&ok, &foreign).report().status, Status::Degraded);
        let down = ComponentHealth::down("x".into());
        assert_eq!(sources(&down, &ok).report().status, Status::Unhealthy);
        // No canary: nothing to report but that the daemon serves.
        let none = HealthSources::default().report();
        assert_eq!(none.status, Status::Healthy);
        assert_eq!(
            serde_json::to_value(&none).unwrap(),
            serde_json::json!({"status": "healthy"})
        );
    }
}
