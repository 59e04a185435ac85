//! The memory-pressure monitor in the running daemon, pointed at a fixture
//! procfs/sysfs the test rewrites, and at a real Redis for the `redis` scope.

use std::path::PathBuf;
use std::time::Duration;

use crate::helpers::{poll, spawn_app_with_config, ChromaServer, RedisServer, TestApp};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
const SOON: Duration = Duration::from_secs(10);

/// A fake `/proc` and `/sys` for one cgroup v2 container.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let fixture = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        fixture.write("proc/self/cgroup", "0::/test.slice/exporter.scope\n");
        fixture.meminfo(16 * GIB, 8 * GIB);
        fixture.psi(0.0);
        fixture.cgroup(100 * MIB, "1073741824");
        fixture
    }

    fn proc(&self) -> PathBuf {
        self.dir.path().join("proc")
    }

    fn sys(&self) -> PathBuf {
        self.dir.path().join("sys")
    }

    /// Writes atomically, so the monitor never reads half a file.
    fn write(&self, relative: &str, text: &str) {
        let path = self.dir.path().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let temp = path.with_extension("tmp");
        std::fs::write(&temp, text).unwrap();
        std::fs::rename(&temp, &path).unwrap();
    }

    fn remove(&self, relative: &str) {
        let _ = std::fs::remove_file(self.dir.path().join(relative));
    }

    fn meminfo(&self, total: u64, available: u64) {
        self.write(
            "proc/meminfo",
            &format!(
                "MemTotal: {} kB\nMemFree: 1024 kB\nMemAvailable: {} kB\n",
                total / 1024,
                available / 1024
            ),
        );
    }

    fn psi(&self, some_avg10_percent: f64) {
        let text = format!("some avg10={some_avg10_percent:.2} avg60=1.00 avg300=0.50 total=100\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n");
        self.write("proc/pressure/memory", &text);
    }

    fn cgroup(&self, current: u64, max: &str) {
        self.write(
            "sys/fs/cgroup/test.slice/exporter.scope/memory.current",
            &format!("{current}\n"),
        );
        self.write(
            "sys/fs/cgroup/test.slice/exporter.scope/memory.max",
            &format!("{max}\n"),
        );
    }
}

fn config(fixture: &Fixture) -> String {
    format!(
        "[memory]\nsample_interval = \"100ms\"\nmin_dwell = \"0s\"\nprocfs_path = \"{}\"\nsysfs_path = \"{}\"\n[workload]\nrate = 5.0\n",
        fixture.proc().display(),
        fixture.sys().display()
    )
}

async fn scope(app: &TestApp, scope: &str) -> Option<f64> {
    app.metric(&format!("llmcache_memory_pressure{{scope=\"{scope}\"}}"))
        .await
}

async fn wait_scope(app: &TestApp, name: &str, value: f64) {
    app.wait_for_metric(
        &format!("llmcache_memory_pressure{{scope=\"{name}\"}}"),
        value,
        SOON,
    )
    .await;
}

async fn assert_relaxed(app: &TestApp) {
    for name in ["overall", "host", "cgroup", "psi", "redis"] {
        wait_scope(app, name, 0.0).await;
    }
    app.wait_for_metric("llmcache_memory_pool_budget_bytes", (64 * MIB) as f64, SOON)
        .await;
    let (_, health) = app.health().await;
    assert_eq!(
        health["cache"]["stats"]["memory_pressure"], false,
        "{health}"
    );
}

