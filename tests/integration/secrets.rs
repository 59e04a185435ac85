//! A Redis password, given in the URL or a file, never shows: not in logs at
//! trace level, not in `/health`, `/metrics` or `--check-config`.

use std::process::Command;
use std::time::Duration;

use crate::helpers::{binary, metric_value, poll, series, ChromaServer, Daemon, RedisServer};

/// Has characters that need percent-encoding in a URL, to prove decoding.
const PASSWORD: &str = "s3cr3t/Pa55:w0rd@xyzzy";
const PASSWORD_IN_URL: &str = "s3cr3t%2FPa55%3Aw0rd%40xyzzy";

fn assert_no_secret(what: &str, text: &str) {
    for secret in [PASSWORD, PASSWORD_IN_URL, "Pa55"] {
        assert!(!text.contains(secret), "{what} leaks the password:\n{text}");
    }
}

async fn assert_never_leaks(args: Vec<String>, expect_up: bool) {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&args, dir.path());
    let want = if expect_up { 1.0 } else { 0.0 };
    poll("the redis verdict", Duration::from_secs(20), || async {
        let text = daemon.try_get("/metrics").await?;
        let health = daemon.try_get("/health").await?;
        let probed = !health.contains("not probed yet");
        (probed && metric_value(&text, r#"llmcache_backend_up{backend="redis"}"#) == Some(want))
            .then_some(())
    })
    .await;
    // A few more probe rounds (one every 2 s), and their trace events, happen.
    let scheduled = "llmcache_workload_scheduled_total";
    let before = series(&daemon.get("/metrics").await, scheduled);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(series(&daemon.get("/metrics").await, scheduled) > before);
    let health = daemon.get("/health").await;
    assert_no_secret("/health", &health);
    if !expect_up {
        assert!(
            health.contains("\"redis\":{\"status\":\"unhealthy\""),
            "{health}"
        );
    }
    assert_no_secret("/metrics", &daemon.get("/metrics").await);
    assert_no_secret("/metrics (OpenMetrics)", &daemon.get("/").await);
    let logs = daemon.stop();
    assert!(
        logs.contains("level=trace") || logs.contains("level=debug") || logs.contains("level=info"),
        "{logs}"
    );
    assert_no_secret("the logs", &logs);

    let mut check = vec!["--check-config".to_owned()];
    check.extend(args);
    let out = Command::new(binary()).args(&check).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(
        printed.contains("***"),
        "the redacted password is shown as ***: {printed}"
    );
    assert_no_secret("--check-config", &printed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_in_the_url_never_leaks() {
    let redis = RedisServer::start_with(&["--requirepass", PASSWORD]);
    let chroma = ChromaServer::start();
    let url = format!("redis://:{PASSWORD_IN_URL}@127.0.0.1:{}", redis.port);
    assert_never_leaks(
        vec![
            "--redis.url".into(),
            url,
            "--chroma.url".into(),
            chroma.url(),
        ],
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_file_never_leaks() {
    let redis = RedisServer::start_with(&["--requirepass", PASSWORD]);
    let chroma = ChromaServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("redis-password");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    let args = vec![
        "--redis.url".into(),
        redis.url(),
        "--redis.password-file".into(),
        file.display().to_string(),
        "--chroma.url".into(),
        chroma.url(),
    ];
    assert_never_leaks(args, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_reported_down_without_leaking() {
    let redis = RedisServer::start_with(&["--requirepass", "the-right-one"]);
    let chroma = ChromaServer::start();
    let url = format!("redis://:{PASSWORD_IN_URL}@127.0.0.1:{}", redis.port);
    assert_never_leaks(
        vec![
            "--redis.url".into(),
            url,
            "--chroma.url".into(),
            chroma.url(),
        ],
        false,
    )
    .await;
}
