//! Redis: a small pooled client ([`client`], speaking [`resp`]) with a timeout
//! on every request, the few commands the daemon sends, and the probe loop
//! that PINGs, samples `INFO`, and publishes health,
//! `backend_up{backend="redis"}` and the `llmcache_redis_*` gauges.
//!
//! Nothing here connects at construction, so a Redis that is down at start is
//! reported down, not a startup failure.

mod client;
pub(crate) mod info;
pub(crate) mod resp;

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub(crate) use info::{parse_info, RedisInfo};

use super::probe::{millis_since, probe_loop, ComponentHealth, HealthPublisher, Probe, Status};
use super::{request_labels, Backend, BackendError, BackendMetrics, ErrorKind};
use crate::config::RedisConfig;
use crate::metrics::{register_sampled, Sampled};
use crate::secret::Secret;
use client::Client;
use resp::{Commands, Reply};

request_labels! {
    /// A request to Redis, as the `request` label spells it.
    pub(crate) enum RedisRequest for Redis {
        Ping => "ping",
        Info => "info",
        Lrange => "lrange",
        StoreEntry => "store_entry",
        Scan => "scan",
        Unlink => "unlink",
    }
}

/// An error reply, scrubbed of the password.
fn server_error(message: &str, password: Option<&Secret>) -> BackendError {
    let message = match password {
        Some(secret) => secret.scrub(message),
        None => message.to_owned(),
    };
    BackendError::new(Backend::Redis, ErrorKind::Server, message)
}

fn unexpected(command: &str, reply: &Reply) -> BackendError {
    let message = format!("{command} answered {}", reply.describe());
    BackendError::new(Backend::Redis, ErrorKind::Protocol, message)
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
    client: Client,
    timeout: Duration,
    password: Option<Secret>,
    /// `host:port`, for messages; never the URL, which may hold credentials.
    endpoint: String,
    metrics: BackendMetrics,
    samples: InfoSamples,
    health: HealthPublisher,
    info: watch::Sender<Option<RedisInfo>>,
}

