//! Backends going away and coming back, without restarting the daemon.

use std::time::Duration;

use crate::helpers::{backend_flags, free_port, poll, spawn_app, ChromaServer, RedisServer};

const UP: Duration = Duration::from_secs(15);
/// The issue's bound for noticing an outage.
const DOWN: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_backend_up_follow_redis_being_killed_and_restarted() {
    let mut redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let app = spawn_app(&backend_flags(&redis, &chroma)).await;
    let series = r#"llmcache_backend_up{backend="redis"}"#;
    let used = format!(
        "llmcache_redis_used_memory_bytes{{node=\"127.0.0.1:{}\"}}",
        redis.port
    );
    app.wait_for_metric(series, 1.0, UP).await;
    assert!(app.metric(&used).await.is_some());

    redis.kill();
    app.wait_for_metric(series, 0.0, DOWN).await;
    let (code, health) = app.health().await;
    assert_eq!(code, 503, "{health}");
    assert_eq!(health["status"], "unhealthy");
    assert_eq!(health["redis"]["status"], "unhealthy");
    assert!(
        health["redis"]["details"]
            .as_str()
            .unwrap()
            .contains("(connection)"),
        "{health}"
    );
    assert!(
        app.metric(&used).await.is_none(),
        "INFO series vanish while Redis is down"
    );
    assert_eq!(
        app.series(r#"llmcache_backend_up{backend="chroma"}"#).await,
        1.0
    );

    redis.restart();
    app.wait_for_metric(series, 1.0, UP).await;
    let (code, health) = app.health().await;
    assert_eq!(code, 200, "{health}");
    assert_eq!(health["redis"]["status"], "healthy");
    assert!(app.metric(&used).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_backend_up_follow_chroma_being_killed_and_restarted() {
    let redis = RedisServer::start();
    let mut chroma = ChromaServer::start();
    let app = spawn_app(&backend_flags(&redis, &chroma)).await;
    let series = r#"llmcache_backend_up{backend="chroma"}"#;
    app.wait_for_metric(series, 1.0, UP).await;

    chroma.kill();
    app.wait_for_metric(series, 0.0, DOWN).await;
    let (code, health) = app.health().await;
    assert_eq!(code, 503);
    assert_eq!(health["chromadb"]["status"], "unhealthy");
    assert!(
        health["chromadb"]["details"]
            .as_str()
            .unwrap()
            .contains("heartbeat"),
        "{health}"
    );
    assert!(app
        .metric("llmcache_chroma_collection_records")
        .await
        .is_none());

    chroma.restart();
    app.wait_for_metric(series, 1.0, UP).await;
    poll("chromadb healthy again", UP, || async {
        let (code, health) = app.health().await;
        (code == 200 && health["chromadb"]["status"] == "healthy").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_down_at_start_are_reported_then_picked_up() {
    let redis_port = free_port();
    let chroma_port = free_port();
    let app = spawn_app(&[
        "--redis.url".into(),
        format!("redis://127.0.0.1:{redis_port}"),
        "--chroma.url".into(),
        format!("http://127.0.0.1:{chroma_port}"),
    ])
    .await;
    // The daemon serves even with nothing to talk to.
    let ready = app.http.get(app.url("/-/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    poll("both backends reported down", UP, || async {
        let (code, health) = app.health().await;
        let down = |c: &str| {
            health[c]["status"] == "unhealthy" && health[c]["details"] != "not probed yet"
        };
        (code == 503 && down("redis") && down("chromadb")).then_some(())
    })
    .await;
    assert_eq!(
        app.series(r#"llmcache_backend_up{backend="redis"}"#).await,
        0.0
    );
    assert_eq!(
        app.series(r#"llmcache_backend_up{backend="chroma"}"#).await,
        0.0
    );

    let _redis = RedisServer::start_on(redis_port, &[]);
    let _chroma = ChromaServer::start_on(chroma_port);
    app.wait_backends_up().await;
    poll("/health healthy", UP, || async {
        let (code, health) = app.health().await;
        (code == 200 && health["status"] == "healthy").then_some(())
    })
    .await;
}
