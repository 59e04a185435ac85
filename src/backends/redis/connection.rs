//! The `redis` crate's connections, one shape per `--redis.mode`:
//!
//! - **standalone**: a [`ConnectionManager`] (RESP3, so a connection the
//!   server closed while idle is replaced before the next request needs it);
//! - **cluster**: a [`ClusterConnection`], which routes by slot and follows
//!   `MOVED` and `ASK`; per-master commands are routed by address;
//! - **sentinel**: a `ConnectionManager` to the master the sentinels name.
//!   The crate does not follow a failover by itself (redis-rs #1438), so
//!   [`Nodes::forget_master`] drops the connection after a `READONLY` or a
//!   broken connection, and every probe asks the sentinels again; a new
//!   address counts in `llmcache_redis_master_changes_total`.
//!
//! Nothing here connects at construction.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use prometheus_client::metrics::counter::Counter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    Client, Cmd, ConnectionAddr, ConnectionInfo, FromRedisValue, IntoConnectionInfo, Pipeline,
    ProtocolVersion, RedisConnectionInfo, RedisResult, TlsCertificates, TlsMode, Value,
};

use super::topology::{owner_changes, parse_cluster_nodes, remember, slot_owners, SlotOwners};
use crate::config::values::RedisUrl;
use crate::config::{RedisConfig, RedisMode};

/// The master the sentinels named, and the connection to it.
#[derive(Clone)]
struct Master {
    addr: String,
    conn: ConnectionManager,
}

/// The connections of one mode.
pub(super) enum Nodes {
    Standalone {
        endpoint: String,
        conn: ConnectionManager,
    },
    Cluster {
        conn: ClusterConnection,
        /// Whether the seed answered as a cluster node: until it has, nothing
        /// is sent (the crate would send it to a plain node as it is).
        confirmed: AtomicBool,
        /// The slot map at the last look, to count new owners.
        owners: Mutex<Option<SlotOwners>>,
        /// `llmcache_redis_master_changes_total`.
        changes: Counter,
    },
    Sentinel(Box<Sentinel>),
}

/// The sentinels, and the master they last named.
pub(super) struct Sentinel {
    name: String,
    sentinels: usize,
    client: tokio::sync::Mutex<SentinelClient>,
    manager: ConnectionManagerConfig,
    master: ArcSwapOption<Master>,
    /// The last master address seen, to count changes.
    last: Mutex<Option<String>>,
    /// `llmcache_redis_master_changes_total`.
    changes: Counter,
}

/// What a look at the topology found.
pub(super) struct Topology {
    /// `host:port` of every master.
    pub(super) masters: Vec<String>,
    /// `None` where only the masters' `INFO` (`connected_slaves`) knows.
    pub(super) replicas: Option<usize>,
    /// The mode and who serves, for `/health`.
    pub(super) summary: String,
}

