//! `/probe` against real targets: Redis (with per-target passwords from a
//! credentials file, at OOM, stalled), Chroma, and an application's
//! `/health`; the refusals (400, 403, 503) and `debug=true`.

use std::path::Path;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::helpers::{
    metric_value, series, spawn_app, write_file, AppServer, ChromaServer, RedisServer, TestApp,
};

/// A module of each prober, allowed on loopback only, and the daemon's own
/// canary pointed at `redis` and `chroma`.
fn config(dir: &Path, extra: &str) -> String {
    format!(
        "[probe]\nmax_concurrent = 4\n\
         [probe.modules.redis]\nprober = \"redis\"\nallowed_targets = [\"127.0.0.1/32\"]\n\
         credentials_file = \"{}\"\n\
         [probe.modules.chroma]\nprober = \"chroma\"\nallowed_targets = [\"127.0.0.0/8\", \"localhost\"]\n\
         [probe.modules.app]\nprober = \"app\"\nallowed_targets = [\"127.0.0.1/32\"]\n\
         [probe.modules.open]\nprober = \"redis\"\n{extra}",
        dir.join("credentials.toml").display()
    )
}

async fn start(redis: &RedisServer, chroma: &ChromaServer, extra: &str) -> (TestApp, TempDir) {
    let dir = TempDir::new().unwrap();
    write_file(dir.path(), "credentials.toml", "");
    let path = write_file(dir.path(), "config.toml", &config(dir.path(), extra));
    let app = spawn_app(&[
        "--redis.url".into(),
        redis.url(),
        "--chroma.url".into(),
        chroma.url(),
        "--config.file".into(),
        path,
    ])
    .await;
    (app, dir)
}

