//! The memory-pressure monitor: one sampler per source (host `meminfo`, the
//! daemon's cgroup, PSI, Redis `INFO`), a hysteresis verdict per scope, and
//! the action: while any scope is under pressure the cache pool's budget is
//! `memory_budget × shrink_factor`; when all clear it is restored.
//!
//! Every file path is relative to `--path.procfs` / `--path.sysfs`, so tests
//! point the monitor at fixtures. A missing source (no PSI, no cgroup limit,
//! Redis down) emits no series and logs at debug; it never fails a scrape.

pub(crate) mod sources;
mod verdict;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::backends::redis::RedisInfo;
use crate::cache::Pool;
use crate::config::MemoryConfig;
use crate::metrics::{label_values, register_sampled, Sampled};
use crate::process::ProcessCollector;
use sources::{parse_cgroup_value, parse_meminfo, parse_psi, parse_self_cgroup, CgroupPath, Psi};
use verdict::{Direction, Rule, Verdict};

label_values! {
    /// A pressure scope, as the `scope` label spells it.
    pub(crate) enum Scope {
        Overall => "overall",
        Host => "host",
        Cgroup => "cgroup",
        Psi => "psi",
        Redis => "redis",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabels {
    scope: Scope,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WindowLabels {
    window: &'static str,
}

const WINDOWS: [&str; 3] = ["10s", "60s", "300s"];

/// `llmcache_psi_memory_{some,full}_ratio{window}`, present only while PSI is.
#[derive(Debug)]
struct PsiCollector(PsiSamples);

impl Collector for PsiCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (name, help, values) in [
            (
                "psi_memory_some_ratio",
                "Share of time some tasks stalled on memory (PSI), by averaging window",
                &self.0.some,
            ),
            (
                "psi_memory_full_ratio",
                "Share of time all tasks stalled on memory (PSI), by averaging window",
                &self.0.full,
            ),
        ] {
            if values.iter().all(|v| v.get().is_none()) {
                continue;
            }
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (window, value) in WINDOWS.iter().zip(values) {
                if let Some(value) = value.get() {
                    ConstGauge::new(value)
                        .encode(metric.encode_family(&WindowLabels { window })?)?;
                }
            }
        }
        Ok(())
    }
}

/// The PSI values, shared between the collector and the sampler.
#[derive(Clone, Debug, Default)]
struct PsiSamples {
    some: [Sampled; 3],
    full: [Sampled; 3],
}

/// The monitor's series, registered once per process.
#[derive(Clone)]
pub(crate) struct MemoryMetrics {
    pressure: Family<ScopeLabels, Gauge>,
    host_total: Sampled,
    host_available: Sampled,
    cgroup_usage: Sampled,
    cgroup_limit: Sampled,
    psi: PsiSamples,
}

impl MemoryMetrics {
    /// Registers under `registry` (the `llmcache_` namespace).
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let pressure = Family::<ScopeLabels, Gauge>::default();
        for scope in Scope::ALL {
            pressure
                .get_or_create(&ScopeLabels { scope: *scope })
                .set(0);
        }
        registry.register(
            "memory_pressure",
            "Whether the scope is under memory pressure (1) or not (0)",
            pressure.clone(),
        );
        let psi = PsiSamples::default();
        registry.register_collector(Box::new(PsiCollector(psi.clone())));
        Self {
            pressure,
            host_total: register_sampled(
                registry,
                "host_memory_total",
                "MemTotal from meminfo.",
                Some(Unit::Bytes),
                MetricType::Gauge,
            ),
            host_available: register_sampled(
                registry,
                "host_memory_available",
                "MemAvailable from meminfo.",
                Some(Unit::Bytes),
                MetricType::Gauge,
            ),
            cgroup_usage: register_sampled(
                registry,
                "cgroup_memory_usage",
                "Memory used by the daemon's cgroup (only where it has a limit).",
                Some(Unit::Bytes),
                MetricType::Gauge,
            ),
            cgroup_limit: register_sampled(
                registry,
                "cgroup_memory_limit",
                "Memory limit of the daemon's cgroup (only where one exists).",
                Some(Unit::Bytes),
                MetricType::Gauge,
            ),
            psi,
        }
    }
}