impl RedisBackend {
    /// Builds the client without connecting.
    pub(crate) fn new(
        config: &RedisConfig,
        metrics: BackendMetrics,
        samples: InfoSamples,
    ) -> Result<Self, BackendError> {
        let endpoint = config.url.endpoint();
        Ok(Self {
            client: Client::new(config)?,
            timeout: config.timeout,
            password: config.password.clone(),
            endpoint,
            health: HealthPublisher::new(
                Backend::Redis,
                metrics.clone(),
                ComponentHealth::starting(),
            ),
            metrics,
            samples,
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

    /// Sends `commands` with the request timeout, recording the latency, and
    /// returns one reply per command. An error reply from the first command
    /// is returned as an error; later ones are the caller's to judge.
    async fn call(
        &self,
        request: RedisRequest,
        commands: &Commands,
    ) -> Result<Vec<Reply>, BackendError> {
        let start = Instant::now();
        let result = tokio::time::timeout(self.timeout, self.client.send(commands)).await;
        self.metrics.observe(request, start.elapsed());
        let replies = match result {
            Err(_) => return Err(BackendError::timeout(Backend::Redis, self.timeout)),
            Ok(Err(err)) => return Err(err),
            Ok(Ok(replies)) => replies,
        };
        if let Some(Reply::Error(message)) = replies.first() {
            return Err(server_error(message, self.password.as_ref()));
        }
        Ok(replies)
    }

    /// One command, one reply.
    async fn call_one(&self, request: RedisRequest, args: &[&[u8]]) -> Result<Reply, BackendError> {
        let mut replies = self.call(request, &Commands::one(args)).await?;
        Ok(replies.pop().unwrap_or(Reply::Bulk(None)))
    }

    /// `LRANGE key start stop`, as strings.
    pub(crate) async fn lrange(
        &self,
        key: &str,
        start: i64,
        stop: i64,
    ) -> Result<Vec<String>, BackendError> {
        let (start, stop) = (start.to_string(), stop.to_string());
        let reply = self
            .call_one(
                RedisRequest::Lrange,
                &[b"LRANGE", key.as_bytes(), start.as_bytes(), stop.as_bytes()],
            )
            .await?;
        match reply {
            Reply::Array(Some(items)) => items
                .into_iter()
                .map(|item| match item {
                    Reply::Bulk(Some(bytes)) => String::from_utf8(bytes)
                        .map_err(|_| unexpected("LRANGE", &Reply::Bulk(None))),
                    other => Err(unexpected("LRANGE", &other)),
                })
                .collect(),
            Reply::Array(None) => Ok(Vec::new()),
            other => Err(unexpected("LRANGE", &other)),
        }
    }

    /// `RPUSH` + `LTRIM` (keep the last `keep`) + `PEXPIRE` in one `MULTI`.
    pub(crate) async fn push_trimmed(
        &self,
        key: &str,
        value: &str,
        keep: i64,
        ttl_ms: u64,
    ) -> Result<(), BackendError> {
        let keep = (-keep).to_string();
        let ttl = ttl_ms.to_string();
        let key = key.as_bytes();
        let mut commands = Commands::one(&[b"MULTI"]);
        commands
            .push(&[b"RPUSH", key, value.as_bytes()])
            .push(&[b"LTRIM", key, keep.as_bytes(), b"-1"])
            .push(&[b"PEXPIRE", key, ttl.as_bytes()])
            .push(&[b"EXEC"]);
        let replies = self.call(RedisRequest::StoreEntry, &commands).await?;
        match replies.last() {
            Some(Reply::Array(Some(results))) => {
                match results.iter().find(|r| matches!(r, Reply::Error(_))) {
                    Some(Reply::Error(message)) => {
                        Err(server_error(message, self.password.as_ref()))
                    }
                    _ => Ok(()),
                }
            }
            // EXECABORT: a command was refused while queueing; say which.
            Some(Reply::Error(_)) => {
                let refused = replies.iter().find_map(|r| match r {
                    Reply::Error(message) => Some(message.clone()),
                    _ => None,
                });
                Err(server_error(
                    &refused.unwrap_or_default(),
                    self.password.as_ref(),
                ))
            }
            Some(other) => Err(unexpected("EXEC", other)),
            None => Err(unexpected("EXEC", &Reply::Bulk(None))),
        }
    }

    /// Deletes every key matching `{prefix}*` with `SCAN` and `UNLINK`, never
    /// `KEYS` or `FLUSH*`. Returns how many keys were removed.
    pub(crate) async fn unlink_prefix(&self, prefix: &str) -> Result<u64, BackendError> {
        let pattern = format!("{prefix}*");
        let mut cursor = "0".to_owned();
        let mut removed = 0;
        loop {
            let reply = self
                .call_one(
                    RedisRequest::Scan,
                    &[
                        b"SCAN",
                        cursor.as_bytes(),
                        b"MATCH",
                        pattern.as_bytes(),
                        b"COUNT",
                        b"500",
                    ],
                )
                .await?;
            let (next, keys) = scan_page(reply)?;
            // SCAN's MATCH is the filter; this re-check is a second fence.
            let keys: Vec<String> = keys.into_iter().filter(|k| k.starts_with(prefix)).collect();
            if !keys.is_empty() {
                let mut args: Vec<&[u8]> = vec![b"UNLINK"];
                args.extend(keys.iter().map(|k| k.as_bytes()));
                match self.call_one(RedisRequest::Unlink, &args).await? {
                    Reply::Integer(n) => removed += u64::try_from(n).unwrap_or(0),
                    other => return Err(unexpected("UNLINK", &other)),
                }
            }
            if next == "0" {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    /// Probes until `cancel`.
    pub(crate) async fn run_probe(self: Arc<Self>, cancel: CancellationToken) {
        probe_loop(self.as_ref(), &self.health, cancel).await;
    }
}

impl Probe for RedisBackend {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// PING, then INFO.
    async fn probe(&self) -> ComponentHealth {
        let start = Instant::now();
        if let Err(err) = self.call_one(RedisRequest::Ping, &[b"PING"]).await {
            self.samples.clear();
            self.info.send_replace(None);
            return ComponentHealth::down(format!(
                "PING {} failed ({}): {err}",
                self.endpoint,
                err.kind.as_str()
            ));
        }
        let latency_ms = millis_since(start);
        let info = match self.call_one(RedisRequest::Info, &[b"INFO"]).await {
            Ok(Reply::Bulk(Some(bytes))) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            Ok(other) => Err(unexpected("INFO", &other)),
            Err(err) => Err(err),
        };
        match info {
            Ok(text) => {
                let info = parse_info(&text);
                self.samples.update(&info);
                let version = info.redis_version.as_deref().unwrap_or("(version unknown)");
                let details = format!(
                    "redis {version} at {}: PONG in {latency_ms:.2} ms",
                    self.endpoint
                );
                let health = ComponentHealth {
                    used_memory_mb: info.used_memory.map(|b| b as f64 / (1024.0 * 1024.0)),
                    ..ComponentHealth::new(Status::Healthy, details, Some(latency_ms))
                };
                self.info.send_replace(Some(info));
                health
            }
            Err(err) => {
                self.samples.clear();
                self.info.send_replace(None);
                let details = format!(
                    "{}: PONG, but INFO failed ({}): {err}",
                    self.endpoint,
                    err.kind.as_str()
                );
                ComponentHealth::new(Status::Degraded, details, Some(latency_ms))
            }
        }
    }
}

/// One `SCAN` page: the next cursor and the keys.
fn scan_page(reply: Reply) -> Result<(String, Vec<String>), BackendError> {
    let Reply::Array(Some(mut parts)) = reply else {
        return Err(unexpected("SCAN", &reply));
    };
    let (Some(Reply::Array(Some(keys))), Some(Reply::Bulk(Some(cursor)))) =
        (parts.pop(), parts.pop())
    else {
        return Err(unexpected("SCAN", &Reply::Array(Some(parts))));
    };
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    let keys = keys
        .into_iter()
        .filter_map(|key| match key {
            Reply::Bulk(Some(bytes)) => Some(text(bytes)),
            _ => None,
        })
        .collect();
    Ok((text(cursor), keys))
}
