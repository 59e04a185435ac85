//! Redis as production runs it: a least-privilege ACL user with a password
//! file, and TLS with a private CA and client certificates.

use std::time::Duration;

use crate::helpers::{free_port, poll, series, spawn_app, ChromaServer, Daemon, RedisServer};
use crate::pki::Pki;

/// The ACLs the README documents, word for word after the user name: by
/// category, and as an explicit command list.
const ACL_BY_CATEGORY: &str = "on resetkeys ~llmcache:probe:* resetchannels -@all +@read \
                               +@write +@transaction +@connection -@dangerous +info";
pub const ACL_BY_COMMAND: &str = "on resetkeys ~llmcache:probe:* resetchannels -@all +ping +info \
                              +lrange +rpush +ltrim +pexpire +multi +exec +scan +unlink";
const ACL_PASSWORD: &str = "acl-pa55:word/x";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_acl_by_category_is_enough_and_the_password_never_leaks() {
    acl_is_enough(ACL_BY_CATEGORY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_acl_by_command_is_enough_and_the_password_never_leaks() {
    acl_is_enough(ACL_BY_COMMAND).await;
}

/// The README documents exactly `rules` for the `llmcache` user.
pub fn assert_documented(rules: &str) {
    let documented = format!(
        "ACL SETUSER llmcache {}",
        rules.replacen("on ", "on >CHANGE-ME ", 1)
    );
    assert!(
        include_str!("../../README.md").contains(&documented),
        "the README documents exactly this ACL: {documented}"
    );
}

async fn acl_is_enough(rules: &str) {
    assert_documented(rules);
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let mut setuser = vec!["ACL", "SETUSER", "llmcache"];
    setuser.extend(rules.split_whitespace());
    let password_rule = format!(">{ACL_PASSWORD}");
    setuser.push(&password_rule);
    assert_eq!(redis.cli(&setuser).trim(), "OK");
    // A user key the daemon must not be able to touch, even by accident.
    redis.cli(&["SET", "app:session:1", "user-data"]);

    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("redis-password");
    std::fs::write(&password_file, format!("{ACL_PASSWORD}\n")).unwrap();
    let config_file = dir.path().join("config.toml");
    std::fs::write(
        &config_file,
        // The canary's own ACL, as the README gives it: the census, which
        // reads every key, needs its own grants and is off here.
        "[workload]\nrate = 50.0\n[memory]\nsample_interval = \"1s\"\n[census]\ninterval = \"0s\"\n",
    )
    .unwrap();
    let args: Vec<String> = vec![
        "--redis.url".into(),
        format!("redis://llmcache@127.0.0.1:{}", redis.port),
        "--redis.password-file".into(),
        password_file.display().to_string(),
        "--chroma.url".into(),
        chroma.url(),
        "--config.file".into(),
        config_file.display().to_string(),
    ];
    let daemon = Daemon::start(&args, dir.path());
    // Every operation, reads and writes, succeeds under the ACL.
    let text = poll(
        "every operation to succeed",
        Duration::from_secs(30),
        || async {
            let text = daemon.try_get("/metrics").await?;
            let done = |op: &str, outcome: &str| {
                series(
                    &text,
                    &format!(
                        "llmcache_operation_duration_seconds_count{{operation=\"{op}\",outcome=\"{outcome}\"}}"
                    ),
                )
                    > 0.0
            };
            (done("get_chat_history", "cache_miss")
                && done("store_chat_entry", "success")
                && done("query_similar_memories", "cache_miss")
                && text.contains("llmcache_redis_used_memory_bytes{node="))
            .then_some(text)
        },
    )
    .await;
    let redis_errors: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("llmcache_operation_errors_total{operation=\"get_chat_history\"")
                || l.starts_with("llmcache_operation_errors_total{operation=\"store_chat_entry\"")
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(redis_errors, 0.0, "no Redis errors under the ACL:\n{text}");
    let health = daemon.get("/health").await;
    assert!(!health.contains(ACL_PASSWORD), "{health}");
    assert!(!text.contains(ACL_PASSWORD));

    let logs = daemon.stop();
    assert!(!logs.contains(ACL_PASSWORD), "the logs leak the password");
    assert!(
        logs.contains("level=debug"),
        "ran with verbose logs: {logs}"
    );
    // Nothing was denied, cleanup ran under the same ACL, and the user's key
    // is untouched.
    assert_eq!(redis.cli(&["ACL", "LOG"]).trim(), "", "denied commands");
    assert_eq!(redis.cli(&["--scan", "--pattern", "llmcache:*"]).trim(), "");
    assert_eq!(redis.cli(&["GET", "app:session:1"]).trim(), "user-data");

    let check = std::process::Command::new(crate::helpers::binary())
        .arg("--check-config")
        .args(&args)
        .output()
        .unwrap();
    assert!(check.status.success());
    assert!(!String::from_utf8_lossy(&check.stdout).contains(ACL_PASSWORD));
}

/// A Redis serving TLS only, with the trusted CA's server certificate;
/// `auth_clients` is its `--tls-auth-clients`.
pub(crate) fn tls_redis(pki: &Pki, auth_clients: &str) -> RedisServer {
    let port = free_port();
    let port_text = port.to_string();
    let server = &pki.trusted.server;
    let (cert, key, ca) = (
        server.cert.display().to_string(),
        server.key.display().to_string(),
        pki.trusted.ca.display().to_string(),
    );
    RedisServer::start_on(
        port,
        &[
            "--port",
            "0",
            "--tls-port",
            &port_text,
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            auth_clients,
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_and_a_client_certificate() {
    let pki = Pki::new();
    let redis = tls_redis(&pki, "yes");
    let chroma = ChromaServer::start();
    // By IP: the certificate's IP SAN must match, not just a DNS name.
    let app = spawn_app(&[
        "--redis.url".into(),
        format!("rediss://127.0.0.1:{}", redis.port),
        "--redis.tls-ca-file".into(),
        pki.trusted.ca.display().to_string(),
        "--redis.tls-cert-file".into(),
        pki.trusted.client.cert.display().to_string(),
        "--redis.tls-key-file".into(),
        pki.trusted.client.key.display().to_string(),
        "--chroma.url".into(),
        chroma.url(),
    ])
    .await;
    app.wait_backends_up().await;
    app.wait_for_at_least(
        r#"llmcache_operation_duration_seconds_count{operation="get_chat_history",outcome="cache_miss"}"#,
        1.0,
        Duration::from_secs(20),
    )
    .await;
    let (_, health) = app.health().await;
    assert_eq!(health["redis"]["status"], "healthy", "{health}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_redis_certificate_is_down_with_the_reason() {
    let pki = Pki::new();
    let redis = tls_redis(&pki, "no");
    let chroma = ChromaServer::start();
    let app = spawn_app(&[
        "--redis.url".into(),
        format!("rediss://localhost:{}", redis.port),
        "--redis.tls-ca-file".into(),
        pki.untrusted.ca.display().to_string(),
        "--chroma.url".into(),
        chroma.url(),
    ])
    .await;
    let details = app.wait_down("redis").await;
    eprintln!("untrusted Redis certificate: {details}");
    assert!(
        details.to_lowercase().contains("certificate"),
        "the reason names the certificate: {details}"
    );
    assert_eq!(
        app.series(r#"llmcache_backend_up{backend="redis"}"#).await,
        0.0
    );
    app.stop().await;
}
