//! The census as the monitored Redis sees it: no key's access time moved
//! (so eviction still follows the application), lengths read only where
//! that holds (`CLIENT NO-TOUCH` on Valkey 8.1 / Redis 7.2, or by the
//! user's leave), and no command slow enough for the slowlog however big a
//! key is.

use std::time::{Duration, Instant};

use crate::census::pipe;
use crate::helpers::{
    metric_value, poll, series, spawn_app_with_config, write_file, ChromaServer, Daemon,
    RedisServer,
};

/// A census every 2 s with no budget, and a canary that writes nothing.
fn config(extra: &str) -> String {
    format!(
        "[workload]\nrate = 1.0\n[workload.mix]\nget_chat_history = 1\nstore_chat_entry = 0\n\
         query_similar_memories = 0\nstore_memory = 0\n[census]\ninterval = \"2s\"\n\
         [census.redis]\nmax_keys_per_second = 0\n{extra}\
         [[census.redis.groups]]\nname = \"chat\"\npattern = \"message_store:*\"\n\
         [[census.redis.groups]]\nname = \"sessions\"\npattern = \"session:*\"\n\
         [[census.redis.groups]]\nname = \"blobs\"\npattern = \"blob:*\"\n"
    )
}

/// 100 histories of 1 to 10 entries, 50 hashes, 50 strings; their keys.
fn write_data(redis: &RedisServer) -> Vec<String> {
    let mut commands = String::new();
    let mut keys = Vec::new();
    for i in 0..100 {
        let entries: Vec<String> = (0..=i % 10).map(|m| format!("m{m}")).collect();
        commands.push_str(&format!("RPUSH message_store:{i} {}\n", entries.join(" ")));
        keys.push(format!("message_store:{i}"));
    }
    for i in 0..50 {
        commands.push_str(&format!(
            "HSET session:{i} a 1 b 2\nSET blob:{i} {}\n",
            "x".repeat(i + 1)
        ));
        keys.push(format!("session:{i}"));
        keys.push(format!("blob:{i}"));
    }
    pipe(redis, &commands);
    keys
}

