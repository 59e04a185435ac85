//! A fleet through a real Prometheus: the shipped `deploy/prometheus/probe.yml`
//! (its addresses and intervals set for the test), `file_sd` files listing
//! 22 Redis (three with their own passwords from a credentials file, one TLS,
//! one full under `noeviction`), two Chromas and three applications (one
//! with a low hit rate), a probe-only exporter, and the mixin's fleet alerts.

use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::dashboards::dashboard_queries;
use crate::helpers::{
    poll, render_mixin, repo, spawn_app, write_file, AppServer, ChromaServer, PrometheusServer,
    RedisServer,
};
use crate::pki::Pki;
use crate::redis_security::tls_redis;

/// The scrape interval the test sets on every job.
const INTERVAL: Duration = Duration::from_secs(2);

/// The shipped scrape configs, pointed at `exporter` and `targets_dir`,
/// scraping every [`INTERVAL`].
fn scrape_configs(exporter: &str, targets_dir: &std::path::Path) -> String {
    let shipped = std::fs::read_to_string(repo("deploy/prometheus/probe.yml")).unwrap();
    let mut config = shipped
        .replace("llm-cache-exporter:9860", exporter)
        .replace(
            "/etc/prometheus/targets/",
            &format!("{}/", targets_dir.display()),
        );
    for (from, to) in [
        ("scrape_interval: 30s", "scrape_interval: 2s"),
        ("scrape_interval: 60s", "scrape_interval: 2s"),
        ("scrape_timeout: 10s", "scrape_timeout: 2s"),
        ("scrape_timeout: 15s", "scrape_timeout: 2s"),
    ] {
        config = config.replace(from, to);
    }
    assert!(
        !config.contains("30s") && !config.contains("60s"),
        "{config}"
    );
    config
}

