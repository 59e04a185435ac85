//! A real Prometheus scrapes the daemon and stores its series.

use std::time::Duration;

use crate::helpers::{backend_flags, poll, spawn_app, ChromaServer, PrometheusServer, RedisServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_daemon_and_stores_its_series() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let app = spawn_app(&backend_flags(&redis, &chroma)).await;
    let prometheus = PrometheusServer::start(app.addr, &[]);

    // Prometheus's first scrape can come several seconds after it is ready.
    let up = poll(
        "up == 1 for the daemon",
        Duration::from_secs(30),
        || async {
            let result = prometheus.query(r#"up{job="llm-cache-exporter"}"#).await;
            (result[0]["value"][1] == "1").then_some(result)
        },
    )
    .await;
    assert_eq!(up.as_array().unwrap().len(), 1);

    let build = prometheus.query("llmcache_build_info").await;
    assert_eq!(
        build[0]["metric"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{build}"
    );
    assert!(build[0]["metric"]["rustc_version"]
        .as_str()
        .is_some_and(|v| v.contains('.')));

    // backend_up for redis, chroma and embeddings.
    prometheus
        .wait_for_value("sum(llmcache_backend_up)", "3")
        .await;
    // Counters and histograms are typed, so rate() and histogram_quantile() work.
    let p99 = poll("a Redis p99 from the histogram", Duration::from_secs(20), || async {
        let result = prometheus
            .query(r#"histogram_quantile(0.99, sum by (le) (rate(llmcache_backend_request_duration_seconds_bucket{backend="redis"}[10s])))"#)
            .await;
        result[0]["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()).filter(|v| v.is_finite())
    })
    .await;
    assert!(p99 > 0.0 && p99 < 1.0, "implausible Redis p99 {p99}");
    let scrape_errors = prometheus
        .query(r#"scrape_samples_post_metric_relabeling{job="llm-cache-exporter"}"#)
        .await;
    let samples: f64 = scrape_errors[0]["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(samples > 50.0, "only {samples} samples ingested");
}
