//! The census against data the test wrote and measured itself: key groups in
//! a real Redis (counts, TTL-less keys, length quantiles exact; memory within
//! 5 % of the test's own `MEMORY USAGE`), a failed pass under an ACL without
//! `memory|usage`, and Chroma's collections by size.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::{
    metric_value, poll, series, spawn_app_with_config, write_file, ChromaServer, Daemon,
    RedisServer,
};

/// Quiet canary: reads only (nothing it writes shows in the census), and
/// the census every 2 s, reading lengths on the 7.0 master these tests run
/// (`allow_touch`; `census_touch.rs` holds the default to account).
pub(crate) const CONFIG: &str =
    "[workload]\nrate = 1.0\n[workload.mix]\nget_chat_history = 1\nstore_chat_entry = 0\n\
    query_similar_memories = 0\nstore_memory = 0\n[census]\ninterval = \"2s\"\n[census.redis]\n\
    max_keys_per_second = 0\nallow_touch = true\n\
    [[census.redis.groups]]\nname = \"chat\"\npattern = \"message_store:*\"\n\
    [[census.redis.groups]]\nname = \"sessions\"\npattern = \"session:*\"\n\
    [[census.redis.groups]]\nname = \"blobs\"\npattern = \"blob:*\"\n";

/// Sends `commands` (one per line, arguments space-separated) through
/// `redis-cli --pipe`.
pub(crate) fn pipe(redis: &RedisServer, commands: &str) {
    let mut child = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "--pipe"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-cli");
    use std::io::Write;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(commands.as_bytes()).unwrap();
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

/// Nearest-rank quantile, as the census computes it.
pub(crate) fn quantile(values: &mut [u64], q: f64) -> u64 {
    values.sort_unstable();
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// `MEMORY USAGE key SAMPLES 0` summed over `keys`, by the test itself.
fn memory_of(redis: &RedisServer, keys: &[String]) -> u64 {
    let commands: String = keys
        .iter()
        .map(|k| format!("MEMORY USAGE {k} SAMPLES 0\n"))
        .collect();
    let out = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(commands.as_bytes())?;
            child.wait_with_output()
        })
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_census_of_known_data_equals_what_was_written() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    // 2,000 LangChain-shaped histories of 1 to 50 messages, every third
    // without a TTL; 100 hashes of 5 fields; 50 strings; 30 keys of no group.
    let mut commands = String::new();
    let mut chat_keys = Vec::new();
    let mut lengths = Vec::new();
    let mut ttl_less = 0;
    for i in 0..2000u64 {
        let key = format!("message_store:{i:05}");
        let length = i % 50 + 1;
        commands.push_str(&format!("RPUSH {key}"));
        for m in 0..length {
            commands.push_str(&format!(" msg-{m}"));
        }
        commands.push('\n');
        if i % 3 == 0 {
            ttl_less += 1;
        } else {
            commands.push_str(&format!("EXPIRE {key} 3600\n"));
        }
        chat_keys.push(key);
        lengths.push(length);
    }
    for i in 0..100 {
        commands.push_str(&format!(
            "HSET session:{i} a 1 b 2 c 3 d 4 e 5\nEXPIRE session:{i} 600\n"
        ));
    }
    for i in 0..50 {
        commands.push_str(&format!("SET blob:{i} {}\n", "x".repeat(100 + i)));
    }
    for i in 0..30 {
        commands.push_str(&format!("SET misc:{i} v\n"));
    }
    pipe(&redis, &commands);
    let expected_memory = memory_of(&redis, &chat_keys);

    let (app, _dir) = spawn_app_with_config(&redis, &chroma, CONFIG).await;
    app.wait_for_metric(
        r#"llmcache_census_redis_keys{group="chat"}"#,
        2000.0,
        Duration::from_secs(30),
    )
    .await;
    let text = app.metrics().await;
    let value = |s: &str| series(&text, s);
    assert_eq!(
        value(r#"llmcache_census_redis_keys{group="sessions"}"#),
        100.0
    );
    assert_eq!(value(r#"llmcache_census_redis_keys{group="blobs"}"#), 50.0);
    assert_eq!(value(r#"llmcache_census_redis_keys{group="other"}"#), 30.0);
    assert_eq!(
        value(r#"llmcache_census_redis_keys_without_ttl{group="chat"}"#),
        ttl_less as f64
    );
    assert_eq!(
        value(r#"llmcache_census_redis_keys_without_ttl{group="sessions"}"#),
        0.0
    );
    assert_eq!(
        value(r#"llmcache_census_redis_keys_without_ttl{group="other"}"#),
        30.0
    );
    for (q, label) in [(0.5, "0.5"), (0.99, "0.99"), (1.0, "1")] {
        let wanted = quantile(&mut lengths.clone(), q) as f64;
        let got = value(&format!(
            r#"llmcache_census_redis_length{{group="chat",quantile="{label}"}}"#
        ));
        assert_eq!(got, wanted, "quantile {label}");
    }
    assert_eq!(
        value(r#"llmcache_census_redis_length{group="sessions",quantile="1"}"#),
        5.0
    );
    // A string's size is bytes, not an element count: a series of its own.
    assert_eq!(
        value(r#"llmcache_census_redis_string_bytes{group="blobs",quantile="1"}"#),
        149.0
    );
    assert_eq!(
        metric_value(
            &text,
            r#"llmcache_census_redis_length{group="blobs",quantile="1"}"#
        ),
        None
    );
    let memory = value(r#"llmcache_census_redis_memory_bytes{group="chat"}"#);
    let off = (memory - expected_memory as f64).abs() / expected_memory as f64;
    eprintln!("chat memory: census {memory}, MEMORY USAGE summed by the test {expected_memory} ({:.2} % off)", off * 100.0);
    assert!(off < 0.05, "{memory} against {expected_memory}");
    assert_eq!(
        value(r#"llmcache_census_redis_memory_sampled_ratio{group="chat"}"#),
        1.0
    );
    let ttl = value(r#"llmcache_census_redis_ttl_seconds{group="chat",quantile="1"}"#);
    assert!((3000.0..=3600.0).contains(&ttl), "{ttl}");
    assert!(value("llmcache_census_keys_scanned_total") >= 2180.0);
    assert!(metric_value(
        &text,
        r#"llmcache_census_last_success_timestamp_seconds{store="redis"}"#
    )
    .is_some());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_memory_usage_a_pass_fails_naming_it_and_the_last_series_stay() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    pipe(&redis, "SET message_store:1 a\nSET misc:1 b\n");
    let rules =
        "on >census-pw ~* +@connection +scan +dbsize +type +pttl +object|encoding +llen +hlen +scard \
                 +zcard +xlen +strlen +memory|usage +info +lrange +ping +cluster|info";
    let mut setuser = vec!["ACL", "SETUSER", "census"];
    setuser.extend(rules.split_whitespace());
    assert_eq!(redis.cli(&setuser).trim(), "OK");
    let dir = tempfile::tempdir().unwrap();
    let config = write_file(dir.path(), "config.toml", CONFIG);
    let daemon = Daemon::start(
        &[
            "--config.file".into(),
            config,
            "--redis.url".into(),
            format!("redis://census:census-pw@127.0.0.1:{}", redis.port),
            "--chroma.url".into(),
            chroma.url(),
        ],
        dir.path(),
    );
    let last = r#"llmcache_census_last_success_timestamp_seconds{store="redis"}"#;
    let first = poll("a census pass", Duration::from_secs(30), || async {
        metric_value(&daemon.try_get("/metrics").await?, last)
    })
    .await;
    let text = daemon.get("/metrics").await;
    assert_eq!(
        series(&text, r#"llmcache_census_redis_keys{group="chat"}"#),
        1.0
    );
    // memory|usage taken away: the next passes fail; the series stay.
    assert_eq!(
        redis
            .cli(&["ACL", "SETUSER", "census", "-memory|usage"])
            .trim(),
        "OK"
    );
    pipe(&redis, "SET message_store:2 c\n");
    // Two intervals for a pass that fails, not a wait for a change.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let text = daemon.get("/metrics").await;
    assert_eq!(series(&text, last), first, "no success since");
    assert_eq!(
        series(&text, r#"llmcache_census_redis_keys{group="chat"}"#),
        1.0
    );
    let logs = daemon.stop();
    let line = logs
        .lines()
        .find(|l| l.contains("census of Redis failed"))
        .unwrap_or_else(|| panic!("no failed pass logged:\n{logs}"));
    assert!(
        line.contains("NOPERM") && line.contains("+memory|usage"),
        "{line}"
    );
    assert!(
        !logs.contains("census-pw"),
        "the password leaked into the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_collections_by_name_the_rest_as_other() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    // 25 collections of 1 to 25 records.
    for n in 1..=25u64 {
        chroma
            .create_user_collection_of(
                &format!("user_collection_{n:02}"),
                serde_json::json!({"owner": "app"}),
                n,
            )
            .await;
    }
    let (app, _dir) = spawn_app_with_config(&redis, &chroma, CONFIG).await;
    let text = poll("a census of Chroma", Duration::from_secs(30), || async {
        let text = app.metrics().await;
        metric_value(&text, "llmcache_census_chroma_collections")
            .filter(|n| *n >= 26.0)
            .map(|_| text)
    })
    .await;
    // The canary's own collection, and the 20 largest, by name.
    assert_eq!(
        series(
            &text,
            r#"llmcache_census_chroma_records{collection="llmcache_probe_memories"}"#
        ),
        0.0
    );
    for n in 6..=25 {
        let name =
            format!(r#"llmcache_census_chroma_records{{collection="user_collection_{n:02}"}}"#);
        assert_eq!(series(&text, &name), n as f64, "{name}");
    }
    assert_eq!(
        metric_value(
            &text,
            r#"llmcache_census_chroma_records{collection="user_collection_05"}"#
        ),
        None
    );
    assert_eq!(
        series(
            &text,
            r#"llmcache_census_chroma_records{collection="other"}"#
        ),
        15.0
    );
    assert_eq!(series(&text, "llmcache_census_chroma_collections"), 26.0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_census_alerts_fire_on_messy_data_and_stay_silent_on_tidy_data() {
    let chroma = ChromaServer::start();
    let (messy, tidy) = (RedisServer::start(), RedisServer::start());
    let mut commands = String::new();
    for i in 0..20 {
        // No TTL; one history of 1,500 messages.
        let length = if i == 0 { 1500 } else { 10 };
        commands.push_str(&format!("RPUSH message_store:{i}"));
        for m in 0..length {
            commands.push_str(&format!(" m{m}"));
        }
        commands.push('\n');
    }
    pipe(&messy, &commands);
    let tidy_commands: String = (0..20)
        .map(|i| format!("RPUSH message_store:{i} a b c\nEXPIRE message_store:{i} 3600\n"))
        .collect();
    pipe(&tidy, &tidy_commands);
    let (messy_app, _a) = spawn_app_with_config(&messy, &chroma, CONFIG).await;
    let (tidy_app, _b) = spawn_app_with_config(&tidy, &chroma, CONFIG).await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    let fast = "{ interval: '1s', census+: { 'for': '3s', interval: '2s' } }";
    std::fs::write(&rules, crate::helpers::render_mixin(fast, "rules").unwrap()).unwrap();
    let scrape = format!(
        "scrape_configs:\n  - job_name: llm-cache-exporter\n    static_configs:\n      - targets: ['{}', '{}']\n",
        messy_app.addr, tidy_app.addr
    );
    let prometheus = crate::helpers::PrometheusServer::start_scraping(&scrape, &[rules]);
    let messy_instance = messy_app.addr.to_string();
    for alert in ["LLMCacheChatKeysWithoutTTL", "LLMCacheChatHistoryUnbounded"] {
        let firing = format!(
            r#"ALERTS{{alertname="{alert}",alertstate="firing",instance="{messy_instance}",group="chat"}}"#
        );
        prometheus.wait_for_any(&firing).await;
    }
    let tidy_alerts = prometheus
        .query(&format!(
            r#"ALERTS{{instance="{}",alertname=~"LLMCacheChat.*"}}"#,
            tidy_app.addr
        ))
        .await;
    assert_eq!(
        tidy_alerts,
        serde_json::json!([]),
        "the tidy data set pages nothing"
    );
    let stale = prometheus
        .query(r#"ALERTS{alertname="LLMCacheCensusStale"}"#)
        .await;
    assert_eq!(stale, serde_json::json!([]), "both censuses succeed");
    messy_app.stop().await;
    tidy_app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_deleted_and_added_during_a_pass_are_no_error() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let commands: String = (0..10_000)
        .map(|i| format!("SET message_store:{i} v\n"))
        .collect();
    pipe(&redis, &commands);
    // 2,000 keys a second: a pass takes about 5 s.
    let config = CONFIG
        .replace("interval = \"2s\"", "interval = \"1h\"")
        .replace("max_keys_per_second = 0", "max_keys_per_second = 2000");
    let (app, _dir) = spawn_app_with_config(&redis, &chroma, &config).await;
    // While it runs: 1,000 keys go, 1,000 others come.
    app.wait_for_at_least(
        "llmcache_census_keys_scanned_total",
        1000.0,
        Duration::from_secs(10),
    )
    .await;
    let churn: String = (0..1000)
        .map(|i| {
            format!(
                "DEL message_store:{}\nSET message_store:new:{i} v\n",
                9000 + i
            )
        })
        .collect();
    pipe(&redis, &churn);
    let keys = app
        .wait_for_at_least(
            r#"llmcache_census_redis_keys{group="chat"}"#,
            1.0,
            Duration::from_secs(30),
        )
        .await;
    eprintln!("{keys} chat keys counted while 1,000 went and 1,000 came");
    assert!((9000.0..=11_000.0).contains(&keys), "{keys}");
    let text = app.metrics().await;
    assert!(metric_value(
        &text,
        r#"llmcache_census_last_success_timestamp_seconds{store="redis"}"#
    )
    .is_some());
    app.stop().await;
}
