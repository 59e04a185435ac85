//! The census of probed targets (a module's census): each target's last
//! complete pass in its `/probe` answer, nothing of it on `/metrics`, the
//! census stopped once the target goes unprobed, and the passes of many
//! targets taking turns.

use std::time::Duration;

use crate::census::{pipe, quantile};
use crate::fleet::probe;
use crate::helpers::{
    metric_value, poll, series, spawn_app_with_config, write_file, ChromaServer, RedisServer,
    TestApp,
};

/// `/probe?target=&module=`: the body, once the probe has succeeded and its
/// answer holds `wanted`.
pub(crate) async fn probe_until(app: &TestApp, target: &str, module: &str, wanted: &str) -> String {
    let query = format!("target={target}&module={module}");
    poll(
        &format!("{wanted} in the probe of {target}"),
        Duration::from_secs(30),
        || async {
            let (_, body) = probe(app, &query).await;
            assert_eq!(series(&body, "probe_success"), 1.0, "{body}");
            metric_value(&body, wanted).map(|_| body)
        },
    )
    .await
}

/// `INFO commandstats`' calls of `command` on `redis`.
pub(crate) fn calls(redis: &RedisServer, command: &str) -> u64 {
    let prefix = format!("cmdstat_{command}:calls=");
    redis
        .cli(&["INFO", "commandstats"])
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// A quiet canary (reads only) with no census of its own; a census in the
/// `redis` and `chroma` modules, none in `plain`.
const MODULES: &str = "[workload]\nrate = 1.0\n[workload.mix]\nget_chat_history = 1\n\
    store_chat_entry = 0\nquery_similar_memories = 0\nstore_memory = 0\n\
    [census]\ninterval = \"0s\"\n\
    [probe]\npool_idle_timeout = \"3s\"\n\
    [probe.modules.redis]\nprober = \"redis\"\nallowed_targets = [\"127.0.0.1/32\"]\n\
    [probe.modules.redis.census]\ninterval = \"1s\"\n\
    [probe.modules.redis.census.redis]\nmax_keys_per_second = 0\nallow_touch = true\n\
    [[probe.modules.redis.census.redis.groups]]\nname = \"chat\"\npattern = \"message_store:*\"\n\
    [[probe.modules.redis.census.redis.groups]]\nname = \"probe\"\npattern = \"llmcache:*\"\n\
    [probe.modules.plain]\nprober = \"redis\"\nallowed_targets = [\"127.0.0.1/32\"]\n\
    [probe.modules.chroma]\nprober = \"chroma\"\nallowed_targets = [\"127.0.0.1/32\"]\n\
    [probe.modules.chroma.census]\ninterval = \"1s\"\n\
    [probe.modules.chroma.census.chroma]\ntop_collections = 2\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_probed_target_gets_its_own_census_in_its_probe() {
    let canary = RedisServer::start();
    let chroma = ChromaServer::start();
    let (a, b) = (RedisServer::start(), RedisServer::start());
    // A: 120 histories of 1 to 40 messages, every fourth without a TTL, and
    // 7 other keys; B: 15 histories of 3 messages.
    let mut commands = String::new();
    let mut lengths = Vec::new();
    for i in 0..120u64 {
        let length = i % 40 + 1;
        commands.push_str(&format!("RPUSH message_store:{i}"));
        for m in 0..length {
            commands.push_str(&format!(" m{m}"));
        }
        commands.push('\n');
        if i % 4 != 0 {
            commands.push_str(&format!("EXPIRE message_store:{i} 3600\n"));
        }
        lengths.push(length);
    }
    for i in 0..7 {
        commands.push_str(&format!("SET misc:{i} v\n"));
    }
    pipe(&a, &commands);
    let commands: String = (0..15)
        .map(|i| format!("RPUSH message_store:b{i} x y z\n"))
        .collect();
    pipe(&b, &commands);
    // Three collections of 3, 5 and 9 records in the target Chroma.
    for n in [3u64, 5, 9] {
        chroma
            .create_user_collection_of(
                &format!("app_memories_{n}"),
                serde_json::json!({"owner": "app"}),
                n,
            )
            .await;
    }
    let (app, _dir) = spawn_app_with_config(&canary, &chroma, MODULES).await;
    let target_a = format!("127.0.0.1:{}", a.port);
    let target_b = format!("127.0.0.1:{}", b.port);
    let chat = r#"llmcache_census_redis_keys{group="chat"}"#;

    let body = probe_until(&app, &target_a, "redis", chat).await;
    assert_eq!(series(&body, chat), 120.0);
    assert_eq!(
        series(
            &body,
            r#"llmcache_census_redis_keys_without_ttl{group="chat"}"#
        ),
        30.0
    );
    assert_eq!(
        series(&body, r#"llmcache_census_redis_keys{group="other"}"#),
        7.0
    );
    // The probe's own key (under llmcache:), once the first probe wrote it.
    assert!(series(&body, r#"llmcache_census_redis_keys{group="probe"}"#) <= 1.0);
    for (q, label) in [(0.5, "0.5"), (0.99, "0.99"), (1.0, "1")] {
        assert_eq!(
            series(
                &body,
                &format!(r#"llmcache_census_redis_length{{group="chat",quantile="{label}"}}"#)
            ),
            quantile(&mut lengths.clone(), q) as f64,
            "quantile {label}"
        );
    }
    assert!(metric_value(
        &body,
        r#"llmcache_census_last_success_timestamp_seconds{store="redis"}"#
    )
    .is_some());
    assert!(series(&body, "llmcache_census_keys_scanned_total") >= 127.0);
    assert_eq!(
        metric_value(
            &body,
            r#"llmcache_census_pass_duration_seconds{store="chroma"}"#
        ),
        None,
        "a redis module counts no Chroma"
    );

    // B has a census of its own.
    let body = probe_until(&app, &target_b, "redis", chat).await;
    assert_eq!(series(&body, chat), 15.0);
    assert_eq!(
        series(
            &body,
            r#"llmcache_census_redis_length{group="chat",quantile="1"}"#
        ),
        3.0
    );

    // A's next passes see what was added; the probe returns a complete one.
    pipe(
        &a,
        "RPUSH message_store:new a\nRPUSH message_store:new2 a\n",
    );
    let body = poll(
        "A's census of 122 histories",
        Duration::from_secs(30),
        || async {
            let body = probe_until(&app, &target_a, "redis", chat).await;
            (series(&body, chat) == 122.0).then_some(body)
        },
    )
    .await;
    assert_eq!(
        series(&body, r#"llmcache_census_redis_keys{group="other"}"#),
        7.0
    );

    // Chroma: the two largest by name, the probe's own collection, the rest
    // as other.
    let chroma_target = format!("127.0.0.1:{}", chroma.port);
    let records = |c: &str| format!(r#"llmcache_census_chroma_records{{collection="{c}"}}"#);
    let body = probe_until(&app, &chroma_target, "chroma", &records("app_memories_9")).await;
    assert_eq!(series(&body, &records("app_memories_9")), 9.0);
    assert_eq!(series(&body, &records("app_memories_5")), 5.0);
    assert_eq!(metric_value(&body, &records("app_memories_3")), None);
    assert!(metric_value(&body, &records("llmcache_probe_fleet")).is_some());
    // app_memories_3 and the canary's own, which it writes nothing to.
    let collections = series(&body, "llmcache_census_chroma_collections");
    assert!(collections >= 4.0, "{collections}");
    assert_eq!(series(&body, &records("other")), 3.0);

    // A module without a census adds none; /metrics carries no target's.
    let plain = probe(&app, &format!("target={target_a}&module=plain"))
        .await
        .1;
    assert_eq!(series(&plain, "probe_success"), 1.0, "{plain}");
    assert!(!plain.contains("llmcache_census_"), "{plain}");
    let metrics = app.metrics().await;
    assert!(
        !metrics.contains("llmcache_census_redis_keys"),
        "a target's census on /metrics"
    );
    // /metrics counts the censuses (A's and B's) and their passes.
    let running = r#"llmcache_fleet_censuses{module="redis"}"#;
    assert_eq!(series(&metrics, running), 2.0, "{metrics}");
    let passed = r#"llmcache_fleet_census_passes_total{module="redis",result="success"}"#;
    assert!(series(&metrics, passed) >= 2.0, "{metrics}");
    // debug=true says where the census stands.
    let debug = probe(&app, &format!("target={target_a}&module=redis&debug=true"))
        .await
        .1;
    assert!(debug.contains("census: redis: last pass took"), "{debug}");

    // Unprobed for pool_idle_timeout (3 s), A's census stops: SCAN calls
    // stop growing although no other probe comes to evict it.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let before = calls(&a, "scan");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(calls(&a, "scan"), before, "A's census still runs");
    assert!(before > 0);
    assert_eq!(
        series(&app.metrics().await, running),
        0.0,
        "stopped, still counted"
    );
    app.stop().await;
}

/// `(start, end)` in seconds of the day of every pass a census log line
/// reports done for `store` ("Redis"): its `ts`, less its `seconds`.
fn passes(logs: &str, store: &str) -> Vec<(f64, f64)> {
    let field = |line: &str, name: &str| -> Option<String> {
        let rest = line.split(&format!(" {name}=")).nth(1)?;
        Some(rest.split(' ').next()?.trim_matches('"').to_owned())
    };
    let mut passes: Vec<(f64, f64)> = logs
        .lines()
        .filter(|l| l.contains(&format!("census of {store} of target")) && l.contains(" done"))
        .filter_map(|line| {
            let ts = line.strip_prefix("ts=")?.split(' ').next()?;
            let time = ts.split('T').nth(1)?.trim_end_matches('Z');
            let mut hms = time.split(':').map(|p| p.parse::<f64>().ok());
            let end = hms.next()?? * 3600.0 + hms.next()?? * 60.0 + hms.next()??;
            let seconds: f64 = field(line, "seconds")?.parse().ok()?;
            Some((end - seconds, end))
        })
        .collect();
    passes.sort_by(|a, b| a.0.total_cmp(&b.0));
    passes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_passes_of_many_targets_take_turns() {
    let canary = RedisServer::start();
    let chroma = ChromaServer::start();
    let targets: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let commands: String = (0..1500).map(|i| format!("SET k:{i} v\n")).collect();
    for target in &targets {
        pipe(target, &commands);
    }
    // 1,500 keys at 3,000 a second: half a second a pass, one at a time.
    let config = "[workload]\nrate = 1.0\n[census]\ninterval = \"0s\"\n\
        [probe]\nmax_concurrent_censuses = 1\n\
        [probe.modules.redis]\nprober = \"redis\"\nallowed_targets = [\"127.0.0.1/32\"]\n\
        [probe.modules.redis.census]\ninterval = \"1s\"\n\
        [probe.modules.redis.census.redis]\nmax_keys_per_second = 3000\n";
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "config.toml", config);
    let daemon = crate::helpers::Daemon::start(
        &[
            "--config.file".into(),
            path,
            "--redis.url".into(),
            canary.url(),
            "--chroma.url".into(),
            chroma.url(),
        ],
        dir.path(),
    );
    poll("the daemon", Duration::from_secs(30), || {
        daemon.try_get("/metrics")
    })
    .await;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        for target in &targets {
            daemon
                .get(&format!(
                    "/probe?target=127.0.0.1:{}&module=redis",
                    target.port
                ))
                .await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let logs = daemon.stop();
    let passes = passes(&logs, "Redis");
    assert!(passes.len() >= 6, "{} passes:\n{logs}", passes.len());
    for pair in passes.windows(2) {
        let ((_, end), (start, _)) = (pair[0], pair[1]);
        assert!(
            start >= end - 0.02,
            "two passes overlapped ({pair:?}):\n{logs}"
        );
    }
    // Each took about half a second: the budget, not the wait for a turn.
    for (start, end) in &passes {
        assert!((0.3..1.5).contains(&(end - start)), "{passes:?}");
    }
}
