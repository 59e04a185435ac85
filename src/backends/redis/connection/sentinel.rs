//! `--redis.mode sentinel`: a [`ConnectionManager`] to the master the
//! sentinels name. The crate does not follow a failover by itself
//! (redis-rs #1438), so [`Sentinel::forget_master`] drops the connection
//! after a `READONLY` or a broken connection, and every probe asks the
//! sentinels again; a new address counts in
//! `llmcache_redis_master_changes_total`. The census, reading replicas,
//! asks the sentinels for a replica instead (and the master if they name
//! none).

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use prometheus_client::metrics::counter::Counter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{Cmd, ErrorKind, FromRedisValue, Pipeline, ProtocolVersion, RedisResult, TlsMode};

use super::{address, endpoint_of, node_settings, Settings, Topology};

/// The master the sentinels named (or, reading replicas, a replica), and
/// the connection to it.
#[derive(Clone)]
struct Master {
    addr: String,
    conn: ConnectionManager,
    /// A replica, not the master.
    replica: bool,
}

/// The sentinels, and the master they last named.
pub(super) struct Sentinel {
    name: String,
    sentinels: usize,
    client: tokio::sync::Mutex<SentinelClient>,
    /// Reading replicas (the census's `read_from = "replica"`): asks for a
    /// replica first, and the master only when there is none.
    replicas: Option<tokio::sync::Mutex<SentinelClient>>,
    manager: ConnectionManagerConfig,
    master: ArcSwapOption<Master>,
    /// The last master address seen, to count changes.
    last: Mutex<Option<String>>,
    /// `llmcache_redis_master_changes_total`.
    changes: Counter,
}

impl Sentinel {
    /// With `replicas`, every request goes to a replica the sentinels name
    /// (the master if they name none).
    pub(super) fn new(
        settings: &Settings<'_>,
        manager: ConnectionManagerConfig,
        changes: Counter,
        replicas: bool,
    ) -> RedisResult<Self> {
        let config = settings.config;
        let name = config.sentinel_master.clone().unwrap_or_default();
        let replicas = replicas
            .then(|| client(settings, SentinelServerType::Replica))
            .transpose()?
            .map(tokio::sync::Mutex::new);
        Ok(Self {
            name,
            sentinels: config.url.0.len(),
            client: tokio::sync::Mutex::new(client(settings, SentinelServerType::Master)?),
            replicas,
            manager,
            master: ArcSwapOption::empty(),
            last: Mutex::new(None),
            changes,
        })
    }

    pub(super) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        cmd.query_async(&mut self.master(false).await?.conn).await
    }

    pub(super) async fn query_pipe(&self, pipe: &Pipeline) -> RedisResult<()> {
        pipe.query_async(&mut self.master(false).await?.conn).await
    }

    pub(super) async fn pipe(&self, pipe: &Pipeline) -> RedisResult<Vec<redis::Value>> {
        pipe.query_async(&mut self.master(false).await?.conn).await
    }

    /// Asks the sentinels again who the master is.
    pub(super) async fn topology(&self) -> RedisResult<Topology> {
        let master = self.master(true).await?;
        Ok(Topology {
            summary: format!(
                "sentinel {:?}: {} {}, {} sentinels",
                self.name,
                if master.replica { "replica" } else { "master" },
                master.addr,
                self.sentinels
            ),
            masters: vec![master.addr],
            replicas: None,
            shards: Vec::new(),
        })
    }

    /// Drops the connection to the master, so the next request asks the
    /// sentinels who the master is. After a `READONLY` or a broken
    /// connection: the node may have been demoted.
    pub(super) fn forget_master(&self) {
        self.master.store(None);
    }

    /// The master: the current connection, unless `recheck` asks the
    /// sentinels again. A new address counts as a master change, whichever
    /// request finds it first.
    async fn master(&self, recheck: bool) -> RedisResult<Master> {
        let Self {
            name,
            client,
            replicas,
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
        let (found, replica) = match replicas {
            None => (client.async_get_client().await?, false),
            Some(replicas) => match replicas.lock().await.async_get_client().await {
                Ok(found) => (found, true),
                Err(err) if err.kind() == ErrorKind::NoValidReplicasFoundBySentinel => {
                    (client.async_get_client().await?, false)
                }
                Err(err) => return Err(err),
            },
        };
        let addr = endpoint_of(found.get_connection_info().addr());
        if let Some(current) = master.load_full().filter(|m| m.addr == addr) {
            return Ok((*current).clone());
        }
        if !replica {
            let previous = last
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .replace(addr.clone());
            if let Some(previous) = previous.filter(|p| *p != addr) {
                tracing::warn!(master = %name, from = %previous, to = %addr, "the sentinels name a new master");
                changes.inc();
            }
        }
        let conn = ConnectionManager::new_lazy_with_config(found, manager.clone())?;
        let current = Master {
            addr,
            conn,
            replica,
        };
        master.store(Some(Arc::new(current.clone())));
        Ok(current)
    }
}

/// A sentinel client for `role`, with the data nodes' login and TLS.
fn client(settings: &Settings<'_>, role: SentinelServerType) -> RedisResult<SentinelClient> {
    let config = settings.config;
    let first = config.url.first();
    let redis = node_settings(config);
    let name = config.sentinel_master.clone().unwrap_or_default();
    let sentinels = config.url.0.iter().map(address).collect::<Vec<_>>();
    let mut builder = SentinelClientBuilder::new(sentinels, name, role)?
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
    if let Some(certs) = settings.certs.clone() {
        builder = builder
            .set_client_to_redis_certificates(certs.clone())
            .set_client_to_sentinel_certificates(certs);
    }
    builder.build()
}
