//! `/metrics` in both formats, `/health`, liveness, readiness and the landing page.

use std::time::Duration;

use crate::helpers::{backend_flags, series, spawn_app, ChromaServer, RedisServer};

const UP: Duration = Duration::from_secs(15);

/// Every sample line is `name{labels} value` with a numeric value.
fn assert_samples_well_formed(text: &str) {
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("malformed line {line:?}"));
        let name = series.split('{').next().unwrap_or("");
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        assert!(
            value.parse::<f64>().is_ok() || value == "+Inf" || value == "NaN",
            "bad value in {line:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_in_both_formats_with_the_foundation_series() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let app = spawn_app(&backend_flags(&redis, &chroma)).await;
    app.wait_backends_up().await;
    // The workload's first Redis read and Chroma query have been timed.
    for request in [
        r#"backend="redis",request="lrange""#,
        r#"backend="chroma",request="query""#,
    ] {
        let count = format!("llmcache_backend_request_duration_seconds_count{{{request}}}");
        app.wait_for_at_least(&count, 1.0, Duration::from_secs(20))
            .await;
    }

    let open = app
        .http
        .get(app.url("/metrics"))
        .header(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .unwrap();
    let content_type = open.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    let open = open.text().await.unwrap();
    assert!(open.ends_with("# EOF\n"), "OpenMetrics must end with # EOF");
    assert!(
        open.contains("# TYPE llmcache_redis_keyspace_hits counter"),
        "OpenMetrics counter families drop _total"
    );
    assert!(open.contains("# UNIT llmcache_backend_request_duration_seconds seconds"));
    assert_samples_well_formed(&open);

    let text = app.http.get(app.url("/metrics")).send().await.unwrap();
    let content_type = text.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = text.text().await.unwrap();
    assert!(!text.contains("# EOF"));
    assert!(
        text.contains("# TYPE llmcache_redis_keyspace_hits_total counter"),
        "0.0.4 counters carry _total"
    );
    assert_samples_well_formed(&text);

    for series in [
        r#"llmcache_backend_up{backend="redis"} 1"#,
        r#"llmcache_backend_up{backend="chroma"} 1"#,
        r#"llmcache_backend_up{backend="embeddings"} 1"#,
        r#"llmcache_backend_request_duration_seconds_bucket{backend="redis",request="lrange",le="0.0001"}"#,
        r#"llmcache_backend_request_duration_seconds_bucket{backend="chroma",request="query",le="10"}"#,
        "llmcache_build_info{version=\"",
        "llmcache_config_last_reload_successful 1",
        r#"llmcache_redis_used_memory_bytes{node="127.0.0.1:"#,
        r#"llmcache_redis_maxmemory_bytes{node="127.0.0.1:"#,
        r#"llmcache_redis_nodes{role="master"} 1"#,
        r#"llmcache_redis_nodes{role="replica"} 0"#,
        "llmcache_redis_master_changes_total 0",
        r#"llmcache_redis_error_replies_total{code="OOM"} 0"#,
        r#"llmcache_backend_outage_seconds{backend="redis"} 0"#,
        r#"llmcache_redis_keyspace_hits_total{node="127.0.0.1:"#,
        r#"llmcache_redis_keyspace_misses_total{node="127.0.0.1:"#,
        r#"llmcache_redis_evicted_keys_total{node="127.0.0.1:"#,
        r#"llmcache_redis_info{node="127.0.0.1:"#,
        "llmcache_chroma_collection_records ",
        r#"llmcache_cache_requests_total{cache="chat_history"} "#,
        r#"llmcache_cache_hits_total{cache="similarity"} "#,
        r#"llmcache_cache_entries{cache="embeddings"} "#,
        r#"llmcache_cache_size_bytes{cache="chat_history"} "#,
        r#"llmcache_cache_capacity_bytes{cache="embeddings"} 33554432"#,
        r#"llmcache_cache_evictions_total{cache="similarity",cause="expired"} "#,
        r#"llmcache_cache_evictions_total{cache="chat_history",cause="size"} "#,
        r#"llmcache_cache_uncacheable_total{cache="similarity"} "#,
        "llmcache_memory_pool_budget_bytes 67108864",
        "llmcache_memory_pool_used_bytes ",
        r#"llmcache_operation_duration_seconds_bucket{operation="get_chat_history",outcome="cache_hit",le="0.0001"} "#,
        r#"llmcache_operation_errors_total{operation="store_memory",kind="timeout"} "#,
        "llmcache_workload_scheduled_total ",
        "llmcache_workload_skipped_total ",
        "llmcache_workload_inflight ",
        "llmcache_workload_lag_seconds ",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "process_open_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(text.contains(series), "missing {series:?} in:\n{text}");
    }
    // The exporter's own housekeeping is not timed: probes, collection setup.
    for request in [
        "ping",
        "info",
        "heartbeat",
        "count",
        "get_collection",
        "create_collection",
    ] {
        assert!(
            !text.contains(&format!("request=\"{request}\"")),
            "{request} is timed:\n{text}"
        );
    }
    // Error histograms appear at the first error, not before.
    assert!(!text.contains(r#"outcome="error""#), "{text}");
    let rss = series(&text, "process_resident_memory_bytes");
    assert!(rss > 1e6 && rss < 1e9, "implausible RSS {rss}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_has_the_seed_shape_and_liveness_endpoints_answer() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let app = spawn_app(&backend_flags(&redis, &chroma)).await;
    app.wait_backends_up().await;

    let (code, health) = app.health().await;
    assert_eq!(code, 200, "{health}");
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(health["redis"]["status"], "healthy");
    assert!(health["redis"]["latency_ms"].as_f64().unwrap() > 0.0);
    assert!(health["redis"]["used_memory_mb"].as_f64().unwrap() > 0.0);
    assert!(
        health["redis"]["details"].as_str().unwrap().contains("7."),
        "{health}"
    );
    assert_eq!(health["chromadb"]["status"], "healthy");
    assert!(health["chromadb"]["latency_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(
        health["embeddings"]["details"],
        "hash provider, 256 dimensions"
    );
    let stats = &health["cache"]["stats"];
    for key in [
        "total_hits",
        "total_misses",
        "hit_rate",
        "cache_size",
        "memory_usage_mb",
        "memory_pressure",
    ] {
        assert!(!stats[key].is_null(), "cache.stats.{key} missing: {health}");
    }
    assert_eq!(
        health["cache"]["details"],
        "Cache operational - 0.0% hit rate"
    );

    for (path, needle) in [("/-/healthy", "Healthy"), ("/-/ready", "Ready")] {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert!(response.text().await.unwrap().contains(needle), "{path}");
    }
    let landing = app.http.get(app.url("/")).send().await.unwrap();
    assert!(landing.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let landing = landing.text().await.unwrap();
    assert!(landing.contains(env!("CARGO_PKG_VERSION")));
    assert!(landing.contains("href=\"metrics\"") && landing.contains("href=\"health\""));
    assert!(
        landing.contains("<td>redis</td><td class=\"healthy\">healthy</td>"),
        "{landing}"
    );
    assert_eq!(
        app.http
            .get(app.url("/nope"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_collection_is_created_with_the_ownership_marker() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let app = spawn_app(&backend_flags(&redis, &chroma)).await;
    app.wait_for_metric("llmcache_chroma_collection_records", 0.0, UP)
        .await;
    let collection = chroma.collection("llmcache_probe_memories").await;
    assert_eq!(
        collection["metadata"]["created_by"], "llm-cache-exporter",
        "{collection}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_collection_is_reported_and_left_untouched() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let id = chroma
        .create_user_collection("users_memories", serde_json::json!({"team": "search"}))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[chroma]\ncollection = \"users_memories\"\n[workload]\nrate = 50.0\n[workload.mix]\nstore_memory = 0.3\nquery_similar_memories = 0.3\n",
    )
    .unwrap();
    let mut flags = backend_flags(&redis, &chroma);
    flags.extend(["--config.file".into(), config.display().to_string()]);
    let app = spawn_app(&flags).await;

    // Both probes have spoken: Redis up, Chroma's refusal reported (the
    // overall status is the worst of them).
    let health = crate::helpers::poll("chromadb details to mention the refusal", UP, || async {
        let (code, health) = app.health().await;
        let refused = health["chromadb"]["details"]
            .as_str()
            .unwrap_or("")
            .contains("refusing to write");
        (refused && health["redis"]["status"] == "healthy").then_some((code, health))
    })
    .await;
    assert_eq!(
        health.0, 200,
        "a foreign collection degrades, it does not fail: {}",
        health.1
    );
    assert_eq!(health.1["chromadb"]["status"], "degraded");
    assert_eq!(
        health.1["redis"]["status"], "healthy",
        "the rest keeps working"
    );
    assert_eq!(
        app.series(r#"llmcache_backend_up{backend="chroma"}"#).await,
        1.0
    );

    let after = chroma.collection("users_memories").await;
    assert_eq!(
        after["metadata"],
        serde_json::json!({"team": "search"}),
        "metadata must be untouched"
    );
    let count = chroma.count(&id).await;
    assert_eq!(count, 1);
}
