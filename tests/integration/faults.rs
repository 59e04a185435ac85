//! Faults a production canary meets, each with the same checks: no panic,
//! `backend_up` and `/health` say what happened, errors are counted by kind,
//! and the daemon recovers without a restart. The outages also watch the
//! daemon's RSS, which must stay flat (under 5 MB of growth) for 60 s.
//!
//! `LLMCACHE_TEST_OUTAGE_SECONDS` shortens the outages while iterating
//! locally; CI runs the full 60 s.

use std::time::Duration;

use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{
    metric_value, poll, series, spawn_app, ChromaServer, Daemon, RedisServer, TestApp,
};
use crate::ingress::{Fault, Ingress};

const RSS: &str = "process_resident_memory_bytes";
const RSS_GROWTH_MAX: f64 = 5.0 * 1024.0 * 1024.0;

fn outage() -> Duration {
    let seconds = std::env::var("LLMCACHE_TEST_OUTAGE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(seconds)
}

fn errors(text: &str, operation: &str, kind: &str) -> f64 {
    series(
        text,
        &format!("llmcache_operation_errors_total{{operation=\"{operation}\",kind=\"{kind}\"}}"),
    )
}

/// Operations that did not fail: `success` for writes, a cache hit or miss
/// for reads. Each operation exports only the outcomes it can have.
fn successes(text: &str, operation: &str) -> f64 {
    let outcomes: &[&str] = if operation.starts_with("store_") {
        &["success"]
    } else {
        &["cache_hit", "cache_miss"]
    };
    outcomes
        .iter()
        .map(|outcome| {
            series(
                text,
                &format!(
                    "llmcache_operation_duration_seconds_count{{operation=\"{operation}\",outcome=\"{outcome}\"}}"
                ),
            )
        })
        .sum()
}

/// The daemon as a process (so its RSS is its own), with a small cache so
/// the cache filling up is not mistaken for growth.
fn start_daemon(redis_url: &str, chroma_url: &str, dir: &std::path::Path) -> Daemon {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        "[cache]\nmemory_budget = \"2MiB\"\n[workload]\nrate = 50.0\n",
    )
    .unwrap();
    Daemon::start(
        &[
            "--redis.url".into(),
            redis_url.into(),
            "--chroma.url".into(),
            chroma_url.into(),
            "--config.file".into(),
            config.display().to_string(),
        ],
        dir,
    )
}

/// Samples RSS every second for `outage()`; returns the most it grew.
async fn rss_growth_during_outage(daemon: &Daemon, baseline: f64) -> f64 {
    let mut peak: f64 = baseline;
    let deadline = tokio::time::Instant::now() + outage();
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let text = daemon.get("/metrics").await;
        peak = peak.max(series(&text, RSS));
    }
    peak - baseline
}

