//! Redis, through the `redis` crate, as production runs it: one node,
//! Sentinel or Cluster ([`connection`]). Here, the client: the few commands
//! the daemon sends, each with a timeout, behind the back-off [`gate`], with
//! classified errors ([`codes`]); the cleanup on every master; and the
//! probe: PING and `INFO` on every master and the topology, published as
//! the `llmcache_redis_*` series ([`metrics`]).
//!
//! Nothing here connects at construction, so a Redis that is down at start is
//! reported down, not a startup failure.

mod client;
mod codes;
mod connection;
mod gate;
pub(crate) mod info;
mod metrics;
pub(crate) mod topology;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub(crate) use info::{parse_info, RedisInfo};
pub(crate) use metrics::{info_series, RedisMetrics};

use super::probe::{millis_since, probe_loop, ComponentHealth, HealthPublisher, Probe, Status};
use super::{request_labels, Backend, BackendError, BackendMetrics};
use crate::config::RedisConfig;
pub(crate) use client::{Failure, RedisClient};
pub(crate) use codes::ReplyCode;
pub(crate) use connection::{Dial, Shard, Topology};
use gate::Gate;
use metrics::CodeLabels;

request_labels! {
    /// A request to Redis, as the `request` label spells it.
    pub(crate) enum RedisRequest for Redis {
        Ping => "ping" (housekeeping),
        Info => "info" (housekeeping),
        Topology => "topology" (housekeeping),
        Lrange => "lrange",
        StoreEntry => "store_entry",
        Scan => "scan" (housekeeping),
        Unlink => "unlink" (housekeeping),
    }
}

/// The canary's Redis: the client, and what the canary records of it.
pub(crate) struct RedisBackend {
    client: RedisClient,
    metrics: BackendMetrics,
    redis: RedisMetrics,
    health: HealthPublisher,
    info: watch::Sender<Option<RedisInfo>>,
    gate: Gate,
}

impl RedisBackend {
    /// Builds the client without connecting.
    pub(crate) fn new(
        config: &RedisConfig,
        metrics: BackendMetrics,
        redis: RedisMetrics,
    ) -> Result<Self, BackendError> {
        let client = RedisClient::new(config, redis.master_changes.clone())?;
        Ok(Self {
            client,
            health: HealthPublisher::new(
                Backend::Redis,
                metrics.clone(),
                ComponentHealth::starting(),
            ),
            metrics,
            redis,
            info: watch::Sender::new(None),
            gate: Gate::default(),
        })
    }

    /// The health the probe loop last published.
    pub(crate) fn health(&self) -> watch::Receiver<ComponentHealth> {
        self.health.subscribe()
    }

    /// The `INFO` of the master nearest its `maxmemory`, or `None` while
    /// Redis is down (for the memory monitor's `redis` scope).
    pub(crate) fn info(&self) -> watch::Receiver<Option<RedisInfo>> {
        self.info.subscribe()
    }

    /// Runs `request`, unless `gated` and the gate is closed (then nothing
    /// is sent, and nothing recorded as a backend request); records its
    /// latency and outcome and counts its error codes.
    async fn call<T>(
        &self,
        request: RedisRequest,
        gated: bool,
        send: impl Future<Output = Result<T, Failure>>,
    ) -> Result<T, BackendError> {
        let gate = !self.client.is_cluster();
        if gated && gate {
            self.gate.admit()?;
        }
        let start = Instant::now();
        let result = send.await.map_err(|failure| {
            for code in &failure.codes {
                self.redis
                    .error_replies
                    .get_or_create(&CodeLabels { code: *code })
                    .inc();
            }
            failure.error
        });
        self.metrics.observe(request, start, &result);
        if gate {
            self.gate.record(&result);
        }
        result
    }

    /// One of the canary's keys was found gone before its TTL.
    pub(crate) fn count_lost_key(&self) {
        self.redis.count_lost_key();
    }

    /// `LRANGE key start stop`.
    pub(crate) async fn lrange(
        &self,
        key: &str,
        start: i64,
        stop: i64,
    ) -> Result<Vec<String>, BackendError> {
        self.call(
            RedisRequest::Lrange,
            true,
            self.client.lrange(key, start, stop),
        )
        .await
    }

    /// `RPUSH` + `LTRIM` (keep the last `keep`) + `PEXPIRE` in one `MULTI`.
    pub(crate) async fn push_trimmed(
        &self,
        key: &str,
        value: &str,
        keep: i64,
        ttl_ms: u64,
    ) -> Result<(), BackendError> {
        let push = self.client.push_trimmed(key, value, keep, ttl_ms);
        self.call(RedisRequest::StoreEntry, true, push).await
    }