/// What one sample saw, scope by scope, as the ratio each rule judges.
#[derive(Debug, Default, Clone, Copy)]
struct Sample {
    host: Option<f64>,
    cgroup: Option<f64>,
    psi: Option<f64>,
    redis: Option<f64>,
}

/// The monitor and its state.
pub(crate) struct MemoryMonitor {
    config: MemoryConfig,
    cache: Arc<dyn Pool>,
    redis: watch::Receiver<Option<RedisInfo>>,
    metrics: MemoryMetrics,
    rss: Arc<AtomicU64>,
    process: ProcessCollector,
}

impl MemoryMonitor {
    /// A monitor for `cache`, publishing into `metrics`.
    pub(crate) fn new(
        config: &MemoryConfig,
        cache: Arc<dyn Pool>,
        redis: watch::Receiver<Option<RedisInfo>>,
        metrics: MemoryMetrics,
    ) -> Self {
        Self {
            config: config.clone(),
            cache,
            redis,
            metrics,
            rss: Arc::new(AtomicU64::new(0)),
            process: ProcessCollector::default(),
        }
    }

    /// The daemon's RSS in bytes as of the last sample, for operation logs.
    pub(crate) fn rss(&self) -> Arc<AtomicU64> {
        self.rss.clone()
    }

    /// Samples every `memory.sample_interval` until `cancel`.
    pub(crate) async fn run(self, cancel: CancellationToken) {
        let rules = self.rules();
        let mut verdicts = [Verdict::default(); 4];
        // The pool may have been shrunk by a monitor before this one (a
        // reload keeps the cache); start from what it is, so the first
        // verdict restores it if this monitor sees no pressure.
        let mut overall = self.cache.memory_pressure();
        let mut every = tokio::time::interval(self.config.sample_interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        every.tick().await;
        loop {
            let sample = self.sample();
            let now = Instant::now();
            let values = [sample.host, sample.cgroup, sample.psi, sample.redis];
            for (i, scope) in [Scope::Host, Scope::Cgroup, Scope::Psi, Scope::Redis]
                .into_iter()
                .enumerate()
            {
                if let Some(pressured) = verdicts[i].update(&rules[i], values[i], now) {
                    let change = if pressured { "entered" } else { "cleared" };
                    tracing::warn!(
                        scope = scope.as_str(),
                        value = values[i].unwrap_or(f64::NAN),
                        threshold = rules[i].threshold,
                        "memory pressure {change}"
                    );
                }
                self.metrics
                    .pressure
                    .get_or_create(&ScopeLabels { scope })
                    .set(i64::from(verdicts[i].pressured()));
            }
            let now_overall = verdicts.iter().any(Verdict::pressured);
            self.metrics
                .pressure
                .get_or_create(&ScopeLabels {
                    scope: Scope::Overall,
                })
                .set(i64::from(now_overall));
            if now_overall != overall {
                overall = now_overall;
                self.act(overall, &sample).await;
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = every.tick() => {}
            }
        }
    }

    fn rules(&self) -> [Rule; 4] {
        let rule = |threshold, direction| Rule {
            threshold,
            direction,
            margin: self.config.hysteresis,
            min_dwell: self.config.min_dwell,
        };
        [
            rule(self.config.host_available_min_ratio, Direction::Below),
            rule(self.config.cgroup_usage_max_ratio, Direction::Above),
            rule(self.config.psi_some_avg10_max_ratio, Direction::Above),
            rule(self.config.redis_used_max_ratio, Direction::Above),
        ]
    }

    /// Shrinks or restores the pool and tells `/health`.
    async fn act(&self, pressured: bool, sample: &Sample) {
        let configured = self.cache.configured_budget();
        let budget = if pressured {
            (configured as f64 * self.config.shrink_factor).floor() as u64
        } else {
            configured
        };
        let action = if pressured { "shrinking" } else { "restoring" };
        tracing::warn!(
            budget,
            host_available_ratio = sample.host.unwrap_or(f64::NAN),
            cgroup_usage_ratio = sample.cgroup.unwrap_or(f64::NAN),
            psi_some_avg10 = sample.psi.unwrap_or(f64::NAN),
            redis_used_ratio = sample.redis.unwrap_or(f64::NAN),
            "{action} the cache pool"
        );
        self.cache.set_memory_pressure(pressured);
        self.cache.resize(budget).await;
    }

    fn sample(&self) -> Sample {
        let procfs = &self.config.procfs_path;
        let sysfs = &self.config.sysfs_path;
        self.sample_rss();
        let host = match read(&procfs.join("meminfo"))
            .and_then(|t| parse_meminfo(&t).map_err(|e| e.to_string()))
        {
            Ok(host) => {
                self.metrics.host_total.set(host.total as f64);
                self.metrics.host_available.set(host.available as f64);
                Some(host.available as f64 / host.total as f64)
            }
            Err(err) => {
                tracing::debug!(source = "host", error = %err, "memory source unavailable");
                self.metrics.host_total.clear();
                self.metrics.host_available.clear();
                None
            }
        };
        let cgroup_path = read(&procfs.join("self/cgroup"))
            .and_then(|t| parse_self_cgroup(&t).map_err(|e| e.to_string()))
            .map_err(
                |err| tracing::debug!(source = "cgroup", error = %err, "memory source unavailable"),
            )
            .ok();
        let cgroup = cgroup_path
            .as_ref()
            .and_then(|path| self.sample_cgroup(path, sysfs));
        let psi = self.sample_psi(cgroup_path.as_ref(), procfs, sysfs);
        let redis = self.redis.borrow().as_ref().and_then(|info| {
            match (info.used_memory, info.maxmemory) {
                (Some(used), Some(max)) if max > 0 => Some(used as f64 / max as f64),
                _ => None,
            }
        });
        Sample {
            host,
            cgroup,
            psi,
            redis,
        }
    }

    fn sample_cgroup(&self, path: &CgroupPath, sysfs: &Path) -> Option<f64> {
        let dir = path.dir(sysfs);
        let (usage_file, limit_file) = path.files();
        let value = |file: &str| {
            read(&dir.join(file)).and_then(|t| parse_cgroup_value(&t).map_err(|e| e.to_string()))
        };
        match (value(usage_file), value(limit_file)) {
            (Ok(Some(usage)), Ok(Some(limit))) if limit > 0 => {
                self.metrics.cgroup_usage.set(usage as f64);
                self.metrics.cgroup_limit.set(limit as f64);
                Some(usage as f64 / limit as f64)
            }
            outcome => {
                tracing::debug!(source = "cgroup", dir = %dir.display(), ?outcome, "no cgroup memory limit to judge");
                self.metrics.cgroup_usage.clear();
                self.metrics.cgroup_limit.clear();
                None
            }
        }
    }

    /// The cgroup's own `memory.pressure` when it has one (what a container
    /// feels), else the host's `pressure/memory`.
    fn sample_psi(&self, cgroup: Option<&CgroupPath>, procfs: &Path, sysfs: &Path) -> Option<f64> {
        let cgroup_file = cgroup
            .filter(|path| matches!(path, CgroupPath::V2(_)))
            .map(|path| path.dir(sysfs).join("memory.pressure"));
        let parsed: Result<Psi, String> = cgroup_file
            .and_then(|file| read(&file).ok())
            .or_else(|| read(&procfs.join("pressure/memory")).ok())
            .ok_or_else(|| "no PSI file".to_owned())
            .and_then(|text| parse_psi(&text).map_err(|e| e.to_string()));
        let psi = &self.metrics.psi;
        match parsed {
            Ok(parsed) => {
                for (slot, value) in psi.some.iter().zip(parsed.some) {
                    slot.set(value);
                }
                for (i, slot) in psi.full.iter().enumerate() {
                    match parsed.full {
                        Some(full) => slot.set(full[i]),
                        None => slot.clear(),
                    }
                }
                Some(parsed.some[0])
            }
            Err(err) => {
                tracing::debug!(source = "psi", error = %err, "memory source unavailable");
                psi.some
                    .iter()
                    .chain(psi.full.iter())
                    .for_each(Sampled::clear);
                None
            }
        }
    }

    /// The daemon's own RSS, from the real `/proc` (not the fixture root).
    fn sample_rss(&self) {
        if let Some(rss) = self.process.resident_bytes() {
            self.rss.store(rss, Ordering::Relaxed);
        }
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|err| format!("{}: {err}", path.display()))
}

#[cfg(test)]
mod tests;
