//! The metrics registry, built once at start from an explicit list of sources
//! and never changed afterwards. Sources own their metric handles (atomics);
//! a scrape only encodes what they last measured.
//!
//! Also here: the latency buckets every histogram shares, the `label_values!`
//! macro that gives label enums their fixed spelling, and [`Sampled`], a value a
//! background loop sets and clears, which a scrape shows only while it is set.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::process::ProcessCollector;

/// Defines a label-value enum with a fixed, closed set of spellings, so label
/// cardinality is decided at compile time.
macro_rules! label_values {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
        $vis enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            #[allow(dead_code)]
            pub(crate) const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The label value as exported.
            pub(crate) fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl prometheus_client::encoding::EncodeLabelValue for $name {
            fn encode(
                &self,
                encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
            ) -> std::fmt::Result {
                std::fmt::Write::write_str(encoder, self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }
    };
}
pub(crate) use label_values;

/// Latency buckets from 100 µs to 10 s at 1-2.5-5 steps per decade, the
/// layout of Prometheus's own defaults: a p99 interpolates within a step of
/// at most 2.5x, for a 0.2 ms Redis call and a 30 ms Chroma query alike, at 16
/// buckets per series (26 before: the histograms were three quarters of
/// every scrape). 25 ms, 250 ms and 2.5 s are bounds, so the mixin's latency
/// budget can count slow operations from the bucket at its threshold.
pub(crate) const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, //
    0.001, 0.0025, 0.005, //
    0.01, 0.025, 0.05, //
    0.1, 0.25, 0.5, //
    1.0, 2.5, 5.0, //
    10.0,
];

/// A latency histogram with [`LATENCY_BUCKETS`]; usable as a `Family` constructor.
pub(crate) fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// A measurement taken by a background loop: set while the source answers,
/// cleared when it does not, so a scrape never shows a stale value.
#[derive(Clone, Debug)]
pub(crate) struct Sampled(Arc<AtomicU64>);

/// NaN marks "no sample"; real samples are never NaN.
const ABSENT: u64 = f64::NAN.to_bits();

impl Default for Sampled {
    fn default() -> Self {
        Self(Arc::new(AtomicU64::new(ABSENT)))
    }
}

impl Sampled {
    /// Records a new value.
    pub(crate) fn set(&self, value: f64) {
        if value.is_finite() {
            self.0.store(value.to_bits(), Ordering::Relaxed);
        } else {
            self.clear();
        }
    }

    /// Forgets the value; the series disappears until the next `set`.
    pub(crate) fn clear(&self) {
        self.0.store(ABSENT, Ordering::Relaxed);
    }

    /// The last value, if any.
    pub(crate) fn get(&self) -> Option<f64> {
        Some(f64::from_bits(self.0.load(Ordering::Relaxed))).filter(|v| !v.is_nan())
    }
}

/// Encodes one [`Sampled`] value as a gauge or counter, or nothing when absent.
#[derive(Debug)]
struct SampledCollector {
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    kind: MetricType,
    value: Sampled,
}

impl Collector for SampledCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(value) = self.value.get() else {
            return Ok(());
        };
        let metric =
            encoder.encode_descriptor(self.name, self.help, self.unit.as_ref(), self.kind)?;
        match self.kind {
            MetricType::Counter => ConstCounter::new(value.max(0.0) as u64).encode(metric),
            _ => ConstGauge::new(value).encode(metric),
        }
    }
}

/// Registers a sampled gauge (or counter, by `kind`) and returns its handle.
pub(crate) fn register_sampled(
    registry: &mut Registry,
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    kind: MetricType,
) -> Sampled {
    let value = Sampled::default();
    registry.register_collector(Box::new(SampledCollector {
        name,
        help,
        unit,
        kind,
        value: value.clone(),
    }));
    value
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildInfoLabels {
    version: &'static str,
    revision: &'static str,
    rustc_version: &'static str,
}

/// Everything `/metrics` serves.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    /// `llmcache_config_last_reload_successful`.
    pub(crate) last_reload_successful: Gauge,
}

/// The registry while sources register into it; [`MetricsBuilder::finish`]
/// freezes it.
pub(crate) struct MetricsBuilder {
    root: Registry,
    last_reload_successful: Gauge,
}

impl MetricsBuilder {
    /// The `llmcache_` namespace, for a source to register its metrics under.
    pub(crate) fn namespace(&mut self) -> &mut Registry {
        self.root.sub_registry_with_prefix("llmcache")
    }

    /// Adds the process collector (outside the namespace, as is standard) and
    /// freezes the registry.
    pub(crate) fn finish(mut self) -> Metrics {
        self.root
            .register_collector(Box::new(ProcessCollector::default()));
        Metrics {
            registry: self.root,
            last_reload_successful: self.last_reload_successful,
        }
    }
}

impl Metrics {
    /// A registry holding `llmcache_build_info` and
    /// `llmcache_config_last_reload_successful`; sources add the rest.
    pub(crate) fn builder() -> MetricsBuilder {
        let mut root = Registry::default();
        let namespace = root.sub_registry_with_prefix("llmcache");
        let build_info = Family::<BuildInfoLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildInfoLabels {
                version: env!("CARGO_PKG_VERSION"),
                revision: env!("LLMCACHE_BUILD_REVISION"),
                rustc_version: env!("LLMCACHE_RUSTC_VERSION"),
            })
            .set(1);
        namespace.register(
            "build_info",
            "A metric with a constant '1' value labeled by version, revision and rustc_version",
            build_info,
        );
        let last_reload_successful: Gauge = Gauge::default();
        last_reload_successful.set(1);
        namespace.register(
            "config_last_reload_successful",
            "Whether the last configuration (re)load succeeded",
            last_reload_successful.clone(),
        );
        MetricsBuilder {
            root,
            last_reload_successful,
        }
    }

    /// OpenMetrics 1.0 text, ending in `# EOF`.
    pub(crate) fn encode_openmetrics(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// Prometheus text format 0.0.4.
    pub(crate) fn encode_prometheus_text(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_span_100us_to_10s_in_order() {
        assert_eq!(LATENCY_BUCKETS[0], 0.0001);
        assert_eq!(LATENCY_BUCKETS[LATENCY_BUCKETS.len() - 1], 10.0);
        assert!(LATENCY_BUCKETS.windows(2).all(|w| w[0] < w[1]));
        // Neighbouring bounds are never more than 2.5x apart.
        assert!(LATENCY_BUCKETS
            .windows(2)
            .all(|w| w[1] / w[0] <= 2.5 + 1e-9));
        // The mixin's default latency objective is a bucket bound.
        assert!(LATENCY_BUCKETS.contains(&0.25));
    }

    #[test]
    fn sampled_values_vanish_when_cleared() {
        let mut builder = Metrics::builder();
        let value = register_sampled(
            builder.namespace(),
            "thing",
            "A thing",
            Some(Unit::Bytes),
            MetricType::Gauge,
        );
        value.set(42.0);
        let gone = register_sampled(
            builder.namespace(),
            "gone",
            "Gone",
            None,
            MetricType::Counter,
        );
        gone.set(1.0);
        gone.clear();
        let metrics = builder.finish();
        let text = metrics.encode_prometheus_text().unwrap();
        assert!(text.contains("llmcache_thing_bytes 42"), "{text}");
        assert!(!text.contains("llmcache_gone"), "{text}");
    }
}
