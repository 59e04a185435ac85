//! The `redis` crate's connections, one type per `--redis.mode`:
//! [`standalone`], [`cluster`] and [`sentinel`]. [`Nodes`] holds the one the
//! configuration names and hands each request to it. Nothing here connects
//! at construction.

mod cluster;
mod sentinel;
mod standalone;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use redis::aio::ConnectionManagerConfig;
use redis::{
    Cmd, ConnectionAddr, FromRedisValue, Pipeline, ProtocolVersion, RedisConnectionInfo,
    RedisResult, TlsCertificates,
};

use crate::config::values::RedisUrl;
use crate::config::{RedisConfig, RedisMode};
use cluster::Cluster;
use sentinel::Sentinel;
use standalone::Standalone;

/// The connection of the configured mode.
pub(super) struct Nodes(Mode);

enum Mode {
    Standalone(Standalone),
    Cluster(Cluster),
    Sentinel(Box<Sentinel>),
}

/// What a look at the topology found.
pub(crate) struct Topology {
    /// `host:port` of every master.
    pub(crate) masters: Vec<String>,
    /// `None` where only the masters' `INFO` (`connected_slaves`) knows.
    pub(crate) replicas: Option<usize>,
    /// Cluster mode: every master that claims slots, failed ones too, with
    /// its slots and healthy replicas (empty elsewhere): what a reader of
    /// the whole keyspace must cover.
    pub(crate) shards: Vec<Shard>,
    /// The mode and who serves, for `/health`.
    pub(crate) summary: String,
}

/// How a fleet probe's client reaches its target: the address that was
/// checked for it, and a resolver that checks every other node a server
/// names before it is dialled.
#[derive(Clone)]
pub(crate) struct Dial {
    /// Dialled instead of the target's name (plain connections; TLS needs
    /// the name, which the resolver answers with the checked addresses
    /// where the crate lets it).
    pub(crate) address: SocketAddr,
    pub(crate) resolver: Arc<dyn redis::io::AsyncDNSResolver>,
}

/// [`Dial::resolver`] as the crate's builders take it.
struct Resolver(Arc<dyn redis::io::AsyncDNSResolver>);

impl redis::io::AsyncDNSResolver for Resolver {
    fn resolve<'a, 'b: 'a>(
        &'a self,
        host: &'b str,
        port: u16,
    ) -> redis::RedisFuture<'a, Box<dyn Iterator<Item = SocketAddr> + Send + 'a>> {
        self.0.resolve(host, port)
    }
}

/// A cluster master's share of the keyspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Shard {
    pub(crate) master: String,
    /// Flagged `fail` or `fail?` by the node that answered.
    pub(crate) failed: bool,
    /// Its slot ranges, inclusive.
    pub(crate) slots: Vec<(u16, u16)>,
    /// Its healthy replicas.
    pub(crate) replicas: Vec<String>,
}

/// What every mode's client is built from.
struct Settings<'a> {
    config: &'a RedisConfig,
    /// The CA and client certificate files, read once.
    certs: Option<TlsCertificates>,
    dial: Option<&'a Dial>,
}