/// Asserts that no key has been touched in the `age` since it was written.
fn assert_untouched(redis: &RedisServer, keys: &[String], age: Duration) {
    let commands: String = keys
        .iter()
        .map(|k| format!("OBJECT IDLETIME {k}\n"))
        .collect();
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(commands.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    let idle: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(idle.len(), keys.len());
    // The LRU clock ticks in seconds: an untouched key is at least its age
    // less one second idle.
    let least = age.as_secs().saturating_sub(1);
    for (key, idle) in keys.iter().zip(idle) {
        assert!(
            idle >= least,
            "{key} idle {idle} s, written {age:?} ago: touched"
        );
    }
}

/// Waits for `passes` more successful census passes of Redis.
async fn passes(
    get: impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<String>> + Send>>,
    passes: usize,
) {
    let last = r#"llmcache_census_last_success_timestamp_seconds{store="redis"}"#;
    let mut seen = None;
    for _ in 0..passes {
        let before = seen;
        seen = Some(
            poll("a census pass", Duration::from_secs(30), || {
                let text = get();
                async move { metric_value(&text.await?, last).filter(|at| Some(*at) != before) }
            })
            .await,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_7_0_master_a_pass_reads_no_length_and_touches_no_key() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let keys = write_data(&redis);
    let written = Instant::now();
    // Old enough that a touch shows: an age, not a wait for an event.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "config.toml", &config(""));
    let daemon = Daemon::start(
        &[
            "--config.file".into(),
            path,
            "--redis.url".into(),
            redis.url(),
            "--chroma.url".into(),
            chroma.url(),
        ],
        dir.path(),
    );
    let port = daemon.port;
    let get =
        move || -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<String>> + Send>> {
            Box::pin(async move {
                reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()
            })
        };
    passes(&get, 2).await;
    assert_untouched(&redis, &keys, written.elapsed());
    let text = daemon.get("/metrics").await;
    assert_eq!(
        series(&text, r#"llmcache_census_redis_keys{group="chat"}"#),
        100.0
    );
    assert!(
        series(
            &text,
            r#"llmcache_census_redis_memory_bytes{group="sessions"}"#
        ) > 0.0
    );
    assert!(
        !text.contains("llmcache_census_redis_length{"),
        "lengths read:\n{text}"
    );
    let logs = daemon.stop();
    let said = logs.matches("without CLIENT NO-TOUCH").count();
    assert_eq!(said, 1, "said {said} times in two passes:\n{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_client_no_touch_lengths_are_read_and_no_key_is_touched() {
    let valkey = RedisServer::start_valkey(&[]);
    let chroma = ChromaServer::start();
    let keys = write_data(&valkey);
    let written = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (app, _dir) = spawn_app_with_config(&valkey, &chroma, &config("")).await;
    let chat = r#"llmcache_census_redis_length{group="chat",quantile="1"}"#;
    app.wait_for_metric(chat, 10.0, Duration::from_secs(30))
        .await;
    assert_untouched(&valkey, &keys, written.elapsed());
    let text = app.metrics().await;
    assert_eq!(
        series(
            &text,
            r#"llmcache_census_redis_string_bytes{group="blobs",quantile="1"}"#
        ),
        50.0
    );
    assert_eq!(
        series(
            &text,
            r#"llmcache_census_redis_length{group="sessions",quantile="0.5"}"#
        ),
        2.0
    );
    let errors = valkey.cli(&["INFO", "errorstats"]);
    assert!(
        !errors.contains("errorstat_"),
        "the census caused errors: {errors}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_key_is_estimated_alone_and_nothing_reaches_the_slowlog() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    // A 300,000-field hash and a 300,000-entry list beside small keys.
    let mut commands = String::new();
    for chunk in 0..300 {
        let fields: Vec<String> = (0..1000).map(|f| format!("f{chunk}-{f} v")).collect();
        commands.push_str(&format!("HSET big:hash {}\n", fields.join(" ")));
        let entries: Vec<String> = (0..1000).map(|e| format!("e{e}")).collect();
        commands.push_str(&format!("RPUSH big:list {}\n", entries.join(" ")));
    }
    pipe(&redis, &commands);
    write_data(&redis);
    assert_eq!(redis.cli(&["HLEN", "big:hash"]).trim(), "300000");
    redis.cli(&["CONFIG", "SET", "slowlog-log-slower-than", "2000"]);
    redis.cli(&["SLOWLOG", "RESET"]);
    let extra =
        "allow_touch = true\n[[census.redis.groups]]\nname = \"big\"\npattern = \"big:*\"\n";
    let config = config("").replace(
        "[[census.redis.groups]]\nname = \"chat\"",
        &format!("{extra}[[census.redis.groups]]\nname = \"chat\""),
    );
    let (app, _dir) = spawn_app_with_config(&redis, &chroma, &config).await;
    let big = r#"llmcache_census_redis_keys{group="big"}"#;
    app.wait_for_metric(big, 2.0, Duration::from_secs(30)).await;
    let slow = redis.cli(&["SLOWLOG", "GET", "16"]);
    assert_eq!(
        redis.cli(&["SLOWLOG", "LEN"]).trim(),
        "0",
        "slow commands:\n{slow}"
    );
    let text = app.metrics().await;
    let estimated = r#"llmcache_census_redis_memory_estimated_keys{group="big"}"#;
    assert_eq!(series(&text, estimated), 2.0);
    for group in ["chat", "sessions", "blobs", "other"] {
        let line = format!("llmcache_census_redis_memory_estimated_keys{{group=\"{group}\"}}");
        assert_eq!(series(&text, &line), 0.0, "{line}");
    }
    // The estimate is Redis's own, of the right size: megabytes, not 0.
    assert!(series(&text, r#"llmcache_census_redis_memory_bytes{group="big"}"#) > 5e6);
    app.stop().await;
}
