//! Probing a backend: the `/health` component state ([`ComponentHealth`]),
//! its publisher ([`HealthPublisher`], which also owns
//! `llmcache_backend_up{backend}`), the back-off while a backend is down, and
//! the one loop ([`probe_loop`]) every [`Probe`] runs in.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Backend, BackendMetrics};

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

/// What a backend last showed of itself; served as is by `/health`.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ComponentHealth {
    pub(crate) status: Status,
    pub(crate) details: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) latency_ms: Option<f64>,
    /// Redis only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) used_memory_mb: Option<f64>,
}

impl ComponentHealth {
    /// The state before the first probe has finished.
    pub(crate) fn starting() -> Self {
        Self::down("not probed yet".into())
    }

    /// Not working, and why.
    pub(crate) fn down(details: String) -> Self {
        Self::new(Status::Unhealthy, details, None)
    }

    /// A verdict, with the latency of what was measured, if anything.
    pub(crate) fn new(status: Status, details: String, latency_ms: Option<f64>) -> Self {
        Self {
            status,
            details,
            latency_ms,
            used_memory_mb: None,
        }
    }

    /// Whether the backend counts as up (`backend_up` = 1).
    pub(crate) fn is_up(&self) -> bool {
        self.status != Status::Unhealthy
    }
}

/// Milliseconds since `start`, for `latency_ms`.
pub(crate) fn millis_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

/// Publishes one backend's health: its `/health` section and
/// `llmcache_backend_up{backend}`, always together.
///
/// Building one publishes nothing (a reload may build a generation that
/// never runs): `backend_up` keeps what the running generation said until
/// this one's first verdict, or its [`HealthPublisher::start`].
#[derive(Clone, Debug)]
pub(crate) struct HealthPublisher {
    backend: Backend,
    metrics: BackendMetrics,
    sender: Arc<watch::Sender<ComponentHealth>>,
    published: Arc<Mutex<Published>>,
}

/// What was last published, and when it last flipped between up and down.
#[derive(Debug)]
struct Published {
    up: Option<bool>,
    flipped: Instant,
}

impl HealthPublisher {
    /// Holds `initial` for `/health`; publishes nothing yet.
    pub(crate) fn new(backend: Backend, metrics: BackendMetrics, initial: ComponentHealth) -> Self {
        Self {
            backend,
            metrics,
            sender: Arc::new(watch::Sender::new(initial)),
            published: Arc::new(Mutex::new(Published {
                up: None,
                flipped: Instant::now(),
            })),
        }
    }

    /// Publishes the state held now, for a component whose state is known
    /// without asking (the hash embedder), when its generation starts.
    pub(crate) fn start(&self) {
        let current = self.sender.borrow().clone();
        self.publish(current, Instant::now());
    }

    /// Publishes `health`, the verdict of a request sent at `sent`; returns
    /// whether the backend is up. Old news changes nothing: a verdict that
    /// would flip the state, from a request sent before the state last
    /// flipped, is dropped (a timeout that ends late after a newer success).
    pub(crate) fn publish(&self, health: ComponentHealth, sent: Instant) -> bool {
        let up = health.is_up();
        let mut published = self.published.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(was) = published.up.filter(|was| *was != up) {
            if sent < published.flipped {
                return was;
            }
        }
        if published.up != Some(up) {
            published.up = Some(up);
            published.flipped = Instant::now();
        }
        self.metrics.set_up(self.backend, up);
        self.sender.send_replace(health);
        up
    }

    /// What `/health` reads.
    pub(crate) fn subscribe(&self) -> watch::Receiver<ComponentHealth> {
        self.sender.subscribe()
    }

    fn details(&self) -> String {
        self.sender.borrow().details.clone()
    }
}

/// A backend that can be asked whether it works.
pub(crate) trait Probe: Send + Sync {
    /// `host:port`, for logs; never a URL, which may carry credentials.
    fn endpoint(&self) -> &str;

    /// Asks once. Never fails: a failure is an unhealthy verdict.
    fn probe(&self) -> impl Future<Output = ComponentHealth> + Send;
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

/// Probes until `cancel`: every [`PROBE_INTERVAL`] while the backend is up,
/// with [`Backoff`] while it is down. Publishes every verdict and logs each
/// up/down transition.
pub(crate) async fn probe_loop(
    probe: &impl Probe,
    health: &HealthPublisher,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::default();
    let mut was_up = None;
    loop {
        let sent = Instant::now();
        let up = health.publish(probe.probe().await, sent);
        if was_up != Some(up) {
            let (backend, endpoint) = (health.backend.as_str(), probe.endpoint());
            let details = health.details();
            if up {
                tracing::info!(backend, endpoint, %details, "backend up");
            } else {
                tracing::warn!(backend, endpoint, %details, "backend down");
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

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    fn up_series(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text.lines()
            .find(|l| l.starts_with("backend_up{backend=\"embeddings\"}"))
            .unwrap_or_else(|| panic!("no embeddings backend_up in\n{text}"))
            .to_owned()
    }

    #[test]
    fn building_a_publisher_publishes_nothing_and_old_news_flips_nothing() {
        let mut registry = Registry::default();
        let metrics = BackendMetrics::register(&mut registry, true);
        let running = HealthPublisher::new(
            Backend::Embeddings,
            metrics.clone(),
            ComponentHealth::new(Status::Healthy, "running".into(), None),
        );
        running.start();
        assert!(up_series(&registry).ends_with(" 1"));
        // A new generation, built and never started: nothing changes.
        let _built = HealthPublisher::new(
            Backend::Embeddings,
            metrics.clone(),
            ComponentHealth::starting(),
        );
        assert!(up_series(&registry).ends_with(" 1"));

        // A slow request sent first fails last: it does not undo a newer
        // success.
        let slow_sent = Instant::now();
        running.publish(ComponentHealth::down("fails".into()), Instant::now());
        assert!(up_series(&registry).ends_with(" 0"));
        let fast_sent = Instant::now();
        assert!(running.publish(
            ComponentHealth::new(Status::Healthy, "ok".into(), None),
            fast_sent
        ));
        assert!(running.publish(ComponentHealth::down("timeout".into()), slow_sent));
        assert!(up_series(&registry).ends_with(" 1"));
        assert_eq!(running.details(), "ok");
        // News from a request sent after the flip does count.
        assert!(!running.publish(ComponentHealth::down("down".into()), Instant::now()));
        assert!(up_series(&registry).ends_with(" 0"));
    }

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
