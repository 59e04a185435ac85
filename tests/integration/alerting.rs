//! Alerts delivered end to end: real daemons scraped by a real Prometheus
//! loading the mixin's rules, a real Alertmanager with the shipped
//! `deploy/alertmanager.yml`, and a webhook receiver in the test. A Redis
//! that answers PING but refuses writes with OOM pages through the error
//! budget, without `LLMCacheBackendDown`; a healthy canary and an idle one
//! page nothing.

use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::routing::post;
use axum::{Json, Router};
use tempfile::TempDir;

use crate::helpers::{
    free_port, poll, render_mixin, repo, require, spawn_app_with_config, spawn_logged,
    wait_for_ready, ChromaServer, PrometheusServer, RedisServer, TestApp,
};

/// The mixin with windows short enough for a test, and rules evaluated every
/// second: the same rules, from the same mixin, at another scale.
const FAST: &str = r"{
  interval: '1s',
  // A shared test machine can be slow; this test is about errors.
  slo+: { latency+: { threshold: 2.5 }, windows: [
    { severity: 'critical', long: '1m', short: '15s', factor: 14.4, 'for': '5s' },
    { severity: 'warning', long: '2m', short: '30s', factor: 1, 'for': '5s' },
  ] },
  canaryStalled+: { window: '30s', 'for': '5s' },
  backendDown+: { 'for': '5s', flapWindow: '30s' },
  redisMaxmemory+: { window: '30s', 'for': '5s' },
}";

/// What the webhook receiver got: (receiver path, alert status, labels).
type Received = Arc<Mutex<Vec<(String, String, serde_json::Value)>>>;

/// An HTTP server taking Alertmanager's webhook posts on `/{receiver}`.
async fn webhook_receiver() -> (u16, Received) {
    async fn take(
        State(received): State<Received>,
        UrlPath(receiver): UrlPath<String>,
        Json(body): Json<serde_json::Value>,
    ) {
        let mut received = received.lock().unwrap();
        for alert in body["alerts"].as_array().into_iter().flatten() {
            received.push((
                receiver.clone(),
                alert["status"].as_str().unwrap_or_default().to_owned(),
                alert["labels"].clone(),
            ));
        }
    }
    let received = Received::default();
    let app = Router::new()
        .route("/{receiver}", post(take))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, received)
}

/// A real Alertmanager running the shipped config, its webhooks pointed at
/// `webhook` and its group wait shortened.
struct Alertmanager {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Alertmanager {
    fn start(webhook: u16) -> Self {
        let binary = require(
            "prometheus-alertmanager",
            "apt-get install -y prometheus-alertmanager",
        );
        let dir = TempDir::new().unwrap();
        let shipped = std::fs::read_to_string(repo("deploy/alertmanager.yml")).unwrap();
        let config = shipped
            .replace(
                "http://alert-receiver.example:9095",
                &format!("http://127.0.0.1:{webhook}"),
            )
            .replace("group_wait: 30s", "group_wait: 1s");
        assert_ne!(config, shipped);
        let path = dir.path().join("alertmanager.yml");
        std::fs::write(&path, config).unwrap();
        let port = free_port();
        let (child, log) = spawn_logged(
            Command::new(binary)
                .arg(format!("--config.file={}", path.display()))
                .arg(format!(
                    "--storage.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                // A single instance: no gossip port.
                .arg("--cluster.listen-address="),
            "alertmanager",
            port,
            dir.path(),
        );
        wait_for_ready(port, &log);
        Self {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A canary against `redis`, with its own collection and key prefix.
async fn canary(
    redis: &RedisServer,
    chroma: &ChromaServer,
    name: &str,
    rate: f64,
) -> (TestApp, TempDir) {
    let config = format!(
        "[redis]\nkey_prefix = \"llmcache:{name}:\"\n\
         [chroma]\ncollection = \"llmcache_{name}\"\n\
         [workload]\nrate = {rate}\n"
    );
    spawn_app_with_config(redis, chroma, &config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_refusing_redis_pages_through_alertmanager_and_healthy_and_idle_canaries_do_not() {
    let full = RedisServer::start_with(&["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"]);
    full.fill_until_oom();
    let healthy_redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let (oom, _oom_dir) = canary(&full, &chroma, "oom", 20.0).await;
    let (healthy, _healthy_dir) = canary(&healthy_redis, &chroma, "healthy", 20.0).await;
    // One operation every 100 s: its windows are mostly empty.
    let (idle, _idle_dir) = canary(&healthy_redis, &chroma, "idle", 0.01).await;

    let dir = TempDir::new().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, render_mixin(FAST, "rules").unwrap()).unwrap();
    let rules = [rules];
    let (webhook, received) = webhook_receiver().await;
    let alertmanager = Alertmanager::start(webhook);
    let prometheus = PrometheusServer::start_alerting(
        &[oom.addr, healthy.addr, idle.addr],
        &rules,
        alertmanager.port,
    );
    let started = Instant::now();

    // The page: the error budget of store_chat_entry, on the OOM canary,
    // routed by severity to the pager.
    let page = poll(
        "LLMCacheErrorBudgetBurn delivered to the pager",
        Duration::from_secs(120),
        || async {
            received
                .lock()
                .unwrap()
                .iter()
                .find(|(receiver, status, labels)| {
                    receiver == "page"
                        && status == "firing"
                        && labels["alertname"] == "LLMCacheErrorBudgetBurn"
                })
                .cloned()
        },
    )
    .await;
    assert_eq!(page.2["instance"], oom.addr.to_string(), "{page:?}");
    assert_eq!(page.2["operation"], "store_chat_entry", "{page:?}");
    assert_eq!(page.2["severity"], "critical", "{page:?}");

    // Give the healthy and idle canaries every short window, and each alert
    // its `for`, before judging their silence.
    let observe = Duration::from_secs(75);
    if let Some(left) = observe.checked_sub(started.elapsed()) {
        tokio::time::sleep(left).await;
    }
    let received = received.lock().unwrap().clone();
    for (receiver, status, labels) in &received {
        assert_ne!(
            labels["alertname"], "LLMCacheBackendDown",
            "PING answers: {receiver} {status} {labels}"
        );
        assert_eq!(
            labels["instance"],
            oom.addr.to_string(),
            "only the OOM canary alerts: {receiver} {status} {labels}"
        );
    }
    // Prometheus agrees: nothing pending or firing but for the OOM canary,
    // which is also told to be at maxmemory.
    let alerts = prometheus.query("ALERTS").await;
    for alert in alerts.as_array().unwrap() {
        let labels = &alert["metric"];
        assert_eq!(labels["instance"], oom.addr.to_string(), "{labels}");
        assert_ne!(labels["alertname"], "LLMCacheBackendDown", "{labels}");
    }
    prometheus
        .wait_for_any(r#"ALERTS{alertname="LLMCacheRedisNearMaxmemory",alertstate="firing"}"#)
        .await;
    assert_eq!(
        prometheus
            .query(r#"llmcache_backend_up{backend="redis"} == 0"#)
            .await
            .as_array()
            .map(Vec::len),
        Some(0)
    );

    oom.stop().await;
    healthy.stop().await;
    idle.stop().await;
}