/// `count(expr)` in Prometheus, 0 when empty.
async fn count(prometheus: &PrometheusServer, expr: &str) -> f64 {
    let result = prometheus.query(&format!("count({expr})")).await;
    result[0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_probes_a_fleet_through_the_shipped_scrape_configs() {
    let dir = TempDir::new().unwrap();
    let mut plain: Vec<RedisServer> = (0..17).map(|_| RedisServer::start()).collect();
    let locked: Vec<RedisServer> = (0..3)
        .map(|i| RedisServer::start_with(&["--requirepass", &format!("pw-{i}-secret")]))
        .collect();
    let pki = Pki::new();
    let tls = tls_redis(&pki, "no");
    let full = RedisServer::start_with(&["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"]);
    full.fill_until_oom();
    let chromas = [ChromaServer::start(), ChromaServer::start()];
    let apps = [
        AppServer::start(&[]),
        AppServer::start(&[]),
        AppServer::start(&["--hits-per-request", "20", "--misses-per-request", "80"]),
    ];

    // The exporter: probe-only, three modules, the passwords by target.
    let mut credentials = String::new();
    for (i, redis) in locked.iter().enumerate() {
        write_file(dir.path(), &format!("pw-{i}"), &format!("pw-{i}-secret\n"));
        credentials.push_str(&format!(
            "[[target]]\nmatch = \"127.0.0.1:{}\"\npassword_file = \"pw-{i}\"\n",
            redis.port
        ));
    }
    let credentials = write_file(dir.path(), "credentials.toml", &credentials);
    let config = write_file(
        dir.path(),
        "config.toml",
        &format!(
            // Lengths on the 7.0 master these targets run (allow_touch),
            // for the dashboard's length panels.
            "[canary]\nenabled = false\n[census]\ninterval = \"2s\"\n\
             [census.redis]\nallow_touch = true\n[probe]\nmax_concurrent = 64\n\
             [probe.modules.redis]\nprober = \"redis\"\nallowed_targets = [\"127.0.0.1/32\"]\n\
             credentials_file = \"{credentials}\"\ntls_ca_file = \"{}\"\nround_trips = 2\n\
             census = true\n\
             [probe.modules.chroma]\nprober = \"chroma\"\nallowed_targets = [\"127.0.0.1/32\"]\n\
             census = true\n\
             [probe.modules.app]\nprober = \"app\"\nallowed_targets = [\"127.0.0.1/32\"]\n",
            pki.trusted.ca.display()
        ),
    );
    let app = spawn_app(&["--config.file".into(), config]).await;

    // The targets, as file_sd files.
    let targets = TempDir::new().unwrap();
    let list = |items: Vec<String>| {
        let quoted: Vec<String> = items.iter().map(|t| format!("'{t}'")).collect();
        format!(
            "- targets: [{}]\n  labels: {{team: chat}}\n",
            quoted.join(", ")
        )
    };
    let mut redis_targets: Vec<String> = plain
        .iter()
        .chain(&locked)
        .chain([&full])
        .map(|r| format!("127.0.0.1:{}", r.port))
        .collect();
    redis_targets.push(format!("rediss://127.0.0.1:{}", tls.port));
    assert_eq!(redis_targets.len(), 22);
    write_file(targets.path(), "llmcache-redis.yml", &list(redis_targets));
    write_file(
        targets.path(),
        "llmcache-chroma.yml",
        &list(
            chromas
                .iter()
                .map(|c| c.url().trim_end_matches('/').to_owned())
                .collect(),
        ),
    );
    write_file(
        targets.path(),
        "llmcache-app.yml",
        &list(
            apps.iter()
                .map(|a| format!("http://{}/health", a.target()))
                .collect(),
        ),
    );

    let rules = dir.path().join("rules.yml");
    let fast = "{ interval: '1s', appHitRate+: { window: '20s', 'for': '5s' }, probeFailing+: { 'for': '4s' } }";
    std::fs::write(&rules, render_mixin(fast, "rules").unwrap()).unwrap();
    let started = Instant::now();
    // The shipped probe jobs, and the exporter's own /metrics.
    let config = format!(
        "{}\n  - job_name: llm-cache-exporter\n    static_configs:\n      - targets: ['{}']\n",
        scrape_configs(&app.addr.to_string(), targets.path()),
        app.addr
    );
    let prometheus = PrometheusServer::start_scraping(&config, &[rules]);

    // Every target but the full Redis succeeds within two intervals of the
    // first scrape.
    poll(
        "the first probe scrape",
        Duration::from_secs(30),
        || async { (count(&prometheus, "probe_success").await > 0.0).then_some(()) },
    )
    .await;
    let first = Instant::now();
    let healthy = r#"probe_success{job=~"llmcache-probe-.*"} == 1"#;
    poll(
        "every healthy target at 1",
        Duration::from_secs(30),
        || async { (count(&prometheus, healthy).await == 21.0 + 2.0 + 3.0).then_some(()) },
    )
    .await;
    let took = first.elapsed();
    eprintln!(
        "all 26 healthy targets at probe_success 1 {took:?} after the first scrape, {:?} after \
         Prometheus started (interval {INTERVAL:?})",
        started.elapsed()
    );
    // Two intervals, and the query's own evaluation.
    assert!(took <= INTERVAL * 2 + Duration::from_secs(1), "{took:?}");
    let full_instance = format!("127.0.0.1:{}", full.port);
    let oom = format!(
        r#"llmcache_probe_error_replies{{instance="{full_instance}",code="OOM"}} >= 1 and on (instance) probe_success == 0"#
    );
    poll(
        "the full Redis at 0 with OOM",
        Duration::from_secs(15),
        || async { (count(&prometheus, &oom).await == 1.0).then_some(()) },
    )
    .await;
    assert_eq!(
        count(&prometheus, r#"probe_success{team="chat"}"#).await,
        27.0
    );

    // Kill one Redis: only its target turns 0.
    let killed = format!("127.0.0.1:{}", plain[0].port);
    plain[0].kill();
    let down = format!(r#"probe_success{{instance="{killed}"}} == 0"#);
    poll("the killed Redis at 0", Duration::from_secs(15), || async {
        (count(&prometheus, &down).await == 1.0).then_some(())
    })
    .await;
    assert_eq!(
        count(
            &prometheus,
            r#"probe_success{job="llmcache-probe-redis"} == 0"#
        )
        .await,
        2.0,
        "the killed one and the full one"
    );
    assert_eq!(count(&prometheus, healthy).await, 25.0);

    // The app with the low hit rate pages; the healthy ones do not.
    let low = format!("http://{}/health", apps[2].target());
    let firing = format!(
        r#"ALERTS{{alertname="LLMCacheAppHitRateLow",alertstate="firing",instance="{low}"}}"#
    );
    poll(
        "LLMCacheAppHitRateLow for the low app",
        Duration::from_secs(60),
        || async { (count(&prometheus, &firing).await == 1.0).then_some(()) },
    )
    .await;
    assert_eq!(
        count(&prometheus, r#"ALERTS{alertname="LLMCacheAppHitRateLow"}"#).await,
        1.0,
        "only the low app"
    );
    let probe_failing = format!(
        r#"ALERTS{{alertname="LLMCacheProbeFailing",alertstate="firing",instance="{killed}"}}"#
    );
    poll(
        "LLMCacheProbeFailing for the killed Redis",
        Duration::from_secs(30),
        || async { (count(&prometheus, &probe_failing).await == 1.0).then_some(()) },
    )
    .await;
    // Every query of the fleet dashboard returns data here.
    let dashboard =
        std::fs::read_to_string(repo("dashboards/llm-cache-exporter-fleet.json")).unwrap();
    let (queries, rows) = dashboard_queries(&dashboard, ".*", ".*");
    assert!(queries.len() >= 15, "{} queries", queries.len());
    assert!(rows.iter().any(|r| r == "Targets"), "{rows:?}");
    for (title, expr, _) in &queries {
        eprintln!("checking {title}");
        prometheus.wait_for_any(expr).await;
    }
    let metrics = app.metrics().await;
    assert!(
        !metrics.contains("secret"),
        "a password leaked into /metrics"
    );
    app.stop().await;
}
