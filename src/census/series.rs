//! What the census publishes: the last complete pass of each store, swapped
//! in whole when a pass ends ([`CensusMetrics::publish_redis`],
//! [`CensusMetrics::publish_chroma`]) and encoded at scrape time by a
//! collector that never talks to a store. The canary registers its census
//! on `/metrics`; a fleet probe adds a target's to its own answer.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::chroma::ChromaPass;
use super::redis::{GroupSummary, RedisPass};

/// The census's series: the last complete pass of each store, and the keys
/// scanned.
#[derive(Clone, Debug, Default)]
pub(crate) struct CensusMetrics(Arc<Published>);

#[derive(Debug, Default)]
struct Published {
    redis: ArcSwapOption<RedisPass>,
    chroma: ArcSwapOption<ChromaFinished>,
    /// How long the last pass of each store took, succeeded or not, and
    /// when the last successful one ended.
    redis_timing: ArcSwapOption<Timing>,
    chroma_timing: ArcSwapOption<Timing>,
    scanned: Counter,
}

/// A Chroma pass, with what its series are cut by.
#[derive(Debug)]
struct ChromaFinished {
    pass: ChromaPass,
    /// The canary's (or the probe's) own collection, named in the series
    /// whatever its size.
    own: String,
    top: usize,
}

#[derive(Debug, Default, Clone, Copy)]
struct Timing {
    duration: f64,
    last_success: Option<f64>,
}

impl CensusMetrics {
    /// Registers the series under `registry` (the `llmcache_` namespace).
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry
            .sub_registry_with_prefix("census")
            .register_collector(metrics.collector());
        metrics
    }

    /// The series, for a registry's `census` prefix.
    pub(crate) fn collector(&self) -> Box<dyn Collector> {
        Box::new(CensusCollector(self.0.clone()))
    }

    /// Counts keys looked at.
    pub(crate) fn scanned(&self, keys: u64) {
        self.0.scanned.inc_by(keys);
    }

    /// Publishes a Redis pass begun at `start`: its series on success, its
    /// timing either way (a failure keeps the last success's time).
    pub(crate) fn publish_redis(
        &self,
        subject: &str,
        start: Instant,
        result: Result<RedisPass, String>,
    ) {
        let result = result.map(|pass| (format!("{} keys", pass.scanned), pass));
        publish(
            subject,
            "Redis",
            &self.0.redis,
            &self.0.redis_timing,
            start,
            result,
        );
    }

    /// Publishes a Chroma pass, as [`Self::publish_redis`]; `own` is the
    /// collection named whatever its size, `top` how many others are.
    pub(crate) fn publish_chroma(
        &self,
        subject: &str,
        start: Instant,
        result: Result<ChromaPass, String>,
        own: &str,
        top: usize,
    ) {
        let result = result.map(|pass| {
            let summary = format!("{} collections", pass.collections.len());
            let finished = ChromaFinished {
                pass,
                own: own.to_owned(),
                top,
            };
            (summary, finished)
        });
        publish(
            subject,
            "Chroma",
            &self.0.chroma,
            &self.0.chroma_timing,
            start,
            result,
        );
    }

    /// One line on the last passes, for a probe's `debug=true` log.
    pub(crate) fn describe(&self) -> String {
        let state = &self.0;
        let mut parts = Vec::new();
        for (store, timing, what) in [
            (
                "redis",
                state.redis_timing.load_full(),
                state
                    .redis
                    .load_full()
                    .map(|p| format!("{} keys", p.scanned)),
            ),
            (
                "chroma",
                state.chroma_timing.load_full(),
                state
                    .chroma
                    .load_full()
                    .map(|p| format!("{} collections", p.pass.collections.len())),
            ),
        ] {
            let Some(timing) = timing else { continue };
            let last = match (timing.last_success, what) {
                (Some(at), Some(what)) => {
                    format!("last complete pass {:.0}s ago, {what}", now() - at)
                }
                _ => "no complete pass yet".to_owned(),
            };
            parts.push(format!(
                "{store}: last pass took {:.3}s; {last}",
                timing.duration
            ));
        }
        if parts.is_empty() {
            "the first pass has not ended yet".to_owned()
        } else {
            parts.join("; ")
        }
    }
}

