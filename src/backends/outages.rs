//! Each backend's outages as its requests see them, for
//! `llmcache_backend_outage_duration_seconds` (one observation per outage,
//! when it ends) and `llmcache_backend_outage_seconds` (the current one).
//!
//! An outage begins at a failed request. It ends at the first success of a
//! request sent after it began (a reply to a request sent before it is old
//! news), once no failure has followed that success for [`SETTLE`]: in a
//! partial outage (one Cluster master of three down) successes and failures
//! interleave, and that is one outage, not one per failed request.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::{Backend, BackendLabels};

/// Outage lengths: 100 ms to 10 min.
const OUTAGE_BUCKETS: [f64; 13] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// How long an outage must stay over before it counts as ended: a failure
/// within this of the first success after it continues the same outage.
pub(super) const SETTLE: Duration = Duration::from_secs(2);

type Lengths = Family<BackendLabels, Histogram, fn() -> Histogram>;

/// One backend's current outage.
#[derive(Debug, Default, Clone, Copy)]
struct Outage {
    began: Option<Instant>,
    /// The first success after it began, if no failure has come since.
    over: Option<Instant>,
}

/// Every backend's current outage, and the lengths of those that ended.
#[derive(Debug)]
pub(super) struct Outages {
    current: Mutex<[Outage; 3]>,
    lengths: Lengths,
}

impl Default for Outages {
    fn default() -> Self {
        Self {
            current: Mutex::default(),
            lengths: Family::new_with_constructor(|| Histogram::new(OUTAGE_BUCKETS)),
        }
    }
}

impl Outages {
    /// The histogram family, to register.
    pub(super) fn lengths(&self) -> Lengths {
        self.lengths.clone()
    }

    /// A request to `backend`, sent at `sent`, failed or succeeded at `now`.
    pub(super) fn record(&self, backend: Backend, sent: Instant, failed: bool, now: Instant) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let outage = &mut current[backend as usize];
        self.settle(backend, outage, now);
        match (outage.began, failed) {
            (None, true) => outage.began = Some(now),
            (Some(_), true) => outage.over = None,
            (Some(began), false) if sent >= began && outage.over.is_none() => {
                outage.over = Some(now);
            }
            _ => {}
        }
    }

    /// Ends `outage` if it has been over for [`SETTLE`].
    fn settle(&self, backend: Backend, outage: &mut Outage, now: Instant) {
        if let (Some(began), Some(over)) = (outage.began, outage.over) {
            if now.saturating_duration_since(over) >= SETTLE {
                self.lengths
                    .get_or_create(&BackendLabels { backend })
                    .observe((over - began).as_secs_f64());
                *outage = Outage::default();
            }
        }
    }

    /// The current outage's length, 0 when there is none (or it looks
    /// over, and is settling).
    fn length(&self, backend: Backend, now: Instant) -> f64 {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let outage = &mut current[backend as usize];
        self.settle(backend, outage, now);
        match *outage {
            Outage {
                began: Some(began),
                over: None,
            } => now.saturating_duration_since(began).as_secs_f64(),
            _ => 0.0,
        }
    }
}

/// `llmcache_backend_outage_seconds{backend}`, read at scrape time.
#[derive(Debug)]
pub(super) struct OutageGauge(pub(super) std::sync::Arc<Outages>);

impl Collector for OutageGauge {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let mut metric = encoder.encode_descriptor(
            "backend_outage",
            "Length of the backend's current outage as its requests see it; 0 when there is none",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        let now = Instant::now();
        for backend in Backend::ALL {
            let labels = BackendLabels { backend: *backend };
            let gauge = ConstGauge::new(self.0.length(*backend, now));
            gauge.encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    fn count(outages: &Outages) -> String {
        let mut registry = Registry::default();
        registry.register("outage", "", outages.lengths());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text.lines()
            .find(|l| l.starts_with("outage_count{backend=\"redis\"}"))
            .map(|l| l.rsplit_once(' ').unwrap().1.to_owned())
            .unwrap_or_else(|| "0".into())
    }

    const REDIS: Backend = Backend::Redis;

    #[test]
    fn a_reply_to_a_request_sent_before_the_outage_does_not_end_it() {
        let outages = Outages::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        outages.record(REDIS, at(10), true, at(20));
        // Sent before the outage began, answered after: old news.
        outages.record(REDIS, at(0), false, at(30));
        assert!(outages.length(REDIS, at(40)) > 0.0);
        // Sent after: the outage is over, and counted once it has settled.
        outages.record(REDIS, at(35), false, at(50));
        assert_eq!(outages.length(REDIS, at(60)), 0.0);
        assert_eq!(count(&outages), "0", "still settling");
        outages.record(REDIS, at(2100), false, at(2100));
        assert_eq!(count(&outages), "1");
    }

    #[test]
    fn failures_between_successes_are_one_outage() {
        let outages = Outages::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // One master of three down: every third request fails for 3 s.
        for ms in (0..3000).step_by(100) {
            let failed = (ms / 100) % 3 == 0;
            outages.record(REDIS, at(ms), failed, at(ms + 1));
        }
        for ms in (3000..6000).step_by(100) {
            outages.record(REDIS, at(ms), false, at(ms + 1));
        }
        assert_eq!(count(&outages), "1");
        assert_eq!(outages.length(REDIS, at(6000)), 0.0);
    }
}
