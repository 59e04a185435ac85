//! The open connections: a fixed number of slots that a flood of clients
//! cannot keep.
//!
//! Each connection records when it last read or wrote a byte, and since when
//! a request head has been arriving (from its first byte to the blank line
//! that ends it). A watchdog closes a connection whose request head has not
//! arrived within `web.read_header_timeout` (a client that sends its headers
//! byte by byte, or only half of them), and one that has been idle for
//! `web.idle_timeout`. A handler that takes long is neither: its request
//! has arrived, and the connection is busy, not idle. When every slot is taken, one is closed
//! to make room: the one quiet longest among those that were never
//! answered, so connections that send nothing or part of a request cannot
//! lock out a scrape, and a scraper's keep-alive connection outlives them;
//! each close is counted in
//! `llmcache_http_connections_closed_total{reason}`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics::label_values;

label_values! {
    /// Why the server closed a connection, as the `reason` label spells it.
    pub(crate) enum CloseReason {
        /// A request not answered within `web.read_header_timeout`.
        HeaderTimeout => "header_timeout",
        /// No byte either way for `web.idle_timeout`.
        IdleTimeout => "idle_timeout",
        /// Closed to make room at `web.max_connections`.
        Limit => "limit",
        /// A TLS handshake that did not finish within 10 s.
        HandshakeTimeout => "handshake_timeout",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: CloseReason,
}

/// `llmcache_http_connections_closed_total{reason}`.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionMetrics(Family<ReasonLabels, Counter>);

impl ConnectionMetrics {
    /// Registers the family with every reason at zero.
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let family = Family::<ReasonLabels, Counter>::default();
        for reason in CloseReason::ALL {
            let _ = family.get_or_create(&ReasonLabels { reason: *reason });
        }
        registry.register(
            "http_connections_closed",
            "HTTP connections the server closed, by reason",
            family.clone(),
        );
        Self(family)
    }

    /// Counts one close.
    pub(crate) fn closed(&self, reason: CloseReason) {
        self.0.get_or_create(&ReasonLabels { reason }).inc();
    }
}

/// How long connections may wait, and how many may be open.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) read_header_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connections: usize,
}

/// One connection's activity, shared by its stream and the watchdog.
#[derive(Debug)]
pub(crate) struct Activity {
    epoch: Instant,
    /// Milliseconds since `epoch` of the last byte read or written.
    last: AtomicU64,
    /// Milliseconds since `epoch` plus one at which a request head began
    /// to arrive; 0 while none is arriving.
    waiting: AtomicU64,
    /// Whether a request has arrived and is being handled.
    handling: AtomicBool,
    /// Whether it was ever answered: a scraper's keep-alive connection is,
    /// a flood's never is.
    served: AtomicBool,
    /// Closes the connection.
    pub(crate) close: CancellationToken,
}

impl Activity {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// Bytes of a request arrived.
    pub(crate) fn read(&self) {
        let now = self.now();
        self.last.store(now, Ordering::Relaxed);
        if !self.handling.load(Ordering::Relaxed) {
            let _ = self
                .waiting
                .compare_exchange(0, now + 1, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// A request's head has arrived: its handler runs, untimed.
    pub(crate) fn head_read(&self) {
        self.handling.store(true, Ordering::Relaxed);
        self.waiting.store(0, Ordering::Relaxed);
    }

    /// Bytes of a response left: the request is answered.
    pub(crate) fn wrote(&self) {
        self.last.store(self.now(), Ordering::Relaxed);
        self.waiting.store(0, Ordering::Relaxed);
        self.handling.store(false, Ordering::Relaxed);
        self.served.store(true, Ordering::Relaxed);
    }
}

/// The open connections.
#[derive(Debug)]
pub(crate) struct Connections {
    epoch: Instant,
    limits: Limits,
    open: Mutex<HashMap<u64, Arc<Activity>>>,
    next: AtomicU64,
    metrics: ConnectionMetrics,
    /// Wakes the watchdog when it sleeps with nothing open.
    admitted: Notify,
}

/// A connection's place among the open ones; gives it up when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    id: u64,
    connections: Arc<Connections>,
    pub(crate) activity: Arc<Activity>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.connections
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

impl Connections {
    /// No connection open yet.
    pub(crate) fn new(limits: Limits, metrics: ConnectionMetrics) -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            limits,
            open: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            metrics,
            admitted: Notify::new(),
        })
    }

    /// The counter of closes, for the listener's own.
    pub(crate) fn metrics(&self) -> &ConnectionMetrics {
        &self.metrics
    }

    /// A slot for a new connection. At the cap, one is closed to make room:
    /// the one quiet longest among those never answered, else among all.
    pub(crate) fn admit(self: &Arc<Self>) -> Slot {
        let activity = Arc::new(Activity {
            epoch: self.epoch,
            last: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            handling: AtomicBool::new(false),
            served: AtomicBool::new(false),
            close: CancellationToken::new(),
        });
        activity.last.store(activity.now(), Ordering::Relaxed);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        // Closed ones leave when their task ends; only live ones count.
        let live = open.values().filter(|a| !a.close.is_cancelled()).count();
        if live >= self.limits.max_connections {
            let quietest = open
                .values()
                .filter(|a| !a.close.is_cancelled())
                .min_by_key(|a| {
                    (
                        a.served.load(Ordering::Relaxed),
                        a.last.load(Ordering::Relaxed),
                    )
                });
            if let Some(quietest) = quietest {
                quietest.close.cancel();
                self.metrics.closed(CloseReason::Limit);
            }
        }
        open.insert(id, activity.clone());
        drop(open);
        self.admitted.notify_one();
        Slot {
            id,
            connections: self.clone(),
            activity,
        }
    }

