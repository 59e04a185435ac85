//! `--redis.mode standalone`: one node, through a [`ConnectionManager`]
//! (RESP3, so a connection the server closed while idle is replaced before
//! the next request needs it).

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Cmd, FromRedisValue, IntoConnectionInfo, Pipeline, RedisResult};

use super::{address, node_settings, Settings, Topology};

/// The one node.
pub(super) struct Standalone {
    endpoint: String,
    conn: ConnectionManager,
}

impl Standalone {
    pub(super) fn new(
        settings: &Settings<'_>,
        manager: ConnectionManagerConfig,
    ) -> RedisResult<Self> {
        let first = settings.config.url.first();
        let addr = match (settings.dial, address(first)) {
            // The address the probe checked, not the name again.
            (Some(dial), redis::ConnectionAddr::Tcp(..)) => {
                redis::ConnectionAddr::Tcp(dial.address.ip().to_string(), dial.address.port())
            }
            (_, addr) => addr,
        };
        let info = addr
            .into_connection_info()?
            .set_redis_settings(node_settings(settings.config));
        let client = match settings.certs.clone() {
            Some(certs) => Client::build_with_tls(info, certs)?,
            None => Client::open(info)?,
        };
        Ok(Self {
            endpoint: first.endpoint(),
            conn: ConnectionManager::new_lazy_with_config(client, manager)?,
        })
    }

    pub(super) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        cmd.query_async(&mut self.conn.clone()).await
    }

    pub(super) async fn query_pipe(&self, pipe: &Pipeline) -> RedisResult<()> {
        pipe.query_async(&mut self.conn.clone()).await
    }

    pub(super) async fn pipe(&self, pipe: &Pipeline) -> RedisResult<Vec<redis::Value>> {
        pipe.query_async(&mut self.conn.clone()).await
    }

    /// The one node, whose replicas its `INFO` counts.
    pub(super) fn topology(&self) -> Topology {
        Topology {
            masters: vec![self.endpoint.clone()],
            replicas: None,
            shards: Vec::new(),
            summary: format!("standalone {}", self.endpoint),
        }
    }
}
