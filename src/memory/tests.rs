//! The monitor against a fixture procfs/sysfs the test rewrites, with a real
//! cache pool and a Redis `INFO` the test publishes: the verdicts, the
//! shrunk and restored pool, and the series, without any server.

use std::path::Path;
use std::time::Duration;

use prometheus_client::registry::Registry;

use super::*;
use crate::cache::{CacheFamilies, CacheManager, Embedding};
use crate::config::Config;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// A fake `/proc` and `/sys` for one cgroup v2 container.
struct Fixture(tempfile::TempDir);

impl Fixture {
    fn new() -> Self {
        let fixture = Self(tempfile::tempdir().unwrap());
        fixture.write("proc/self/cgroup", "0::/test.slice/exporter.scope\n");
        fixture.meminfo(16 * GIB, 8 * GIB);
        fixture.psi(0.0);
        fixture.cgroup(100 * MIB, "1073741824");
        fixture
    }

    /// Writes atomically, so the monitor never reads half a file.
    fn write(&self, relative: &str, text: &str) {
        let path = self.0.path().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let temp = path.with_extension("tmp");
        std::fs::write(&temp, text).unwrap();
        std::fs::rename(&temp, &path).unwrap();
    }

    fn meminfo(&self, total: u64, available: u64) {
        let (total, available) = (total / 1024, available / 1024);
        let text =
            format!("MemTotal: {total} kB\nMemFree: 1024 kB\nMemAvailable: {available} kB\n");
        self.write("proc/meminfo", &text);
    }

    fn psi(&self, some_avg10_percent: f64) {
        let text = format!("some avg10={some_avg10_percent:.2} avg60=1.00 avg300=0.50 total=100\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n");
        self.write("proc/pressure/memory", &text);
    }

    fn cgroup(&self, current: u64, max: &str) {
        let dir = "sys/fs/cgroup/test.slice/exporter.scope";
        self.write(&format!("{dir}/memory.current"), &format!("{current}\n"));
        self.write(&format!("{dir}/memory.max"), &format!("{max}\n"));
    }
}

/// A running monitor, its pool and its registry.
struct Running {
    pool: Arc<CacheManager<Embedding>>,
    registry: Registry,
    redis: watch::Sender<Option<RedisInfo>>,
    cancel: CancellationToken,
}

impl Running {
    /// Starts a monitor sampling `root` every 20 ms, with no dwell.
    fn start(root: &Path) -> Self {
        let mut config = Config::from_args(["x"]).unwrap().config;
        config.memory.sample_interval = Duration::from_millis(20);
        config.memory.min_dwell = Duration::ZERO;
        config.memory.procfs_path = root.join("proc");
        config.memory.sysfs_path = root.join("sys");
        let mut registry = Registry::default();
        let namespace = registry.sub_registry_with_prefix("llmcache");
        let families = CacheFamilies::register(namespace);
        let pool = Arc::new(CacheManager::new(&config.cache, families));
        let metrics = MemoryMetrics::register(namespace);
        let redis = watch::Sender::new(None);
        let monitor = MemoryMonitor::new(&config.memory, pool.clone(), redis.subscribe(), metrics);
        let cancel = CancellationToken::new();
        // As the app starts a generation: the pool publishes its gauges
        // from its maintenance loop.
        tokio::spawn(pool.clone().run_maintenance(cancel.clone()));
        tokio::spawn(monitor.run(cancel.clone()));
        Self {
            pool,
            registry,
            redis,
            cancel,
        }
    }