    /// Deletes every key matching `{prefix}*` on every master with `SCAN`
    /// and `UNLINK`, never `KEYS` or `FLUSH*`. Returns how many keys went.
    pub(crate) async fn unlink_prefix(&self, prefix: &str) -> Result<u64, BackendError> {
        let topology = self.topology().await?;
        let pattern = format!("{prefix}*");
        let mut removed = 0;
        for master in &topology.masters {
            let mut cursor: u64 = 0;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(500);
                let (next, keys): (u64, Vec<String>) = self
                    .call(
                        RedisRequest::Scan,
                        false,
                        self.client.on_master(master, &scan),
                    )
                    .await?;
                // SCAN's MATCH is the filter; this re-check is a second fence.
                let keys: Vec<String> =
                    keys.into_iter().filter(|k| k.starts_with(prefix)).collect();
                if !keys.is_empty() {
                    let mut unlink = redis::cmd("UNLINK");
                    unlink.arg(&keys);
                    let n: u64 = self
                        .call(RedisRequest::Unlink, false, self.client.query(&unlink))
                        .await?;
                    removed += n;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(removed)
    }

    /// Probes until `cancel`.
    pub(crate) async fn run_probe(self: Arc<Self>, cancel: CancellationToken) {
        probe_loop(self.as_ref(), &self.health, cancel).await;
    }

    /// Who serves; a request only where the mode needs one.
    async fn topology(&self) -> Result<Topology, BackendError> {
        self.call(RedisRequest::Topology, false, self.client.topology())
            .await
    }

    /// PING and `INFO` on every master: all of them, or why not.
    async fn sample(&self, masters: &[String]) -> Result<Vec<(String, RedisInfo)>, String> {
        let mut infos = Vec::with_capacity(masters.len());
        for master in masters {
            let ping = redis::cmd("PING");
            let pong: Result<String, _> = self
                .call(
                    RedisRequest::Ping,
                    false,
                    self.client.on_master(master, &ping),
                )
                .await;
            if let Err(err) = pong {
                return Err(format!(
                    "PING {master} failed ({}): {err}",
                    err.kind.as_str()
                ));
            }
            let info = redis::cmd("INFO");
            match self
                .call(
                    RedisRequest::Info,
                    false,
                    self.client.on_master::<String>(master, &info),
                )
                .await
            {
                Ok(text) => infos.push((master.clone(), parse_info(&text))),
                Err(err) => tracing::debug!(%master, error = %err, "INFO failed"),
            }
        }
        Ok(infos)
    }

    fn down(&self, details: String) -> ComponentHealth {
        self.redis.clear();
        self.info.send_replace(None);
        ComponentHealth::down(details)
    }
}

impl Probe for RedisBackend {
    fn endpoint(&self) -> &str {
        self.client.endpoint()
    }

    /// The topology, then PING and `INFO` on every master.
    async fn probe(&self) -> ComponentHealth {
        let start = Instant::now();
        let topology = match self.topology().await {
            Ok(topology) => topology,
            Err(err) => {
                return self.down(format!(
                    "{} failed ({}): {err}",
                    self.client.endpoint(),
                    err.kind.as_str()
                ))
            }
        };
        let infos = match self.sample(&topology.masters).await {
            Ok(infos) => infos,
            Err(details) => return self.down(format!("{}: {details}", topology.summary)),
        };
        let latency_ms = millis_since(start);
        let replicas = topology.replicas.unwrap_or_else(|| {
            let attached = infos
                .iter()
                .filter_map(|(_, i)| i.connected_slaves)
                .sum::<u64>();
            usize::try_from(attached).unwrap_or(usize::MAX)
        });
        self.redis.update(&infos, replicas);
        // The memory monitor's `redis` scope is the worst master's.
        let worst = infos
            .iter()
            .map(|(_, info)| info)
            .filter(|info| info.maxmemory.is_some_and(|max| max > 0))
            .max_by(|a, b| used_ratio(a).total_cmp(&used_ratio(b)))
            .or_else(|| infos.first().map(|(_, info)| info))
            .cloned();
        let version = infos
            .first()
            .and_then(|(_, info)| info.redis_version.clone())
            .unwrap_or_else(|| "(version unknown)".into());
        let used_memory_mb = worst
            .as_ref()
            .and_then(|info| info.used_memory)
            .map(|b| b as f64 / (1024.0 * 1024.0));
        self.info.send_replace(worst);
        let (status, details) = if infos.len() == topology.masters.len() {
            (
                Status::Healthy,
                format!(
                    "redis {version}, {}: answered in {latency_ms:.2} ms",
                    topology.summary
                ),
            )
        } else {
            (
                Status::Degraded,
                format!("{}: PONG, but INFO failed on a master", topology.summary),
            )
        };
        ComponentHealth {
            used_memory_mb,
            ..ComponentHealth::new(status, details, Some(latency_ms))
        }
    }
}

fn used_ratio(info: &RedisInfo) -> f64 {
    match (info.used_memory, info.maxmemory) {
        (Some(used), Some(max)) if max > 0 => used as f64 / max as f64,
        _ => 0.0,
    }
}
