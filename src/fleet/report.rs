//! What one probe produces: a fresh registry for its series (blackbox
//! style: nothing outlives the scrape) and the log lines `debug=true`
//! shows. Probers write gauges and counters through the helpers here, with
//! label sets from closed enums plus the target's own address.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

use super::guard::Reason;

/// A float gauge.
pub(crate) type FloatGauge = Gauge<f64, AtomicU64>;

/// One probe's series and log.
pub(crate) struct Report {
    registry: Registry,
    log: String,
    started: Instant,
    /// What the probe refused on the way (a redirect, a node), once each.
    refused: Vec<Reason>,
}

impl Report {
    pub(crate) fn new() -> Self {
        Self {
            registry: Registry::default(),
            log: String::new(),
            started: Instant::now(),
            refused: Vec::new(),
        }
    }

    /// Logs a refusal and keeps its reason, for
    /// `llmcache_probe_refusals_total`.
    pub(crate) fn refuse(&mut self, reason: Reason, why: impl AsRef<str>) {
        self.log(format!("refused ({}): {}", reason.as_str(), why.as_ref()));
        if !self.refused.contains(&reason) {
            self.refused.push(reason);
        }
    }

    /// The reasons of the refusals so far.
    pub(crate) fn refusals(&self) -> &[Reason] {
        &self.refused
    }

    /// A line for `debug=true`, stamped with the time since the probe began.
    pub(crate) fn log(&mut self, line: impl AsRef<str>) {
        let at = self.started.elapsed().as_secs_f64();
        let _ = writeln!(self.log, "{at:>8.4}s {}", line.as_ref());
    }

    /// The log so far.
    #[cfg(test)]
    pub(crate) fn lines(&self) -> &str {
        &self.log
    }

    /// A gauge `llmcache_<name>`.
    pub(crate) fn gauge(&mut self, name: &str, help: &str, unit: Option<Unit>, value: f64) {
        let gauge = FloatGauge::default();
        gauge.set(value);
        self.register(name, help, unit, gauge);
    }

    /// A family of gauges `llmcache_<name>{labels}`.
    pub(crate) fn gauges<L>(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        values: Vec<(L, f64)>,
    ) where
        L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
    {
        let family: Family<L, FloatGauge> = Family::default();
        for (labels, value) in values {
            family.get_or_create(&labels).set(value);
        }
        self.register(name, help, unit, family);
    }

    /// A family of counters `llmcache_<name>_total{labels}`, set to the
    /// totals the target reported.
    pub(crate) fn counters<L>(&mut self, name: &str, help: &str, values: Vec<(L, u64)>)
    where
        L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
    {
        let family: Family<L, Counter> = Family::default();
        for (labels, value) in values {
            family.get_or_create(&labels).inc_by(value);
        }
        self.register(name, help, None, family);
    }

    /// A collector's series under `llmcache_<prefix>_`.
    pub(crate) fn collector(
        &mut self,
        prefix: &str,
        collector: Box<dyn prometheus_client::collector::Collector>,
    ) {
        self.registry
            .sub_registry_with_prefix("llmcache")
            .sub_registry_with_prefix(prefix)
            .register_collector(collector);
    }

    fn register(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        metric: impl prometheus_client::registry::Metric,
    ) {
        let namespace = self.registry.sub_registry_with_prefix("llmcache");
        match unit {
            Some(unit) => namespace.register_with_unit(name, help, unit, metric),
            None => namespace.register(name, help, metric),
        }
    }

    /// The exposition: the module's series, then `probe_success` and
    /// `probe_duration_seconds` (blackbox_exporter's names, unprefixed).
    pub(crate) fn finish(mut self, success: bool) -> (String, String, Duration) {
        let took = self.started.elapsed();
        let success_gauge = FloatGauge::default();
        success_gauge.set(f64::from(u8::from(success)));
        self.registry.register(
            "probe_success",
            "Whether the probe succeeded",
            success_gauge,
        );
        let duration = FloatGauge::default();
        duration.set(took.as_secs_f64());
        self.registry.register_with_unit(
            "probe_duration",
            "How long the probe took",
            Unit::Seconds,
            duration,
        );
        // Prometheus text 0.0.4, as /metrics serves by default.
        let mut text = String::new();
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        (text, self.log, took)
    }
}

/// The mean and the largest of a probe's durations of one request kind.
#[derive(Debug, Default, Clone)]
pub(crate) struct Timings(Vec<(&'static str, Vec<Duration>)>);

impl Timings {
    pub(crate) fn record(&mut self, request: &'static str, took: Duration) {
        match self.0.iter_mut().find(|(r, _)| *r == request) {
            Some((_, all)) => all.push(took),
            None => self.0.push((request, vec![took])),
        }
    }

    /// `llmcache_probe_request_duration_seconds{request}` (the mean) and
    /// `llmcache_probe_request_max_duration_seconds{request}`.
    pub(crate) fn report(&self, report: &mut Report) {
        let mean = |all: &Vec<Duration>| {
            all.iter().map(Duration::as_secs_f64).sum::<f64>() / all.len().max(1) as f64
        };
        let max = |all: &Vec<Duration>| all.iter().max().map_or(0.0, Duration::as_secs_f64);
        let labels = |request: &'static str| RequestLabels { request };
        report.gauges(
            "probe_request_duration",
            "Mean duration of this probe's requests of each kind",
            Some(Unit::Seconds),
            self.0
                .iter()
                .map(|(r, all)| (labels(r), mean(all)))
                .collect(),
        );
        report.gauges(
            "probe_request_max_duration",
            "Longest of this probe's requests of each kind",
            Some(Unit::Seconds),
            self.0
                .iter()
                .map(|(r, all)| (labels(r), max(all)))
                .collect(),
        );
    }
}

/// `request`: a closed set per prober.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) request: &'static str,
}

/// `node`: the target's address.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct NodeLabels {
    pub(crate) node: String,
}
