//! The canary: an open-loop scheduler that starts operations at
//! `workload.rate` per second on a fixed timeline, whatever the backends do.
//!
//! Latency is measured from each operation's *scheduled* start, like wrk2, so
//! a stalled backend shows up as the latency users would see instead of
//! hiding behind a slowed-down client (coordinated omission). Below 1,500/s
//! the ticks come from tokio's interval, whose timer has millisecond
//! resolution, so an operation may start up to 1 ms after its slot even when
//! nothing is wrong; that much lateness is forgiven (see
//! [`measured_from`]) and anything beyond it is counted. At most
//! `workload.concurrency` operations are in flight; a tick that finds them all
//! busy waits for a slot only within that same timer slack, and is otherwise
//! counted as skipped, never queued.

mod checks;
mod ledger;
mod metrics;
pub(crate) mod model;
mod ops;
mod pacer;
pub(crate) mod recall;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub(crate) use metrics::WorkloadMetrics;
use model::{Model, Op, Operation};
pub(crate) use ops::{Caches, OpError, Operations, Outcome};
use pacer::Pacer;

use crate::backends::probe::Probe;
use crate::config::{Config, WorkloadConfig};

/// The scheduler and what it drives.
pub(crate) struct Workload {
    ops: Arc<Operations>,
    config: WorkloadConfig,
    key_prefix: String,
    drain_timeout: Duration,
    metrics: WorkloadMetrics,
    /// The daemon's RSS as the memory monitor last sampled it.
    rss: Arc<AtomicU64>,
}

impl Workload {
    /// A workload over `ops`.
    pub(crate) fn new(
        config: &Config,
        ops: Arc<Operations>,
        metrics: WorkloadMetrics,
        rss: Arc<AtomicU64>,
    ) -> Self {
        Self {
            ops,
            config: config.workload.clone(),
            key_prefix: config.redis.key_prefix.clone(),
            // Bounded so that stop, drain and cleanup fit in 10 s.
            drain_timeout: ops::max_op_duration(config).min(Duration::from_secs(3)),
            metrics,
            rss,
        }
    }

    /// Runs the schedule until `cancel`, then waits (bounded) for the
    /// operations in flight.
    pub(crate) async fn run(self: Arc<Self>, cancel: CancellationToken) {
        self.metrics.target_rate.set(self.config.rate);
        let mut pacer = Pacer::new(self.config.rate, &cancel);
        let slots = Arc::new(Semaphore::new(self.config.concurrency));
        let mut model = Model::new(&self.config);
        let mut running = JoinSet::new();
        loop {
            let tick = tokio::select! {
                () = cancel.cancelled() => break,
                tick = pacer.tick() => match tick {
                    Some(tick) => tick,
                    None => break,
                },
            };
            while running.try_join_next().is_some() {}
            self.metrics.lag.set(tick.elapsed().as_secs_f64());
            self.metrics.scheduled.inc();
            // Drawn even when skipped, so the sequence depends only on the seed.
            let op = model.next_op();
            let Some(slot) = Self::slot(&slots, tick).await else {
                self.metrics.skipped.inc();
                continue;
            };
            let inflight = InFlight::start(&self.metrics.inflight);
            let workload = self.clone();
            let from = measured_from(tick, Instant::now());
            running.spawn(async move {
                // Dropped with the task however it ends: finished, aborted
                // at a stop, or dropped with its JoinSet.
                let _held = (inflight, slot);
                let _ = workload.execute(&op, from).await;
            });
        }
        let drained = tokio::time::timeout(self.drain_timeout, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("operations still in flight at shutdown were abandoned");
            running.abort_all();
        }
        self.ops.stop_checks().await;
    }

