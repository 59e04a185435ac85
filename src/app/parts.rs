//! One generation of the daemon's parts: the metric [`Families`] (once per
//! process), what a configuration builds ([`Parts`]: the canary, if it is
//! enabled, and the fleet's modules), and those parts running
//! ([`Running`]). Building publishes nothing; `start` does.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus_client::metrics::MetricType;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::backends::chroma::ChromaBackend;
use crate::backends::redis::{RedisBackend, RedisMetrics};
use crate::backends::BackendMetrics;
use crate::cache::{CacheFamilies, CacheManager};
use crate::census::{Census, CensusMetrics};
use crate::config::Config;
use crate::embeddings::Embedder;
use crate::fleet::{Fleet, FleetMetrics};
use crate::health::{CanarySources, HealthSources};
use crate::http::connections::ConnectionMetrics;
use crate::memory::{MemoryMetrics, MemoryMonitor};
use crate::metrics::{register_sampled, Metrics, Sampled};
use crate::workload::Caches;
use crate::workload::{Operations, Workload, WorkloadMetrics};

/// The metric families, registered once per process. Every generation of
/// [`Parts`] writes to the same series, so a reload loses no counts.
pub(super) struct Families {
    pub(super) metrics: Arc<Metrics>,
    backend: BackendMetrics,
    redis: RedisMetrics,
    chroma_records: Sampled,
    cache: CacheFamilies,
    workload: WorkloadMetrics,
    memory: MemoryMetrics,
    pub(super) connections: ConnectionMetrics,
    fleet: FleetMetrics,
    census: CensusMetrics,
}

impl Families {
    /// With `canary` off, no backend is reported: none exists.
    pub(super) fn register(canary: bool) -> Self {
        let mut builder = Metrics::builder();
        let backend = BackendMetrics::register(builder.namespace(), canary);
        let redis_samples =
            RedisMetrics::register(builder.namespace().sub_registry_with_prefix("redis"));
        let chroma_records = register_sampled(
            builder.namespace().sub_registry_with_prefix("chroma"),
            "collection_records",
            "Records in the probe collection, from Chroma's count",
            None,
            MetricType::Gauge,
        );
        let cache = CacheFamilies::register(builder.namespace());
        let workload = WorkloadMetrics::register(builder.namespace());
        let memory = MemoryMetrics::register(builder.namespace());
        let connections = ConnectionMetrics::register(builder.namespace());
        let fleet = FleetMetrics::register(builder.namespace());
        let census = CensusMetrics::register(builder.namespace());
        Self {
            metrics: Arc::new(builder.finish()),
            backend,
            redis: redis_samples,
            chroma_records,
            cache,
            workload,
            memory,
            connections,
            fleet,
            census,
        }
    }
}

/// The canary's parts: its backends, cache, embedder, workload and memory
/// monitor.
pub(super) struct Canary {
    redis: Arc<RedisBackend>,
    chroma: Arc<ChromaBackend>,
    pub(super) cache: Arc<Caches>,
    pub(super) embedder: Arc<Embedder>,
    pub(super) workload: Arc<Workload>,
    monitor: MemoryMonitor,
    /// The census of the same Redis and Chroma, if `census.interval` is set.
    census: Option<Arc<Census>>,
    cleanup_on_exit: bool,
}

/// Everything a configuration builds, but not yet running.
pub(super) struct Parts {
    /// `None` with `canary.enabled = false`.
    pub(super) canary: Option<Canary>,
    pub(super) fleet: Arc<Fleet>,
}

/// What a reload carries over from the running generation.
#[derive(Default)]
pub(super) struct Kept {
    /// The cache, when what it holds still means the same.
    pub(super) cache: Option<Arc<Caches>>,
    /// The embedder, when its settings did not change: with its health,
    /// which an OpenAI-compatible provider learns only from real calls.
    pub(super) embedder: Option<Arc<Embedder>>,
}

impl Parts {
    /// Builds every part from `config`, reusing what `kept` holds. Makes no
    /// backend request and publishes nothing: a generation that is built
    /// may never run (a reload that fails further on).
    pub(super) fn build(config: &Config, families: &Families, kept: Kept) -> anyhow::Result<Self> {
        let canary = if config.canary.enabled {
            Some(Canary::build(config, families, kept)?)
        } else {
            None
        };
        Ok(Self {
            canary,
            fleet: Arc::new(Fleet::new(&config.probe, families.fleet.clone())),
        })
    }

