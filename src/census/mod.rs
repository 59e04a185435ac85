//! The census of the application's own data: how many keys, how much
//! memory, how many without a TTL and how long the lists are, per key group
//! in Redis; and how many records each collection holds in Chroma. A
//! background loop, read-only and paced by a budget, off the canary's path
//! and never during a scrape; one pass at a time, every `interval` from
//! start-up. A pass publishes all its series when it ends ([`series`]):
//! half a pass is never visible, and a failed pass leaves the last one's
//! series as they were.
//!
//! The canary counts its own Redis and Chroma ([`Census::new`]); a fleet
//! module with a census counts each target it probes, one store per
//! target ([`Census::of`]), its passes taking turns with other targets'
//! ([`Census::taking_turns`]).

mod chroma;
mod redis;
mod series;
mod sketch;

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::backends::chroma::ChromaClient;
use crate::backends::redis::RedisClient;
use crate::backends::BackendError;
use crate::config::{CensusConfig, ChromaConfig, RedisCensus, RedisConfig};
pub(crate) use series::CensusMetrics;

/// A Redis to count, and how.
pub(crate) struct RedisStore {
    /// Built with [`RedisClient::for_census`], so it reads where
    /// `config.read_from` says.
    pub(crate) client: RedisClient,
    pub(crate) config: RedisCensus,
}

/// A Chroma to count: its client (for one tenant and database), the
/// collection named whatever its size, and how many others are named.
pub(crate) struct ChromaStore {
    pub(crate) client: ChromaClient,
    pub(crate) own: String,
    pub(crate) top: usize,
}

/// The census of one Redis, one Chroma, or both.
pub(crate) struct Census {
    interval: Duration,
    redis: Option<RedisStore>,
    chroma: Option<ChromaStore>,
    metrics: CensusMetrics,
    /// What is counted, for log lines: empty for the canary's own stores.
    subject: String,
    /// Shared with other censuses: a pass holds one permit while it runs.
    permits: Option<Arc<Semaphore>>,
    /// Whether the log has said once why some lengths are not read.
    told_lengths: AtomicBool,
    /// Passes that succeeded and failed, where someone counts them (a
    /// fleet module's).
    passes: Option<(Counter, Counter)>,
}

impl Census {
    /// The census of the canary's Redis and Chroma; builds the clients,
    /// connects nothing.
    pub(crate) fn new(
        config: &CensusConfig,
        redis: &RedisConfig,
        chroma: &ChromaConfig,
        metrics: CensusMetrics,
    ) -> Result<Self, BackendError> {
        let redis = RedisStore {
            client: RedisClient::for_census(redis, config.redis.read_from, None)?,
            config: config.redis.clone(),
        };
        let chroma = ChromaStore {
            client: ChromaClient::new(chroma, None)?,
            own: chroma.collection.clone(),
            top: config.chroma.top_collections,
        };
        Ok(Self::of(
            config.interval,
            Some(redis),
            Some(chroma),
            metrics,
            String::new(),
        ))
    }

    /// The census of the given stores, every `interval`; `subject` names
    /// them in log lines (" of target T, module M").
    pub(crate) fn of(
        interval: Duration,
        redis: Option<RedisStore>,
        chroma: Option<ChromaStore>,
        metrics: CensusMetrics,
        subject: String,
    ) -> Self {
        Self {
            interval,
            redis,
            chroma,
            metrics,
            subject,
            permits: None,
            told_lengths: AtomicBool::new(false),
            passes: None,
        }
    }

    /// Counts each store's pass into `success` or `failure`.
    pub(crate) fn counting(mut self, success: Counter, failure: Counter) -> Self {
        self.passes = Some((success, failure));
        self
    }

    /// One store's pass ended.
    fn count(&self, ok: bool) {
        if let Some((success, failure)) = &self.passes {
            if ok { success } else { failure }.inc();
        }
    }

    /// Runs each pass only while it holds one of `permits`.
    pub(crate) fn taking_turns(mut self, permits: Arc<Semaphore>) -> Self {
        self.permits = Some(permits);
        self
    }

    /// A pass now, then one every `interval`, until `cancel`; a pass is
    /// never started while the last runs.
    pub(crate) async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut every = tokio::time::interval(self.interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = every.tick() => {}
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.pass() => {}
            }
        }
    }

    /// One pass of each store, once it holds a permit (if it shares
    /// them); each publishes when it ends, timed from its own start.
    async fn pass(&self) {
        let _turn = match &self.permits {
            Some(permits) => Some(permits.clone().acquire_owned().await),
            None => None,
        };
        let metrics = &self.metrics;
        if let Some(store) = &self.redis {
            let start = Instant::now();
            let result = redis::pass(&store.client, &store.config, |n| metrics.scanned(n))
                .await
                .map_err(|err| err.0);
            self.count(result.is_ok());
            if let Ok(pass) = &result {
                if !pass.without_lengths.is_empty() && !self.told_lengths.swap(true, Relaxed) {
                    for why in &pass.without_lengths {
                        tracing::info!(subject = %self.subject, "census: {why}");
                    }
                }
            }
            metrics.publish_redis(&self.subject, start, result);
        }
        if let Some(store) = &self.chroma {
            let start = Instant::now();
            let result = chroma::pass(&store.client)
                .await
                .map_err(|err| err.to_string());
            self.count(result.is_ok());
            metrics.publish_chroma(&self.subject, start, result, &store.own, store.top);
        }
    }
}
