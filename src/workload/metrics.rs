//! `llmcache_operation_*` and `llmcache_workload_*`.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::model::Operation;
use super::ops::Outcome;
use crate::backends::ErrorKind;
use crate::metrics::latency_histogram;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    operation: Operation,
    outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    operation: Operation,
    kind: ErrorKind,
}

/// The outcomes each operation has when it succeeds. An `error` histogram
/// appears at the operation's first failure: created up front, the four of
/// them were 76 lines of zeros in every scrape. Error rates need no zero to
/// start from: they are counted by the always-present
/// `llmcache_operation_errors_total`.
fn successes(operation: Operation) -> &'static [Outcome] {
    match operation {
        Operation::GetChatHistory | Operation::QuerySimilarMemories => {
            &[Outcome::CacheHit, Outcome::CacheMiss]
        }
        Operation::StoreChatEntry | Operation::StoreMemory => &[Outcome::Success],
    }
}

/// The workload's metric handles.
#[derive(Clone, Debug)]
pub(crate) struct WorkloadMetrics {
    duration: Family<DurationLabels, Histogram, fn() -> Histogram>,
    errors: Family<ErrorLabels, Counter>,
    pub(crate) scheduled: Counter,
    pub(crate) skipped: Counter,
    pub(crate) inflight: Gauge,
    pub(crate) lag: Gauge<f64, AtomicU64>,
    pub(crate) target_rate: Gauge<f64, AtomicU64>,
    pub(crate) recall: Histogram,
    pub(crate) recall_checks: Counter,
    pub(crate) write_visibility: Histogram,
    pub(crate) write_invisible: Counter,
}

/// recall@k, fine near 1 where a healthy index lives.
const RECALL_BUCKETS: [f64; 14] = [
    0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 1.0,
];

/// From one local query's round trip to the default 10 s cap.
const VISIBILITY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl WorkloadMetrics {
    /// Registers under `registry` (the `llmcache_` namespace); every error
    /// counter and every success histogram exists from the start, so rates
    /// are never absent.
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            duration: Family::new_with_constructor(latency_histogram),
            errors: Family::default(),
            scheduled: Counter::default(),
            skipped: Counter::default(),
            inflight: Gauge::default(),
            lag: Gauge::default(),
            target_rate: Gauge::default(),
            recall: Histogram::new(RECALL_BUCKETS),
            recall_checks: Counter::default(),
            write_visibility: Histogram::new(VISIBILITY_BUCKETS),
            write_invisible: Counter::default(),
        };
        for operation in Operation::ALL {
            for outcome in successes(*operation) {
                let _ = metrics.duration.get_or_create(&DurationLabels {
                    operation: *operation,
                    outcome: *outcome,
                });
            }
            for kind in ErrorKind::ALL {
                let _ = metrics.errors.get_or_create(&ErrorLabels {
                    operation: *operation,
                    kind: *kind,
                });
            }
        }
        registry.register_with_unit(
            "operation_duration",
            "Operation latency measured from its scheduled start (open loop), by outcome",
            Unit::Seconds,
            metrics.duration.clone(),
        );
        registry.register(
            "operation_errors",
            "Failed operations, by error kind",
            metrics.errors.clone(),
        );
        registry.register(
            "workload_scheduled",
            "Operations the open-loop schedule called for",
            metrics.scheduled.clone(),
        );
        registry.register(
            "workload_skipped",
            "Scheduled operations not started because workload.concurrency were already in flight",
            metrics.skipped.clone(),
        );
        registry.register(
            "workload_inflight",
            "Operations in flight",
            metrics.inflight.clone(),
        );
        registry.register_with_unit(
            "workload_lag",
            "How late the scheduler started the latest tick",
            Unit::Seconds,
            metrics.lag.clone(),
        );
        registry.register(
            "workload_target_rate",
            "Operations per second the schedule calls for (workload.rate)",
            metrics.target_rate.clone(),
        );
        registry.register(
            "vector_recall_ratio",
            "recall@k of the vector store's answers against exact search over the canary's own records, per check",
            metrics.recall.clone(),
        );
        registry.register(
            "vector_recall_checks",
            "Vector store answers checked against exact search",
            metrics.recall_checks.clone(),
        );
        registry.register_with_unit(
            "vector_write_visibility",
            "From a stored memory's add returning to the first query by its own embedding that returns it",
            Unit::Seconds,
            metrics.write_visibility.clone(),
        );
        registry.register(
            "vector_write_invisible",
            "Stored memories no query returned within workload.write_visibility_timeout",
            metrics.write_invisible.clone(),
        );
        metrics
    }

    /// Records one finished operation.
    pub(crate) fn record(
        &self,
        operation: Operation,
        outcome: Outcome,
        kind: Option<ErrorKind>,
        latency: Duration,
    ) {
        self.duration
            .get_or_create(&DurationLabels { operation, outcome })
            .observe(latency.as_secs_f64());
        if let Some(kind) = kind {
            self.errors
                .get_or_create(&ErrorLabels { operation, kind })
                .inc();
        }
    }
}
