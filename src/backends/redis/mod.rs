//! Redis, through the `redis` crate, as production runs it: one node,
//! Sentinel or Cluster ([`connection`]). Here: the few commands the daemon
//! sends, each with a timeout and classified errors (with Redis's error code
//! counted in `llmcache_redis_error_replies_total`), the cleanup on every
//! master, and the probe: PING and `INFO` on every master, the topology, and
//! the `llmcache_redis_*` series ([`RedisMetrics`]).
//!
//! Nothing here connects at construction, so a Redis that is down at start is
//! reported down, not a startup failure.

mod connection;
pub(crate) mod info;
pub(crate) mod topology;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub(crate) use info::{parse_info, RedisInfo};

use super::probe::{
    millis_since, probe_loop, Backoff, ComponentHealth, HealthPublisher, Probe, Status,
};
use super::{request_labels, Backend, BackendError, BackendMetrics, ErrorKind};
use crate::config::RedisConfig;
use crate::metrics::{label_values, register_sampled, Sampled};
use crate::secret::Secret;
use connection::Nodes;

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

label_values! {
    /// A Redis error reply's code, as the `code` label spells it.
    pub(crate) enum ReplyCode {
        ReadOnly => "READONLY",
        Oom => "OOM",
        NoPerm => "NOPERM",
        NoAuth => "NOAUTH",
        WrongPass => "WRONGPASS",
        Moved => "MOVED",
        Ask => "ASK",
        TryAgain => "TRYAGAIN",
        ClusterDown => "CLUSTERDOWN",
        Loading => "LOADING",
        MasterDown => "MASTERDOWN",
        Busy => "BUSY",
        ExecAbort => "EXECABORT",
        Other => "other",
    }
}

impl ReplyCode {
    fn of(code: &str) -> Self {
        Self::ALL
            .iter()
            .copied()
            .find(|known| known.as_str() == code)
            .unwrap_or(Self::Other)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: ReplyCode,
}

/// The `llmcache_redis_*` series.
#[derive(Clone, Debug)]
pub(crate) struct RedisMetrics {
    used_memory: Family<NodeLabels, Gauge>,
    maxmemory: Family<NodeLabels, Gauge>,
    nodes: Family<RoleLabels, Gauge>,
    master_changes: Counter,
    error_replies: Family<CodeLabels, Counter>,
    lost_keys: Counter,
    keyspace_hits: Sampled,
    keyspace_misses: Sampled,
    evicted_keys: Sampled,
}

impl RedisMetrics {
    /// Registers the series under `registry` (the `llmcache_redis_` prefix).
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            used_memory: Family::default(),
            maxmemory: Family::default(),
            nodes: Family::default(),
            master_changes: Counter::default(),
            error_replies: Family::default(),
            lost_keys: Counter::default(),
            keyspace_hits: register_sampled(
                registry,
                "keyspace_hits",
                "Redis keyspace_hits from INFO, summed over the masters",
                None,
                MetricType::Counter,
            ),
            keyspace_misses: register_sampled(
                registry,
                "keyspace_misses",
                "Redis keyspace_misses from INFO, summed over the masters",
                None,
                MetricType::Counter,
            ),
            evicted_keys: register_sampled(
                registry,
                "evicted_keys",
                "Redis evicted_keys from INFO, summed over the masters",
                None,
                MetricType::Counter,
            ),
        };
        for code in ReplyCode::ALL {
            let _ = metrics
                .error_replies
                .get_or_create(&CodeLabels { code: *code });
        }
        registry.register_with_unit(
            "used_memory",
            "Redis used_memory from INFO, per master",
            Unit::Bytes,
            metrics.used_memory.clone(),
        );
        registry.register_with_unit(
            "maxmemory",
            "Redis maxmemory from INFO, per master; 0 means no limit",
            Unit::Bytes,
            metrics.maxmemory.clone(),
        );
        registry.register("nodes", "Redis nodes seen, by role", metrics.nodes.clone());
        registry.register(
            "master_changes",
            "A new master address for the Sentinel master, or a new owner of cluster slots",
            metrics.master_changes.clone(),
        );
        registry.register(
            "error_replies",
            "Error replies from Redis, by error code",
            metrics.error_replies.clone(),
        );
        registry.register(
            "lost_keys",
            "Chat histories the canary wrote and found gone before their TTL: evicted, or deleted by someone else",
            metrics.lost_keys.clone(),
        );
        metrics
    }

    /// The INFO of every master that answered; the series of the others
    /// (and of nodes no longer there) vanish.
    fn update(&self, masters: &[(String, RedisInfo)], replicas: usize) {
        self.used_memory.clear();
        self.maxmemory.clear();
        for (node, info) in masters {
            let labels = NodeLabels { node: node.clone() };
            if let Some(used) = info.used_memory {
                self.used_memory.get_or_create(&labels).set(clamp(used));
            }
            if let Some(max) = info.maxmemory {
                self.maxmemory.get_or_create(&labels).set(clamp(max));
            }
        }
        let sum = |field: fn(&RedisInfo) -> Option<u64>| {
            masters
                .iter()
                .map(|(_, info)| field(info))
                .sum::<Option<u64>>()
                .map(|n| n as f64)
        };
        set_or_clear(&self.keyspace_hits, sum(|i| i.keyspace_hits));
        set_or_clear(&self.keyspace_misses, sum(|i| i.keyspace_misses));
        set_or_clear(&self.evicted_keys, sum(|i| i.evicted_keys));
        self.nodes
            .get_or_create(&RoleLabels { role: "master" })
            .set(clamp(masters.len() as u64));
        self.nodes
            .get_or_create(&RoleLabels { role: "replica" })
            .set(clamp(replicas as u64));
    }

    fn clear(&self) {
        self.update(&[], 0);
        self.nodes.clear();
    }
}

fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn set_or_clear(sampled: &Sampled, value: Option<f64>) {
    match value {
        Some(value) => sampled.set(value),
        None => sampled.clear(),
    }
}

/// After a failed connection, requests fail fast for a back-off, so a down
/// Redis is not hammered at the workload's rate. Probes always try, and in
/// cluster mode nothing is gated: one master down says nothing of the
/// others, and the crate retries and refreshes its slot map itself.
#[derive(Default)]
struct Gate {
    backoff: Backoff,
    closed: Option<(Instant, BackendError)>,
}

/// The Redis clients and their probe state.
pub(crate) struct RedisBackend {
    nodes: Nodes,
    timeout: Duration,
    secrets: Vec<Secret>,
    /// The configured node(s), for logs; never a URL, which may hold credentials.
    endpoint: String,
    metrics: BackendMetrics,
    redis: RedisMetrics,
    health: HealthPublisher,
    info: watch::Sender<Option<RedisInfo>>,
    gate: Mutex<Gate>,
}

impl RedisBackend {
    /// Builds the client without connecting.
    pub(crate) fn new(
        config: &RedisConfig,
        metrics: BackendMetrics,
        redis: RedisMetrics,
    ) -> Result<Self, BackendError> {
        let secrets: Vec<Secret> = config
            .password
            .iter()
            .cloned()
            .chain(
                config
                    .sentinel_password_file
                    .iter()
                    .map(|f| f.secret.clone()),
            )
            .collect();
        let nodes = Nodes::new(config, redis.master_changes.clone())
            .map_err(|err| classify(&err, &secrets).0)?;
        let endpoint = config
            .url
            .0
            .iter()
            .map(|url| url.endpoint())
            .collect::<Vec<_>>()
            .join(",");
        Ok(Self {
            nodes,
            timeout: config.timeout,
            secrets,
            endpoint,
            health: HealthPublisher::new(
                Backend::Redis,
                metrics.clone(),
                ComponentHealth::starting(),
            ),
            metrics,
            redis,
            info: watch::Sender::new(None),
            gate: Mutex::new(Gate::default()),
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

    /// Runs `request` with the request timeout, unless the gate is closed;
    /// records its latency and outcome, counts error codes, and lets a
    /// sentinel master go after a `READONLY` or a broken connection.
    async fn call<T>(
        &self,
        request: RedisRequest,
        gated: bool,
        send: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, BackendError> {
        let gated = gated && !self.nodes.is_cluster();
        if gated {
            let gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((until, err)) = &gate.closed {
                if Instant::now() < *until {
                    return Err(err.clone());
                }
            }
        }
        let start = Instant::now();
        let result = match tokio::time::timeout(self.timeout, send).await {
            Err(_) => Err(BackendError::timeout(Backend::Redis, self.timeout)),
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                let (error, codes) = classify(&err, &self.secrets);
                for code in &codes {
                    self.redis
                        .error_replies
                        .get_or_create(&CodeLabels { code: *code })
                        .inc();
                }
                if codes.contains(&ReplyCode::ReadOnly) || error.kind == ErrorKind::Connection {
                    self.nodes.forget_master();
                }
                Err(error)
            }
        };
        self.metrics.observe(request, start.elapsed(), &result);
        let mut gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        match &result {
            Err(err) if gated && err.kind == ErrorKind::Connection => {
                let delay = gate.backoff.next_delay();
                gate.closed = Some((Instant::now() + delay, err.clone()));
            }
            _ => {
                gate.backoff.reset();
                gate.closed = None;
            }
        }
        result
    }

    /// One of the canary's keys was found gone before its TTL.
    pub(crate) fn count_lost_key(&self) {
        self.redis.lost_keys.inc();
    }

    /// `LRANGE key start stop`.
    pub(crate) async fn lrange(
        &self,
        key: &str,
        start: i64,
        stop: i64,
    ) -> Result<Vec<String>, BackendError> {
        let mut cmd = redis::cmd("LRANGE");
        cmd.arg(key).arg(start).arg(stop);
        self.call(RedisRequest::Lrange, true, self.nodes.query(&cmd))
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
        let mut pipe = redis::pipe();
        pipe.atomic()
            .rpush(key, value)
            .ignore()
            .ltrim(key, -(keep as isize), -1)
            .ignore()
            .pexpire(key, i64::try_from(ttl_ms).unwrap_or(i64::MAX))
            .ignore();
        self.call(RedisRequest::StoreEntry, true, self.nodes.query_pipe(&pipe))
            .await
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
                        self.nodes.on_master(master, &scan),
                    )
                    .await?;
                // SCAN's MATCH is the filter; this re-check is a second fence.
                let keys: Vec<String> =
                    keys.into_iter().filter(|k| k.starts_with(prefix)).collect();
                if !keys.is_empty() {
                    let mut unlink = redis::cmd("UNLINK");
                    unlink.arg(&keys);
                    let n: u64 = self
                        .call(RedisRequest::Unlink, false, self.nodes.query(&unlink))
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
    async fn topology(&self) -> Result<connection::Topology, BackendError> {
        match self.nodes.fixed_topology() {
            Some(topology) => Ok(topology),
            None => {
                self.call(RedisRequest::Topology, false, self.nodes.topology())
                    .await
            }
        }
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
                    self.nodes.on_master(master, &ping),
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
                    self.nodes.on_master::<String>(master, &info),
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
        &self.endpoint
    }

    /// The topology, then PING and `INFO` on every master.
    async fn probe(&self) -> ComponentHealth {
        let start = Instant::now();
        let topology = match self.topology().await {
            Ok(topology) => topology,
            Err(err) => {
                return self.down(format!(
                    "{} failed ({}): {err}",
                    self.endpoint,
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

/// What a `redis` crate error means for the canary: its `kind`, and the
/// error codes in it, each once (an aborted `MULTI` carries the code that
/// refused its commands, e.g. `OOM`). The message is scrubbed of `secrets`.
fn classify(err: &redis::RedisError, secrets: &[Secret]) -> (BackendError, Vec<ReplyCode>) {
    let mut codes: Vec<ReplyCode> = match err.clone().into_server_errors() {
        Some(errors) => errors
            .iter()
            .map(|(_, e)| ReplyCode::of(e.code()))
            .collect(),
        None => err.code().map(ReplyCode::of).into_iter().collect(),
    };
    codes.sort();
    codes.dedup();
    let auth = |code: &ReplyCode| {
        matches!(
            code,
            ReplyCode::NoAuth | ReplyCode::WrongPass | ReplyCode::NoPerm
        )
    };
    use redis::ErrorKind as K;
    let kind = if err.is_timeout() {
        ErrorKind::Timeout
    } else if codes.iter().any(auth) || err.kind() == K::AuthenticationFailed {
        ErrorKind::Auth
    } else if !codes.is_empty() {
        ErrorKind::Server
    } else if matches!(err.kind(), K::Parse | K::UnexpectedReturnType) {
        ErrorKind::Protocol
    } else {
        ErrorKind::Connection
    };
    let mut message = err.to_string();
    for secret in secrets {
        message = secret.scrub(&message);
    }
    if message.contains("cluster support disabled") {
        message = format!("--redis.mode cluster, but this node is not a cluster node: {message}");
    }
    if message.contains("CaUsedAsEndEntity") {
        message.push_str(
            " (the server's certificate is itself a CA certificate: sign a leaf certificate \
             with a CA, as Redis's gen-test-certs.sh does; see the README's TLS section)",
        );
    }
    (BackendError::new(Backend::Redis, kind, message), codes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_codes_come_from_a_closed_set() {
        assert_eq!(ReplyCode::of("OOM"), ReplyCode::Oom);
        assert_eq!(ReplyCode::of("READONLY"), ReplyCode::ReadOnly);
        assert_eq!(ReplyCode::of("ERR"), ReplyCode::Other);
        assert_eq!(ReplyCode::of("oom"), ReplyCode::Other);
    }

    #[test]
    fn auth_refusals_are_auth_and_secrets_are_scrubbed() {
        let err = redis::RedisError::from((
            redis::ErrorKind::AuthenticationFailed,
            "Password authentication failed",
            "hunter2 was refused".to_owned(),
        ));
        let (error, _) = classify(&err, &[Secret::new("hunter2")]);
        assert_eq!(error.kind, ErrorKind::Auth);
        assert!(!error.message.contains("hunter2"), "{}", error.message);
    }
}
