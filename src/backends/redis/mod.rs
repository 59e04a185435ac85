//! Redis: one lazily connected, self-reconnecting `ConnectionManager` with a
//! timeout on every request, and the probe loop that PINGs, samples `INFO`, and
//! publishes health, `backend_up{backend="redis"}` and the `llmcache_redis_*`
//! gauges and counters.
//!
//! Nothing here connects at construction, so a Redis that is down at start is
//! reported down, not a startup failure.

pub(crate) mod info;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::FromRedisValue;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub(crate) use info::{parse_info, RedisInfo};

use super::{
    millis_since, probe_loop, Backend, BackendMetrics, ComponentHealth, ErrorKind, Request, Status,
};
use crate::config::{RedisConfig, Secret};
use crate::metrics::{register_sampled, Sampled};

/// A failed Redis request. Messages never contain the password.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum RedisError {
    /// No answer within `redis.timeout`.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// An error from the client library or the server.
    #[error("{message}")]
    Failed {
        /// The `kind` label.
        kind: ErrorKind,
        /// What went wrong, scrubbed of secrets.
        message: String,
    },
}

impl RedisError {
    /// The `kind` label for this error.
    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            Self::Timeout(_) => ErrorKind::Timeout,
            Self::Failed { kind, .. } => *kind,
        }
    }

    fn from_redis(err: &redis::RedisError, password: Option<&Secret>) -> Self {
        let message = err.to_string();
        let message = match password {
            Some(secret) => secret.scrub(&message),
            None => message,
        };
        Self::Failed {
            kind: classify(err),
            message,
        }
    }
}

fn classify(err: &redis::RedisError) -> ErrorKind {
    use redis::ErrorKind as K;
    if err.is_timeout() {
        return ErrorKind::Timeout;
    }
    if err.is_io_error() || err.is_connection_refusal() || err.is_connection_dropped() {
        return ErrorKind::Connection;
    }
    match err.kind() {
        K::AuthenticationFailed => ErrorKind::Connection,
        K::Parse | K::UnexpectedReturnType | K::RESP3NotSupported => ErrorKind::Protocol,
        K::InvalidClientConfig | K::Client => ErrorKind::Validation,
        _ => ErrorKind::Server,
    }
}

/// The `llmcache_redis_*` series, from the last successful `INFO`.
#[derive(Clone, Debug)]
pub(crate) struct InfoSamples {
    used_memory: Sampled,
    maxmemory: Sampled,
    keyspace_hits: Sampled,
    keyspace_misses: Sampled,
    evicted_keys: Sampled,
}

impl InfoSamples {
    /// Registers the series under `registry` (the `llmcache_redis_` prefix).
    pub(crate) fn register(registry: &mut Registry) -> Self {
        Self {
            used_memory: register_sampled(
                registry,
                "used_memory",
                "Redis used_memory from INFO",
                Some(Unit::Bytes),
                MetricType::Gauge,
            ),
            maxmemory: register_sampled(
                registry,
                "maxmemory",
                "Redis maxmemory from INFO; 0 means no limit",
                Some(Unit::Bytes),
                MetricType::Gauge,
            ),
            keyspace_hits: register_sampled(
                registry,
                "keyspace_hits",
                "Redis keyspace_hits from INFO",
                None,
                MetricType::Counter,
            ),
            keyspace_misses: register_sampled(
                registry,
                "keyspace_misses",
                "Redis keyspace_misses from INFO",
                None,
                MetricType::Counter,
            ),
            evicted_keys: register_sampled(
                registry,
                "evicted_keys",
                "Redis evicted_keys from INFO",
                None,
                MetricType::Counter,
            ),
        }
    }

    fn update(&self, info: &RedisInfo) {
        let pairs = [
            (&self.used_memory, info.used_memory),
            (&self.maxmemory, info.maxmemory),
            (&self.keyspace_hits, info.keyspace_hits),
            (&self.keyspace_misses, info.keyspace_misses),
            (&self.evicted_keys, info.evicted_keys),
        ];
        for (sampled, value) in pairs {
            match value {
                Some(v) => sampled.set(v as f64),
                None => sampled.clear(),
            }
        }
    }

    fn clear(&self) {
        self.update(&RedisInfo::default());
    }
}

/// The Redis client and its probe state.
pub(crate) struct RedisBackend {
    conn: ConnectionManager,
    timeout: Duration,
    password: Option<Secret>,
    /// `host:port`, for messages; never the URL, which may hold credentials.
    endpoint: String,
    metrics: BackendMetrics,
    samples: InfoSamples,
    health: watch::Sender<ComponentHealth>,
    info: watch::Sender<Option<RedisInfo>>,
}

impl RedisBackend {
    /// Builds the client without connecting.
    pub(crate) fn new(
        config: &RedisConfig,
        metrics: BackendMetrics,
        samples: InfoSamples,
    ) -> Result<Self, RedisError> {
        let password = config.password.clone();
        let client =
            client(config).map_err(|err| RedisError::from_redis(&err, password.as_ref()))?;
        // Every request is bounded by `command`'s own timeout (which also
        // covers waiting for a reconnect), so no second per-request timer here.
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(None)
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(|err| RedisError::from_redis(&err, password.as_ref()))?;
        let endpoint = format!(
            "{}:{}",
            config.url.host_str().unwrap_or("?"),
            config.url.port().unwrap_or(6379)
        );
        Ok(Self {
            conn,
            timeout: config.timeout,
            password,
            endpoint,
            metrics,
            samples,
            health: watch::Sender::new(ComponentHealth::starting()),
            info: watch::Sender::new(None),
        })
    }

