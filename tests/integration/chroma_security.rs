//! Chroma behind HTTPS with token auth: the token from `--chroma.token-file`
//! in either header, a private CA from `--chroma.tls-ca-file`, and clear
//! reasons when either is wrong.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::helpers::{
    poll, series, spawn_app, write_file, ChromaServer, Daemon, RedisServer, TestApp,
};
use crate::ingress::Ingress;
use crate::pki::Pki;

const TOKEN: &str = "ck-9f8e7d6c5b4a";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_chroma_token_over_https_with_a_private_ca() {
    let pki = Pki::new();
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let ingress = Ingress::start(&chroma.url(), &pki.trusted.server, "x-chroma-token", TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let args = vec![
        "--redis.url".into(),
        redis.url(),
        "--chroma.url".into(),
        ingress.url(),
        "--chroma.token-file".into(),
        write_file(dir.path(), "token", &format!("{TOKEN}\n")),
        "--chroma.tls-ca-file".into(),
        pki.trusted.ca.display().to_string(),
        "--config.file".into(),
        write_file(dir.path(), "config.toml", "[workload]\nrate = 50.0\n"),
    ];
    let daemon = Daemon::start(&args, dir.path());
    let text = poll(
        "memory operations through the ingress",
        Duration::from_secs(30),
        || async {
            let text = daemon.try_get("/metrics").await?;
            let count = |op: &str, outcome: &str| {
                series(
                    &text,
                    &format!(
                        "llmcache_operation_duration_seconds_count{{operation=\"{op}\",outcome=\"{outcome}\"}}"
                    ),
                )
            };
            (count("store_memory", "success") > 0.0
                && count("query_similar_memories", "cache_miss") > 0.0)
                .then_some(text)
        },
    )
    .await;
    assert_eq!(
        series(&text, r#"llmcache_backend_up{backend="chroma"}"#),
        1.0
    );
    assert_eq!(
        ingress.refused.load(Ordering::Relaxed),
        0,
        "every request had the token"
    );
    let health = daemon.get("/health").await;
    assert!(
        health.contains("\"chromadb\":{\"status\":\"healthy\""),
        "{health}"
    );
    // The records really are in Chroma, written through the ingress.
    let collection = chroma.collection("llmcache_probe_memories").await;
    let id = collection["id"].as_str().expect("the probe collection");
    assert!(chroma.count(id).await > 0);
    for (what, text) in [
        ("/health", health),
        ("/metrics", text),
        ("logs", daemon.stop()),
    ] {
        assert!(!text.contains(TOKEN), "{what} leaks the token");
    }
}

async fn spawn_against(ingress: &Ingress, redis: &RedisServer, extra: &[String]) -> TestApp {
    let mut flags = vec![
        "--redis.url".into(),
        redis.url(),
        "--chroma.url".into(),
        ingress.url(),
    ];
    flags.extend(extra.iter().cloned());
    spawn_app(&flags).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_bearer_when_configured() {
    let pki = Pki::new();
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let ingress = Ingress::start(
        &chroma.url(),
        &pki.trusted.server,
        "authorization",
        &format!("Bearer {TOKEN}"),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_against(
        &ingress,
        &redis,
        &[
            "--chroma.token-file".into(),
            write_file(dir.path(), "token", TOKEN),
            "--chroma.tls-ca-file".into(),
            pki.trusted.ca.display().to_string(),
            "--config.file".into(),
            write_file(
                dir.path(),
                "config.toml",
                "[chroma]\ntoken_header = \"authorization\"\n",
            ),
        ],
    )
    .await;
    app.wait_backends_up().await;
    assert_eq!(ingress.refused.load(Ordering::Relaxed), 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_or_an_untrusted_certificate_is_down_with_the_reason() {
    let pki = Pki::new();
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let ingress = Ingress::start(&chroma.url(), &pki.trusted.server, "x-chroma-token", TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            write_file(dir.path(), "wrong", "not-the-token"),
            pki.trusted.ca.display().to_string(),
            "401",
        ),
        (
            write_file(dir.path(), "right", TOKEN),
            pki.untrusted.ca.display().to_string(),
            "certificate",
        ),
    ];
    for (token_file, ca_file, reason) in cases {
        let app = spawn_against(
            &ingress,
            &redis,
            &[
                "--chroma.token-file".into(),
                token_file,
                "--chroma.tls-ca-file".into(),
                ca_file,
            ],
        )
        .await;
        let details = app.wait_down("chromadb").await;
        eprintln!("chroma down ({reason}): {details}");
        assert!(
            details.to_lowercase().contains(reason),
            "the reason says {reason}: {details}"
        );
        assert!(!details.contains(TOKEN));
        assert_eq!(
            app.series(r#"llmcache_backend_up{backend="chroma"}"#).await,
            0.0
        );
        // Redis is unaffected.
        app.wait_for_metric(
            r#"llmcache_backend_up{backend="redis"}"#,
            1.0,
            Duration::from_secs(10),
        )
        .await;
        app.stop().await;
    }
}
