//! Answers, not just answering: recall@k of a real Chroma against exact
//! search, write visibility, a Chroma made to answer wrong (up and fast) that
//! only the recall metric and its alert catch, and the semantic cache on
//! real traffic with its precision measured.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use axum::Router;
use tempfile::TempDir;

use crate::helpers::{
    metric_value, poll, render_mixin, spawn_app_with_config, ChromaServer, PrometheusServer,
    RedisServer, TestApp,
};

/// Every query goes to Chroma (no cache), a recall check on each.
const CHECKED: &str = "[cache]\nmemory_budget = \"0\"\n\
    [workload]\nrate = 80.0\nrecall_check_fraction = 1.0\nwrite_visibility_timeout = \"2s\"\n\
    [workload.mix]\nget_chat_history = 0.05\nstore_chat_entry = 0.05\nquery_similar_memories = 0.6\nstore_memory = 0.3\n";

/// Mean recall (sum / count) and the number of checks.
async fn recall(app: &TestApp) -> (f64, f64) {
    let text = app.metrics().await;
    let sum = metric_value(&text, "llmcache_vector_recall_ratio_sum").unwrap_or(0.0);
    let count = metric_value(&text, "llmcache_vector_recall_ratio_count").unwrap_or(0.0);
    (if count > 0.0 { sum / count } else { f64::NAN }, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_chroma_has_recall_one_and_its_writes_are_visible_at_once() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let (app, _dir) = spawn_app_with_config(&redis, &chroma, CHECKED).await;
    app.wait_for_at_least(
        "llmcache_vector_recall_checks_total",
        300.0,
        Duration::from_secs(60),
    )
    .await;
    let (mean, checks) = recall(&app).await;
    assert!(mean >= 0.99, "mean recall {mean} over {checks} checks");
    let text = app.metrics().await;
    let visible = metric_value(&text, "llmcache_vector_write_visibility_seconds_count").unwrap();
    let invisible = metric_value(&text, "llmcache_vector_write_invisible_total").unwrap();
    assert!(visible >= 5.0, "{visible} writes measured");
    assert_eq!(invisible, 0.0);
    let mean_visibility =
        metric_value(&text, "llmcache_vector_write_visibility_seconds_sum").unwrap() / visible;
    assert!(
        mean_visibility < 0.5,
        "a local Chroma shows a write at once: {mean_visibility}s"
    );
    assert_eq!(
        app.series(r#"llmcache_backend_up{backend="chroma"}"#).await,
        1.0
    );
    app.stop().await;
}

/// The ids the daemon has added (from `add` bodies), to answer with.
#[derive(Clone, Default)]
struct Lies {
    added: Arc<Mutex<Vec<String>>>,
    upstream: String,
    http: reqwest::Client,
    /// Answers truly, but refuses every `delete` with a 500 (and counts it).
    refuse_deletes_only: bool,
    refused: Arc<std::sync::atomic::AtomicUsize>,
}

/// Forwards everything to Chroma; in every `query` answer, replaces each id
/// with another id of the collection (or, with `refuse_deletes_only`,
/// refuses deletes and tells the truth otherwise).
async fn lying_proxy(State(lies): State<Lies>, request: Request) -> Response {
    if lies.refuse_deletes_only && request.uri().path().ends_with("/delete") {
        lies.refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Response::builder()
            .status(500)
            .body(Body::from("{\"error\":\"deletes refused by the test\"}"))
            .unwrap();
    }
    let (parts, body) = request.into_parts();
    let body: Bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    if path.ends_with("/add") {
        if let Ok(add) = serde_json::from_slice::<serde_json::Value>(&body) {
            let ids = add["ids"].as_array().cloned().unwrap_or_default();
            lies.added
                .lock()
                .unwrap()
                .extend(ids.iter().filter_map(|id| id.as_str().map(str::to_owned)));
        }
    }
    let mut forward = lies
        .http
        .request(parts.method, format!("{}{path}", lies.upstream))
        .body(body);
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            forward = forward.header(name, value);
        }
    }
    let upstream = forward.send().await.unwrap();
    let status = upstream.status();
    let mut answer = upstream.bytes().await.unwrap();
    if path.ends_with("/query") && status.is_success() && !lies.refuse_deletes_only {
        let mut json: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        let added = lies.added.lock().unwrap().clone();
        if let Some(groups) = json["ids"].as_array_mut() {
            for group in groups {
                let truth: HashSet<String> = group
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|id| id.as_str().map(str::to_owned))
                    .collect();
                let others: Vec<&String> = added.iter().filter(|id| !truth.contains(*id)).collect();
                for id in group.as_array_mut().unwrap() {
                    if !others.is_empty() {
                        *id = serde_json::Value::from(
                            others[fastrand::usize(..others.len())].as_str(),
                        );
                    }
                }
            }
        }
        answer = Bytes::from(serde_json::to_vec(&json).unwrap());
    }
    Response::builder()
        .status(status.as_u16())
        .header("content-type", "application/json")
        .body(Body::from(answer))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chroma_that_answers_wrong_is_up_and_caught_by_recall_and_its_alert() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let lies = Lies {
        upstream: chroma.url().trim_end_matches('/').to_owned(),
        ..Lies::default()
    };
    let proxy = Router::new().fallback(lying_proxy).with_state(lies);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, proxy).await });

    let dir = TempDir::new().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "{CHECKED}[chroma]\nurl = \"http://{proxy_addr}\"\n[redis]\nurl = \"{}\"\n",
            redis.url()
        ),
    )
    .unwrap();
    let app =
        crate::helpers::spawn_app(&["--config.file".to_owned(), config.display().to_string()])
            .await;

    let rules = dir.path().join("rules.yml");
    let fast = "{ interval: '1s', vectorRecall+: { window: '30s', minChecks: 20, 'for': '5s' } }";
    std::fs::write(&rules, render_mixin(fast, "rules").unwrap()).unwrap();
    let prometheus = PrometheusServer::start(app.addr, &[rules]);

    app.wait_for_at_least(
        "llmcache_vector_recall_checks_total",
        100.0,
        Duration::from_secs(60),
    )
    .await;
    let (mean, checks) = recall(&app).await;
    assert!(mean < 0.5, "mean recall {mean} over {checks} checks");
    let text = app.metrics().await;
    assert_eq!(
        metric_value(&text, r#"llmcache_backend_up{backend="chroma"}"#),
        Some(1.0),
        "Chroma is up: only the answers are wrong"
    );
    let value = |series: &str| metric_value(&text, series).unwrap_or(0.0);
    let answered = value(
        r#"llmcache_operation_duration_seconds_count{operation="query_similar_memories",outcome="cache_miss"}"#,
    );
    let failed = value(
        r#"llmcache_operation_duration_seconds_count{operation="query_similar_memories",outcome="error"}"#,
    );
    assert!(
        failed < answered / 20.0,
        "{failed} failed, {answered} answered: the queries succeed"
    );
    prometheus
        .wait_for_any(r#"ALERTS{alertname="LLMCacheVectorRecallLow",alertstate="firing"}"#)
        .await;
    app.stop().await;
}

/// Semantic mode at a loose threshold, every semantic hit verified.
fn semantic(threshold: f64) -> String {
    format!(
        "[cache.similarity]\nmode = \"semantic\"\ndistance_threshold = {threshold}\nverify_fraction = 1.0\n\
         [workload]\nrate = 80.0\n\
         [workload.mix]\nget_chat_history = 0.05\nstore_chat_entry = 0.05\nquery_similar_memories = 0.85\nstore_memory = 0.05\n"
    )
}

/// Waits for semantic hits and both kinds of verification.
pub async fn semantic_hits_verified_both_ways(app: &TestApp) -> String {
    poll("semantic hits, verified same and different", Duration::from_secs(90), || async {
        let text = app.metrics().await;
        let value = |series: &str| metric_value(&text, series).unwrap_or(0.0);
        let hits = value(r#"llmcache_cache_semantic_hits_total{cache="similarity"}"#);
        let same = value(r#"llmcache_cache_semantic_verifications_total{cache="similarity",result="same"}"#);
        let different =
            value(r#"llmcache_cache_semantic_verifications_total{cache="similarity",result="different"}"#);
        (hits >= 20.0 && same >= 1.0 && different >= 1.0).then_some(text)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantic_mode_with_the_hash_embedder_hits_and_measures_its_precision() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let (app, _dir) = spawn_app_with_config(&redis, &chroma, &semantic(0.6)).await;
    let text = semantic_hits_verified_both_ways(&app).await;
    let value = |series: &str| metric_value(&text, series).unwrap();
    let hits = value(r#"llmcache_cache_hits_total{cache="similarity"}"#);
    let semantic_hits = value(r#"llmcache_cache_semantic_hits_total{cache="similarity"}"#);
    assert!(semantic_hits <= hits, "a semantic hit is a hit");
    assert!(
        value(r#"llmcache_cache_semantic_distance_count{cache="similarity"}"#) >= semantic_hits
    );
    assert!(value(r#"llmcache_cache_semantic_overlap_count{cache="similarity"}"#) >= 2.0);
    // Verifications are Chroma requests like any other.
    assert!(
        value(
            r#"llmcache_backend_request_duration_seconds_count{backend="chroma",request="query"}"#
        ) > 0.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimmed_memories_whose_delete_failed_count_against_no_one() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let refusing = Lies {
        upstream: chroma.url().trim_end_matches('/').to_owned(),
        refuse_deletes_only: true,
        ..Lies::default()
    };
    let refused = refusing.refused.clone();
    let proxy = Router::new().fallback(lying_proxy).with_state(refusing);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, proxy).await });
    // A cap of 50: trims from the 56th memory on; a recall check on every
    // query Chroma answers.
    let dir = TempDir::new().unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        format!(
            "[cache]\nmemory_budget = \"0\"\n[workload]\nrate = 100.0\nrecall_check_fraction = 1.0\n\
             memory_cap = 50\n[workload.mix]\nget_chat_history = 0\nstore_chat_entry = 0\n\
             query_similar_memories = 0.8\nstore_memory = 0.2\n[chroma]\nurl = \"http://{proxy_addr}\"\n[redis]\nurl = \"{}\"\n",
            redis.url()
        ),
    )
    .unwrap();
    let args = [
        "--config.file".to_owned(),
        dir.path().join("config.toml").display().to_string(),
    ];
    let daemon = crate::helpers::Daemon::start(&args, dir.path());
    let stores =
        r#"llmcache_operation_duration_seconds_count{operation="store_memory",outcome="success"}"#;
    poll("two refused trims", Duration::from_secs(90), || async {
        let text = daemon.try_get("/metrics").await.unwrap_or_default();
        eprintln!(
            "{} memories stored, {} deletes refused",
            metric_value(&text, stores).unwrap_or(0.0),
            refused.load(std::sync::atomic::Ordering::Relaxed)
        );
        (refused.load(std::sync::atomic::Ordering::Relaxed) >= 2).then_some(())
    })
    .await;
    // Checks made while the trimmed memories are still in the collection.
    let count = "llmcache_vector_recall_ratio_count";
    let at_refusal = metric_value(&daemon.get("/metrics").await, count).unwrap_or(0.0);
    let text = poll(
        "100 more recall checks",
        Duration::from_secs(60),
        || async {
            let text = daemon.try_get("/metrics").await?;
            (metric_value(&text, count)? >= at_refusal + 100.0).then_some(text)
        },
    )
    .await;
    let sum = metric_value(&text, "llmcache_vector_recall_ratio_sum").unwrap();
    let checks = metric_value(&text, count).unwrap();
    let mean = sum / checks;
    eprintln!("mean recall {mean} over {checks} checks, with deletes refused");
    assert!(mean >= 0.99, "mean recall {mean} over {checks} checks");
    let deletes = metric_value(
        &text,
        r#"llmcache_backend_request_duration_seconds_count{backend="chroma",request="delete"}"#,
    )
    .unwrap_or(0.0);
    assert!(deletes >= 2.0, "the refused deletes are counted:\n{text}");
    let logs = daemon.stop();
    assert!(
        logs.contains("deleting trimmed probe memories failed"),
        "a failed delete is logged at warn"
    );
}
