//! The last 30 minutes, in process: a fixed ring of [`RING_LEN`] samples
//! taken every [`INTERVAL`] from the daemon's own exposition (what a scrape
//! would show), for the landing page's charts and `/api/v1/series`. Taking a
//! sample encodes the registry; it never talks to a backend, and a request
//! only reads the ring.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// The resolution.
pub(crate) const INTERVAL: Duration = Duration::from_secs(10);
/// 30 minutes at [`INTERVAL`]: the ring's fixed length.
pub(crate) const RING_LEN: usize = 180;

pub(crate) const CACHES: [&str; 3] = ["chat_history", "similarity", "embeddings"];
pub(crate) const OPERATIONS: [&str; 4] = [
    "get_chat_history",
    "store_chat_entry",
    "query_similar_memories",
    "store_memory",
];
pub(crate) const KINDS: [&str; 6] = [
    "timeout",
    "connection",
    "protocol",
    "server",
    "validation",
    "auth",
];
pub(crate) const SCOPES: [&str; 5] = ["overall", "host", "cgroup", "psi", "redis"];
pub(crate) const BACKENDS: [&str; 3] = ["redis", "chroma", "embeddings"];

/// One point in time: rates are over the interval that ends here. `None`
/// where there was nothing to measure (no lookup, no operation).
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Sample {
    /// Unix seconds.
    pub(crate) time: u64,
    pub(crate) hit_ratio: [Option<f64>; 3],
    pub(crate) p50_seconds: [Option<f64>; 4],
    pub(crate) p99_seconds: [Option<f64>; 4],
    pub(crate) operations_per_second: f64,
    pub(crate) errors_per_second: f64,
    pub(crate) errors_per_second_by_kind: [f64; 6],
    pub(crate) pool_used_bytes: f64,
    pub(crate) pool_budget_bytes: f64,
    pub(crate) memory_pressure: [f64; 5],
    pub(crate) backend_up: [f64; 3],
    pub(crate) outage_seconds: [f64; 3],
}

/// The ring, shared by the sampler and the handlers.
#[derive(Clone, Debug, Default)]
pub(crate) struct Series(Arc<Mutex<Vec<Sample>>>);

impl Series {
    /// The samples of the last `window`, oldest first.
    pub(crate) fn window(&self, window: Duration) -> Vec<Sample> {
        let ring = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let newest = ring.last().map_or(0, |s| s.time);
        let since = newest.saturating_sub(window.as_secs());
        ring.iter().filter(|s| s.time > since).cloned().collect()
    }

    fn push(&self, sample: Sample) {
        let mut ring = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() == RING_LEN {
            ring.remove(0);
        }
        ring.push(sample);
    }

    /// Samples `metrics` every [`INTERVAL`] until `cancel`.
    pub(crate) async fn run(self, metrics: Arc<Metrics>, cancel: CancellationToken) {
        // Divided by the time that really passed: a tick skipped while the
        // worker was busy makes the interval 20 s, not 10.
        let mut previous: Option<(Instant, Values)> = None;
        let mut every = tokio::time::interval(INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        every.tick().await;
        loop {
            if let Ok(text) = metrics.encode_prometheus_text() {
                let (at, now) = (Instant::now(), Values::parse(&text));
                if let Some((then, before)) = &previous {
                    self.push(sample(before, &now, (at - *then).as_secs_f64()));
                }
                previous = Some((at, now));
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = every.tick() => {}
            }
        }
    }
}

/// One exposition, series by series.
struct Values(HashMap<String, f64>);

impl Values {
    fn parse(text: &str) -> Self {
        Self(
            text.lines()
                .filter(|line| !line.starts_with('#'))
                .filter_map(|line| {
                    let (series, value) = line.rsplit_once(' ')?;
                    Some((series.to_owned(), value.parse().ok()?))
                })
                .collect(),
        )
    }

    fn get(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }

