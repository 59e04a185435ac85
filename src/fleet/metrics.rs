//! What `/metrics` says of the probes: `llmcache_probes_total{module,result}`,
//! `llmcache_probe_refusals_total{module,reason}`,
//! `llmcache_probe_duration_seconds{module}`,
//! `llmcache_probe_pool_connections{prober}`, and of the probed targets'
//! censuses: `llmcache_fleet_censuses{module}` and
//! `llmcache_fleet_census_passes_total{module,result}`. The `module` label takes the
//! configured modules' names (empty for a request that named none that is
//! configured).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::guard::Reason;
use crate::config::ProberKind;
use crate::metrics::{label_values, latency_histogram};

label_values! {
    /// How a probe request ended, as the `result` label spells it.
    pub(crate) enum ProbeResult {
        Success => "success",
        Failure => "failure",
        Refused => "refused",
        Busy => "busy",
        BadRequest => "bad_request",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    module: String,
    result: ProbeResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    module: String,
    reason: Reason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModuleLabels {
    module: String,
}

label_values! {
    /// How a census pass ended, as the `result` label spells it.
    pub(crate) enum PassResult {
        Success => "success",
        Failure => "failure",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PassLabels {
    module: String,
    result: PassResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProberLabels {
    prober: &'static str,
}

/// The probe series on `/metrics`.
#[derive(Clone, Debug)]
pub(crate) struct FleetMetrics {
    probes: Family<ResultLabels, Counter>,
    refusals: Family<RefusalLabels, Counter>,
    duration: Family<ModuleLabels, Histogram, fn() -> Histogram>,
    pooled: Family<ProberLabels, Gauge>,
    censuses: Family<ModuleLabels, Gauge>,
    census_passes: Family<PassLabels, Counter>,
}

impl FleetMetrics {
    /// Registers the families under `registry` (the `llmcache_` namespace).
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            probes: Family::default(),
            refusals: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            pooled: Family::default(),
            censuses: Family::default(),
            census_passes: Family::default(),
        };
        registry.register(
            "probes",
            "/probe requests, by module and how they ended",
            metrics.probes.clone(),
        );
        registry.register(
            "probe_refusals",
            "What /probe refused, by module and reason: a malformed target, one outside \
             allowed_targets, an address in probe.denied_networks, a node the server named \
             outside allowed_targets, a redirect, an answer over body_size_limit",
            metrics.refusals.clone(),
        );
        registry.register_with_unit(
            "probe_duration",
            "How long each /probe took, by module",
            Unit::Seconds,
            metrics.duration.clone(),
        );
        registry.register(
            "probe_pool_connections",
            "Clients pooled for /probe targets, by prober",
            metrics.pooled.clone(),
        );
        registry.register(
            "fleet_censuses",
            "Censuses of probed targets running, by module",
            metrics.censuses.clone(),
        );
        registry.register(
            "fleet_census_passes",
            "Census passes of probed targets (each store of each), by module and how they ended",
            metrics.census_passes.clone(),
        );
        metrics
    }

    pub(crate) fn count(&self, module: &str, result: ProbeResult) {
        self.probes
            .get_or_create(&ResultLabels {
                module: module.to_owned(),
                result,
            })
            .inc();
    }

    pub(crate) fn refused(&self, module: &str, reason: Reason) {
        self.refusals
            .get_or_create(&RefusalLabels {
                module: module.to_owned(),
                reason,
            })
            .inc();
    }

    pub(crate) fn observe(&self, module: &str, seconds: f64) {
        self.duration
            .get_or_create(&ModuleLabels {
                module: module.to_owned(),
            })
            .observe(seconds);
    }

    /// The gauge of `module`'s running censuses.
    pub(crate) fn censuses(&self, module: &str) -> Gauge {
        self.censuses
            .get_or_create(&ModuleLabels {
                module: module.to_owned(),
            })
            .clone()
    }

    /// The counter of `module`'s census passes that ended as `result`.
    pub(crate) fn census_passes(&self, module: &str, result: PassResult) -> Counter {
        self.census_passes
            .get_or_create(&PassLabels {
                module: module.to_owned(),
                result,
            })
            .clone()
    }

    pub(crate) fn pooled(&self, prober: ProberKind, clients: u64) {
        self.pooled
            .get_or_create(&ProberLabels {
                prober: prober.as_str(),
            })
            .set(i64::try_from(clients).unwrap_or(i64::MAX));
    }
}