    /// The health the probe loop last published.
    pub(crate) fn health(&self) -> watch::Receiver<ComponentHealth> {
        self.health.subscribe()
    }

    /// The last successful `INFO`, or `None` while Redis is down (for the
    /// memory monitor's `redis` scope).
    pub(crate) fn info(&self) -> watch::Receiver<Option<RedisInfo>> {
        self.info.subscribe()
    }

    /// Runs one command with the request timeout, recording its latency.
    pub(crate) async fn command<T: FromRedisValue>(
        &self,
        request: Request,
        cmd: &redis::Cmd,
    ) -> Result<T, RedisError> {
        let mut conn = self.conn.clone();
        self.timed(request, cmd.query_async::<T>(&mut conn)).await
    }

    /// Runs a pipeline (or `MULTI` transaction) whose replies are ignored.
    pub(crate) async fn pipeline(
        &self,
        request: Request,
        pipe: &redis::Pipeline,
    ) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        self.timed(request, pipe.query_async::<()>(&mut conn)).await
    }

    /// Bounds a request by `redis.timeout`, records its latency, and types its error.
    async fn timed<T>(
        &self,
        request: Request,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RedisError> {
        let start = Instant::now();
        let result = tokio::time::timeout(self.timeout, call).await;
        self.metrics
            .observe(Backend::Redis, request, start.elapsed());
        match result {
            Err(_) => Err(RedisError::Timeout(self.timeout)),
            Ok(result) => {
                result.map_err(|err| RedisError::from_redis(&err, self.password.as_ref()))
            }
        }
    }

    /// Deletes every key matching `{prefix}*` with `SCAN` and `UNLINK`, never
    /// `KEYS` or `FLUSH*`. Returns how many keys were removed.
    pub(crate) async fn unlink_prefix(&self, prefix: &str) -> Result<u64, RedisError> {
        let pattern = format!("{prefix}*");
        let mut cursor = "0".to_owned();
        let mut removed = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(&cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500);
            let (next, keys): (String, Vec<String>) = self.command(Request::Scan, &scan).await?;
            // SCAN's MATCH is the filter; this re-check is a second fence.
            let keys: Vec<String> = keys.into_iter().filter(|k| k.starts_with(prefix)).collect();
            if !keys.is_empty() {
                let mut unlink = redis::cmd("UNLINK");
                unlink.arg(&keys);
                removed += self.command::<u64>(Request::Unlink, &unlink).await?;
            }
            if next == "0" {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    /// Probes until `cancel`: every 2 s while up, backing off
    /// while down. The connection manager reconnects by itself.
    pub(crate) async fn run_probe(self: Arc<Self>, cancel: CancellationToken) {
        probe_loop(Backend::Redis, &self.endpoint, &self.health, cancel, || {
            self.probe_once()
        })
        .await;
    }

    /// One probe: PING, then INFO. Returns whether Redis answered.
    pub(crate) async fn probe_once(&self) -> bool {
        let start = Instant::now();
        if let Err(err) = self
            .command::<String>(Request::Ping, &redis::cmd("PING"))
            .await
        {
            self.metrics.set_up(Backend::Redis, false);
            self.samples.clear();
            self.info.send_replace(None);
            self.health.send_replace(ComponentHealth::down(format!(
                "PING {} failed ({}): {err}",
                self.endpoint,
                err.kind().as_str()
            )));
            return false;
        }
        let latency_ms = millis_since(start);
        self.metrics.set_up(Backend::Redis, true);
        let health = match self
            .command::<String>(Request::Info, &redis::cmd("INFO"))
            .await
        {
            Ok(text) => {
                let info = parse_info(&text);
                self.samples.update(&info);
                let health = ComponentHealth {
                    status: Status::Healthy,
                    details: format!(
                        "redis {} at {}: PONG in {latency_ms:.2} ms",
                        info.redis_version.as_deref().unwrap_or("(version unknown)"),
                        self.endpoint
                    ),
                    latency_ms: Some(latency_ms),
                    used_memory_mb: info.used_memory.map(|b| b as f64 / (1024.0 * 1024.0)),
                };
                self.info.send_replace(Some(info));
                health
            }
            Err(err) => {
                self.samples.clear();
                self.info.send_replace(None);
                ComponentHealth {
                    status: Status::Degraded,
                    details: format!(
                        "{}: PONG, but INFO failed ({}): {err}",
                        self.endpoint,
                        err.kind().as_str()
                    ),
                    latency_ms: Some(latency_ms),
                    used_memory_mb: None,
                }
            }
        };
        self.health.send_replace(health);
        true
    }
}

/// A client for the URL with the password put back in, and TLS material for
/// `rediss://`.
fn client(config: &RedisConfig) -> redis::RedisResult<redis::Client> {
    let mut url = config.url.clone();
    if let Some(password) = &config.password {
        // `set_password` percent-encodes; redis-rs decodes.
        let _ = url.set_password(Some(password.expose()));
    }
    let custom_tls = config.tls_ca_file.is_some() || config.tls_cert_file.is_some();
    if url.scheme() != "rediss" || !custom_tls {
        return redis::Client::open(url.as_str());
    }
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|err| {
            redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "cannot read TLS file",
                format!("{}: {err}", path.display()),
            ))
        })
    };
    let root_cert = config.tls_ca_file.as_deref().map(read).transpose()?;
    let client_tls = match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read(cert)?,
            client_key: read(key)?,
        }),
        _ => None,
    };
    redis::Client::build_with_tls(
        url.as_str(),
        redis::TlsCertificates {
            client_tls,
            root_cert,
        },
    )
}