    /// The sum of the series whose name starts with `prefix` and that carry
    /// every label in `labels`.
    fn sum(&self, prefix: &str, labels: &[&str]) -> f64 {
        self.0
            .iter()
            .filter(|(k, _)| k.starts_with(prefix) && labels.iter().all(|l| k.contains(l)))
            .map(|(_, v)| v)
            .sum()
    }
}

fn sample(before: &Values, now: &Values, seconds: f64) -> Sample {
    let delta = |series: &str| (now.get(series) - before.get(series)).max(0.0);
    let delta_sum = |prefix: &str, labels: &[&str]| {
        (now.sum(prefix, labels) - before.sum(prefix, labels)).max(0.0)
    };
    let hit_ratio = CACHES.map(|cache| {
        let requests = delta(&format!(
            "llmcache_cache_requests_total{{cache=\"{cache}\"}}"
        ));
        let hits = delta(&format!("llmcache_cache_hits_total{{cache=\"{cache}\"}}"));
        (requests > 0.0).then(|| hits / requests)
    });
    let quantiles = |q: f64| {
        OPERATIONS.map(|operation| {
            let buckets = bucket_deltas(before, now, operation);
            quantile(q, &buckets)
        })
    };
    let operations = delta_sum("llmcache_operation_duration_seconds_count{", &[]);
    let errors = delta_sum("llmcache_operation_errors_total{", &[]);
    let by_kind = KINDS.map(|kind| {
        delta_sum(
            "llmcache_operation_errors_total{",
            &[&format!("kind=\"{kind}\"")],
        ) / seconds
    });
    Sample {
        time: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        hit_ratio,
        p50_seconds: quantiles(0.5),
        p99_seconds: quantiles(0.99),
        operations_per_second: operations / seconds,
        errors_per_second: errors / seconds,
        errors_per_second_by_kind: by_kind,
        pool_used_bytes: now.get("llmcache_memory_pool_used_bytes"),
        pool_budget_bytes: now.get("llmcache_memory_pool_budget_bytes"),
        memory_pressure: SCOPES
            .map(|scope| now.get(&format!("llmcache_memory_pressure{{scope=\"{scope}\"}}"))),
        backend_up: BACKENDS
            .map(|backend| now.get(&format!("llmcache_backend_up{{backend=\"{backend}\"}}"))),
        outage_seconds: BACKENDS.map(|backend| {
            now.get(&format!(
                "llmcache_backend_outage_seconds{{backend=\"{backend}\"}}"
            ))
        }),
    }
}

/// The operation's latency buckets over the interval, every outcome but
/// `error` together: `(upper bound, cumulative count)`, ascending.
fn bucket_deltas(before: &Values, now: &Values, operation: &str) -> Vec<(f64, f64)> {
    let prefix = "llmcache_operation_duration_seconds_bucket{";
    let mut buckets: HashMap<String, f64> = HashMap::new();
    for (series, value) in &now.0 {
        if !series.starts_with(prefix)
            || !series.contains(&format!("operation=\"{operation}\""))
            || series.contains("outcome=\"error\"")
        {
            continue;
        }
        let Some(le) = series
            .split("le=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
        else {
            continue;
        };
        let old = before.0.get(series).copied().unwrap_or(0.0);
        *buckets.entry(le.to_owned()).or_default() += (value - old).max(0.0);
    }
    let mut buckets: Vec<(f64, f64)> = buckets
        .into_iter()
        .filter_map(|(le, count)| {
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, count))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// `histogram_quantile` as Prometheus computes it: linear within the bucket.
fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(lower.0);
            }
            let within = (rank - lower.1) / (count - lower.1).max(f64::MIN_POSITIVE);
            return Some(lower.0 + (bound - lower.0) * within);
        }
        lower = (bound, count);
    }
    Some(lower.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let buckets = [
            (0.001, 50.0),
            (0.002, 90.0),
            (0.005, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert!((quantile(0.5, &buckets).unwrap() - 0.001).abs() < 1e-9);
        assert!((quantile(0.7, &buckets).unwrap() - 0.0015).abs() < 1e-9);
        assert_eq!(quantile(0.5, &[(0.001, 0.0)]), None);
    }

    #[test]
    fn a_sample_is_the_interval_between_two_expositions() {
        let before = Values::parse(
            "llmcache_cache_requests_total{cache=\"chat_history\"} 10\n\
             llmcache_cache_hits_total{cache=\"chat_history\"} 5\n\
             llmcache_operation_duration_seconds_count{operation=\"store_memory\",outcome=\"success\"} 0\n",
        );
        let now = Values::parse(
            "llmcache_cache_requests_total{cache=\"chat_history\"} 20\n\
             llmcache_cache_hits_total{cache=\"chat_history\"} 13\n\
             llmcache_operation_duration_seconds_count{operation=\"store_memory\",outcome=\"success\"} 50\n\
             llmcache_operation_errors_total{operation=\"store_memory\",kind=\"server\"} 10\n\
             llmcache_backend_up{backend=\"redis\"} 1\n",
        );
        let sample = sample(&before, &now, 10.0);
        assert_eq!(sample.hit_ratio[0], Some(0.8));
        assert_eq!(sample.hit_ratio[1], None);
        assert_eq!(sample.operations_per_second, 5.0);
        assert_eq!(sample.errors_per_second_by_kind[3], 1.0);
        assert_eq!(sample.backend_up, [1.0, 0.0, 0.0]);
    }

    #[test]
    fn the_ring_keeps_thirty_minutes() {
        let series = Series::default();
        for time in 0..(RING_LEN as u64 + 20) {
            series.push(Sample {
                time: time * 10,
                ..Sample::default()
            });
        }
        assert_eq!(series.window(Duration::from_secs(3600)).len(), RING_LEN);
        assert_eq!(series.window(Duration::from_secs(60)).len(), 6);
        // The README states the ring's size.
        assert!(std::mem::size_of::<Sample>() * RING_LEN <= 64 * 1024);
    }
}