impl Nodes {
    /// Builds the clients of `config.mode`; connects nothing. A new
    /// sentinel master or cluster slot owner counts into `changes`.
    pub(super) fn new(config: &RedisConfig, changes: Counter) -> RedisResult<Self> {
        let first = config.url.first();
        let certs = certificates(config)?;
        let redis = node_settings(config);
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_secs(2));
        Ok(match config.mode {
            RedisMode::Standalone => {
                let info = address(first)
                    .into_connection_info()?
                    .set_redis_settings(redis);
                let client = match certs {
                    Some(certs) => Client::build_with_tls(info, certs)?,
                    None => Client::open(info)?,
                };
                Self::Standalone {
                    endpoint: first.endpoint(),
                    conn: ConnectionManager::new_lazy_with_config(client, manager)?,
                }
            }
            RedisMode::Cluster => {
                let seeds: Vec<ConnectionInfo> = config
                    .url
                    .0
                    .iter()
                    .map(|url| address(url).into_connection_info())
                    .collect::<RedisResult<_>>()?;
                let mut builder = ClusterClientBuilder::new(seeds)
                    .use_protocol(ProtocolVersion::RESP3)
                    .connection_timeout(config.timeout)
                    .response_timeout(config.timeout)
                    .retries(3);
                if let Some(user) = &first.username {
                    builder = builder.username(user);
                }
                if let Some(password) = &config.password {
                    builder = builder.password(password.expose());
                }
                if first.tls {
                    builder = builder.tls(TlsMode::Secure);
                }
                if let Some(certs) = certs {
                    builder = builder.certs(certs);
                }
                let client = builder.build()?;
                Self::Cluster {
                    conn: client.get_pending_async_connection_with_config(Default::default()),
                    confirmed: AtomicBool::new(false),
                    owners: Mutex::new(None),
                    changes,
                }
            }
            RedisMode::Sentinel => {
                let name = config.sentinel_master.clone().unwrap_or_default();
                let sentinels = config.url.0.iter().map(address).collect::<Vec<_>>();
                let count = sentinels.len();
                let mut builder = SentinelClientBuilder::new(
                    sentinels,
                    name.clone(),
                    SentinelServerType::Master,
                )?
                .set_client_to_redis_protocol(ProtocolVersion::RESP3)
                .set_client_to_redis_db(redis.db());
                if let Some(user) = redis.username() {
                    builder = builder.set_client_to_redis_username(user);
                }
                if let Some(password) = redis.password() {
                    builder = builder.set_client_to_redis_password(password);
                }
                if let Some(file) = &config.sentinel_password_file {
                    builder = builder.set_client_to_sentinel_password(file.secret.expose());
                }
                if first.tls {
                    builder = builder
                        .set_client_to_redis_tls_mode(TlsMode::Secure)
                        .set_client_to_sentinel_tls_mode(TlsMode::Secure);
                }
                if let Some(certs) = certs {
                    builder = builder
                        .set_client_to_redis_certificates(certs.clone())
                        .set_client_to_sentinel_certificates(certs);
                }
                Self::Sentinel(Box::new(Sentinel {
                    name,
                    sentinels: count,
                    client: tokio::sync::Mutex::new(builder.build()?),
                    manager,
                    master: ArcSwapOption::empty(),
                    last: Mutex::new(None),
                    changes,
                }))
            }
        })
    }

    /// Whether requests spread over several masters (cluster mode), so one
    /// master's failure says nothing of the others.
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster { .. })
    }

    /// Cluster mode: makes sure the seed is a cluster node before anything
    /// else is sent.
    async fn confirm_cluster(&self) -> RedisResult<()> {
        if let Self::Cluster {
            conn, confirmed, ..
        } = self
        {
            if !confirmed.load(Ordering::Relaxed) {
                let _: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut conn.clone())
                    .await?;
                confirmed.store(true, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Sends `cmd` to the node that serves its key (or the only master).
    pub(super) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        self.confirm_cluster().await?;
        match self {
            Self::Standalone { conn, .. } => cmd.query_async(&mut conn.clone()).await,
            Self::Cluster { conn, .. } => cmd.query_async(&mut conn.clone()).await,
            Self::Sentinel(sentinel) => {
                cmd.query_async(&mut sentinel.master(false).await?.conn)
                    .await
            }
        }
    }

    /// Sends `pipe` (a `MULTI` within one slot) like [`Nodes::query`].
    pub(super) async fn query_pipe(&self, pipe: &Pipeline) -> RedisResult<()> {
        self.confirm_cluster().await?;
        match self {
            Self::Standalone { conn, .. } => pipe.query_async(&mut conn.clone()).await,
            Self::Cluster { conn, .. } => transaction(conn, pipe).await,
            Self::Sentinel(sentinel) => {
                pipe.query_async(&mut sentinel.master(false).await?.conn)
                    .await
            }
        }
    }

    /// Sends `cmd` to the master at `addr` (from [`Nodes::topology`]).
    pub(super) async fn on_master<T: FromRedisValue>(
        &self,
        addr: &str,
        cmd: &Cmd,
    ) -> RedisResult<T> {
        let Self::Cluster { conn, .. } = self else {
            return self.query(cmd).await;
        };
        let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "6379"));
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: port.parse().unwrap_or(6379),
        });
        let value = conn.clone().route_command(cmd.clone(), routing).await?;
        T::from_redis_value(value).map_err(Into::into)
    }

    /// The topology where it needs no request: standalone's one node.
    pub(super) fn fixed_topology(&self) -> Option<Topology> {
        match self {
            Self::Standalone { endpoint, .. } => Some(standalone(endpoint)),
            _ => None,
        }
    }

    /// Who serves: the masters, how many replicas, and a summary. In
    /// sentinel mode this asks the sentinels again; in cluster mode it
    /// counts slots that changed owner.
    pub(super) async fn topology(&self) -> RedisResult<Topology> {
        match self {
            Self::Standalone { endpoint, .. } => Ok(standalone(endpoint)),
            Self::Sentinel(sentinel) => {
                let master = sentinel.master(true).await?;
                Ok(Topology {
                    summary: format!(
                        "sentinel {:?}: master {}, {} sentinels",
                        sentinel.name, master.addr, sentinel.sentinels
                    ),
                    masters: vec![master.addr],
                    replicas: None,
                })
            }
            Self::Cluster {
                owners, changes, ..
            } => {
                let text: String = self
                    .query(&redis::cmd("CLUSTER").arg("NODES").clone())
                    .await?;
                let nodes = parse_cluster_nodes(&text);
                let state: String = self
                    .query(&redis::cmd("CLUSTER").arg("INFO").clone())
                    .await?;
                let state = state
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("cluster_state:"))
                    .unwrap_or("unknown")
                    .to_owned();
                let now = slot_owners(&nodes);
                let mut seen = owners.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(before) = seen.as_ref() {
                    let moved = owner_changes(before, &now);
                    if moved > 0 {
                        tracing::warn!(moved, "cluster slots have new owners");
                        changes.inc_by(moved as u64);
                    }
                }
                *seen = Some(remember(seen.as_ref(), now));
                let masters: Vec<String> = nodes
                    .iter()
                    .filter(|n| n.master && !n.failed && !n.slots.is_empty())
                    .map(|n| n.addr.clone())
                    .collect();
                let replicas = nodes.iter().filter(|n| !n.master && !n.failed).count();
                Ok(Topology {
                    summary: format!(
                        "cluster: {} masters, {replicas} replicas, state {state}",
                        masters.len()
                    ),
                    masters,
                    replicas: Some(replicas),
                })
            }
        }
    }

    /// Sentinel mode: drops the connection to the master, so the next
    /// request asks the sentinels who the master is. After a `READONLY` or a
    /// broken connection: the node may have been demoted.
    pub(super) fn forget_master(&self) {
        if let Self::Sentinel(sentinel) = self {
            sentinel.master.store(None);
        }
    }
}

