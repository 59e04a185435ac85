//! `--redis.mode cluster`: a [`ClusterConnection`], which routes by slot
//! and follows `MOVED` and `ASK` for single commands; per-master commands
//! are routed by address, and a transaction redirected inside `MULTI` is
//! retried here ([`transaction`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_read_routing::RandomReplicaStrategy;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{
    Cmd, ConnectionInfo, FromRedisValue, IntoConnectionInfo, Pipeline, ProtocolVersion,
    RedisResult, TlsMode, Value,
};

use super::super::topology::{
    owner_changes, parse_cluster_nodes, remember, replicas_of, slot_owners, SlotOwners,
};
use super::{address, Resolver, Settings, Shard, Topology};

/// The cluster, through the crate's connection.
pub(super) struct Cluster {
    conn: ClusterConnection,
    /// Whether the seed answered as a cluster node: until it has, nothing
    /// is sent (the crate would send it to a plain node as it is).
    confirmed: AtomicBool,
    /// The slot map at the last look, to count new owners.
    owners: Mutex<Option<SlotOwners>>,
    /// `llmcache_redis_master_changes_total`.
    changes: Counter,
}

impl Cluster {
    /// With `replicas`, every connection is `READONLY` (the crate's read
    /// routing), so a replica serves the reads sent to it by address.
    pub(super) fn new(
        settings: &Settings<'_>,
        changes: Counter,
        replicas: bool,
    ) -> RedisResult<Self> {
        let config = settings.config;
        let first = config.url.first();
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
        if let Some(certs) = settings.certs.clone() {
            builder = builder.certs(certs);
        }
        if replicas {
            builder = builder.read_routing_strategy(RandomReplicaStrategy);
        }
        if let Some(dial) = settings.dial {
            builder = builder.async_dns_resolver(Resolver(dial.resolver.clone()));
        }
        let client = builder.build()?;
        Ok(Self {
            conn: client.get_pending_async_connection_with_config(Default::default()),
            confirmed: AtomicBool::new(false),
            owners: Mutex::new(None),
            changes,
        })
    }

    /// Makes sure the seed is a cluster node before anything else is sent.
    async fn confirm(&self) -> RedisResult<()> {
        if !self.confirmed.load(Ordering::Relaxed) {
            let _: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut self.conn.clone())
                .await?;
            self.confirmed.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    pub(super) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        self.confirm().await?;
        cmd.query_async(&mut self.conn.clone()).await
    }

    pub(super) async fn query_pipe(&self, pipe: &Pipeline) -> RedisResult<()> {
        self.confirm().await?;
        transaction(&self.conn, pipe).await
    }

    /// Sends `cmd` to the node at `addr` (from [`Cluster::topology`]).
    pub(super) async fn on_master<T: FromRedisValue>(
        &self,
        addr: &str,
        cmd: &Cmd,
    ) -> RedisResult<T> {
        self.confirm().await?;
        let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "6379"));
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: port.parse().unwrap_or(6379),
        });
        let value = self
            .conn
            .clone()
            .route_command(cmd.clone(), routing)
            .await?;
        T::from_redis_value(value).map_err(Into::into)
    }

    /// Sends the plain pipeline `pipe` to the node at `addr`.
    pub(super) async fn pipe_on_master(
        &self,
        addr: &str,
        pipe: &Pipeline,
    ) -> RedisResult<Vec<Value>> {
        self.confirm().await?;
        let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "6379"));
        let route = SingleNodeRoutingInfo::ByAddress {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: port.parse().unwrap_or(6379),
        };
        let count = pipe.cmd_iter().count();
        self.conn
            .clone()
            .route_pipeline(pipe.clone(), 0, count, route)
            .await
    }

    /// The masters and replicas `CLUSTER NODES` lists; slots that changed
    /// owner since the last look count as master changes.
    pub(super) async fn topology(&self) -> RedisResult<Topology> {
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
        let mut seen = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(before) = seen.as_ref() {
            let moved = owner_changes(before, &now);
            if moved > 0 {
                tracing::warn!(moved, "cluster slots have new owners");
                self.changes.inc_by(moved as u64);
            }
        }
        *seen = Some(remember(seen.as_ref(), now));
        let masters: Vec<String> = nodes
            .iter()
            .filter(|n| n.master && !n.failed && !n.slots.is_empty())
            .map(|n| n.addr.clone())
            .collect();
        let replicas = nodes.iter().filter(|n| !n.master && !n.failed).count();
        let shards = nodes
            .iter()
            .filter(|n| n.master && !n.slots.is_empty())
            .map(|m| Shard {
                master: m.addr.clone(),
                failed: m.failed,
                slots: m.slots.clone(),
                replicas: replicas_of(&nodes, m),
            })
            .collect();
        Ok(Topology {
            summary: format!(
                "cluster: {} masters, {replicas} replicas, state {state}",
                masters.len()
            ),
            masters,
            replicas: Some(replicas),
            shards,
        })
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