/// Squeezes one source, checks the verdict, the shrunk pool and /health,
/// then relaxes it and checks everything is restored.
async fn squeeze(app: &TestApp, name: &str, tighten: impl Fn(), relax: impl Fn()) {
    tighten();
    wait_scope(app, name, 1.0).await;
    wait_scope(app, "overall", 1.0).await;
    app.wait_for_metric("llmcache_memory_pool_budget_bytes", (32 * MIB) as f64, SOON)
        .await;
    assert_eq!(
        app.metric(r#"llmcache_cache_capacity_bytes{cache="embeddings"}"#)
            .await,
        Some((16 * MIB) as f64)
    );
    let (code, health) = app.health().await;
    assert_eq!(code, 200, "pressure degrades, it does not fail: {health}");
    assert_eq!(
        health["cache"]["stats"]["memory_pressure"], true,
        "{health}"
    );
    assert_eq!(health["cache"]["status"], "degraded");
    relax();
    assert_relaxed(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_squeezed_source_shrinks_the_pool_until_it_relaxes() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let fixture = Fixture::new();
    let (app, _dir) = spawn_app_with_config(&redis, &chroma, &config(&fixture)).await;
    assert_relaxed(&app).await;
    let text = app.metrics().await;
    for series in [
        "llmcache_host_memory_total_bytes 17179869184",
        "llmcache_host_memory_available_bytes 8589934592",
        "llmcache_cgroup_memory_usage_bytes 104857600",
        "llmcache_cgroup_memory_limit_bytes 1073741824",
        r#"llmcache_psi_memory_some_ratio{window="10s"} 0"#,
        r#"llmcache_psi_memory_some_ratio{window="60s"} 0.01"#,
        r#"llmcache_psi_memory_full_ratio{window="300s"} 0"#,
    ] {
        assert!(text.contains(series), "missing {series:?}");
    }

    squeeze(
        &app,
        "host",
        || fixture.meminfo(16 * GIB, GIB / 2),
        || fixture.meminfo(16 * GIB, 8 * GIB),
    )
    .await;
    squeeze(&app, "psi", || fixture.psi(40.0), || fixture.psi(0.0)).await;
    squeeze(
        &app,
        "cgroup",
        || fixture.cgroup(950 * MIB, "1073741824"),
        || fixture.cgroup(100 * MIB, "1073741824"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hysteresis_keeps_pressure_until_past_the_margin() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let fixture = Fixture::new();
    let (app, _dir) = spawn_app_with_config(&redis, &chroma, &config(&fixture)).await;
    assert_relaxed(&app).await;
    // 0.93 of the limit: pressure. 0.87: below 0.9 but within the 0.05 margin.
    fixture.cgroup(930 * MIB * 1024 / 1000, "1073741824");
    wait_scope(&app, "cgroup", 1.0).await;
    fixture.cgroup(870 * MIB * 1024 / 1000, "1073741824");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        scope(&app, "cgroup").await,
        Some(1.0),
        "left pressure inside the margin"
    );
    fixture.cgroup(800 * MIB * 1024 / 1000, "1073741824");
    wait_scope(&app, "cgroup", 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_sources_emit_no_series_and_no_pressure() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let fixture = Fixture::new();
    fixture.remove("proc/pressure/memory");
    fixture.cgroup(100 * MIB, "max");
    let (app, _dir) = spawn_app_with_config(&redis, &chroma, &config(&fixture)).await;
    assert_relaxed(&app).await;
    let text = app.metrics().await;
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
    assert!(text.contains("llmcache_host_memory_total_bytes"));
    // A meminfo that stops parsing drops its series too, and the scrape still works.
    fixture.write("proc/meminfo", "garbage\n");
    poll("host series to vanish", SOON, || async {
        (!app
            .metrics()
            .await
            .contains("llmcache_host_memory_total_bytes"))
        .then_some(())
    })
    .await;
    assert_eq!(scope(&app, "host").await, Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_near_maxmemory_is_pressure() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let fixture = Fixture::new();
    let (app, _dir) = spawn_app_with_config(&redis, &chroma, &config(&fixture)).await;
    assert_relaxed(&app).await;
    let used: u64 = redis
        .cli(&["INFO", "memory"])
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    redis.cli(&[
        "CONFIG",
        "SET",
        "maxmemory",
        &(used + used / 20).to_string(),
    ]);
    wait_scope(&app, "redis", 1.0).await;
    wait_scope(&app, "overall", 1.0).await;
    redis.cli(&["CONFIG", "SET", "maxmemory", "0"]);
    wait_scope(&app, "redis", 0.0).await;
}