impl Sentinel {
    /// The master: the current connection, unless `recheck` asks the
    /// sentinels again. A new address counts as a master change, whichever
    /// request finds it first.
    async fn master(&self, recheck: bool) -> RedisResult<Master> {
        let Self {
            name,
            client,
            manager,
            master,
            last,
            changes,
            ..
        } = self;
        if !recheck {
            if let Some(current) = master.load_full() {
                return Ok((*current).clone());
            }
        }
        let mut client = client.lock().await;
        if !recheck {
            if let Some(current) = master.load_full() {
                return Ok((*current).clone());
            }
        }
        let found = client.async_get_client().await?;
        let addr = endpoint_of(found.get_connection_info().addr());
        if let Some(current) = master.load_full().filter(|m| m.addr == addr) {
            return Ok((*current).clone());
        }
        let previous = last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(addr.clone());
        if let Some(previous) = previous.filter(|p| *p != addr) {
            tracing::warn!(master = %name, from = %previous, to = %addr, "the sentinels name a new master");
            changes.inc();
        }
        let conn = ConnectionManager::new_lazy_with_config(found, manager.clone())?;
        let current = Master { addr, conn };
        master.store(Some(Arc::new(current.clone())));
        Ok(current)
    }
}

/// Cluster mode: runs the transaction `pipe` where the crate routes it. The
/// crate follows `MOVED` and `ASK` for single commands, but inside `MULTI`
/// the redirection comes back in an aborted transaction (`EXECABORT`), which
/// it does not retry: after a failover, writes kept failing for 20 s and
/// more while reads had recovered. So a redirection found there retries the
/// transaction once on the node it names (after `ASKING` for an `ASK`), and
/// has the crate refresh its slot map, by a read of the same key through its
/// own routing, which follows the `MOVED` and rebuilds the map.
async fn transaction(conn: &ClusterConnection, pipe: &Pipeline) -> RedisResult<()> {
    let err = match pipe.query_async::<()>(&mut conn.clone()).await {
        Ok(()) => return Ok(()),
        Err(err) => err,
    };
    let Some(redirect) = Redirect::of(&err) else {
        return Err(err);
    };
    tracing::debug!(to = %redirect.addr(), ask = redirect.ask, "a transaction was redirected; retrying it there");
    let retried = redirect.send(conn, pipe).await;
    if !redirect.ask {
        if let Some(key) = pipe.cmd_iter().find_map(first_key) {
            let _: RedisResult<Value> = redis::cmd("EXISTS")
                .arg(key)
                .query_async(&mut conn.clone())
                .await;
        }
    }
    retried
}