impl Nodes {
    /// Builds the client of `config.mode`; connects nothing. A new
    /// sentinel master or cluster slot owner counts into `changes`. A
    /// broken connection is retried `reconnects` times within a request.
    /// With `replicas`, a cluster's connections to its replicas are
    /// `READONLY`, so requests sent to a replica by address are served
    /// there, and a sentinel client talks to a replica the sentinels name.
    /// With `dial`, a fleet probe's: nothing is dialled that did not pass
    /// its checks.
    pub(super) fn new(
        config: &RedisConfig,
        changes: Counter,
        reconnects: usize,
        replicas: bool,
        dial: Option<&Dial>,
    ) -> RedisResult<Self> {
        let settings = Settings {
            config,
            certs: certificates(config)?,
            dial,
        };
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(reconnects)
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_secs(2));
        Ok(Self(match config.mode {
            RedisMode::Standalone => Mode::Standalone(Standalone::new(&settings, manager)?),
            RedisMode::Cluster => Mode::Cluster(Cluster::new(&settings, changes, replicas)?),
            RedisMode::Sentinel => Mode::Sentinel(Box::new(Sentinel::new(
                &settings, manager, changes, replicas,
            )?)),
        }))
    }

    /// Whether requests spread over several masters (cluster mode), so one
    /// master's failure says nothing of the others.
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self.0, Mode::Cluster(_))
    }

    /// Sends `cmd` to the node that serves its key (or the only master).
    pub(super) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        match &self.0 {
            Mode::Standalone(node) => node.query(cmd).await,
            Mode::Cluster(cluster) => cluster.query(cmd).await,
            Mode::Sentinel(sentinel) => sentinel.query(cmd).await,
        }
    }

    /// Sends `pipe` (a `MULTI` within one slot) like [`Nodes::query`].
    pub(super) async fn query_pipe(&self, pipe: &Pipeline) -> RedisResult<()> {
        match &self.0 {
            Mode::Standalone(node) => node.query_pipe(pipe).await,
            Mode::Cluster(cluster) => cluster.query_pipe(pipe).await,
            Mode::Sentinel(sentinel) => sentinel.query_pipe(pipe).await,
        }
    }

    /// Sends `cmd` to the master (or, in a cluster, the replica) at `addr`
    /// (from [`Nodes::topology`]); with one master, that is any request.
    pub(super) async fn on_master<T: FromRedisValue>(
        &self,
        addr: &str,
        cmd: &Cmd,
    ) -> RedisResult<T> {
        match &self.0 {
            Mode::Cluster(cluster) => cluster.on_master(addr, cmd).await,
            _ => self.query(cmd).await,
        }
    }

    /// Sends the (plain, not `MULTI`) pipeline `pipe` to the node at `addr`,
    /// as [`Nodes::on_master`]; its replies, one per command.
    pub(super) async fn pipe_on_master(
        &self,
        addr: &str,
        pipe: &Pipeline,
    ) -> RedisResult<Vec<redis::Value>> {
        match &self.0 {
            Mode::Cluster(cluster) => cluster.pipe_on_master(addr, pipe).await,
            Mode::Standalone(node) => node.pipe(pipe).await,
            Mode::Sentinel(sentinel) => sentinel.pipe(pipe).await,
        }
    }

    /// The topology where it needs no request: standalone's one node.
    pub(super) fn fixed_topology(&self) -> Option<Topology> {
        match &self.0 {
            Mode::Standalone(node) => Some(node.topology()),
            _ => None,
        }
    }

    /// Who serves: the masters, how many replicas, and a summary.
    pub(super) async fn topology(&self) -> RedisResult<Topology> {
        match &self.0 {
            Mode::Standalone(node) => Ok(node.topology()),
            Mode::Cluster(cluster) => cluster.topology().await,
            Mode::Sentinel(sentinel) => sentinel.topology().await,
        }
    }

    /// Sentinel mode: lets the master go (after a `READONLY` or a broken
    /// connection), so the next request asks the sentinels again.
    pub(super) fn forget_master(&self) {
        if let Mode::Sentinel(sentinel) = &self.0 {
            sentinel.forget_master();
        }
    }
}

/// Where a URL points, with TLS if it is `rediss://`.
fn address(url: &RedisUrl) -> ConnectionAddr {
    if url.tls {
        ConnectionAddr::TcpTls {
            host: url.host.clone(),
            port: url.port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(url.host.clone(), url.port)
    }
}

fn endpoint_of(addr: &ConnectionAddr) -> String {
    match addr {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            format!("{host}:{port}")
        }
        other => other.to_string(),
    }
}

/// The data nodes' database, user, password and protocol.
fn node_settings(config: &RedisConfig) -> RedisConnectionInfo {
    let first = config.url.first();
    let mut settings = RedisConnectionInfo::default()
        .set_db(i64::from(first.db))
        .set_protocol(ProtocolVersion::RESP3);
    if let Some(user) = &first.username {
        settings = settings.set_username(user);
    }
    if let Some(password) = &config.password {
        settings = settings.set_password(password.expose());
    }
    settings
}

/// The CA and client certificate files, read once.
fn certificates(config: &RedisConfig) -> RedisResult<Option<TlsCertificates>> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|err| {
            redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "cannot read a TLS file",
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
    Ok(
        (root_cert.is_some() || client_tls.is_some()).then_some(TlsCertificates {
            client_tls,
            root_cert,
        }),
    )
}
