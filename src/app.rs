//! Wiring: [`App::build`] turns a [`Config`] into every part of the daemon and
//! binds the listener; [`App::run`] runs the probe loops, the cache
//! maintenance, the workload and the HTTP server until the shutdown future
//! resolves, then cleans up. [`App::once`] runs each operation once instead.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus_client::metrics::MetricType;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::backends::chroma::ChromaBackend;
use crate::backends::redis::{InfoSamples, RedisBackend};
use crate::backends::BackendMetrics;
use crate::cache::CacheManager;
use crate::config::Config;
use crate::embeddings::Embedder;
use crate::health::HealthSources;
use crate::http::{router, HttpState};
use crate::memory::MemoryMonitor;
use crate::metrics::{register_sampled, Metrics};
use crate::workload::{Operations, Workload, WorkloadMetrics};

/// Everything but the listener: shared by the daemon and `--once`.
struct Parts {
    metrics: Arc<Metrics>,
    redis: Arc<RedisBackend>,
    chroma: Arc<ChromaBackend>,
    cache: Arc<CacheManager>,
    embedder: Arc<Embedder>,
    workload: Arc<Workload>,
    monitor: MemoryMonitor,
    cleanup_on_exit: bool,
}

impl Parts {
    /// Builds every source, registering its metrics in this order. Makes no
    /// backend request.
    fn build(config: &Config) -> anyhow::Result<Self> {
        // One TLS provider for reqwest and redis-rs; an error only means a
        // provider is already installed (a second App in the same process).
        let _ = rustls::crypto::ring::default_provider().install_default();

        let mut builder = Metrics::builder();
        let backend_metrics = BackendMetrics::register(builder.namespace());
        let redis_samples =
            InfoSamples::register(builder.namespace().sub_registry_with_prefix("redis"));
        let chroma_records = register_sampled(
            builder.namespace().sub_registry_with_prefix("chroma"),
            "collection_records",
            "Records in the probe collection, from Chroma's count",
            None,
            MetricType::Gauge,
        );
        let cache = Arc::new(CacheManager::new(&config.cache, builder.namespace()));
        let workload_metrics = WorkloadMetrics::register(builder.namespace());
        let redis = Arc::new(
            RedisBackend::new(&config.redis, backend_metrics.clone(), redis_samples)
                .context("cannot set up the Redis client")?,
        );
        let monitor = MemoryMonitor::new(
            &config.memory,
            cache.clone(),
            redis.info(),
            builder.namespace(),
        );
        let metrics = Arc::new(builder.finish());
        let chroma = Arc::new(
            ChromaBackend::new(&config.chroma, backend_metrics.clone(), chroma_records)
                .context("cannot set up the Chroma client")?,
        );
        let embedder = Arc::new(
            Embedder::new(&config.embeddings, backend_metrics)
                .context("cannot set up the embedder")?,
        );
        let ops = Arc::new(Operations::new(
            config,
            redis.clone(),
            chroma.clone(),
            cache.clone(),
            embedder.clone(),
        ));
        let workload = Arc::new(Workload::new(config, ops, workload_metrics, monitor.rss()));
        Ok(Self {
            metrics,
            redis,
            chroma,
            cache,
            embedder,
            workload,
            monitor,
            cleanup_on_exit: config.workload.cleanup_on_exit,
        })
    }
}

/// The daemon, built and bound, not yet running.
pub struct App {
    listener: TcpListener,
    addr: SocketAddr,
    parts: Parts,
    http: HttpState,
}

/// What `--once` found.
#[derive(Debug)]
pub struct OnceOutcome {
    /// The JSON report, for stdout.
    pub report: String,
    /// Whether every operation succeeded.
    pub ok: bool,
}

impl App {
    /// Builds every part from `config` and binds the listen address. Makes no
    /// backend request: backends that are down are reported, not fatal.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let parts = Parts::build(&config)?;
        let listener = TcpListener::bind(config.web.listen_address)
            .await
            .with_context(|| format!("cannot listen on {}", config.web.listen_address))?;
        let addr = listener
            .local_addr()
            .context("cannot read the bound address")?;
        let http = HttpState {
            metrics: parts.metrics.clone(),
            health: HealthSources {
                redis: parts.redis.health(),
                chroma: parts.chroma.health(),
                embeddings: parts.embedder.health(),
                cache: parts.cache.clone(),
            },
            ready: Arc::new(AtomicBool::new(false)),
        };
        Ok(Self {
            listener,
            addr,
            parts,
            http,
        })
    }

    /// Runs each operation once against the configured backends, without
    /// serving HTTP, and reports.
    pub async fn once(config: Config) -> anyhow::Result<OnceOutcome> {
        let parts = Parts::build(&config)?;
        let report = parts.workload.once().await;
        let ok = report.ok;
        let report = serde_json::to_string_pretty(&report).context("cannot encode the report")?;
        Ok(OnceOutcome { report, ok })
    }

    /// The address the HTTP server is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Runs until `shutdown` resolves; then stops the loops, lets operations
    /// in flight finish (bounded), and cleans up if configured.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let parts = self.parts;
        let cancel = CancellationToken::new();
        let mut loops = JoinSet::new();
        loops.spawn(parts.redis.clone().run_probe(cancel.clone()));
        loops.spawn(parts.chroma.clone().run_probe(cancel.clone()));
        loops.spawn(parts.cache.clone().run_maintenance(cancel.clone()));
        loops.spawn(parts.workload.clone().run(cancel.clone()));
        loops.spawn(parts.monitor.run(cancel.clone()));
        self.http.ready.store(true, Ordering::Relaxed);
        tracing::info!(address = %self.addr, version = env!("CARGO_PKG_VERSION"), "listening");

        let app = router(self.http.clone());
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .context("the HTTP server failed");

        tracing::info!("shutting down");
        self.http.ready.store(false, Ordering::Relaxed);
        cancel.cancel();
        let drained = tokio::time::timeout(Duration::from_secs(4), async {
            while loops.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("background loops did not stop within 4 s");
        }
        if parts.cleanup_on_exit
            && tokio::time::timeout(Duration::from_secs(5), parts.workload.cleanup())
                .await
                .is_err()
        {
            tracing::warn!(
                "cleanup did not finish within 5 s; the probe's keys expire by their TTL"
            );
        }
        served
    }
}
