//! The shipped rules and dashboard against a real Prometheus scraping a real
//! daemon: every rule evaluates, every panel is described and its legend
//! names the instance (or its query aggregates), every query is accepted and
//! returns data (but for panels documented as conditional), and a dead Redis
//! makes the backend-down alert's expression true. The same for the rules
//! and dashboard the mixin renders with other windows and a renamed job.

use std::time::Duration;

use crate::helpers::{
    backend_flags, poll, render_mixin, repo, spawn_app, ChromaServer, PrometheusServer, RedisServer,
};

/// Every panel's expressions in the dashboard `text`, with Grafana's
/// variables substituted (`job`, `instance`), and whether the panel may
/// legitimately be empty; and the rows' titles.
pub(crate) fn dashboard_queries(
    text: &str,
    job: &str,
    instance: &str,
) -> (Vec<(String, String, bool)>, Vec<String>) {
    let dashboard: serde_json::Value = serde_json::from_str(text).unwrap();
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 39);
    assert!(
        !text.contains("\"uid\": \"prometheus\""),
        "no hard-coded datasource uid"
    );
    let mut queries = Vec::new();
    let mut rows = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            rows.push(panel["title"].as_str().unwrap().to_owned());
            continue;
        }
        let title = panel["title"].as_str().unwrap().to_owned();
        assert!(
            panel["fieldConfig"]["defaults"]["unit"].is_string(),
            "{title} has no unit"
        );
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let description = panel["description"].as_str().unwrap_or_default();
        assert!(description.len() > 20, "{title} has no description");
        let conditional = description.starts_with("Only shows data");
        if title.starts_with("Hit ratio") {
            // Red below the LLMCacheLowHitRate line.
            let steps = &panel["fieldConfig"]["defaults"]["thresholds"]["steps"];
            assert_eq!(steps[1]["value"], 0.5, "{title}");
            assert_eq!(steps[0]["color"], "red", "{title}");
        }
        for target in panel["targets"].as_array().unwrap() {
            let raw = target["expr"].as_str().unwrap();
            let legend = target["legendFormat"].as_str().unwrap();
            let aggregates = ["sum by", "sum(", "histogram_quantile", "max by", "count by"]
                .iter()
                .any(|a| raw.starts_with(a));
            assert!(
                aggregates || legend.contains("{{instance}}"),
                "{title}: the legend {legend} hides which instance"
            );
            let expr = raw
                .replace("$job", job)
                .replace("$instance", instance)
                .replace("$__rate_interval", "30s")
                .replace("$__range", "1h");
            queries.push((title.clone(), expr, conditional));
        }
    }
    (queries, rows)
}

/// Every query of the dashboard `text` is valid PromQL and, unless its
/// panel is documented as conditional, returns data.
async fn assert_queries_return_data(
    prometheus: &PrometheusServer,
    text: &str,
    job: &str,
    instance: &str,
) {
    let (queries, rows) = dashboard_queries(text, job, instance);
    assert!(queries.len() >= 55, "{} queries", queries.len());
    for row in ["SLO", "Topology", "Exporter"] {
        assert!(rows.iter().any(|r| r == row), "no {row} row in {rows:?}");
    }
    for (title, expr, conditional) in &queries {
        let answer = prometheus.try_query(expr).await;
        assert_eq!(answer["status"], "success", "{title}: {expr}: {answer}");
        if *conditional {
            continue;
        }
        eprintln!("checking {title}");
        prometheus.wait_for_any(expr).await;
    }
}

/// Waits until Prometheus has scraped `job` a few times.
async fn wait_for_scrapes(prometheus: &PrometheusServer, job: &str) {
    let expr = format!(r#"count_over_time(up{{job="{job}"}}[1m])"#);
    poll("the first scrapes", Duration::from_secs(30), || async {
        let result = prometheus.query(&expr).await;
        result[0]["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|n| *n >= 8.0)
    })
    .await;
}

/// Windows other than the default ones, and a job named otherwise.
const OTHER: &str = r#"{
  selector: 'job="canary"',
  slo+: { windows: [
    { severity: 'critical', long: '2h', short: '10m', factor: 10, 'for': '2m' },
    { severity: 'warning', long: '2d', short: '4h', factor: 2, 'for': '1h' },
  ] },
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_rendered_with_other_windows_and_job_has_data_in_every_panel() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let app = spawn_app(&backend_flags(&redis, &chroma)).await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, render_mixin(OTHER, "rules").unwrap()).unwrap();
    let dashboard = render_mixin(OTHER, "dashboard").unwrap();
    // The SLO row reads the configured windows' recording rules, and the
    // variables list the configured job.
    for wanted in [
        "llmcache:operation_error_ratio:rate10m",
        "llmcache:operation_slow_ratio:rate2d",
        "llmcache:operation_error_ratio:rate2h",
        // As the JSON text spells it.
        r#"label_values(llmcache_build_info{job=\"canary\"}, job)"#,
    ] {
        assert!(dashboard.contains(wanted), "{wanted} not in the dashboard");
    }
    for gone in ["rate5m{", "rate3d{", "rate1h{"] {
        assert!(
            !dashboard.contains(&format!("ratio:{gone}")),
            "{gone} left in the dashboard"
        );
    }
    // The scrape job's series relabelled as job="canary".
    let canary = "    relabel_configs:\n      - target_label: job\n        replacement: canary\n";
    let prometheus = PrometheusServer::start_with_job(app.addr, &[rules], canary);
    wait_for_scrapes(&prometheus, "canary").await;
    assert_queries_return_data(&prometheus, &dashboard, "canary", &app.addr.to_string()).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_and_dashboard_work_against_a_real_prometheus() {
    let mut redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let app = spawn_app(&backend_flags(&redis, &chroma)).await;
    let prometheus =
        PrometheusServer::start(app.addr, &[repo("alerts/llm-cache-exporter.rules.yml")]);
    let instance = app.addr.to_string();

    wait_for_scrapes(&prometheus, "llm-cache-exporter").await;

    // Every recording and alerting rule has been evaluated without error.
    let groups = poll("every rule evaluated", Duration::from_secs(30), || async {
        let rules = prometheus.api("rules").await;
        let groups = rules["data"]["groups"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let all: Vec<&serde_json::Value> = groups
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap().iter())
            .collect();
        (!all.is_empty() && all.iter().all(|r| r["health"] == "ok")).then_some(groups)
    })
    .await;
    let count: usize = groups
        .iter()
        .map(|g| g["rules"].as_array().unwrap().len())
        .sum();
    assert!(count >= 40, "{count} rules loaded");

    // Every dashboard query is valid PromQL and, unless documented as
    // conditional, returns data.
    let dashboard = std::fs::read_to_string(repo("dashboards/llm-cache-exporter.json")).unwrap();
    assert_queries_return_data(&prometheus, &dashboard, "llm-cache-exporter", &instance).await;

    // Killing Redis makes the backend-down expression true, and the alert pends.
    redis.kill();
    // LLMCacheBackendDown's expression for redis, then the alert pending.
    prometheus
        .wait_for_any(r#"llmcache_backend_up{backend="redis"} == 0"#)
        .await;
    prometheus
        .wait_for_any(r#"ALERTS{alertname="LLMCacheBackendDown",backend="redis"}"#)
        .await;
}
