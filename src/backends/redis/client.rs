//! The Redis client the canary and the fleet's `redis` probes share: the
//! connection of the configured mode ([`super::connection`]), a timeout on
//! every request, and each failure classified with the reply codes it
//! carries ([`super::codes`]). It records nothing itself: the canary counts
//! and times its requests in [`super::RedisBackend`], a fleet probe in its
//! own registry.

use std::future::Future;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

use super::codes::{classify, ReplyCode};
use super::connection::{Dial, Nodes, Topology};
use crate::backends::{Backend, BackendError, ErrorKind};
use crate::config::{ReadFrom, RedisConfig, RedisMode};
use crate::secret::Secret;

/// A failed request: the error, and the reply codes in it (each once).
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub(crate) error: BackendError,
    pub(crate) codes: Vec<ReplyCode>,
}

impl From<Failure> for BackendError {
    fn from(failure: Failure) -> Self {
        failure.error
    }
}

/// One Redis deployment's client.
pub(crate) struct RedisClient {
    nodes: Nodes,
    timeout: Duration,
    secrets: Vec<Secret>,
    /// The configured node(s), for logs; never a URL, which may hold credentials.
    endpoint: String,
}

impl RedisClient {
    /// Builds the client without connecting; a new sentinel master or
    /// cluster slot owner counts into `changes`. A broken connection is
    /// retried once within a request.
    pub(crate) fn new(config: &RedisConfig, changes: Counter) -> Result<Self, BackendError> {
        Self::with_reconnects(config, changes, 1, false, None)
    }

    /// As [`Self::new`], for a probe: one attempt per request, so a target
    /// that refuses connections fails at once; and every node dialled as
    /// `dial` allows.
    pub(crate) fn for_probe(config: &RedisConfig, dial: &Dial) -> Result<Self, BackendError> {
        Self::with_reconnects(config, Counter::default(), 0, false, Some(dial))
    }

    /// As [`Self::for_probe`], for the census: reading replicas when
    /// `read_from` says so (in a cluster, the census picks the node of each
    /// request from [`Topology::shards`]; in sentinel mode, every request
    /// goes to a replica the sentinels name). A cluster census's
    /// connections are always `READONLY`, so it can read a failed master's
    /// replica.
    pub(crate) fn for_census(
        config: &RedisConfig,
        read_from: ReadFrom,
        dial: Option<&Dial>,
    ) -> Result<Self, BackendError> {
        let replicas = read_from == ReadFrom::Replica || config.mode == RedisMode::Cluster;
        Self::with_reconnects(config, Counter::default(), 0, replicas, dial)
    }

    fn with_reconnects(
        config: &RedisConfig,
        changes: Counter,
        reconnects: usize,
        replicas: bool,
        dial: Option<&Dial>,
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
        let nodes = Nodes::new(config, changes, reconnects, replicas, dial)
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
        })
    }

    /// `host:port` of the configured node(s).
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Whether requests spread over several masters (cluster mode).
    pub(crate) fn is_cluster(&self) -> bool {
        self.nodes.is_cluster()
    }

    /// Runs `send` within the timeout, classifying a failure; lets a
    /// sentinel master go after a `READONLY` or a broken connection.
    async fn run<T>(
        &self,
        send: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Failure> {
        match tokio::time::timeout(self.timeout, send).await {
            Err(_) => Err(Failure {
                error: BackendError::timeout(Backend::Redis, self.timeout),
                codes: Vec::new(),
            }),
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                let (error, codes) = classify(&err, &self.secrets);
                if codes.contains(&ReplyCode::ReadOnly) || error.kind == ErrorKind::Connection {
                    self.nodes.forget_master();
                }
                Err(Failure { error, codes })
            }
        }
    }

    /// `cmd` to the node that serves its key.
    pub(crate) async fn query<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, Failure> {
        self.run(self.nodes.query(cmd)).await
    }

    /// `cmd` to the master at `addr` (one of [`Self::topology`]'s; in a
    /// cluster, one of its replicas too).
    pub(crate) async fn on_master<T: redis::FromRedisValue>(
        &self,
        addr: &str,
        cmd: &redis::Cmd,
    ) -> Result<T, Failure> {
        self.run(self.nodes.on_master(addr, cmd)).await
    }

    /// The plain pipeline `pipe` on the node at `addr`, as
    /// [`Self::on_master`]: one reply per command.
    pub(crate) async fn pipeline_on(
        &self,
        addr: &str,
        pipe: &redis::Pipeline,
    ) -> Result<Vec<redis::Value>, Failure> {
        self.run(self.nodes.pipe_on_master(addr, pipe)).await
    }

    /// `LRANGE key start stop`.
    pub(crate) async fn lrange(
        &self,
        key: &str,
        start: i64,
        stop: i64,
    ) -> Result<Vec<String>, Failure> {
        let mut cmd = redis::cmd("LRANGE");
        cmd.arg(key).arg(start).arg(stop);
        self.query(&cmd).await
    }

    /// `RPUSH` + `LTRIM` (keep the last `keep`) + `PEXPIRE` in one `MULTI`.
    pub(crate) async fn push_trimmed(
        &self,
        key: &str,
        value: &str,
        keep: i64,
        ttl_ms: u64,
    ) -> Result<(), Failure> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .rpush(key, value)
            .ignore()
            .ltrim(key, -(keep as isize), -1)
            .ignore()
            .pexpire(key, i64::try_from(ttl_ms).unwrap_or(i64::MAX))
            .ignore();
        self.run(self.nodes.query_pipe(&pipe)).await
    }

    /// Who serves; a request only where the mode needs one.
    pub(crate) async fn topology(&self) -> Result<Topology, Failure> {
        match self.nodes.fixed_topology() {
            Some(topology) => Ok(topology),
            None => self.run(self.nodes.topology()).await,
        }
    }
}
