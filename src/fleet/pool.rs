//! Clients kept between probes, per (module, target, login), so a scrape
//! does not pay a reconnect, a TLS handshake and an AUTH each time. Each
//! prober has its own moka cache: at most `probe.max_pooled_targets`
//! entries, least recently used out first, and an entry unused for
//! `probe.pool_idle_timeout` dropped (and its connections with it).

use std::sync::Arc;
use std::time::Duration;

use moka::policy::EvictionPolicy;
use moka::sync::Cache;

/// A pooled client's key: the module, the canonical target, which reading
/// of the secret files it logged in with, and the addresses it dials (a
/// name that resolves elsewhere gets a new client).
pub(crate) type PoolKey = (String, String, u64, Vec<std::net::SocketAddr>);

/// One prober's clients.
pub(crate) struct Pool<C: Send + Sync + 'static>(Cache<PoolKey, Arc<C>>);

impl<C: Send + Sync + 'static> Pool<C> {
    pub(crate) fn new(capacity: u64, idle: Duration) -> Self {
        Self(
            Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(idle)
                .eviction_policy(EvictionPolicy::lru())
                .build(),
        )
    }

    /// The client for `key`, built by `make` if there is none (a failure to
    /// build is not kept).
    pub(crate) fn get_or_try_insert<E>(
        &self,
        key: PoolKey,
        make: impl FnOnce() -> Result<C, E>,
    ) -> Result<Arc<C>, E> {
        if let Some(client) = self.0.get(&key) {
            return Ok(client);
        }
        let client = Arc::new(make()?);
        self.0.insert(key, client.clone());
        Ok(client)
    }

    /// Clients held, after evicting what is due.
    pub(crate) fn len(&self) -> u64 {
        self.0.run_pending_tasks();
        self.0.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_keeps_at_most_its_capacity_least_recently_used_out() {
        let pool: Pool<u32> = Pool::new(3, Duration::from_secs(60));
        let key = |n: u32| ("m".to_owned(), n.to_string(), 0, Vec::new());
        for n in 0..3 {
            pool.get_or_try_insert(key(n), || Ok::<_, ()>(n)).unwrap();
        }
        pool.len();
        // 0 is used again, so 1 is the least recently used.
        assert_eq!(
            *pool.get_or_try_insert(key(0), || Ok::<_, ()>(99)).unwrap(),
            0
        );
        pool.len();
        pool.get_or_try_insert(key(3), || Ok::<_, ()>(3)).unwrap();
        assert_eq!(pool.len(), 3);
        assert!(pool.0.get(&key(1)).is_none(), "1 went");
        assert!(pool.0.get(&key(0)).is_some());
        for n in 10..1000 {
            pool.get_or_try_insert(key(n), || Ok::<_, ()>(n)).unwrap();
        }
        assert_eq!(pool.len(), 3);
    }
}