    pub(super) fn health(&self) -> HealthSources {
        HealthSources {
            canary: self.canary.as_ref().map(|canary| CanarySources {
                redis: canary.redis.health(),
                chroma: canary.chroma.health(),
                embeddings: canary.embedder.health(),
                cache: canary.cache.clone(),
            }),
        }
    }

    /// Spawns the loops: the fleet's secrets watcher, and the canary's
    /// probes, cache maintenance, workload and memory monitor.
    pub(super) fn start(self) -> Running {
        let cancel = CancellationToken::new();
        let mut loops = JoinSet::new();
        loops.spawn(self.fleet.watch_secrets(cancel.clone()));
        let canary = self.canary.map(|canary| {
            canary.embedder.start();
            loops.spawn(canary.redis.clone().run_probe(cancel.clone()));
            loops.spawn(canary.chroma.clone().run_probe(cancel.clone()));
            loops.spawn(canary.cache.clone().run_maintenance(cancel.clone()));
            loops.spawn(canary.workload.clone().run(cancel.clone()));
            loops.spawn(canary.monitor.run(cancel.clone()));
            if let Some(census) = canary.census {
                loops.spawn(census.run(cancel.clone()));
            }
            RunningCanary {
                cache: canary.cache,
                embedder: canary.embedder,
                workload: canary.workload,
                cleanup_on_exit: canary.cleanup_on_exit,
            }
        });
        Running {
            canary,
            cancel,
            loops,
        }
    }
}

impl Canary {
    fn build(config: &Config, families: &Families, kept: Kept) -> anyhow::Result<Self> {
        let cache = kept
            .cache
            .unwrap_or_else(|| Arc::new(CacheManager::new(&config.cache, families.cache.clone())));
        let redis = Arc::new(
            RedisBackend::new(
                &config.redis,
                families.backend.clone(),
                families.redis.clone(),
            )
            .context("cannot set up the Redis client")?,
        );
        let monitor = MemoryMonitor::new(
            &config.memory,
            cache.clone(),
            redis.info(),
            families.memory.clone(),
        );
        let chroma = Arc::new(
            ChromaBackend::new(
                &config.chroma,
                families.backend.clone(),
                families.chroma_records.clone(),
            )
            .context("cannot set up the Chroma client")?,
        );
        let embedder = match kept.embedder {
            Some(embedder) => embedder,
            None => Arc::new(
                Embedder::new(&config.embeddings, families.backend.clone())
                    .context("cannot set up the embedder")?,
            ),
        };
        let ops = Arc::new(Operations::new(
            config,
            redis.clone(),
            chroma.clone(),
            cache.clone(),
            embedder.clone(),
            families.workload.clone(),
        ));
        let workload = Arc::new(Workload::new(
            config,
            ops,
            families.workload.clone(),
            monitor.rss(),
        ));
        // census.interval 0s: no census, and no clients for it.
        let census = (!config.census.interval.is_zero())
            .then(|| {
                Census::new(
                    &config.census,
                    &config.redis,
                    &config.chroma,
                    families.census.clone(),
                )
            })
            .transpose()
            .context("cannot set up the census")?
            .map(Arc::new);
        Ok(Self {
            redis,
            chroma,
            cache,
            embedder,
            workload,
            monitor,
            census,
            cleanup_on_exit: config.workload.cleanup_on_exit,
        })
    }
}

/// The canary's parts a running generation still needs.
pub(super) struct RunningCanary {
    pub(super) cache: Arc<Caches>,
    pub(super) embedder: Arc<Embedder>,
    workload: Arc<Workload>,
    cleanup_on_exit: bool,
}

/// One generation's loops, running.
pub(super) struct Running {
    pub(super) canary: Option<RunningCanary>,
    cancel: CancellationToken,
    loops: JoinSet<()>,
}

impl Running {
    /// Stops the loops and lets operations in flight finish (bounded).
    pub(super) async fn stop(mut self) -> Self {
        self.cancel.cancel();
        let drained = tokio::time::timeout(Duration::from_secs(4), async {
            while self.loops.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("background loops did not stop within 4 s");
        }
        self
    }

    /// Removes the probe's data, if configured (bounded).
    pub(super) async fn cleanup(&self) {
        let Some(canary) = self.canary.as_ref().filter(|c| c.cleanup_on_exit) else {
            return;
        };
        // Boxed: the cleanup's future nests every client layer, deeper than
        // the compiler's default limit allows inside `App::run`'s.
        let cleanup = Box::pin(canary.workload.cleanup());
        if tokio::time::timeout(Duration::from_secs(5), cleanup)
            .await
            .is_err()
        {
            tracing::warn!(
                "cleanup did not finish within 5 s; the probe's keys expire by their TTL"
            );
        }
    }
}