    fn text(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry).unwrap();
        text
    }

    /// Whether `line` (series and value) is exposed, whatever the number's
    /// spelling (`0`, `0.0`).
    fn shows(&self, line: &str) -> bool {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value.parse().unwrap();
        self.text().lines().any(|l| {
            l.rsplit_once(' ')
                .is_some_and(|(s, v)| s == series && v.parse() == Ok(value))
        })
    }

    /// Waits until `line` (series and value) is exposed, or fails.
    async fn wait_for(&self, line: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !self.shows(line) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {line:?} within 5 s:\n{}",
                self.text()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn wait_scope(&self, scope: &str, value: u8) {
        self.wait_for(&format!(
            "llmcache_memory_pressure{{scope=\"{scope}\"}} {value}"
        ))
        .await;
    }

    /// Every scope relaxed, the whole budget back, `/health` not degraded.
    async fn assert_relaxed(&self) {
        for scope in ["overall", "host", "cgroup", "psi", "redis"] {
            self.wait_scope(scope, 0).await;
        }
        self.wait_for(&format!("llmcache_memory_pool_budget_bytes {}", 64 * MIB))
            .await;
        assert!(!self.pool.stats().memory_pressure);
    }

    /// Squeezes one source and checks the verdict and the shrunk pool, then
    /// relaxes it and checks everything is restored.
    async fn squeeze(&self, scope: &str, tighten: impl Fn(), relax: impl Fn()) {
        tighten();
        self.wait_scope(scope, 1).await;
        self.wait_scope("overall", 1).await;
        self.wait_for(&format!("llmcache_memory_pool_budget_bytes {}", 32 * MIB))
            .await;
        let capacity = format!(
            "llmcache_cache_capacity_bytes{{cache=\"embeddings\"}} {}",
            16 * MIB
        );
        assert!(self.shows(&capacity), "{capacity} after a shrink");
        assert!(
            self.pool.stats().memory_pressure,
            "/health shows the pressure"
        );
        relax();
        self.assert_relaxed().await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn redis_info(used: u64, maxmemory: u64) -> Option<RedisInfo> {
    Some(RedisInfo {
        used_memory: Some(used),
        maxmemory: Some(maxmemory),
        ..RedisInfo::default()
    })
}

#[tokio::test]
async fn each_squeezed_source_shrinks_the_pool_until_it_relaxes() {
    let fixture = Fixture::new();
    let running = Running::start(fixture.0.path());
    running.assert_relaxed().await;
    for series in [
        "llmcache_host_memory_total_bytes 17179869184",
        "llmcache_host_memory_available_bytes 8589934592",
        "llmcache_cgroup_memory_usage_bytes 104857600",
        "llmcache_cgroup_memory_limit_bytes 1073741824",
        r#"llmcache_psi_memory_some_ratio{window="10s"} 0"#,
        r#"llmcache_psi_memory_some_ratio{window="60s"} 0.01"#,
        r#"llmcache_psi_memory_full_ratio{window="300s"} 0"#,
    ] {
        running.wait_for(series).await;
    }
    running
        .squeeze(
            "host",
            || fixture.meminfo(16 * GIB, GIB / 2),
            || fixture.meminfo(16 * GIB, 8 * GIB),
        )
        .await;
    running
        .squeeze("psi", || fixture.psi(40.0), || fixture.psi(0.0))
        .await;
    running
        .squeeze(
            "cgroup",
            || fixture.cgroup(950 * MIB, "1073741824"),
            || fixture.cgroup(100 * MIB, "1073741824"),
        )
        .await;
    running
        .squeeze(
            "redis",
            || drop(running.redis.send_replace(redis_info(95 * MIB, 100 * MIB))),
            || drop(running.redis.send_replace(redis_info(10 * MIB, 100 * MIB))),
        )
        .await;
}

#[tokio::test]
async fn hysteresis_keeps_pressure_until_past_the_margin() {
    let fixture = Fixture::new();
    let running = Running::start(fixture.0.path());
    running.assert_relaxed().await;
    // 0.93 of the limit: pressure. 0.87: below 0.9 but within the 0.05 margin.
    fixture.cgroup(930 * MIB * 1024 / 1000, "1073741824");
    running.wait_scope("cgroup", 1).await;
    fixture.cgroup(870 * MIB * 1024 / 1000, "1073741824");
    // Nothing may change: ten samples (20 ms apart) inside the margin.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let held = r#"llmcache_memory_pressure{scope="cgroup"} 1"#;
    assert!(running.shows(held), "left pressure inside the margin");
    fixture.cgroup(800 * MIB * 1024 / 1000, "1073741824");
    running.wait_scope("cgroup", 0).await;
}

#[tokio::test]
async fn missing_sources_emit_no_series_and_no_pressure() {
    let fixture = Fixture::new();
    let _ = std::fs::remove_file(fixture.0.path().join("proc/pressure/memory"));
    fixture.cgroup(100 * MIB, "max");
    let running = Running::start(fixture.0.path());
    running.assert_relaxed().await;
    running
        .wait_for("llmcache_host_memory_total_bytes 17179869184")
        .await;
    let text = running.text();
    for absent in [
        "llmcache_psi_memory_some_ratio",
        "llmcache_psi_memory_full_ratio",
        "llmcache_cgroup_memory_usage_bytes",
        "llmcache_cgroup_memory_limit_bytes",
    ] {
        assert!(
            !text.contains(absent),
            "{absent} present without its source"
        );
    }
    // A meminfo that stops parsing drops its series too.
    fixture.write("proc/meminfo", "garbage\n");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while running.text().contains("llmcache_host_memory_total_bytes") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "host series still there"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    running.wait_scope("host", 0).await;
}
