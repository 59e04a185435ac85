//! Wiring: [`App::build`] turns a [`Config`] into every part of the daemon and
//! binds the listener; [`App::run`] runs the probe loops, the cache
//! maintenance, the workload and the HTTP server until the shutdown future
//! resolves, then cleans up. [`App::once`] runs each operation once instead.
//!
//! A reload builds a new generation of [`Parts`] from the re-read
//! configuration before touching the running one, so a configuration that
//! does not validate or build changes nothing. The listener and the metric
//! [`Families`] live for the whole process.

mod parts;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::http::auth::BasicAuth;
use crate::http::connections::{Connections, Limits};
use crate::http::listener::{serve, TlsSetting};
use crate::http::series::Series;
use crate::http::watch::{WebOutcome, WebWatch};
use crate::http::{router, HttpState, ReloadRequest};
use parts::{Families, Kept, Parts, Running};

/// How long a reload waits for the new probes' first verdicts before serving
/// them in `/health` anyway.
const FIRST_PROBE_WAIT: Duration = Duration::from_secs(3);

/// Re-reads the configuration from where it first came (the same flags and
/// env, the file read again).
pub type ConfigSource = Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// Asks a running [`App`] to reload, as `SIGHUP` and `POST /-/reload` do.
#[derive(Clone)]
pub struct ReloadHandle(mpsc::Sender<ReloadRequest>);

impl ReloadHandle {
    /// Reloads and waits for the outcome: `Err` with the reason when the new
    /// configuration was refused and the old one kept.
    pub async fn reload(&self) -> Result<(), String> {
        let (reply, outcome) = oneshot::channel();
        self.0
            .send(reply)
            .await
            .map_err(|_| "the daemon is shutting down".to_owned())?;
        outcome
            .await
            .map_err(|_| "the daemon is shutting down".to_owned())?
    }
}

/// The daemon, built and bound, not yet running.
pub struct App {
    listener: TcpListener,
    addr: SocketAddr,
    config: Config,
    source: Arc<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>,
    families: Families,
    parts: Parts,
    http: HttpState,
    reload_requests: mpsc::Receiver<ReloadRequest>,
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
    /// `source` is what a reload reads.
    pub async fn build(config: Config, source: ConfigSource) -> anyhow::Result<Self> {
        let families = Families::register(config.canary.enabled);
        let parts = Parts::build(&config, &families, Kept::default())?;
        let listener = TcpListener::bind(config.web.listen_address)
            .await
            .with_context(|| format!("cannot listen on {}", config.web.listen_address))?;
        let addr = listener
            .local_addr()
            .context("cannot read the bound address")?;
        let (reload, reload_requests) = mpsc::channel(4);
        let http = HttpState {
            metrics: families.metrics.clone(),
            health: Arc::new(ArcSwap::from_pointee(parts.health())),
            ready: Arc::new(AtomicBool::new(false)),
            reload,
            series: Series::default(),
            fleet: Arc::new(ArcSwap::new(parts.fleet.clone())),
        };
        Ok(Self {
            listener,
            addr,
            config,
            source: Arc::from(source),
            families,
            parts,
            http,
            reload_requests,
        })
    }

    /// Runs each operation once against the configured backends, without
    /// serving HTTP, and reports.
    pub async fn once(config: Config) -> anyhow::Result<OnceOutcome> {
        let parts = Parts::build(&config, &Families::register(true), Kept::default())?;
        let Some(canary) = parts.canary else {
            anyhow::bail!("--once runs the canary's operations, and canary.enabled is false");
        };
        canary.embedder.start();
        let report = canary.workload.once().await;
        let ok = report.ok;
        let report = serde_json::to_string_pretty(&report).context("cannot encode the report")?;
        Ok(OnceOutcome { report, ok })
    }

    /// The address the HTTP server is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle for `SIGHUP`.
    pub fn reload_handle(&self) -> ReloadHandle {
        ReloadHandle(self.http.reload.clone())
    }