    /// Closes what waited too long, until `cancel`. It wakes at the next
    /// deadline, and at least every eighth of `read_header_timeout` while a
    /// connection is open, since a request may start waiting at any moment;
    /// while none is, it sleeps until one is admitted. (It woke every 250 ms
    /// before, whether or not anything was open.)
    pub(crate) async fn watch(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            let next = async {
                match self.expire() {
                    Some(pause) => tokio::time::sleep(pause).await,
                    None => self.admitted.notified().await,
                }
            };
            tokio::select! {
                () = cancel.cancelled() => return,
                () = next => {}
            }
        }
    }

    /// Closes what waited too long; returns how long until the next check,
    /// or `None` while no connection is open.
    fn expire(&self) -> Option<Duration> {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let header = u64::try_from(self.limits.read_header_timeout.as_millis()).unwrap_or(u64::MAX);
        let idle = u64::try_from(self.limits.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        let mut next: Option<u64> = None;
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let busy = |a: &Arc<Activity>| a.close.is_cancelled() || a.handling.load(Ordering::Relaxed);
        for activity in open.values().filter(|a| !busy(a)) {
            let waiting = activity.waiting.load(Ordering::Relaxed);
            let (reason, since, limit) = if waiting != 0 {
                (CloseReason::HeaderTimeout, waiting - 1, header)
            } else {
                let last = activity.last.load(Ordering::Relaxed);
                (CloseReason::IdleTimeout, last, idle)
            };
            let waited = now.saturating_sub(since);
            if waited > limit {
                activity.close.cancel();
                self.metrics.closed(reason);
            } else {
                let due = (limit - waited + 1).min(header / 8);
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        next.map(|ms| Duration::from_millis(ms.max(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connections(max: usize) -> Arc<Connections> {
        let limits = Limits {
            read_header_timeout: Duration::from_millis(50),
            idle_timeout: Duration::from_millis(200),
            max_connections: max,
        };
        Connections::new(
            limits,
            ConnectionMetrics::register(&mut Registry::default()),
        )
    }

    #[test]
    fn at_the_cap_the_quietest_connection_makes_room() {
        let connections = connections(2);
        let first = connections.admit();
        std::thread::sleep(Duration::from_millis(5));
        let second = connections.admit();
        second.activity.read();
        first.activity.wrote();
        std::thread::sleep(Duration::from_millis(5));
        second.activity.wrote();
        let third = connections.admit();
        assert!(first.activity.close.is_cancelled(), "the quietest goes");
        assert!(!second.activity.close.is_cancelled());
        assert!(!third.activity.close.is_cancelled());
        drop(first);
        assert_eq!(connections.open.lock().unwrap().len(), 2);
    }

    #[test]
    fn a_scrapers_keep_alive_connection_outlives_a_flood() {
        let connections = connections(2);
        let scraper = connections.admit();
        scraper.activity.read();
        scraper.activity.wrote();
        std::thread::sleep(Duration::from_millis(5));
        let flood = connections.admit();
        let _next = connections.admit();
        assert!(
            flood.activity.close.is_cancelled(),
            "never answered: goes first"
        );
        assert!(!scraper.activity.close.is_cancelled());
    }

    #[test]
    fn an_unanswered_request_times_out_before_an_idle_connection() {
        let connections = connections(10);
        let partial = connections.admit();
        let idle = connections.admit();
        let answered = connections.admit();
        partial.activity.read();
        answered.activity.read();
        answered.activity.wrote();
        std::thread::sleep(Duration::from_millis(80));
        connections.expire();
        assert!(partial.activity.close.is_cancelled(), "headers too slow");
        assert!(!idle.activity.close.is_cancelled() && !answered.activity.close.is_cancelled());
        std::thread::sleep(Duration::from_millis(150));
        connections.expire();
        assert!(idle.activity.close.is_cancelled() && answered.activity.close.is_cancelled());
    }

    #[test]
    fn a_slow_handler_is_timed_by_neither_timeout() {
        let connections = connections(10);
        let slow = connections.admit();
        slow.activity.read();
        slow.activity.head_read();
        // Past both the read-header (50 ms) and the idle (200 ms) timeout.
        std::thread::sleep(Duration::from_millis(250));
        connections.expire();
        assert!(
            !slow.activity.close.is_cancelled(),
            "the request had arrived"
        );
        slow.activity.wrote();
        // Answered, then idle: the idle timeout applies again.
        std::thread::sleep(Duration::from_millis(250));
        connections.expire();
        assert!(slow.activity.close.is_cancelled());
    }

    #[test]
    fn the_watchdog_has_nothing_to_wake_for_while_nothing_is_open() {
        let connections = connections(10);
        assert_eq!(connections.expire(), None);
        let slot = connections.admit();
        let pause = connections.expire().expect("one is open");
        assert!(pause <= Duration::from_millis(50 / 8), "{pause:?}");
        drop(slot);
        assert_eq!(connections.expire(), None);
    }

    #[tokio::test]
    async fn an_admitted_connection_wakes_the_sleeping_watchdog() {
        let connections = connections(10);
        let cancel = CancellationToken::new();
        let watchdog = tokio::spawn(connections.clone().watch(cancel.clone()));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let partial = connections.admit();
        partial.activity.read();
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(partial.activity.close.is_cancelled(), "headers too slow");
        cancel.cancel();
        watchdog.await.unwrap();
    }
}
