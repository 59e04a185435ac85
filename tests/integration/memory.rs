//! The memory-pressure monitor in the running daemon, against a real Redis
//! for the `redis` scope. The host, cgroup and PSI verdicts are tested on
//! fixture files, without servers, beside the monitor (`src/memory/tests.rs`).

use std::time::Duration;

use crate::helpers::{spawn_app_with_config, ChromaServer, RedisServer, TestApp};

const MIB: u64 = 1 << 20;
const SOON: Duration = Duration::from_secs(10);

/// Samples the real `/proc` and `/sys` every 100 ms, with thresholds they
/// cannot cross, so only Redis can put the daemon under pressure.
const CONFIG: &str = "[memory]\nsample_interval = \"100ms\"\nmin_dwell = \"0s\"\n\
    host_available_min_ratio = 0.0\ncgroup_usage_max_ratio = 1.0\npsi_some_avg10_max_ratio = 1.0\n\
    [workload]\nrate = 5.0\n";

async fn wait_scope(app: &TestApp, name: &str, value: f64) {
    app.wait_for_metric(
        &format!("llmcache_memory_pressure{{scope=\"{name}\"}}"),
        value,
        SOON,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_near_maxmemory_shrinks_the_pool_and_degrades_health_until_it_relaxes() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let (app, _dir) = spawn_app_with_config(&redis, &chroma, CONFIG).await;
    wait_scope(&app, "redis", 0.0).await;
    wait_scope(&app, "overall", 0.0).await;
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
    app.wait_for_metric("llmcache_memory_pool_budget_bytes", (32 * MIB) as f64, SOON)
        .await;
    let (code, health) = app.health().await;
    assert_eq!(code, 200, "pressure degrades, it does not fail: {health}");
    assert_eq!(
        health["cache"]["stats"]["memory_pressure"], true,
        "{health}"
    );
    assert_eq!(health["cache"]["status"], "degraded", "{health}");

    redis.cli(&["CONFIG", "SET", "maxmemory", "0"]);
    wait_scope(&app, "redis", 0.0).await;
    app.wait_for_metric("llmcache_memory_pool_budget_bytes", (64 * MIB) as f64, SOON)
        .await;
    let (_, health) = app.health().await;
    assert_eq!(
        health["cache"]["stats"]["memory_pressure"], false,
        "{health}"
    );
}
