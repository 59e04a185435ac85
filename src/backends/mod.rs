//! The stores the canary talks to, and what they share: the closed sets of
//! backend, request and error-kind labels, `llmcache_backend_up`, the request
//! latency histogram, the health snapshot each probe loop publishes, and the
//! back-off those loops use while a backend is down.

pub(crate) mod chroma;
pub(crate) mod redis;

use std::future::Future;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::{label_values, latency_histogram};

label_values! {
    /// A backend, as the `backend` label spells it.
    pub(crate) enum Backend {
        Redis => "redis",
        Chroma => "chroma",
        Embeddings => "embeddings",
    }
}

label_values! {
    /// A request to a backend, as the `request` label spells it.
    pub(crate) enum Request {
        Ping => "ping",
        Info => "info",
        Heartbeat => "heartbeat",
        GetCollection => "get_collection",
        CreateCollection => "create_collection",
        DeleteCollection => "delete_collection",
        Add => "add",
        Query => "query",
        Count => "count",
        Delete => "delete",
        Lrange => "lrange",
        StoreEntry => "store_entry",
        Scan => "scan",
        Unlink => "unlink",
        Embed => "embed",
    }
}

label_values! {
    /// Why a request failed, as the `kind` label spells it.
    pub(crate) enum ErrorKind {
        /// No answer within the configured timeout.
        Timeout => "timeout",
        /// Could not connect, or the connection broke.
        Connection => "connection",
        /// An answer we could not understand.
        Protocol => "protocol",
        /// The server reported an error of its own.
        Server => "server",
        /// The server refused the request as invalid.
        Validation => "validation",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: Backend,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    backend: Backend,
    request: Request,
}

/// `llmcache_backend_up` and `llmcache_backend_request_duration_seconds`.
#[derive(Clone, Debug)]
pub(crate) struct BackendMetrics {
    up: Family<BackendLabels, Gauge>,
    request_duration: Family<RequestLabels, Histogram, fn() -> Histogram>,
}

impl BackendMetrics {
    /// Registers both families; every backend starts down until probed.
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            up: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
        };
        for backend in Backend::ALL {
            metrics.set_up(*backend, false);
        }
        registry.register(
            "backend_up",
            "Whether the backend answered its last health probe (1) or not (0)",
            metrics.up.clone(),
        );
        registry.register_with_unit(
            "backend_request_duration",
            "Latency of requests to a backend, including failed ones",
            Unit::Seconds,
            metrics.request_duration.clone(),
        );
        metrics
    }

    /// Sets `llmcache_backend_up{backend}`.
    pub(crate) fn set_up(&self, backend: Backend, up: bool) {
        self.up
            .get_or_create(&BackendLabels { backend })
            .set(i64::from(up));
    }

    /// Records one request's latency.
    pub(crate) fn observe(&self, backend: Backend, request: Request, elapsed: Duration) {
        self.request_duration
            .get_or_create(&RequestLabels { backend, request })
            .observe(elapsed.as_secs_f64());
    }
}

/// A component's state in `/health`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    /// Working.
    Healthy,
    /// Working, with something a human should look at.
    Degraded,
    /// Not working.
    Unhealthy,
}

/// What a probe loop last saw of its backend; served as is by `/health`.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ComponentHealth {
    pub(crate) status: Status,
    pub(crate) details: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) used_memory_mb: Option<f64>,
}

impl ComponentHealth {
    /// The state before the first probe has finished.
    pub(crate) fn starting() -> Self {
        Self {
            status: Status::Unhealthy,
            details: "not probed yet".into(),
            latency_ms: None,
            used_memory_mb: None,
        }
    }

    /// A failed probe.
    pub(crate) fn down(details: String) -> Self {
        Self {
            status: Status::Unhealthy,
            details,
            latency_ms: None,
            used_memory_mb: None,
        }
    }
}

/// How often a healthy backend is probed.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// Delay before the next probe of a backend that is down: doubling from
/// 250 ms up to [`PROBE_INTERVAL`], with ±20 % jitter so many exporters
/// restarted together do not hammer a recovering server in step. The cap is
/// low on purpose: a probe of a down server is one connection attempt, and
/// recovery should show within seconds.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: Self::FIRST }
    }
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(250);
    const CAP: Duration = PROBE_INTERVAL;

    /// The delay to wait now; the one after it is longer.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(Self::CAP);
        base.mul_f64(fastrand::f64().mul_add(0.4, 0.8))
    }

    /// Back to the shortest delay after a success.
    pub(crate) fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// Runs `probe` until `cancel`: every [`PROBE_INTERVAL`] while it succeeds,
/// with [`Backoff`] while it fails. Logs each up/down transition with the
/// details the probe published to `health`.
pub(crate) async fn probe_loop<F, Fut>(
    backend: Backend,
    endpoint: &str,
    health: &watch::Sender<ComponentHealth>,
    cancel: CancellationToken,
    mut probe: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let mut backoff = Backoff::default();
    let mut was_up = None;
    loop {
        let up = probe().await;
        if was_up != Some(up) {
            let details = health.borrow().details.clone();
            if up {
                tracing::info!(backend = backend.as_str(), endpoint, %details, "backend up");
            } else {
                tracing::warn!(backend = backend.as_str(), endpoint, %details, "backend down");
            }
            was_up = Some(up);
        }
        let delay = if up {
            backoff.reset();
            PROBE_INTERVAL
        } else {
            backoff.next_delay()
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// An error and its causes on one line: reqwest's own message alone rarely
/// says why ("error sending request").
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Milliseconds since `start`, for `latency_ms`.
pub(crate) fn millis_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_with_jitter_and_resets() {
        let mut backoff = Backoff::default();
        let delays: Vec<Duration> = (0..8).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(200) && delays[0] <= Duration::from_millis(300));
        assert!(delays.iter().all(|d| *d <= PROBE_INTERVAL.mul_f64(1.2)));
        assert!(delays[7] >= PROBE_INTERVAL.mul_f64(0.8));
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(300));
    }
}