/// The first key a command names (its first argument), for a read of it.
fn first_key(cmd: &Cmd) -> Option<Vec<u8>> {
    match cmd.args_iter().nth(1)? {
        redis::Arg::Simple(bytes) => Some(bytes.to_vec()),
        _ => None,
    }
}

/// Where a `MOVED` or `ASK` inside an aborted transaction points.
struct Redirect {
    host: String,
    port: u16,
    ask: bool,
}

impl Redirect {
    fn of(err: &redis::RedisError) -> Option<Self> {
        let errors = err.clone().into_server_errors()?;
        errors.iter().find_map(|(_, error)| {
            let ask = match error.kind()? {
                redis::ServerErrorKind::Moved => false,
                redis::ServerErrorKind::Ask => true,
                _ => return None,
            };
            // "3999 127.0.0.1:6381": the slot, then the node.
            let node = error.details()?.split_whitespace().nth(1)?;
            let (host, port) = node.rsplit_once(':')?;
            Some(Self {
                host: host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
                port: port.parse().ok()?,
                ask,
            })
        })
    }

    fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Sends the transaction to this node: `MULTI` … `EXEC`, after `ASKING`
    /// for an `ASK` (the flag holds through `MULTI` until `EXEC`).
    async fn send(&self, conn: &ClusterConnection, pipe: &Pipeline) -> RedisResult<()> {
        let route = SingleNodeRoutingInfo::ByAddress {
            host: self.host.clone(),
            port: self.port,
        };
        let commands = pipe.cmd_iter().count();
        let mut explicit = redis::pipe();
        if self.ask {
            explicit.cmd("ASKING");
        }
        explicit.cmd("MULTI");
        for cmd in pipe.cmd_iter() {
            explicit.add_command(cmd.clone());
        }
        explicit.cmd("EXEC");
        let count = commands + 2 + usize::from(self.ask);
        let replies = conn
            .clone()
            .route_pipeline(explicit, 0, count, route)
            .await?;
        match replies.last() {
            Some(Value::Array(_)) => Ok(()),
            Some(Value::ServerError(error)) => Err(error.clone().into()),
            _ => Err(redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "EXEC did not answer with the transaction's replies",
            ))),
        }
    }
}

/// One node, whose replicas its `INFO` counts.
fn standalone(endpoint: &str) -> Topology {
    Topology {
        masters: vec![endpoint.to_owned()],
        replicas: None,
        summary: format!("standalone {endpoint}"),
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