    /// Runs until `shutdown` resolves, reloading on request; then stops the
    /// loops, lets operations in flight finish (bounded), and cleans up if
    /// configured.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let security = &self.config.web.file.security;
        let tls: TlsSetting = Arc::new(ArcSwapOption::new(security.tls.clone()));
        let auth = BasicAuth::new(security.users.clone());
        let web = &self.config.web;
        let connections = Connections::new(
            Limits {
                read_header_timeout: web.read_header_timeout,
                idle_timeout: web.idle_timeout,
                max_connections: web.max_connections,
            },
            self.families.connections.clone(),
        );
        let stop_serving = CancellationToken::new();
        let server = tokio::spawn(serve(
            self.listener,
            tls.clone(),
            connections,
            router(self.http.clone(), auth.clone()),
            stop_serving.clone(),
        ));
        let (web_outcomes, mut web_changes) = mpsc::unbounded_channel::<WebOutcome>();
        let web = WebWatch::start(
            self.config.web.file.clone(),
            tls,
            auth,
            web_outcomes,
            stop_serving.clone(),
        );
        tokio::spawn(
            self.http
                .series
                .clone()
                .run(self.families.metrics.clone(), stop_serving.clone()),
        );
        let mut running = self.parts.start();
        self.http.ready.store(true, Ordering::Relaxed);
        tracing::info!(
            address = %self.addr,
            tls = self.config.web.file.security.tls.is_some(),
            basic_auth = !self.config.web.file.security.users.is_empty(),
            version = env!("CARGO_PKG_VERSION"),
            "listening"
        );

        let mut reloads = ReloadOutcomes::default();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(reply) = self.reload_requests.recv() => {
                    let outcome;
                    (running, outcome) = reload(
                        running,
                        &mut self.config,
                        &self.source,
                        &self.families,
                        &self.http,
                        &web,
                    )
                    .await;
                    reloads.config_ok = outcome.is_ok();
                    if outcome.is_ok() {
                        // The reload handed the watcher a web config it
                        // had just loaded.
                        reloads.web_ok = true;
                    }
                    self.families.metrics.last_reload_successful.set(reloads.gauge());
                    let _ = reply.send(outcome);
                }
                Some(outcome) = web_changes.recv() => {
                    // The web config changed on disk; the watcher applied it
                    // or kept the running settings.
                    reloads.web_ok = outcome.is_ok();
                    self.families.metrics.last_reload_successful.set(reloads.gauge());
                }
            }
        }

        tracing::info!("shutting down");
        self.http.ready.store(false, Ordering::Relaxed);
        stop_serving.cancel();
        let running = running.stop().await;
        running.cleanup().await;
        server.await.context("the HTTP server panicked")
    }
}

/// What `llmcache_config_last_reload_successful` says: the last reload of
/// the configuration and the last change of the web config on disk both
/// loaded. A renewed certificate seen by the watcher does not clear a
/// refused `SIGHUP`, nor the other way round; a successful reload reloads
/// both.
#[derive(Debug, Clone, Copy)]
struct ReloadOutcomes {
    config_ok: bool,
    web_ok: bool,
}

impl Default for ReloadOutcomes {
    fn default() -> Self {
        Self {
            config_ok: true,
            web_ok: true,
        }
    }
}

impl ReloadOutcomes {
    fn gauge(self) -> i64 {
        i64::from(self.config_ok && self.web_ok)
    }
}

