//! The `llmcache_redis_*` series. What the canary counts itself (error
//! replies, master changes, lost keys) are atomics; what each master's
//! `INFO` said at the last probe is a snapshot, encoded at scrape time with
//! one series per node, so a counter never falls because a node failed over
//! or missed a probe: its series goes, and the new master's starts.

use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::codes::ReplyCode;
use super::info::RedisInfo;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct CodeLabels {
    pub(super) code: ReplyCode,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeCodeLabels {
    node: String,
    code: ReplyCode,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    node: String,
    version: String,
    role: String,
    maxmemory_policy: String,
}

/// Each master's `INFO` at the last probe, by `host:port`.
type Snapshot = Arc<ArcSwap<Vec<(String, RedisInfo)>>>;

/// The `llmcache_redis_*` series.
#[derive(Clone, Debug)]
pub(crate) struct RedisMetrics {
    nodes: Family<RoleLabels, Gauge>,
    pub(super) master_changes: Counter,
    pub(super) error_replies: Family<CodeLabels, Counter>,
    lost_keys: Counter,
    masters: Snapshot,
}

impl RedisMetrics {
    /// Registers the series under `registry` (the `llmcache_redis_` prefix).
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            nodes: Family::default(),
            master_changes: Counter::default(),
            error_replies: Family::default(),
            lost_keys: Counter::default(),
            masters: Snapshot::default(),
        };
        for code in ReplyCode::ALL {
            let _ = metrics
                .error_replies
                .get_or_create(&CodeLabels { code: *code });
        }
        registry.register("nodes", "Redis nodes seen, by role", metrics.nodes.clone());
        registry.register(
            "master_changes",
            "A new master address for the Sentinel master, or a new owner of cluster slots",
            metrics.master_changes.clone(),
        );
        registry.register(
            "error_replies",
            "Error replies from Redis to the canary's own requests, by error code",
            metrics.error_replies.clone(),
        );
        registry.register(
            "lost_keys",
            "Chat histories the canary wrote and found gone before their TTL: evicted, or deleted by someone else",
            metrics.lost_keys.clone(),
        );
        registry.register_collector(Box::new(InfoCollector(metrics.masters.clone())));
        metrics
    }

    /// One of the canary's keys was found gone before its TTL.
    pub(super) fn count_lost_key(&self) {
        self.lost_keys.inc();
    }

    /// The INFO of every master that answered; the series of the others
    /// (and of nodes no longer there) vanish.
    pub(super) fn update(&self, masters: &[(String, RedisInfo)], replicas: usize) {
        self.masters.store(Arc::new(masters.to_vec()));
        for (role, count) in [("master", masters.len()), ("replica", replicas)] {
            self.nodes
                .get_or_create(&RoleLabels { role })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// Redis is down: no node's series remain.
    pub(super) fn clear(&self) {
        self.masters.store(Arc::default());
        self.nodes.clear();
    }
}

/// Encodes the snapshot; never talks to Redis.
#[derive(Debug)]
struct InfoCollector(Snapshot);

/// The per-node `INFO` series of `masters` (`used_memory_bytes`,
/// `keyspace_hits_total`, `server_errors_total`, `info`, ...), as the
/// canary exports them: for a fleet probe's registry, under `redis_`.
pub(crate) fn info_series(masters: Vec<(String, RedisInfo)>) -> Box<dyn Collector> {
    Box::new(InfoCollector(Arc::new(ArcSwap::from_pointee(masters))))
}

/// An INFO field, per node.
type Field = fn(&RedisInfo) -> Option<u64>;

const GAUGES: [(&str, &str, Field); 2] = [
    (
        "used_memory",
        "Redis used_memory from INFO, per master",
        |i| i.used_memory,
    ),
    (
        "maxmemory",
        "Redis maxmemory from INFO, per master; 0 means no limit",
        |i| i.maxmemory,
    ),
];

const COUNTERS: [(&str, &str, Field); 3] = [
    (
        "keyspace_hits",
        "Redis keyspace_hits from INFO, per master",
        |i| i.keyspace_hits,
    ),
    (
        "keyspace_misses",
        "Redis keyspace_misses from INFO, per master",
        |i| i.keyspace_misses,
    ),
    (
        "evicted_keys",
        "Redis evicted_keys from INFO, per master",
        |i| i.evicted_keys,
    ),
];

impl Collector for InfoCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let masters = self.0.load();
        for (name, help, field) in GAUGES {
            let mut family =
                encoder.encode_descriptor(name, help, Some(&Unit::Bytes), MetricType::Gauge)?;
            for (node, info) in masters.iter() {
                if let Some(value) = field(info) {
                    let labels = NodeLabels { node: node.clone() };
                    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
                        .encode(family.encode_family(&labels)?)?;
                }
            }
        }
        for (name, help, field) in COUNTERS {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (node, info) in masters.iter() {
                if let Some(value) = field(info) {
                    let labels = NodeLabels { node: node.clone() };
                    ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "server_errors",
            "Error replies each master sent to every client (INFO errorstats), by code",
            None,
            MetricType::Counter,
        )?;
        for (node, info) in masters.iter() {
            for (code, count) in server_errors(info) {
                let labels = NodeCodeLabels {
                    node: node.clone(),
                    code,
                };
                ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "info",
            "Each master's version, role and maxmemory policy; always 1",
            None,
            MetricType::Gauge,
        )?;
        for (node, info) in masters.iter() {
            let text = |value: &Option<String>| value.clone().unwrap_or_default();
            let labels = InfoLabels {
                node: node.clone(),
                version: text(&info.redis_version),
                role: text(&info.role),
                maxmemory_policy: text(&info.maxmemory_policy),
            };
            ConstGauge::new(1).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// A node's errorstats in the closed set of codes: every code Redis may
/// send that is not in the set is summed into `other`.
fn server_errors(info: &RedisInfo) -> Vec<(ReplyCode, u64)> {
    let mut counts: Vec<(ReplyCode, u64)> = Vec::new();
    for (code, count) in &info.errorstats {
        let code = ReplyCode::of(code);
        match counts.iter_mut().find(|(seen, _)| *seen == code) {
            Some((_, total)) => *total += count,
            None => counts.push((code, *count)),
        }
    }
    counts.sort();
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::redis::info::parse_info;

    fn encode(metrics: &RedisMetrics, registry: &Registry) -> String {
        let _ = metrics;
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    #[test]
    fn info_series_are_per_node_and_go_with_their_node() {
        let mut registry = Registry::default();
        let metrics = RedisMetrics::register(&mut registry);
        let info = parse_info(
            "redis_version:7.0.15\r\nrole:master\r\nmaxmemory_policy:noeviction\r\n\
             used_memory:100\r\nmaxmemory:1000\r\nkeyspace_hits:5\r\n\
             errorstat_OOM:count=3\r\nerrorstat_ERR:count=2\r\nerrorstat_WRONGTYPE:count=1\r\n",
        );
        metrics.update(&[("a:1".into(), info.clone()), ("b:2".into(), info)], 1);
        let text = encode(&metrics, &registry);
        for line in [
            r#"keyspace_hits_total{node="a:1"} 5"#,
            r#"keyspace_hits_total{node="b:2"} 5"#,
            r#"used_memory_bytes{node="a:1"} 100"#,
            r#"server_errors_total{node="a:1",code="OOM"} 3"#,
            r#"server_errors_total{node="a:1",code="other"} 3"#,
            r#"info{node="b:2",version="7.0.15",role="master",maxmemory_policy="noeviction"} 1"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        // b failed over: its series go; a's stay as they were.
        let a = parse_info("keyspace_hits:5\r\n");
        metrics.update(&[("a:1".into(), a)], 0);
        let text = encode(&metrics, &registry);
        assert!(text.contains(r#"keyspace_hits_total{node="a:1"} 5"#));
        assert!(!text.contains("b:2"), "{text}");
    }
}