    /// A free slot for the tick scheduled at `tick`, or `None` to skip it.
    /// tokio's timer releases a millisecond's ticks together; a slot that an
    /// operation frees within [`TIMER_SLACK`] of the tick is as good as one
    /// free at the tick, so the tick waits that long (and no longer) before it
    /// is skipped. Without this, the ticks of each burst beyond `concurrency`
    /// were skipped while slots freed up microseconds later.
    async fn slot(slots: &Arc<Semaphore>, tick: Instant) -> Option<OwnedSemaphorePermit> {
        if let Ok(slot) = slots.clone().try_acquire_owned() {
            return Some(slot);
        }
        let deadline = tick + TIMER_SLACK;
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::timeout_at(deadline.into(), slots.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }

    /// Runs `op` and records its latency from `scheduled`.
    async fn execute(&self, op: &Op, scheduled: Instant) -> Result<Outcome, OpError> {
        let rss_before = self.rss.load(Ordering::Relaxed);
        let result = self.ops.run(op).await;
        let latency = scheduled.elapsed();
        let operation = op.operation();
        let (outcome, kind) = match &result {
            Ok(outcome) => (*outcome, None),
            Err(err) => (Outcome::Error, Some(err.kind())),
        };
        self.metrics.record(operation, outcome, kind, latency);
        tracing::debug!(
            operation = operation.as_str(),
            outcome = outcome.as_str(),
            kind = kind.map(|k| k.as_str()),
            error = result.as_ref().err().map(tracing::field::display),
            latency_us = latency.as_micros() as u64,
            // Sampled once per memory.sample_interval, not per operation.
            rss_before,
            rss_after = self.rss.load(Ordering::Relaxed),
            "operation"
        );
        result
    }

    /// Removes what the daemon wrote: every Redis key under the prefix (SCAN +
    /// UNLINK) and the probe collection if the daemon owns it.
    pub(crate) async fn cleanup(&self) {
        match self.ops.redis.unlink_prefix(&self.key_prefix).await {
            Ok(removed) => {
                tracing::info!(removed, prefix = %self.key_prefix, "removed the probe's Redis keys")
            }
            Err(err) => {
                tracing::warn!(error = %err, "could not remove the probe's Redis keys; they expire by their TTL")
            }
        }
        match self.ops.chroma.delete_owned_collection().await {
            Ok(true) => tracing::info!("deleted the probe collection"),
            Ok(false) => {}
            Err(err) => tracing::warn!(error = %err, "could not delete the probe collection"),
        }
    }

    /// `--once`: every operation once, reads twice so both cache outcomes
    /// show; then the same cleanup as at exit if configured.
    pub(crate) async fn once(&self) -> OnceReport {
        // Resolves the collection's ownership before the first write.
        self.ops.redis.probe().await;
        self.ops.chroma.probe().await;
        let question = "how do I reset my password";
        let steps = [
            Op::GetChatHistory { session: 0 },
            Op::GetChatHistory { session: 0 },
            Op::StoreChatEntry {
                session: 0,
                role: "user",
                content: question.into(),
            },
            Op::QuerySimilarMemories {
                text: question.into(),
            },
            Op::QuerySimilarMemories {
                text: question.into(),
            },
            Op::StoreMemory {
                text: "the user asked how to reset their password".into(),
            },
        ];
        let mut operations = Vec::new();
        for op in &steps {
            let started = Instant::now();
            let result = self.execute(op, started).await;
            operations.push(OnceStep {
                operation: op.operation(),
                outcome: result.as_ref().map_or(Outcome::Error, |o| *o),
                latency_ms: started.elapsed().as_secs_f64() * 1000.0,
                error: result.err().map(|err| OnceError {
                    kind: err.kind().as_str(),
                    message: err.to_string(),
                }),
            });
        }
        if self.config.cleanup_on_exit {
            self.cleanup().await;
        }
        OnceReport {
            ok: operations.iter().all(|s| s.error.is_none()),
            operations,
        }
    }
}

/// One operation counted in `llmcache_workload_inflight` until dropped.
struct InFlight(Gauge);

impl InFlight {
    fn start(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The resolution of tokio's timer: ticks can fire this late with nothing wrong.
const TIMER_SLACK: Duration = Duration::from_millis(1);

/// Where an operation's latency is measured from: its scheduled slot, except
/// that up to [`TIMER_SLACK`] of lateness is the timer's, not the system's.
/// Continuous: a tick 5 ms late adds 4 ms to its operation's latency.
fn measured_from(scheduled: Instant, started: Instant) -> Instant {
    started.min(scheduled + TIMER_SLACK)
}

/// What `--once` prints.
#[derive(Debug, Serialize)]
pub(crate) struct OnceReport {
    pub(crate) ok: bool,
    pub(crate) operations: Vec<OnceStep>,
}

/// One operation in the `--once` report.
#[derive(Debug, Serialize)]
pub(crate) struct OnceStep {
    pub(crate) operation: Operation,
    pub(crate) outcome: Outcome,
    pub(crate) latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<OnceError>,
}

/// Why a `--once` operation failed.
#[derive(Debug, Serialize)]
pub(crate) struct OnceError {
    pub(crate) kind: &'static str,
    pub(crate) message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_aborted_operation_leaves_the_inflight_gauge() {
        let gauge = Gauge::default();
        let mut tasks = JoinSet::new();
        for _ in 0..3 {
            let held = InFlight::start(&gauge);
            tasks.spawn(async move {
                let _held = held;
                std::future::pending::<()>().await;
            });
        }
        assert_eq!(gauge.get(), 3);
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        assert_eq!(gauge.get(), 0);
    }

    #[test]
    fn timer_granularity_is_forgiven_and_real_lateness_is_counted() {
        let slot = Instant::now();
        // On time, or within the timer's resolution: measured from the start.
        assert_eq!(measured_from(slot, slot), slot);
        let late = slot + Duration::from_micros(700);
        assert_eq!(measured_from(slot, late), late);
        // Beyond it: everything past the first millisecond counts.
        let stalled = slot + Duration::from_millis(5);
        assert_eq!(
            stalled - measured_from(slot, stalled),
            Duration::from_millis(4)
        );
    }
}