/// Reads the configuration again and, if it is valid and builds, stops the
/// running generation and starts the new one. Otherwise the running one keeps
/// going untouched. The listener, the metric families and (when nothing it
/// holds has changed meaning) the cache survive.
async fn reload(
    running: Running,
    config: &mut Config,
    source: &Arc<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>,
    families: &Families,
    http: &HttpState,
    web: &WebWatch,
) -> (Running, Result<(), String>) {
    let refused = |reason: String| {
        tracing::error!(error = %reason, "reload refused; the running configuration stays");
        Err(reason)
    };
    // Reading the files, parsing PEM and resolving names block: on the
    // blocking pool, so the workload's worker keeps its schedule.
    let read = source.clone();
    let mut next = match tokio::task::spawn_blocking(move || read()).await {
        Ok(Ok(next)) => next,
        Ok(Err(err)) => return (running, refused(err.to_string())),
        Err(err) => {
            return (
                running,
                refused(format!("reading the configuration failed: {err}")),
            )
        }
    };
    if next.canary != config.canary {
        tracing::warn!("canary.enabled changes only on restart");
        next.canary = config.canary.clone();
    }
    let canary = running.canary.as_ref();
    let kept = Kept {
        cache: canary
            .filter(|_| cache_still_valid(config, &next))
            .map(|c| c.cache.clone()),
        embedder: canary
            .filter(|_| config.embeddings == next.embeddings)
            .map(|c| c.embedder.clone()),
    };
    let parts = match Parts::build(&next, families, kept) {
        Ok(parts) => parts,
        Err(err) => return (running, refused(format!("{err:#}"))),
    };
    if next.web.listen_address != config.web.listen_address {
        tracing::warn!(
            running = %config.web.listen_address,
            configured = %next.web.listen_address,
            "the listen address changes only on restart"
        );
    }
    if next.log != config.log {
        tracing::warn!("log settings change only on restart");
    }

    let old = running.stop().await;
    if moved_targets(config, &next) {
        // Data the old configuration wrote where the new one will not look.
        old.cleanup().await;
    }
    let health = parts.health();
    let fleet = parts.fleet.clone();
    let running = parts.start();
    http.fleet.store(fleet);
    // /health reads the new probes only once they have spoken, so a reload
    // never flashes "not probed yet" (503) at a load balancer.
    if let Some(canary) = &health.canary {
        let (mut redis, mut chroma) = (canary.redis.clone(), canary.chroma.clone());
        let _ = tokio::time::timeout(FIRST_PROBE_WAIT, async {
            let _ = tokio::join!(redis.changed(), chroma.changed());
        })
        .await;
    }
    http.health.store(Arc::new(health));
    web.apply(next.web.file.clone()).await;
    *config = next;
    tracing::info!("configuration reloaded");
    (running, Ok(()))
}

/// Whether what the cache holds is still what the new configuration would
/// load: same cache settings, same embedder, same history length, same
/// backends and keys.
fn cache_still_valid(old: &Config, new: &Config) -> bool {
    old.cache == new.cache
        && old.embeddings == new.embeddings
        && old.workload.history_limit == new.workload.history_limit
        && !moved_targets(old, new)
}

/// Whether the probe's keys or collection live somewhere else now.
fn moved_targets(old: &Config, new: &Config) -> bool {
    old.redis.url != new.redis.url
        || old.redis.key_prefix != new.redis.key_prefix
        || old.chroma.url != new.chroma.url
        || old.chroma.tenant != new.chroma.tenant
        || old.chroma.database != new.chroma.database
        || old.chroma.collection != new.chroma.collection
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(flags: &[&str]) -> Config {
        let mut args = vec!["llm-cache-exporter"];
        args.extend(flags);
        Config::from_args(args).unwrap().config
    }

    #[test]
    fn the_cache_survives_a_reload_only_if_what_it_holds_still_means_the_same() {
        let base = config(&[]);
        assert!(cache_still_valid(&base, &config(&["--log.level", "debug"])));
        for changed in [
            config(&["--redis.url", "redis://elsewhere:6379"]),
            config(&["--chroma.url", "http://elsewhere:8000"]),
        ] {
            assert!(!cache_still_valid(&base, &changed));
        }
        let mut history = base.clone();
        history.workload.history_limit += 1;
        assert!(!cache_still_valid(&base, &history));
        let mut dimensions = base.clone();
        dimensions.embeddings.dimensions += 1;
        assert!(!cache_still_valid(&base, &dimensions));
        let mut ttl = base.clone();
        ttl.cache.chat_history.ttl += Duration::from_secs(1);
        assert!(!cache_still_valid(&base, &ttl));
        let mut rate = base.clone();
        rate.workload.rate *= 2.0;
        assert!(cache_still_valid(&base, &rate));
    }
}
