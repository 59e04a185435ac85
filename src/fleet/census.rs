//! `census` in a redis or chroma module: the census of each probed target
//! ([`crate::census`]), in the background on the module's
//! `census.interval`. A probe starts it if it is not running and adds the
//! target's last complete pass to its answer; it never waits for a pass.
//!
//! One census per (module, target), with its own client (a census batch
//! never queues behind the probe's requests, nor they behind it); at most
//! `probe.max_concurrent_censuses` passes run at once, the others waiting
//! their turn, so a fleet's censuses cannot starve the probes of CPU. A new
//! login from the credentials file, or a name resolving elsewhere, restarts
//! it; a target unprobed for `probe.pool_idle_timeout` stops it (by a timer of its own, so it stops
//! even when no other probe comes), as does being pushed out by
//! `probe.max_pooled_targets`, as for a pooled client; so does a reload,
//! which builds a new fleet. `/metrics` counts the running censuses per
//! module (`llmcache_fleet_censuses`, a guard held by each task) and their
//! passes (`llmcache_fleet_census_passes_total{module,result}`).

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::metrics::{FleetMetrics, PassResult};
use super::report::Report;
use super::Probe;
use crate::backends::redis::RedisClient;
use crate::census::{Census, CensusMetrics, ChromaStore, RedisStore};
use crate::config::{CensusConfig, ProberKind};

/// The running censuses, by (module, canonical target), and how long one
/// lives unprobed.
pub(crate) struct Censuses {
    running: Cache<(String, String), Arc<Running>>,
    idle: Duration,
    /// `probe.max_concurrent_censuses`: passes running at once.
    turns: Arc<Semaphore>,
    metrics: FleetMetrics,
}

/// A census task: what it publishes, when it was last asked for, and its
/// stop (on drop).
struct Running {
    /// The reading of the secret files it logged in with, and the
    /// addresses it dials.
    identity: Identity,
    metrics: CensusMetrics,
    probed: Arc<Mutex<Instant>>,
    _stop: DropGuard,
}

/// What a census logged in with and dials: a change restarts it.
type Identity = (u64, Vec<std::net::SocketAddr>);

impl Censuses {
    pub(crate) fn new(
        capacity: u64,
        idle: Duration,
        at_once: usize,
        metrics: FleetMetrics,
    ) -> Self {
        Self {
            running: Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(idle)
                .eviction_policy(EvictionPolicy::lru())
                .build(),
            idle,
            turns: Arc::new(Semaphore::new(at_once)),
            metrics,
        }
    }

    /// If the probe's module has a census: starts the target's if it is
    /// not running (or ran with another login), and adds its last complete
    /// pass to `report`.
    pub(super) fn report(&self, probe: &Probe<'_>, report: &mut Report) {
        let Some(config) = probe.module.census.config() else {
            return;
        };
        if config.interval.is_zero() {
            return;
        }
        let key = (probe.module_name.to_owned(), probe.target.to_string());
        let identity: Identity = (probe.login.version, probe.addresses.to_vec());
        let current = self
            .running
            .get(&key)
            .filter(|running| running.identity == identity);
        let running = match current {
            Some(running) => running,
            None => {
                let metrics = CensusMetrics::default();
                let name = probe.module_name;
                let census = match build(probe, config, metrics.clone()) {
                    Ok(census) => census.taking_turns(self.turns.clone()).counting(
                        self.metrics.census_passes(name, PassResult::Success),
                        self.metrics.census_passes(name, PassResult::Failure),
                    ),
                    Err(err) => {
                        report.log(format!("census: cannot set up a client: {err}"));
                        return;
                    }
                };
                // Two probes of a new target may get here at once: only the
                // one whose entry is inserted starts its census.
                let entry = self.running.entry(key).or_insert_with_if(
                    || {
                        let running = self.metrics.censuses(name);
                        Arc::new(Running::start(
                            census,
                            identity.clone(),
                            metrics,
                            self.idle,
                            running,
                        ))
                    },
                    |running| running.identity != identity,
                );
                if entry.is_fresh() {
                    report.log(format!(
                        "census: started, a pass every {:?}",
                        config.interval
                    ));
                }
                entry.into_value()
            }
        };
        *running.probed.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        report.log(format!("census: {}", running.metrics.describe()));
        report.collector("census", running.metrics.collector());
    }
}

impl Running {
    /// Spawns `census`, to run until the entry is dropped or the target
    /// goes unprobed for `idle`; `running` counts it while it runs.
    fn start(
        census: Census,
        identity: Identity,
        metrics: CensusMetrics,
        idle: Duration,
        running: Gauge,
    ) -> Self {
        let stop = CancellationToken::new();
        let probed = Arc::new(Mutex::new(Instant::now()));
        let census = Arc::new(census).run(stop.clone());
        let unprobed = unprobed(probed.clone(), idle);
        let counted = Counted::new(running);
        tokio::spawn(async move {
            let _counted = counted;
            tokio::select! {
                () = census => {}
                () = unprobed => {}
            }
        });
        Self {
            identity,
            metrics,
            probed,
            _stop: stop.drop_guard(),
        }
    }
}

/// One running census in its module's gauge, for as long as it lives:
/// however its task ends, the drop takes it out.
struct Counted(Gauge);

impl Counted {
    fn new(gauge: Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Returns once `probed` is `idle` old (and a second more, so the cache has
/// let the entry go first): a census nobody asks for stops even when no
/// probe comes to evict it.
async fn unprobed(probed: Arc<Mutex<Instant>>, idle: Duration) {
    loop {
        let last = *probed.lock().unwrap_or_else(|e| e.into_inner());
        let due = last + idle + Duration::from_secs(1);
        if Instant::now() >= due {
            return;
        }
        tokio::time::sleep_until(due).await;
    }
}

/// The census of the probe's target, with a client of its own whose
/// requests have the module's timeout (not the probe's deadline).
fn build(
    probe: &Probe<'_>,
    config: &CensusConfig,
    metrics: CensusMetrics,
) -> Result<Census, String> {
    let subject = format!(" of target {} (module {})", probe.target, probe.module_name);
    let timeout = probe.module.timeout;
    let (redis, chroma) = match probe.module.prober {
        Some(ProberKind::Redis) => {
            let client = super::redis::client_config(probe, timeout)?;
            let (dial, _) = super::redis::dial(probe)?;
            let store = RedisStore {
                client: RedisClient::for_census(&client, config.redis.read_from, Some(&dial))
                    .map_err(|err| err.message)?,
                config: config.redis.clone(),
            };
            (Some(store), None)
        }
        Some(ProberKind::Chroma) => {
            let store = ChromaStore {
                client: super::chroma::client(probe)?,
                own: probe.module.collection.clone(),
                top: config.chroma.top_collections,
            };
            (None, Some(store))
        }
        // The configuration refuses a census in any other module.
        _ => return Err("only redis and chroma modules take a census".into()),
    };
    Ok(Census::of(config.interval, redis, chroma, metrics, subject))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_census_stops_once_unprobed_for_the_idle_timeout() {
        let probed = Arc::new(Mutex::new(Instant::now()));
        let idle = Duration::from_secs(3);
        let watch = tokio::spawn(unprobed(probed.clone(), idle));
        tokio::time::sleep(Duration::from_secs(2)).await;
        // A probe: the clock starts again.
        *probed.lock().unwrap() = Instant::now();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!watch.is_finished(), "stopped while probed");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(watch.is_finished(), "still runs, unprobed for 4.1 s");
    }
}
