//! Wiring: [`App::build`] turns a [`Config`] into every part of the daemon and
//! binds the listener; [`App::run`] runs the probe loops and the HTTP server
//! until the shutdown future resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus_client::metrics::MetricType;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::backends::chroma::ChromaBackend;
use crate::backends::redis::{InfoSamples, RedisBackend};
use crate::backends::{Backend, BackendMetrics, ComponentHealth, Status};
use crate::cache::CacheManager;
use crate::config::{Config, EmbeddingsProvider};
use crate::health::HealthSources;
use crate::http::{router, HttpState};
use crate::metrics::{register_sampled, Metrics};

/// The daemon, built and bound, not yet running.
pub struct App {
    listener: TcpListener,
    addr: SocketAddr,
    redis: Arc<RedisBackend>,
    chroma: Arc<ChromaBackend>,
    cache: Arc<CacheManager>,
    http: HttpState,
    /// Held so the embeddings health channel stays open.
    _embeddings: watch::Sender<ComponentHealth>,
}

impl App {
    /// Builds every part from `config` and binds the listen address. Makes no
    /// backend request: backends that are down are reported, not fatal.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
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
        let metrics = Arc::new(builder.finish());

        let redis = RedisBackend::new(&config.redis, backend_metrics.clone(), redis_samples)
            .context("cannot set up the Redis client")?;
        let chroma = ChromaBackend::new(&config.chroma, backend_metrics.clone(), chroma_records)
            .context("cannot set up the Chroma client")?;
        let embeddings = watch::Sender::new(embeddings_health(&config));
        backend_metrics.set_up(
            Backend::Embeddings,
            embeddings.borrow().status != Status::Unhealthy,
        );

        let listener = TcpListener::bind(config.web.listen_address)
            .await
            .with_context(|| format!("cannot listen on {}", config.web.listen_address))?;
        let addr = listener
            .local_addr()
            .context("cannot read the bound address")?;
        let http = HttpState {
            metrics,
            health: HealthSources {
                redis: redis.health(),
                chroma: chroma.health(),
                embeddings: embeddings.subscribe(),
                cache: cache.clone(),
            },
            ready: Arc::new(AtomicBool::new(false)),
        };
        Ok(Self {
            listener,
            addr,
            redis: Arc::new(redis),
            chroma: Arc::new(chroma),
            cache,
            http,
            _embeddings: embeddings,
        })
    }

    /// The address the HTTP server is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Runs until `shutdown` resolves, then stops the loops and returns.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let cancel = CancellationToken::new();
        let mut loops = JoinSet::new();
        loops.spawn(self.redis.clone().run_probe(cancel.clone()));
        loops.spawn(self.chroma.clone().run_probe(cancel.clone()));
        loops.spawn(self.cache.clone().run_maintenance(cancel.clone()));
        self.http.ready.store(true, Ordering::Relaxed);
        tracing::info!(address = %self.addr, version = env!("CARGO_PKG_VERSION"), "listening");

        let app = router(self.http.clone());
        let server = axum::serve(self.listener, app).with_graceful_shutdown(shutdown);
        let served = server.await.context("the HTTP server failed");

        tracing::info!("shutting down");
        self.http.ready.store(false, Ordering::Relaxed);
        cancel.cancel();
        let drained = tokio::time::timeout(Duration::from_secs(5), async {
            while loops.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("background loops did not stop within 5 s");
        }
        served
    }
}

fn embeddings_health(config: &Config) -> ComponentHealth {
    match &config.embeddings.provider {
        EmbeddingsProvider::Hash => ComponentHealth {
            status: Status::Healthy,
            details: format!("hash provider, {} dimensions", config.embeddings.dimensions),
            latency_ms: None,
            used_memory_mb: None,
        },
        EmbeddingsProvider::OpenAi { model, .. } => {
            ComponentHealth::down(format!("openai provider ({model}) not probed yet"))
        }
    }
}
