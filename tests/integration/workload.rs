//! The canary's workload against real Redis and Chroma: rate, outcomes, the
//! hit ratio the Zipf model predicts, a stalled Redis, data safety, `--once`.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::helpers::{
    binary, free_port, metric_value, series, spawn_app_with_config, ChromaServer, RedisServer,
};

const UP: Duration = Duration::from_secs(15);

fn count(text: &str, operation: &str, outcome: &str) -> f64 {
    series(
        text,
        &format!(
            r#"llmcache_operation_duration_seconds_count{{operation="{operation}",outcome="{outcome}"}}"#
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_holds_its_rate() {
    schedule_holds(50.0, Duration::from_secs(10), "", 0.0).await;
}

/// Above 500/s the ticks come from the fine clock's thread, not tokio's
/// interval; the rate must hold just the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_holds_a_high_rate_on_the_fine_clock() {
    // Chat operations only: what is measured is the clock, not Chroma.
    let chat_only = "[workload.mix]\nget_chat_history = 0.7\nstore_chat_entry = 0.3\n\
                     query_similar_memories = 0.0\nstore_memory = 0.0\n";
    schedule_holds(2000.0, Duration::from_secs(5), chat_only, 0.01).await;
}

/// The scheduled count over `window` is within ±5 % of `rate`, and at most
/// `max_skipped` of the ticks were skipped.
async fn schedule_holds(rate: f64, window: Duration, extra: &str, max_skipped: f64) {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let config = format!("[workload]\nrate = {rate:?}\n{extra}");
    let (app, _dir) = spawn_app_with_config(&redis, &chroma, &config).await;
    app.wait_for_at_least("llmcache_workload_scheduled_total", rate / 2.0, UP)
        .await;
    let (start, first) = (
        Instant::now(),
        app.series("llmcache_workload_scheduled_total").await,
    );
    // A measurement window, not a wait.
    tokio::time::sleep(window).await;
    let (elapsed, last) = (
        start.elapsed(),
        app.series("llmcache_workload_scheduled_total").await,
    );
    let expected = rate * elapsed.as_secs_f64();
    let scheduled = last - first;
    assert!(
        (scheduled - expected).abs() <= expected * 0.05,
        "{scheduled} scheduled in {elapsed:?}, expected {expected:.0} ±5 %"
    );
    let skipped = app.series("llmcache_workload_skipped_total").await;
    assert!(
        skipped <= last * max_skipped,
        "{skipped} of {last} ticks skipped at {rate}/s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_reports_its_outcomes_and_health_agrees_with_metrics() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let config = "[workload]\nrate = 60.0\n[workload.mix]\nget_chat_history = 0.4\nstore_chat_entry = 0.2\nquery_similar_memories = 0.35\nstore_memory = 0.05\n";
    let (app, _dir) = spawn_app_with_config(&redis, &chroma, config).await;
    for (operation, outcome) in [
        ("get_chat_history", "cache_hit"),
        ("get_chat_history", "cache_miss"),
        ("store_chat_entry", "success"),
        ("query_similar_memories", "cache_miss"),
        ("query_similar_memories", "cache_hit"),
        ("store_memory", "success"),
    ] {
        let series = format!(
            r#"llmcache_operation_duration_seconds_count{{operation="{operation}",outcome="{outcome}"}}"#
        );
        app.wait_for_at_least(&series, 1.0, Duration::from_secs(30))
            .await;
    }
    let text = app.metrics().await;
    // Errors that would be our bugs never happen; a loaded machine may see the
    // odd Chroma 5xx or timeout, which are the server's and counted as such.
    let error_lines: Vec<(String, f64)> = text
        .lines()
        .filter(|l| l.starts_with("llmcache_operation_errors_total{"))
        .filter_map(|l| {
            l.rsplit_once(' ')
                .map(|(k, v)| (k.to_owned(), v.parse::<f64>().unwrap_or(0.0)))
        })
        .filter(|(_, v)| *v > 0.0)
        .collect();
    let ours: Vec<_> = error_lines
        .iter()
        .filter(|(k, _)| !(k.contains("kind=\"server\"") || k.contains("kind=\"timeout\"")))
        .collect();
    assert!(ours.is_empty(), "errors against healthy backends: {ours:?}");
    let operations: f64 = text
        .lines()
        .filter(|l| l.starts_with("llmcache_operation_duration_seconds_count{"))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum();
    let transient: f64 = error_lines.iter().map(|(_, v)| v).sum();
    assert!(
        transient <= (operations * 0.01).max(2.0),
        "{transient} transient errors in {operations} operations: {error_lines:?}"
    );
    assert!(metric_value(&text, "llmcache_chroma_collection_records").is_some());

    // /health and /metrics read the same counters: bracket one by the other.
    let sum = |text: &str, name: &str| -> f64 {
        ["chat_history", "similarity", "embeddings"]
            .iter()
            .map(|c| series(text, &format!("{name}{{cache=\"{c}\"}}")))
            .sum()
    };
    let before = app.metrics().await;
    let (_, health) = app.health().await;
    let after = app.metrics().await;
    let stats = &health["cache"]["stats"];
    let hits = stats["total_hits"].as_f64().unwrap();
    let requests = hits + stats["total_misses"].as_f64().unwrap();
    assert!(
        sum(&before, "llmcache_cache_hits_total") <= hits
            && hits <= sum(&after, "llmcache_cache_hits_total")
    );
    assert!(
        sum(&before, "llmcache_cache_requests_total") <= requests
            && requests <= sum(&after, "llmcache_cache_requests_total")
    );
    let rate = hits * 100.0 / requests;
    assert_eq!(stats["hit_rate"], format!("{rate:.1}%"));
    assert_eq!(
        health["cache"]["details"],
        format!("Cache operational - {rate:.1}% hit rate")
    );
    assert!(stats["memory_usage_mb"].as_f64().unwrap() > 0.0);
    assert!(stats["cache_size"].as_f64().unwrap() > 0.0);
}

/// Zipf(s) probabilities over `n` ranks.
fn zipf(n: usize, s: f64) -> Vec<f64> {
    let weights: Vec<f64> = (1..=n).map(|k| (k as f64).powf(-s)).collect();
    let total: f64 = weights.iter().sum();
    weights.into_iter().map(|w| w / total).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_hit_ratio_matches_the_zipf_model() {
    // Reads only, a cache big enough for every session and a TTL longer than
    // the test: the only misses are first reads, so after N reads the expected
    // number of misses is the expected number of distinct sessions drawn,
    // sum over sessions of 1 - (1 - p_k)^N.
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let config = "[workload]\nrate = 250.0\nsessions = 1000\nzipf_exponent = 1.1\n\
                  [workload.mix]\nget_chat_history = 1.0\nstore_chat_entry = 0.0\nquery_similar_memories = 0.0\nstore_memory = 0.0\n";
    let (app, _dir) = spawn_app_with_config(&redis, &chroma, config).await;
    let requests = r#"llmcache_cache_requests_total{cache="chat_history"}"#;
    app.wait_for_at_least(requests, 2000.0, Duration::from_secs(30))
        .await;
    let text = app.metrics().await;
    let n = series(&text, requests);
    let hits = series(&text, r#"llmcache_cache_hits_total{cache="chat_history"}"#);
    let expected_misses: f64 = zipf(1000, 1.1)
        .iter()
        .map(|p| 1.0 - (1.0 - p).powf(n))
        .sum();
    let expected = 1.0 - expected_misses / n;
    let seen = hits / n;
    // Tolerance: a few standard deviations of the miss count, plus the odd
    // coalesced concurrent miss.
    assert!(
        (seen - expected).abs() < 0.03,
        "hit ratio {seen:.3} after {n} reads; the model predicts {expected:.3}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_shows_as_timeouts_skips_and_latency_then_recovers() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let config = "[redis]\ntimeout = \"250ms\"\n[cache]\nmemory_budget = \"0\"\n\
                  [workload]\nrate = 50.0\nconcurrency = 4\n\
                  [workload.mix]\nget_chat_history = 1.0\nstore_chat_entry = 0.0\nquery_similar_memories = 0.0\nstore_memory = 0.0\n";
    let (app, _dir) = spawn_app_with_config(&redis, &chroma, config).await;
    app.wait_for_at_least(r#"llmcache_operation_duration_seconds_count{operation="get_chat_history",outcome="cache_miss"}"#, 20.0, UP).await;
    let timeouts =
        r#"llmcache_operation_errors_total{operation="get_chat_history",kind="timeout"}"#;
    let skipped_before = app.series("llmcache_workload_skipped_total").await;

    redis.stall();
    let stalled = Instant::now();
    let mut max_inflight: f64 = 0.0;
    while stalled.elapsed() < Duration::from_secs(5) {
        max_inflight = max_inflight.max(app.series("llmcache_workload_inflight").await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    redis.resume();

    assert!(
        max_inflight <= 4.0,
        "in flight reached {max_inflight} with concurrency 4"
    );
    assert!(
        max_inflight >= 3.0,
        "the stall filled the slots: {max_inflight}"
    );
    let text = app.metrics().await;
    // The first timeouts close the back-off gate; while it is closed the
    // operations fail at once, as connection errors, without a request.
    let refused =
        r#"llmcache_operation_errors_total{operation="get_chat_history",kind="connection"}"#;
    assert!(series(&text, timeouts) >= 1.0, "timeouts counted:\n{text}");
    assert!(
        series(&text, timeouts) + series(&text, refused) > 5.0,
        "timeouts and refusals counted:\n{text}"
    );
    // Ticks are skipped while the slots are full of operations waiting for
    // their timeout (between the gate's back-offs).
    let skipped = series(&text, "llmcache_workload_skipped_total") - skipped_before;
    assert!(skipped > 0.0, "skipped ticks counted:\n{text}");
    // Open loop: the stall shows in the latency histogram, above the timeout.
    let errors = count(&text, "get_chat_history", "error");
    let fast = series(
        &text,
        r#"llmcache_operation_duration_seconds_bucket{operation="get_chat_history",outcome="error",le="0.25"}"#,
    );
    // Only the timeouts are slow: while the gate is closed, the operations
    // fail at once.
    assert!(errors - fast >= 1.0, "{errors} errors, {fast} under 250 ms");
    assert_eq!(
        app.series(r#"llmcache_backend_up{backend="redis"}"#).await,
        0.0
    );

    // After SIGCONT the errors stop.
    app.wait_for_metric(r#"llmcache_backend_up{backend="redis"}"#, 1.0, UP)
        .await;
    // Operations started before the resume end within their 1 s timeout;
    // wait until the count holds still across a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut settled = app.series(timeouts).await;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = app.series(timeouts).await;
        if now == settled {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "timeouts still rising 10 s after the resume"
        );
        settled = now;
    }
    let misses = count(&app.metrics().await, "get_chat_history", "cache_miss");
    // Nothing may change: no timeout in the next 2 s.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        app.series(timeouts).await,
        settled,
        "no timeouts after the resume"
    );
    assert!(
        count(&app.metrics().await, "get_chat_history", "cache_miss") > misses + 20.0,
        "reads flow again"
    );
}

/// DUMP of each key, as redis-cli prints it.
fn dumps(redis: &RedisServer, keys: &[&str]) -> HashMap<String, String> {
    keys.iter()
        .map(|k| (k.to_string(), redis.cli(&["DUMP", k])))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_probes_own_data_is_touched_and_it_is_removed_at_exit() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    for command in [
        &["SET", "user:1", "alice"][..],
        &["SET", "llmcache:probe", "no colon: not ours"],
        &["HSET", "llmcache:probeX", "field", "value"],
        &["RPUSH", "llmcache:prob:1", "a", "b"],
        &["SADD", "other:llmcache:probe:1", "member"],
        &["ZADD", "LLMCACHE:PROBE:upper", "1", "x"],
        &["SET", "session:ttl", "x", "EX", "3600"],
    ] {
        redis.cli(command);
    }
    let user_keys = [
        "user:1",
        "llmcache:probe",
        "llmcache:probeX",
        "llmcache:prob:1",
        "other:llmcache:probe:1",
        "LLMCACHE:PROBE:upper",
        "session:ttl",
    ];
    let before = dumps(&redis, &user_keys);
    let user_id = chroma
        .create_user_collection("user_memories", serde_json::json!({"owner": "app"}))
        .await;

    let config = "[workload]\nrate = 60.0\n[workload.mix]\nstore_memory = 0.2\n";
    let (app, _dir) = spawn_app_with_config(&redis, &chroma, config).await;
    app.wait_for_at_least(r#"llmcache_operation_duration_seconds_count{operation="store_chat_entry",outcome="success"}"#, 20.0, UP).await;
    app.wait_for_at_least(
        r#"llmcache_operation_duration_seconds_count{operation="store_memory",outcome="success"}"#,
        3.0,
        UP,
    )
    .await;

    let ours = redis.cli(&["--scan", "--pattern", "llmcache:probe:*"]);
    let ours: Vec<&str> = ours.lines().filter(|l| !l.is_empty()).collect();
    assert!(!ours.is_empty(), "the workload wrote chat history");
    for key in &ours {
        let ttl: i64 = redis.cli(&["PTTL", key]).trim().parse().unwrap();
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
    }

    let stopped = Instant::now();
    app.stop().await;
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "stop and cleanup took {:?}",
        stopped.elapsed()
    );

    assert_eq!(
        redis
            .cli(&["--scan", "--pattern", "llmcache:probe:*"])
            .trim(),
        "",
        "probe keys remain"
    );
    assert_eq!(dumps(&redis, &user_keys), before, "a user's key changed");
    let ttl: i64 = redis.cli(&["TTL", "session:ttl"]).trim().parse().unwrap();
    assert!(ttl > 3500, "a user's TTL changed: {ttl}");
    let stats = redis.cli(&["INFO", "commandstats"]);
    for forbidden in ["cmdstat_keys:", "cmdstat_flushdb:", "cmdstat_flushall:"] {
        assert!(
            !stats.contains(forbidden),
            "the daemon ran {forbidden}\n{stats}"
        );
    }

    let after = chroma.collection("user_memories").await;
    assert_eq!(after["metadata"], serde_json::json!({"owner": "app"}));
    let records = chroma.count(&user_id).await;
    assert_eq!(records, 1);
    let (probe_status, _) = chroma.get("llmcache_probe_memories").await;
    assert_eq!(
        probe_status, 404,
        "the probe collection the daemon created is gone"
    );
}

#[test]
fn once_runs_every_operation_and_reports_json() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let out = Command::new(binary())
        .args([
            "--once",
            "--redis.url",
            &redis.url(),
            "--chroma.url",
            &chroma.url(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is the JSON report");
    assert_eq!(report["ok"], true);
    let steps: Vec<(String, String)> = report["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["operation"].as_str().unwrap().to_owned(),
                s["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("get_chat_history", "cache_miss"),
        ("get_chat_history", "cache_hit"),
        ("store_chat_entry", "success"),
        ("query_similar_memories", "cache_miss"),
        ("query_similar_memories", "cache_hit"),
        ("store_memory", "success"),
    ];
    assert_eq!(steps, expected.map(|(o, r)| (o.to_owned(), r.to_owned())));
    assert!(report["operations"][0]["latency_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(
        redis
            .cli(&["--scan", "--pattern", "llmcache:probe:*"])
            .trim(),
        "",
        "--once cleans up too"
    );
}

#[test]
fn once_exits_1_naming_the_error_kind_when_redis_is_down() {
    let chroma = ChromaServer::start();
    let out = Command::new(binary())
        .args([
            "--once",
            "--redis.url",
            &format!("redis://127.0.0.1:{}", free_port()),
            "--chroma.url",
            &chroma.url(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["operations"][0]["outcome"], "error");
    assert_eq!(
        report["operations"][0]["error"]["kind"], "connection",
        "{report}"
    );
    assert_eq!(
        report["operations"][3]["outcome"], "cache_miss",
        "Chroma-side operations still work: {report}"
    );
}
