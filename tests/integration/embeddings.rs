//! The OpenAI-compatible embeddings provider. No such server runs offline,
//! so wiremock stands in for it; Redis and Chroma are real.

use std::time::Duration;

use llm_cache_exporter::{App, Config};
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{
    metric_value, operation_errors, spawn_app_with_config, ChromaServer, EmbeddingsServer,
    RedisServer,
};

/// `--once` with the openai provider pointed at `server`.
async fn once(server: &MockServer, extra: &str) -> serde_json::Value {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("api-key");
    std::fs::write(&key, "sk-test-123\n").unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[embeddings]\nprovider = \"openai\"\nurl = \"{}/v1\"\nmodel = \"test-embed\"\napi_key_file = \"{}\"\ndimensions = 8\n{extra}",
            server.uri(),
            key.display()
        ),
    )
    .unwrap();
    let args = [
        "x".to_owned(),
        "--config.file".into(),
        config.display().to_string(),
        "--redis.url".into(),
        redis.url(),
        "--chroma.url".into(),
        chroma.url(),
    ];
    let config = Config::from_args(args).unwrap().config;
    let outcome = App::once(config).await.unwrap();
    serde_json::from_str(&outcome.report).unwrap()
}

fn embedding(dimensions: usize) -> serde_json::Value {
    serde_json::json!({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": vec![0.125; dimensions]}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openai_compatible_endpoint_embeds_with_the_bearer_key_and_model() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/embeddings"))
        .and(header("authorization", "Bearer sk-test-123"))
        .and(body_partial_json(
            serde_json::json!({"model": "test-embed"}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(embedding(8)))
        .mount(&server)
        .await;
    let report = once(&server, "").await;
    assert_eq!(report["ok"], true, "{report}");
    // Two distinct texts are embedded; the repeated query hits the embeddings cache.
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

/// The kind reported for the first embedding-dependent operation.
fn query_error_kind(report: &serde_json::Value) -> &str {
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(
        report["operations"][0]["outcome"], "cache_miss",
        "chat operations are unaffected: {report}"
    );
    report["operations"][3]["error"]["kind"]
        .as_str()
        .unwrap_or("none")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_is_a_server_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    assert_eq!(query_error_kind(&once(&server, "").await), "server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_is_a_timeout() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(embedding(8))
                .set_delay(Duration::from_secs(5)),
        )
        .mount(&server)
        .await;
    assert_eq!(
        query_error_kind(&once(&server, "timeout = \"300ms\"\n").await),
        "timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vector_of_the_wrong_dimension_is_a_validation_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(embedding(4)))
        .mount(&server)
        .await;
    assert_eq!(query_error_kind(&once(&server, "").await), "validation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_answer_is_a_protocol_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>"))
        .mount(&server)
        .await;
    assert_eq!(query_error_kind(&once(&server, "").await), "protocol");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_provider_against_a_real_model_server() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let model = EmbeddingsServer::start();
    let config = format!(
        "{}[workload]\nrate = 40.0\n[workload.mix]\nget_chat_history = 0.1\nstore_chat_entry = 0.1\n\
         query_similar_memories = 0.5\nstore_memory = 0.3\n",
        model.config()
    );
    let (app, _dir) = spawn_app_with_config(&redis, &chroma, &config).await;
    app.wait_backends_up().await;
    app.wait_for_at_least(
        r#"llmcache_operation_duration_seconds_count{operation="store_memory",outcome="success"}"#,
        5.0,
        Duration::from_secs(30),
    )
    .await;
    let text = app.metrics().await;
    let value = |series: &str| metric_value(&text, series).unwrap_or(0.0);
    assert_eq!(value(r#"llmcache_backend_up{backend="embeddings"}"#), 1.0);
    assert!(
        value(
            r#"llmcache_backend_request_duration_seconds_count{backend="embeddings",request="embed"}"#
        ) >= 5.0
    );
    assert_eq!(operation_errors(&text), 0.0, "{text}");
    let (_, health) = app.health().await;
    let details = health["embeddings"]["details"].as_str().unwrap();
    assert!(
        details.contains("wordllama-l2-supercat-256") && details.contains("256 dimensions"),
        "{details}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantic_mode_with_a_real_model_hits_and_measures_its_precision() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let model = EmbeddingsServer::start();
    let config = format!(
        "{}[cache.similarity]\nmode = \"semantic\"\ndistance_threshold = 0.4\nverify_fraction = 1.0\n\
         [workload]\nrate = 80.0\n[workload.mix]\nget_chat_history = 0.05\nstore_chat_entry = 0.05\n\
         query_similar_memories = 0.85\nstore_memory = 0.05\n",
        model.config()
    );
    let (app, _dir) = spawn_app_with_config(&redis, &chroma, &config).await;
    let text = crate::vectors::semantic_hits_verified_both_ways(&app).await;
    assert!(
        metric_value(
            &text,
            r#"llmcache_cache_semantic_distance_count{cache="similarity"}"#
        )
        .unwrap()
            >= 20.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_openai_providers_health() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let model = EmbeddingsServer::start();
    let mix = |queries: f64| {
        format!(
            "{}[workload]\nrate = 40.0\n[workload.mix]\nget_chat_history = 1\nstore_chat_entry = 0\n\
             query_similar_memories = {queries}\nstore_memory = 0\n",
            model.config()
        )
    };
    let (app, dir) = spawn_app_with_config(&redis, &chroma, &mix(1.0)).await;
    app.wait_for_metric(
        r#"llmcache_backend_up{backend="embeddings"}"#,
        1.0,
        Duration::from_secs(30),
    )
    .await;
    // The reload leaves [embeddings] alone, and nothing embeds after it.
    std::fs::write(dir.path().join("config.toml"), mix(0.0)).unwrap();
    let reloaded = app.http.post(app.url("/-/reload")).send().await.unwrap();
    assert_eq!(reloaded.status(), 200, "{}", reloaded.text().await.unwrap());
    let (status, health) = app.health().await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["embeddings"]["status"], "healthy", "{health}");
    assert_eq!(
        app.series(r#"llmcache_backend_up{backend="embeddings"}"#)
            .await,
        1.0
    );
    app.stop().await;
}
