//! What every store the canary talks to shares: the `backend` and error
//! `kind` labels, [`BackendError`] with one classifier per transport,
//! `llmcache_backend_up` and the request latency histogram
//! ([`BackendMetrics`]), and [`probe`]. Each backend owns its request labels
//! (a [`RequestLabel`] enum) and implements [`probe::Probe`].

pub(crate) mod chroma;
pub(crate) mod http;
mod outages;
pub(crate) mod probe;
pub(crate) mod redis;

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use reqwest::StatusCode;

use crate::metrics::{label_values, latency_histogram};
use outages::{OutageGauge, Outages};

label_values! {
    /// A backend, as the `backend` label spells it.
    pub(crate) enum Backend {
        Redis => "redis",
        Chroma => "chroma",
        Embeddings => "embeddings",
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
        /// The server refused the credentials or their permissions: an ACL
        /// or password refusal from Redis, HTTP 401 or 403.
        Auth => "auth",
    }
}

impl ErrorKind {
    /// Whether a failure of this kind means the backend is out for its
    /// users (a refusal of one request as invalid does not).
    fn is_outage(self) -> bool {
        self != Self::Validation
    }
}

/// A backend's closed set of request names, for the `request` label.
pub(crate) trait RequestLabel: Copy {
    /// The backend the requests go to.
    const BACKEND: Backend;
    /// The label value.
    fn label(self) -> &'static str;
    /// Whether `llmcache_backend_request_duration_seconds` times it: the
    /// workload's requests are, the exporter's own housekeeping (probes,
    /// collection setup, cleanup) is not. Housekeeping is a few requests a
    /// second or once per run; each of its series would cost every scrape
    /// 19 lines that tell no user what their backend takes. Its failures
    /// still count as outages, and `/health` carries each probe's latency.
    fn timed(self) -> bool;
}

/// Defines a backend's [`RequestLabel`] enum: `enum Name for Backend { .. }`;
/// a variant marked `(housekeeping)` is not timed.
macro_rules! request_labels {
    ($(#[$meta:meta])* $vis:vis enum $name:ident for $backend:ident {
        $($variant:ident => $text:literal $(($housekeeping:ident))?),+ $(,)?
    }) => {
        $crate::metrics::label_values! {
            $(#[$meta])* $vis enum $name { $($variant => $text),+ }
        }

        impl $crate::backends::RequestLabel for $name {
            const BACKEND: $crate::backends::Backend = $crate::backends::Backend::$backend;
            fn label(self) -> &'static str {
                self.as_str()
            }
            fn timed(self) -> bool {
                match self {
                    $(Self::$variant => $crate::backends::request_labels!(@timed $($housekeeping)?),)+
                }
            }
        }
    };
    (@timed) => { true };
    (@timed housekeeping) => { false };
}
pub(crate) use request_labels;

/// A failed request to a backend. Messages never carry a URL or a secret.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub(crate) struct BackendError {
    pub(crate) backend: Backend,
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
    /// The HTTP status of an HTTP backend's refusal.
    pub(crate) http_status: Option<u16>,
    /// An answer the client refused to take (a redirect, a body too large).
    pub(crate) refused: Option<http::Refused>,
}

impl BackendError {
    /// An error of `kind`.
    pub(crate) fn new(backend: Backend, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            backend,
            kind,
            message: message.into(),
            http_status: None,
            refused: None,
        }
    }

    /// No answer within `after`.
    pub(crate) fn timeout(backend: Backend, after: Duration) -> Self {
        Self::new(
            backend,
            ErrorKind::Timeout,
            format!("no answer within {after:?}"),
        )
    }

    /// The classifier for HTTP transport errors: a body that does not decode
    /// is the server's answer (`protocol`); anything else is the connection.
    pub(crate) fn from_reqwest(backend: Backend, err: reqwest::Error) -> Self {
        let err = err.without_url();
        if err.is_timeout() {
            Self::new(backend, ErrorKind::Timeout, "no answer within the timeout")
        } else if err.is_decode() || err.is_body() {
            let message = format!("unexpected answer: {}", error_chain(&err));
            Self::new(backend, ErrorKind::Protocol, message)
        } else {
            let message = format!("connection failed: {}", error_chain(&err));
            Self::new(backend, ErrorKind::Connection, message)
        }
    }

    /// The classifier for HTTP answers that are not a success: 5xx is the
    /// server's fault, anything else a refusal of the request.
    pub(crate) fn from_http_status(backend: Backend, status: StatusCode, message: &str) -> Self {
        let kind = if status.is_server_error() {
            ErrorKind::Server
        } else if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            ErrorKind::Auth
        } else {
            ErrorKind::Validation
        };
        Self {
            http_status: Some(status.as_u16()),
            ..Self::new(backend, kind, format!("HTTP {status}: {message}"))
        }
    }

    /// Whether the server answered 404, e.g. for a collection that is gone.
    pub(crate) fn is_not_found(&self) -> bool {
        self.http_status == Some(404)
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: Backend,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    backend: Backend,
    request: &'static str,
}

/// `llmcache_backend_up`, `llmcache_backend_request_duration_seconds` and
/// the outage series.
#[derive(Clone, Debug)]
pub(crate) struct BackendMetrics {
    up: Family<BackendLabels, Gauge>,
    request_duration: Family<RequestLabels, Histogram, fn() -> Histogram>,
    outages: Arc<Outages>,
}

impl BackendMetrics {
    /// Registers the families; with the canary on, every backend starts
    /// down until probed; with it off there are no backends to report.
    pub(crate) fn register(registry: &mut Registry, canary: bool) -> Self {
        let metrics = Self {
            up: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            outages: Arc::new(Outages::default()),
        };
        for backend in Backend::ALL.iter().filter(|_| canary) {
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
        registry.register_with_unit(
            "backend_outage_duration",
            "Each outage a backend's requests saw, from the first failure to the first success after it",
            Unit::Seconds,
            metrics.outages.lengths(),
        );
        registry.register_collector(Box::new(OutageGauge(metrics.outages.clone())));
        metrics
    }

    /// Sets `llmcache_backend_up{backend}`; the [`probe::HealthPublisher`]
    /// is its one caller.
    fn set_up(&self, backend: Backend, up: bool) {
        self.up
            .get_or_create(&BackendLabels { backend })
            .set(i64::from(up));
    }

    /// Records one request, sent at `sent`: its latency, and whether it
    /// begins or ends an outage.
    pub(crate) fn observe<R: RequestLabel, T>(
        &self,
        request: R,
        sent: Instant,
        result: &Result<T, BackendError>,
    ) {
        let elapsed = sent.elapsed();
        let failed = result
            .as_ref()
            .err()
            .is_some_and(|err| err.kind.is_outage());
        self.outages
            .record(R::BACKEND, sent, failed, Instant::now());
        if !request.timed() {
            return;
        }
        let labels = RequestLabels {
            backend: R::BACKEND,
            request: request.label(),
        };
        self.request_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }
}
