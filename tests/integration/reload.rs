//! `POST /-/reload` and `SIGHUP`: a good configuration is swapped in without
//! dropping the listener or resetting counters; a bad one changes nothing but
//! `llmcache_config_last_reload_successful`.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::helpers::{
    backend_flags, free_port, metric_value, poll, series, spawn_app, ChromaServer, Daemon,
    RedisServer,
};

const RELOAD_OK: &str = "llmcache_config_last_reload_successful";
const SCHEDULED: &str = "llmcache_workload_scheduled_total";

fn config(rate: f64) -> String {
    format!("[workload]\nrate = {rate}\nkey_ttl = \"5m\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_reload_swaps_a_good_config_in_and_keeps_the_old_one_on_a_bad_one() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("config.toml");
    let web_file = dir.path().join("web.yml");
    std::fs::write(&config_file, config(10.0)).unwrap();
    std::fs::write(&web_file, "").unwrap();
    let mut flags = backend_flags(&redis, &chroma);
    flags.extend([
        "--config.file".into(),
        config_file.display().to_string(),
        "--web.config.file".into(),
        web_file.display().to_string(),
    ]);
    let app = spawn_app(&flags).await;
    app.wait_backends_up().await;
    assert_eq!(app.series(RELOAD_OK).await, 1.0);
    app.wait_for_at_least(SCHEDULED, 10.0, Duration::from_secs(10))
        .await;

    // A bad value: refused with the key named, the old configuration runs on.
    std::fs::write(&config_file, "[workload]\nrate = \"fast\"\n").unwrap();
    let refused = app.http.post(app.url("/-/reload")).send().await.unwrap();
    assert_eq!(refused.status(), 500);
    let reason = refused.text().await.unwrap();
    assert!(reason.contains("workload.rate"), "{reason}");
    assert_eq!(app.series(RELOAD_OK).await, 0.0);
    // The workload keeps running after a refused reload.
    let before = app.series(SCHEDULED).await;
    app.wait_for_at_least(SCHEDULED, before + 1.0, Duration::from_secs(5))
        .await;
    let ready = app.http.get(app.url("/-/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    // A good one: a higher rate and, from the web config, basic auth.
    std::fs::write(&config_file, config(100.0)).unwrap();
    let hash = bcrypt::hash("pw", 4).unwrap();
    std::fs::write(&web_file, format!("basic_auth_users:\n  ops: '{hash}'\n")).unwrap();
    let before_reload = app.series(SCHEDULED).await;
    let accepted = app.http.post(app.url("/-/reload")).send().await.unwrap();
    assert_eq!(accepted.status(), 200, "{}", accepted.text().await.unwrap());
    let health = app
        .http
        .get(app.url("/health"))
        .basic_auth("ops", Some("pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "no 503 flash after a reload");

    let anonymous = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(
        anonymous.status(),
        401,
        "the new web config applies at once"
    );
    let scrape = || async {
        app.http
            .get(app.url("/metrics"))
            .basic_auth("ops", Some("pw"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let scheduled = || async { series(&scrape().await, SCHEDULED) };
    assert_eq!(series(&scrape().await, RELOAD_OK), 1.0);
    let after_reload = scheduled().await;
    assert!(
        after_reload >= before_reload,
        "counters survive a reload: {before_reload} then {after_reload}"
    );
    // The new rate: about 100/s now, against 10/s before.
    let start = Instant::now();
    // A measurement window, not a wait.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let per_second = (scheduled().await - after_reload) / start.elapsed().as_secs_f64();
    assert!(
        (70.0..=130.0).contains(&per_second),
        "{per_second} scheduled/s after reloading to 100/s"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_a_bad_file_is_logged_and_survived() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("config.toml");
    std::fs::write(&config_file, config(10.0)).unwrap();
    let mut args = backend_flags(&redis, &chroma);
    args.extend(["--config.file".into(), config_file.display().to_string()]);
    let daemon = Daemon::start(&args, dir.path());
    let reload_ok = |value: f64| {
        let daemon = &daemon;
        async move {
            poll(
                &format!("{RELOAD_OK} = {value}"),
                Duration::from_secs(15),
                || async {
                    let text = daemon.try_get("/metrics").await?;
                    (metric_value(&text, RELOAD_OK) == Some(value)).then_some(())
                },
            )
            .await
        }
    };
    reload_ok(1.0).await;

    write_slowly(&config_file, "[workload]\nrate = 10\nunknown_key = 1\n");
    daemon.signal("HUP");
    reload_ok(0.0).await;
    std::fs::write(&config_file, config(20.0)).unwrap();
    daemon.signal("HUP");
    reload_ok(1.0).await;
    assert!(daemon.try_get("/-/ready").await.is_some());

    let logs = daemon.stop();
    assert!(logs.contains("reload refused"), "{logs}");
    assert!(
        logs.contains("unknown_key"),
        "the refusal names the key: {logs}"
    );
    assert!(logs.contains("configuration reloaded"), "{logs}");
    assert!(!logs.contains("panicked"), "{logs}");
}

/// Writes via a temp file and a rename, as editors and config management do.
fn write_slowly(path: &Path, text: &str) {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

/// Validation alone, with no backend at all: nothing listens on the ports
/// the daemon is pointed at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_validation_needs_no_backend() {
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("config.toml");
    std::fs::write(&config_file, config(5.0)).unwrap();
    let flags = [
        "--redis.url".to_owned(),
        format!("redis://127.0.0.1:{}", free_port()),
        "--chroma.url".into(),
        format!("http://127.0.0.1:{}", free_port()),
        "--config.file".into(),
        config_file.display().to_string(),
    ];
    let app = spawn_app(&flags).await;
    let cases = [
        (
            "[cache.embeddings]\nshare = 1.5\n",
            "cache.embeddings.share",
        ),
        ("[redis]\ntimeout = \"0s\"\n", "redis.timeout"),
        ("[nosuchtable]\nx = 1\n", "nosuchtable"),
        ("[redis\n", "--config.file"),
    ];
    for (text, key) in cases {
        std::fs::write(&config_file, text).unwrap();
        let refused = app.http.post(app.url("/-/reload")).send().await.unwrap();
        assert_eq!(refused.status(), 500, "{text:?} was accepted");
        let reason = refused.text().await.unwrap();
        assert!(
            reason.contains(key),
            "{text:?}: {reason} does not name {key}"
        );
        assert_eq!(app.series(RELOAD_OK).await, 0.0);
    }
    std::fs::write(&config_file, config(7.0)).unwrap();
    let accepted = app.http.post(app.url("/-/reload")).send().await.unwrap();
    assert_eq!(accepted.status(), 200);
    assert_eq!(app.series(RELOAD_OK).await, 1.0);
    app.stop().await;
}

const UP: [&str; 3] = [
    r#"llmcache_backend_up{backend="redis"}"#,
    r#"llmcache_backend_up{backend="chroma"}"#,
    r#"llmcache_backend_up{backend="embeddings"}"#,
];

/// What a refused reload must leave as it was.
const KEPT: [&str; 7] = [
    UP[0],
    UP[1],
    UP[2],
    "llmcache_memory_pool_budget_bytes",
    r#"llmcache_cache_capacity_bytes{cache="chat_history"}"#,
    r#"llmcache_cache_capacity_bytes{cache="similarity"}"#,
    r#"llmcache_cache_capacity_bytes{cache="embeddings"}"#,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_never_flash_a_backend_down_and_a_refused_one_changes_nothing() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("config.toml");
    // A budget of its own, so a new generation's cache would show.
    std::fs::write(
        &config_file,
        format!("{}[cache]\nmemory_budget = \"16MiB\"\n", config(10.0)),
    )
    .unwrap();
    let mut args = backend_flags(&redis, &chroma);
    args.extend(["--config.file".into(), config_file.display().to_string()]);
    let daemon = Daemon::start(&args, dir.path());
    let text = poll("every backend up", Duration::from_secs(20), || async {
        let text = daemon.try_get("/metrics").await?;
        UP.iter()
            .all(|up| metric_value(&text, up) == Some(1.0))
            .then_some(text)
    })
    .await;

    // Scrape every 10 ms through 20 SIGHUPs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scraper = {
        let (stop, port) = (stop.clone(), daemon.port);
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let (mut scrapes, mut down) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let url = format!("http://127.0.0.1:{port}/metrics");
                if let Ok(response) = http.get(url).send().await {
                    let text = response.text().await.unwrap_or_default();
                    scrapes += 1;
                    for up in UP {
                        if metric_value(&text, up) != Some(1.0) {
                            down.push(format!(
                                "scrape {scrapes}: {up} {:?}",
                                metric_value(&text, up)
                            ));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (scrapes, down)
        })
    };
    for _ in 0..20 {
        daemon.signal("HUP");
        // Reloads are queued and applied one at a time; this paces them.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let logs = dir.path().join("stderr.log");
    poll("20 reloads applied", Duration::from_secs(60), || async {
        let text = std::fs::read_to_string(&logs).ok()?;
        (text.matches("configuration reloaded").count() >= 20).then_some(())
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (scrapes, down) = scraper.await.unwrap();
    eprintln!("{scrapes} scrapes through 20 reloads");
    assert!(scrapes > 200, "only {scrapes} scrapes");
    assert!(down.is_empty(), "a backend read down:\n{}", down.join("\n"));

    // A refused reload, of a configuration that would build another cache.
    let before = daemon.get("/metrics").await;
    let _ = text;
    std::fs::write(
        &config_file,
        "[cache]\nmemory_budget = \"8MiB\"\n[workload]\nrate = \"fast\"\n",
    )
    .unwrap();
    daemon.signal("HUP");
    poll(
        &format!("{RELOAD_OK} = 0"),
        Duration::from_secs(15),
        || async {
            let text = daemon.try_get("/metrics").await?;
            (metric_value(&text, RELOAD_OK) == Some(0.0)).then_some(())
        },
    )
    .await;
    let after = daemon.get("/metrics").await;
    for kept in KEPT {
        assert_eq!(
            series(&before, kept),
            series(&after, kept),
            "{kept} changed across a refused reload"
        );
    }
    assert_eq!(
        series(&after, "llmcache_memory_pool_budget_bytes"),
        16.0 * 1024.0 * 1024.0
    );
    let logs = daemon.stop();
    assert!(!logs.contains("panicked"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reload_is_answered_and_abandons_no_inflight() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("config.toml");
    // Operations outlast the reload's drain (3 s) while Redis is stopped.
    // The reload takes several seconds; the read-header timeout (1 s) must
    // not cut its answer.
    let slow = |rate: f64| {
        format!(
            "{}[web]\nread_header_timeout = \"1s\"\n[redis]\ntimeout = \"20s\"\n[workload.mix]\nget_chat_history = 0\n\
             store_chat_entry = 1\nquery_similar_memories = 0\nstore_memory = 0\n",
            config(rate)
        )
    };
    std::fs::write(&config_file, slow(20.0)).unwrap();
    let mut flags = backend_flags(&redis, &chroma);
    flags.extend(["--config.file".into(), config_file.display().to_string()]);
    let app = spawn_app(&flags).await;
    app.wait_backends_up().await;
    const INFLIGHT: &str = "llmcache_workload_inflight";
    redis.stall();
    let stuck = app
        .wait_for_at_least(INFLIGHT, 5.0, Duration::from_secs(10))
        .await;
    // Idle from now on: one operation every 100 s.
    std::fs::write(&config_file, slow(0.01)).unwrap();
    let started = Instant::now();
    let reloaded = app.http.post(app.url("/-/reload")).send().await.unwrap();
    assert_eq!(reloaded.status(), 200, "{}", reloaded.text().await.unwrap());
    let took = started.elapsed();
    eprintln!("the reload took {took:?}");
    assert!(took > Duration::from_secs(1), "not a slow reload: {took:?}");
    redis.resume();
    app.wait_for_metric(INFLIGHT, 0.0, Duration::from_secs(20))
        .await;
    eprintln!("{stuck} operations in flight at the reload; 0 after");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_file_change_does_not_clear_a_refused_reload() {
    let redis = RedisServer::start();
    let chroma = ChromaServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (config_file, web_file) = (dir.path().join("config.toml"), dir.path().join("web.yml"));
    let users = |password: &str| {
        let hash = bcrypt::hash(password, 4).unwrap();
        format!("basic_auth_users:\n  ops: '{hash}'\n")
    };
    std::fs::write(&config_file, config(10.0)).unwrap();
    std::fs::write(&web_file, users("one")).unwrap();
    let mut flags = backend_flags(&redis, &chroma);
    flags.extend([
        "--config.file".into(),
        config_file.display().to_string(),
        "--web.config.file".into(),
        web_file.display().to_string(),
    ]);
    let app = spawn_app(&flags).await;
    let scrape = |password: &'static str| {
        let request = app
            .http
            .get(app.url("/metrics"))
            .basic_auth("ops", Some(password));
        async move {
            let response = request.send().await.ok()?;
            (response.status() == 200).then_some(response.text().await.ok()?)
        }
    };
    let reload = || async {
        app.http
            .post(app.url("/-/reload"))
            .basic_auth("ops", Some("two"))
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(series(&scrape("one").await.unwrap(), RELOAD_OK), 1.0);

    std::fs::write(&config_file, "[workload]\nrate = \"fast\"\n").unwrap();
    let refused = app
        .http
        .post(app.url("/-/reload"))
        .basic_auth("ops", Some("one"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 500);
    // The watcher applies a new password (a renewal, as cert-manager does).
    std::fs::write(&web_file, users("two")).unwrap();
    let text = poll("the new password", Duration::from_secs(15), || {
        scrape("two")
    })
    .await;
    assert_eq!(
        series(&text, RELOAD_OK),
        0.0,
        "the configuration is still the refused one"
    );
    std::fs::write(&config_file, config(10.0)).unwrap();
    assert_eq!(reload().await, 200);
    assert_eq!(series(&scrape("two").await.unwrap(), RELOAD_OK), 1.0);
    app.stop().await;
}