/// `/probe` with these parameters: the status and body.
pub(crate) async fn probe(app: &TestApp, query: &str) -> (u16, String) {
    let response = app
        .http
        .get(app.url(&format!("/probe?{query}")))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_prober_probes_its_targets_with_their_own_credentials() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let locked = RedisServer::start_with(&["--requirepass", "s3cret-6401"]);
    let app_server = AppServer::start(&[]);
    let (app, dir) = start(&redis, &chroma, "").await;
    write_file(dir.path(), "locked-password", "s3cret-6401\n");
    write_file(
        dir.path(),
        "credentials.toml",
        &format!(
            "[[target]]\nmatch = \"127.0.0.1:{}\"\npassword_file = \"locked-password\"\n",
            locked.port
        ),
    );

    // Redis: the round trips, the INFO series of the node, success.
    let (status, text) = probe(
        &app,
        &format!("module=redis&target=127.0.0.1:{}", redis.port),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(series(&text, "probe_success"), 1.0, "{text}");
    assert!(series(&text, "probe_duration_seconds") > 0.0);
    let node = format!("127.0.0.1:{}", redis.port);
    for line in [
        r#"llmcache_probe_request_duration_seconds{request="ping"}"#.to_owned(),
        r#"llmcache_probe_request_max_duration_seconds{request="store_entry"}"#.to_owned(),
        r#"llmcache_probe_request_duration_seconds{request="lrange"}"#.to_owned(),
        format!(r#"llmcache_redis_used_memory_bytes{{node="{node}"}}"#),
        format!(r#"llmcache_redis_keyspace_hits_total{{node="{node}"}}"#),
        format!(r#"llmcache_redis_connected_clients{{node="{node}"}}"#),
    ] {
        assert!(
            metric_value(&text, &line).is_some(),
            "{line} not in\n{text}"
        );
    }
    // The probe key lives under the prefix, with a TTL.
    let keys = redis.cli(&["--scan", "--pattern", "llmcache:probe:fleet:*"]);
    let key = keys.lines().next().expect("a probe key");
    let ttl: i64 = redis.cli(&["PTTL", key]).trim().parse().unwrap();
    assert!(ttl > 0, "{key} has no TTL");

    // A password from the credentials file; without it the same Redis fails.
    let locked_target = format!("module=redis&target=127.0.0.1:{}", locked.port);
    let (_, text) = probe(&app, &locked_target).await;
    assert_eq!(series(&text, "probe_success"), 1.0, "{text}");
    write_file(dir.path(), "credentials.toml", "# emptied\n");
    let (_, text) = probe(&app, &locked_target).await;
    assert_eq!(series(&text, "probe_success"), 0.0, "{text}");

    // Chroma: heartbeat, the marked collection, recall and visibility.
    let chroma_target = chroma
        .url()
        .replace("http://", "")
        .trim_end_matches('/')
        .to_owned();
    let (status, text) = probe(&app, &format!("module=chroma&target={chroma_target}")).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(series(&text, "probe_success"), 1.0, "{text}");
    assert_eq!(series(&text, "llmcache_vector_recall_ratio"), 1.0, "{text}");
    assert!(series(&text, "llmcache_vector_write_visibility_seconds") >= 0.0);
    assert_eq!(
        series(&text, "llmcache_chroma_collection_records"),
        16.0,
        "{text}"
    );
    let collection = chroma.collection("llmcache_probe_fleet").await;
    assert_eq!(collection["metadata"]["created_by"], "llm-cache-exporter");

    // The application's own /health.
    let (status, text) = probe(&app, &format!("module=app&target={}", app_server.target())).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(series(&text, "probe_success"), 1.0, "{text}");
    assert_eq!(series(&text, "llmcache_app_cache_hit_ratio"), 0.9, "{text}");
    assert_eq!(
        series(&text, r#"llmcache_app_status{status="healthy"}"#),
        1.0
    );
    assert_eq!(
        series(&text, r#"llmcache_app_component_up{component="redis"}"#),
        1.0
    );
    assert!(series(&text, "llmcache_app_cache_hits_total") >= 90.0);

    let metrics = app.metrics().await;
    assert!(
        series(
            &metrics,
            r#"llmcache_probes_total{module="redis",result="success"}"#
        ) >= 2.0
    );
    assert_eq!(
        series(
            &metrics,
            r#"llmcache_probes_total{module="redis",result="failure"}"#
        ),
        1.0
    );
    assert!(
        series(
            &metrics,
            r#"llmcache_probe_pool_connections{prober="redis"}"#
        ) >= 2.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_refusals_and_debug_without_secrets() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let (app, dir) = start(&redis, &chroma, "").await;
    write_file(dir.path(), "pw", "hunter2-secret\n");
    write_file(
        dir.path(),
        "credentials.toml",
        "[[target]]\nmatch = \"127.0.0.1:*\"\npassword_file = \"pw\"\n",
    );
    let cases = [
        ("target=127.0.0.1:6379", 400, "parameter module"),
        ("module=redis", 400, "parameter target"),
        (
            "module=nosuch&target=127.0.0.1:6379",
            400,
            "parameter module",
        ),
        (
            "module=redis&target=http://127.0.0.1:1",
            400,
            "parameter target",
        ),
        (
            "module=redis&target=10.1.2.3:6379",
            403,
            "probe.modules.redis.allowed_targets",
        ),
        (
            "module=redis&target=redis.example.com:6379",
            403,
            "allowed_targets",
        ),
        (
            "module=open&target=127.0.0.1:6379",
            403,
            "probe.modules.open.allowed_targets",
        ),
    ];
    for (query, status, names) in cases {
        let (got, body) = probe(&app, query).await;
        assert_eq!(got, status, "{query}: {body}");
        assert!(
            body.contains(names),
            "{query}: {body} does not name {names}"
        );
    }
    // debug=true: the log, the metrics, the module; no secret.
    let (status, body) = probe(
        &app,
        &format!("module=redis&target=127.0.0.1:{}&debug=true", redis.port),
    )
    .await;
    assert_eq!(status, 200);
    for part in [
        "Logs for the probe:",
        "Metrics that would have been returned:",
        "probe_success",
        "Module configuration",
        "round_trips = 5",
    ] {
        assert!(body.contains(part), "{part} not in\n{body}");
    }
    assert!(!body.contains("hunter2"), "{body}");
    let metrics = app.metrics().await;
    assert_eq!(
        series(
            &metrics,
            r#"llmcache_probes_total{module="redis",result="refused"}"#
        ),
        2.0
    );
    assert!(!metrics.contains("hunter2"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_fails_with_oom_and_a_stalled_one_answers_within_the_scrape_timeout() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let full = RedisServer::start_with(&["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"]);
    full.fill_until_oom();
    let stalled = RedisServer::start();
    let (app, _dir) = start(&redis, &chroma, "").await;

    let (_, text) = probe(
        &app,
        &format!("module=redis&target=127.0.0.1:{}", full.port),
    )
    .await;
    assert_eq!(series(&text, "probe_success"), 0.0, "{text}");
    assert!(
        series(&text, r#"llmcache_probe_error_replies{code="OOM"}"#) >= 1.0,
        "{text}"
    );

    stalled.stall();
    let started = Instant::now();
    let response = app
        .http
        .get(app.url(&format!(
            "/probe?module=redis&target=127.0.0.1:{}",
            stalled.port
        )))
        .header("X-Prometheus-Scrape-Timeout-Seconds", "2")
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    let text = response.text().await.unwrap();
    stalled.resume();
    eprintln!("a stalled Redis's probe answered in {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(series(&text, "probe_success"), 0.0, "{text}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_concurrent_probes_are_turned_away_at_once() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let stalled = RedisServer::start();
    let (app, _dir) = start(&redis, &chroma, "").await;
    stalled.stall();
    // 200 probes of a stalled Redis, each holding its slot for 1.5 s.
    let url = app.url(&format!(
        "/probe?module=redis&target=127.0.0.1:{}",
        stalled.port
    ));
    let probes: Vec<_> = (0..200)
        .map(|_| {
            let (http, url) = (app.http.clone(), url.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let response = http
                    .get(&url)
                    .header("X-Prometheus-Scrape-Timeout-Seconds", "2")
                    .send()
                    .await
                    .unwrap();
                (response.status().as_u16(), started.elapsed())
            })
        })
        .collect();
    // /metrics still answers meanwhile.
    tokio::time::sleep(Duration::from_millis(300)).await; // the probes are under way
    let started = Instant::now();
    let metrics = app.metrics().await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(metrics.contains("llmcache_probes_total"));
    let mut ran = 0;
    for probe in probes {
        let (status, took) = probe.await.unwrap();
        match status {
            200 => ran += 1,
            503 => assert!(took < Duration::from_millis(500), "a 503 took {took:?}"),
            other => panic!("status {other}"),
        }
    }
    stalled.resume();
    eprintln!("{ran} of 200 concurrent probes ran, the rest got 503");
    assert!((4..=16).contains(&ran), "{ran} ran with max_concurrent = 4");
    let metrics = app.metrics().await;
    assert_eq!(
        series(
            &metrics,
            r#"llmcache_probes_total{module="redis",result="busy"}"#
        ),
        200.0 - f64::from(ran)
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_or_malformed_application_fails_its_probe() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let unhealthy = AppServer::start(&["--status", "unhealthy", "--http-status", "503"]);
    let malformed = AppServer::start(&["--malformed"]);
    let (app, _dir) = start(&redis, &chroma, "").await;

    // A 503 with a valid document: its series, and failure.
    let (_, text) = probe(&app, &format!("module=app&target={}", unhealthy.target())).await;
    assert_eq!(series(&text, "probe_success"), 0.0, "{text}");
    assert_eq!(
        series(&text, r#"llmcache_app_status{status="unhealthy"}"#),
        1.0,
        "{text}"
    );
    assert_eq!(series(&text, "llmcache_app_cache_hit_ratio"), 0.9, "{text}");

    let (_, body) = probe(
        &app,
        &format!("module=app&target={}&debug=true", malformed.target()),
    )
    .await;
    assert!(body.contains("probe_success 0"), "{body}");
    assert!(body.contains("not JSON"), "{body}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_only_deployment_runs_no_canary_and_reports_no_backends() {
    let target = RedisServer::start();
    let dir = TempDir::new().unwrap();
    write_file(dir.path(), "credentials.toml", "");
    let path = write_file(dir.path(), "config.toml", &config(dir.path(), ""));
    // No Redis or Chroma of its own: nothing listens where the defaults point.
    let app = spawn_app(&[
        "--canary.enabled".into(),
        "false".into(),
        "--redis.url".into(),
        format!("redis://127.0.0.1:{}", crate::helpers::free_port()),
        "--config.file".into(),
        path,
    ])
    .await;
    let (status, health) = app.health().await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health, serde_json::json!({"status": "healthy"}));
    let (_, text) = probe(
        &app,
        &format!("module=redis&target=127.0.0.1:{}", target.port),
    )
    .await;
    assert_eq!(series(&text, "probe_success"), 1.0, "{text}");
    // A window in which a canary would have run operations, not a wait.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = app.metrics().await;
    assert!(!metrics.contains("llmcache_backend_up{"), "{metrics}");
    assert_eq!(series(&metrics, "llmcache_workload_scheduled_total"), 0.0);
    assert_eq!(
        series(
            &metrics,
            r#"llmcache_probes_total{module="redis",result="success"}"#
        ),
        1.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_distinct_targets_keep_the_pool_at_its_cap() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let dir = TempDir::new().unwrap();
    let config = write_file(
        dir.path(),
        "config.toml",
        "[probe]\nmax_concurrent = 64\nmax_pooled_targets = 500\n\
         [probe.modules.wide]\nprober = \"redis\"\nallowed_targets = [\"127.0.0.0/8\"]\ntimeout = \"1s\"\n",
    );
    let app = spawn_app(&[
        "--redis.url".into(),
        redis.url(),
        "--chroma.url".into(),
        chroma.url(),
        "--config.file".into(),
        config,
    ])
    .await;
    let rss = |text: &str| series(text, "process_resident_memory_bytes");
    let before = rss(&app.metrics().await);
    // 10,000 targets nothing listens on: each is a client
    // built, pooled, refused, and in time evicted.
    let targets: Vec<String> = (0..10_000u32)
        .map(|n| format!("127.0.{}.{}:6379", 1 + n / 250, 1 + n % 250))
        .collect();
    let started = Instant::now();
    let url = app.url("/probe?module=wide&target=");
    let mut done = 0;
    for chunk in targets.chunks(32) {
        let mut probes = tokio::task::JoinSet::new();
        for target in chunk {
            let (http, url) = (app.http.clone(), format!("{url}{target}"));
            probes.spawn(async move { http.get(url).send().await.map(|r| r.status().as_u16()) });
        }
        while let Some(status) = probes.join_next().await {
            assert_eq!(status.unwrap().unwrap(), 200);
            done += 1;
        }
    }
    let metrics = app.metrics().await;
    let pooled = series(
        &metrics,
        r#"llmcache_probe_pool_connections{prober="redis"}"#,
    );
    let grown = rss(&metrics) - before;
    eprintln!(
        "{done} probes of distinct targets in {:?}: {pooled} pooled, RSS {:.1} MiB then {:.1} MiB (+{:.1} MiB)",
        started.elapsed(),
        before / 1048576.0,
        rss(&metrics) / 1048576.0,
        grown / 1048576.0
    );
    assert_eq!(
        series(
            &metrics,
            r#"llmcache_probes_total{module="wide",result="failure"}"#
        ),
        10_000.0
    );
    assert!(pooled <= 500.0, "{pooled} pooled past the cap of 500");
    assert!(grown < 64.0 * 1048576.0, "RSS grew {grown} bytes");
    app.stop().await;
}