/// Publishes a pass of `store` begun at `start`.
fn publish<T>(
    subject: &str,
    store: &str,
    slot: &ArcSwapOption<T>,
    timing: &ArcSwapOption<Timing>,
    start: Instant,
    result: Result<(String, T), String>,
) {
    let duration = start.elapsed().as_secs_f64();
    let last_success = match result {
        Ok((summary, pass)) => {
            tracing::info!(
                seconds = duration,
                "census of {store}{subject} done: {summary}"
            );
            slot.store(Some(Arc::new(pass)));
            Some(now())
        }
        Err(err) => {
            tracing::error!(error = %err, "census of {store}{subject} failed; its series keep the last pass");
            timing.load_full().and_then(|t| t.last_success)
        }
    };
    timing.store(Some(Arc::new(Timing {
        duration,
        last_success,
    })));
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuantileLabels {
    group: String,
    quantile: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CollectionLabels {
    collection: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    store: &'static str,
}

/// Encodes the last complete passes; never talks to a store.
#[derive(Debug)]
struct CensusCollector(Arc<Published>);

impl Collector for CensusCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        if let Some(redis) = self.0.redis.load_full() {
            encode_redis(&mut encoder, &redis)?;
        }
        if let Some(chroma) = self.0.chroma.load_full() {
            encode_chroma(&mut encoder, &chroma)?;
        }
        let timings = [
            ("redis", self.0.redis_timing.load_full()),
            ("chroma", self.0.chroma_timing.load_full()),
        ];
        let mut family = encoder.encode_descriptor(
            "pass_duration",
            "How long the census's last pass of each store took",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for (store, timing) in &timings {
            if let Some(timing) = timing {
                ConstGauge::new(timing.duration)
                    .encode(family.encode_family(&StoreLabels { store })?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "last_success_timestamp",
            "When the census's last successful pass of each store ended",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for (store, timing) in &timings {
            if let Some(at) = timing.as_ref().and_then(|t| t.last_success) {
                ConstGauge::new(at).encode(family.encode_family(&StoreLabels { store })?)?;
            }
        }
        let family = encoder.encode_descriptor(
            "keys_scanned",
            "Redis keys the census looked at",
            None,
            MetricType::Counter,
        )?;
        self.0.scanned.encode(family)
    }
}

fn encode_redis(encoder: &mut DescriptorEncoder<'_>, pass: &RedisPass) -> std::fmt::Result {
    type Value = fn(&GroupSummary) -> Option<f64>;
    let per_group: [(&str, &str, Option<Unit>, Value); 5] = [
        (
            "redis_keys",
            "Keys in each group (other: keys no group matches)",
            None,
            |g| Some(g.keys as f64),
        ),
        (
            "redis_memory",
            "Memory of each group's keys, from MEMORY USAGE (estimated beyond the sampled share)",
            Some(Unit::Bytes),
            |g| g.memory,
        ),
        (
            "redis_keys_without_ttl",
            "Keys of each group without a TTL",
            None,
            |g| Some(g.without_ttl as f64),
        ),
        (
            "redis_memory_estimated_keys",
            "Keys of each group whose memory is Redis's sampled estimate (more elements than \
             census.redis.exact_memory_max_elements, or lengths not read)",
            None,
            |g| Some(g.memory_estimated as f64),
        ),
        (
            "redis_memory_sampled_ratio",
            "The share of each group's keys whose memory was measured",
            None,
            |g| (g.keys > 0).then(|| g.sampled as f64 / g.keys as f64),
        ),
    ];
    for (name, help, unit, value) in per_group {
        let mut family = encoder.encode_descriptor(name, help, unit.as_ref(), MetricType::Gauge)?;
        for (group, census) in &pass.groups {
            if let Some(v) = value(census) {
                let labels = GroupLabels {
                    group: group.clone(),
                };
                ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
            }
        }
    }
    let mut family = encoder.encode_descriptor(
        "redis_db_keys",
        "DBSIZE of the nodes the last pass read, at the end of each one's scan: what the \
         group counts sum to, but for SCAN's repeats and the keys that came or went",
        None,
        MetricType::Gauge,
    )?;
    ConstGauge::new(pass.dbsize as i64).encode(family.encode_family(&NoLabels {})?)?;
    type Quantiles = fn(&GroupSummary) -> &[(&'static str, f64)];
    let per_quantile: [(&str, &str, Option<Unit>, Quantiles); 3] = [
        (
            "redis_length",
            "Element counts of each group's lists, hashes, sets, sorted sets and streams (LLEN, HLEN, SCARD, ZCARD, XLEN), by quantile",
            None,
            |g| &g.lengths,
        ),
        (
            "redis_string",
            "Sizes of each group's string keys (STRLEN), by quantile",
            Some(Unit::Bytes),
            |g| &g.string_bytes,
        ),
        (
            "redis_ttl",
            "Time to live of each group's keys that have one, by quantile",
            Some(Unit::Seconds),
            |g| &g.ttls,
        ),
    ];
    for (name, help, unit, values) in per_quantile {
        let mut family = encoder.encode_descriptor(name, help, unit.as_ref(), MetricType::Gauge)?;
        for (group, census) in &pass.groups {
            for (quantile, value) in values(census) {
                let labels = QuantileLabels {
                    group: group.clone(),
                    quantile,
                };
                ConstGauge::new(*value).encode(family.encode_family(&labels)?)?;
            }
        }
    }
    Ok(())
}

fn encode_chroma(
    encoder: &mut DescriptorEncoder<'_>,
    finished: &ChromaFinished,
) -> std::fmt::Result {
    let collections = &finished.pass.collections;
    let mut family = encoder.encode_descriptor(
        "chroma_collections",
        "Collections in the tenant and database",
        None,
        MetricType::Gauge,
    )?;
    ConstGauge::new(collections.len() as i64).encode(family.encode_family(&NoLabels {})?)?;
    let mut family = encoder.encode_descriptor(
        "chroma_records",
        "Records in each of the largest collections (and the canary's own); the rest summed as other",
        None,
        MetricType::Gauge,
    )?;
    let mut other = 0u64;
    let mut named = 0;
    for (name, records) in collections {
        if *name == finished.own || named < finished.top {
            if *name != finished.own {
                named += 1;
            }
            let labels = CollectionLabels {
                collection: name.clone(),
            };
            ConstGauge::new(*records as i64).encode(family.encode_family(&labels)?)?;
        } else {
            other += records;
        }
    }
    // The canary's own collection is named whether or not it exists yet.
    let own_listed = collections.iter().any(|(n, _)| *n == finished.own);
    if !own_listed && !finished.own.is_empty() {
        let labels = CollectionLabels {
            collection: finished.own.clone(),
        };
        ConstGauge::new(0).encode(family.encode_family(&labels)?)?;
    }
    if collections.len() > named + usize::from(own_listed) {
        let labels = CollectionLabels {
            collection: "other".into(),
        };
        ConstGauge::new(other as i64).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NoLabels {}