/// Waits for some traffic, then a little more so allocations settle.
async fn warm_up(daemon: &Daemon) -> f64 {
    poll("warm-up traffic", Duration::from_secs(30), || async {
        let text = daemon.try_get("/metrics").await?;
        (successes(&text, "get_chat_history") >= 100.0 && successes(&text, "store_memory") >= 10.0)
            .then_some(())
    })
    .await;
    // The baseline is taken once RSS has settled: two samples a second
    // apart within 64 KiB of each other.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut last = series(&daemon.get("/metrics").await, RSS);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = series(&daemon.get("/metrics").await, RSS);
        if (now - last).abs() < 65_536.0 {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "RSS did not settle within 30 s: {last} then {now}"
        );
        last = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_keeps_rss_flat_counts_errors_and_recovers() {
    let redis = std::cell::RefCell::new(RedisServer::start());
    let chroma = ChromaServer::start();
    let url = redis.borrow().url();
    let outage = Outage {
        down: "redis",
        up: "chroma",
        operation: "store_chat_entry",
    };
    outage
        .run(
            &url,
            &chroma.url(),
            || redis.borrow_mut().kill(),
            || redis.borrow_mut().restart(),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chroma_outage_keeps_rss_flat_counts_errors_and_recovers() {
    let redis = RedisServer::start();
    let chroma = std::cell::RefCell::new(ChromaServer::start());
    let url = chroma.borrow().url();
    let outage = Outage {
        down: "chroma",
        up: "redis",
        operation: "store_memory",
    };
    outage
        .run(
            &redis.url(),
            &url,
            || chroma.borrow_mut().kill(),
            || chroma.borrow_mut().restart(),
        )
        .await;
}

/// One backend down for [`outage()`] while the other stays up.
struct Outage {
    /// The `backend` label of the one taken down, and of the one left up.
    down: &'static str,
    up: &'static str,
    /// An operation that needs the one taken down.
    operation: &'static str,
}

impl Outage {
    async fn run(
        &self,
        redis_url: &str,
        chroma_url: &str,
        kill: impl FnOnce(),
        restart: impl FnOnce(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let daemon = start_daemon(redis_url, chroma_url, dir.path());
        let baseline = warm_up(&daemon).await;
        let health_key = |backend: &str| {
            if backend == "chroma" {
                "chromadb"
            } else {
                backend
            }
            .to_owned()
        };

        kill();
        let growth = rss_growth_during_outage(&daemon, baseline).await;
        let text = daemon.get("/metrics").await;
        let up = |backend: &str| format!("llmcache_backend_up{{backend=\"{backend}\"}}");
        assert_eq!(series(&text, &up(self.down)), 0.0);
        assert!(errors(&text, self.operation, "connection") > 0.0, "{text}");
        let health = daemon.get("/health").await;
        for (backend, status) in [(self.down, "unhealthy"), (self.up, "healthy")] {
            let wanted = format!("\"{}\":{{\"status\":\"{status}\"", health_key(backend));
            assert!(health.contains(&wanted), "{wanted} in {health}");
        }

        restart();
        let before = successes(&text, self.operation);
        poll(
            &format!("{} succeeding again", self.operation),
            Duration::from_secs(30),
            || async {
                let text = daemon.get("/metrics").await;
                (metric_value(&text, &up(self.down)) == Some(1.0)
                    && successes(&text, self.operation) > before)
                    .then_some(())
            },
        )
        .await;
        let logs = daemon.stop();
        assert!(!logs.contains("panicked"), "{logs}");
        eprintln!(
            "RSS {:.1} MB before a {:?} {} outage, grew at most {:.2} MB",
            baseline / 1048576.0,
            outage(),
            self.down,
            growth / 1048576.0
        );
        assert!(
            growth < RSS_GROWTH_MAX,
            "RSS grew {:.1} MB during a {:?} {} outage",
            growth / 1048576.0,
            outage(),
            self.down
        );
    }
}

async fn wait_chroma(app: &TestApp, up: f64, details: &str) -> String {
    poll(
        &format!("chroma up={up} with details containing {details:?}"),
        Duration::from_secs(20),
        || async {
            let (_, health) = app.health().await;
            let seen = health["chromadb"]["details"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            (app.metric(r#"llmcache_backend_up{backend="chroma"}"#).await == Some(up)
                && seen.contains(details))
            .then_some(seen)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chroma_answering_500s_then_garbage_is_counted_by_kind_and_recovers() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let ingress = Ingress::plain(&chroma.url()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[workload]\nrate = 50.0\n").unwrap();
    let app = spawn_app(&[
        "--redis.url".into(),
        redis.url(),
        "--chroma.url".into(),
        ingress.url(),
        "--config.file".into(),
        config.display().to_string(),
    ])
    .await;
    app.wait_backends_up().await;

    ingress.inject(Fault::ServerError);
    wait_chroma(&app, 0.0, "500").await;
    let text = app.metrics().await;
    poll("server errors counted", Duration::from_secs(10), || async {
        let text = app.metrics().await;
        (errors(&text, "store_memory", "server") > 0.0).then_some(())
    })
    .await;
    assert_eq!(errors(&text, "store_memory", "protocol"), 0.0);

    ingress.inject(Fault::Garbage);
    wait_chroma(&app, 0.0, "").await;
    poll(
        "protocol errors counted",
        Duration::from_secs(10),
        || async {
            let text = app.metrics().await;
            (errors(&text, "store_memory", "protocol") > 0.0).then_some(())
        },
    )
    .await;
    // Redis never noticed.
    assert_eq!(
        app.series(r#"llmcache_backend_up{backend="redis"}"#).await,
        1.0
    );

    ingress.inject(Fault::None);
    wait_chroma(&app, 1.0, "owned").await;
    let before = successes(&app.metrics().await, "store_memory");
    poll(
        "store_memory succeeding again",
        Duration::from_secs(10),
        || async { (successes(&app.metrics().await, "store_memory") > before).then_some(()) },
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_embeddings_endpoint_times_out_and_recovers() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let server = MockServer::start().await;
    let answer = |delay: Duration| {
        ResponseTemplate::new(200)
            .set_body_json(serde_json::json!({"object": "list", "data": [
                {"object": "embedding", "index": 0, "embedding": vec![0.125; 8]}]}))
            .set_delay(delay)
    };
    Mock::given(method("POST"))
        .respond_with(answer(Duration::from_secs(30)))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[embeddings]\nprovider = \"openai\"\nurl = \"{}/v1\"\nmodel = \"m\"\ndimensions = 8\n\
             timeout = \"300ms\"\n[workload]\nrate = 50.0\n",
            server.uri()
        ),
    )
    .unwrap();
    let app = spawn_app(&[
        "--redis.url".into(),
        redis.url(),
        "--chroma.url".into(),
        chroma.url(),
        "--config.file".into(),
        config.display().to_string(),
    ])
    .await;
    let up = r#"llmcache_backend_up{backend="embeddings"}"#;
    app.wait_for_metric(up, 0.0, Duration::from_secs(20)).await;
    poll(
        "embedding timeouts counted",
        Duration::from_secs(20),
        || async {
            let text = app.metrics().await;
            (errors(&text, "query_similar_memories", "timeout") > 0.0
                && metric_value(&text, "llmcache_workload_inflight").unwrap_or(99.0) <= 16.0)
                .then_some(())
        },
    )
    .await;
    let (_, health) = app.health().await;
    assert_eq!(health["embeddings"]["status"], "unhealthy", "{health}");
    // Chat traffic is not held up behind the hung embedder.
    let chat = successes(&app.metrics().await, "get_chat_history");
    poll(
        "chat reads while the embedder hangs",
        Duration::from_secs(10),
        || async { (successes(&app.metrics().await, "get_chat_history") > chat).then_some(()) },
    )
    .await;

    server.reset().await;
    Mock::given(method("POST"))
        .respond_with(answer(Duration::ZERO))
        .mount(&server)
        .await;
    app.wait_for_metric(up, 1.0, Duration::from_secs(20)).await;
    let (_, health) = app.health().await;
    assert_eq!(health["embeddings"]["status"], "healthy", "{health}");
    app.stop().await;
}

/// Production Redis often closes idle clients (`timeout 300`; here 1 s), as
/// do proxies and NATs. The pooled connections that were closed while idle
/// must be replaced quietly, not counted as errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_redis_closed_while_idle_are_replaced_without_errors() {
    let redis = RedisServer::start_with(&["--timeout", "1"]);
    let chroma = ChromaServer::start();
    // One chat operation every 1.5 s (and a probe every 2 s): the pooled
    // connection has always been idle longer than Redis's timeout.
    let config = "[workload]\nrate = 0.67\n[workload.mix]\nget_chat_history = 0.5\n\
                  store_chat_entry = 0.5\nquery_similar_memories = 0.0\nstore_memory = 0.0\n";
    let (app, _dir) = crate::helpers::spawn_app_with_config(&redis, &chroma, config).await;
    app.wait_backends_up().await;
    let text = poll("four chat operations", Duration::from_secs(20), || async {
        let text = app.metrics().await;
        let done = successes(&text, "get_chat_history") + successes(&text, "store_chat_entry");
        (done >= 4.0).then_some(text)
    })
    .await;
    for operation in ["get_chat_history", "store_chat_entry"] {
        for kind in ["connection", "timeout", "protocol", "server"] {
            assert_eq!(errors(&text, operation, kind), 0.0, "{operation} {kind}");
        }
    }
    assert_eq!(
        series(&text, r#"llmcache_backend_up{backend="redis"}"#),
        1.0
    );
    let clients = redis.cli(&["INFO", "stats"]);
    let closed: u64 = clients
        .lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        closed >= 3,
        "Redis did close idle connections: {closed} connections received"
    );
    app.stop().await;
}
