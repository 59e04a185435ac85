//! `/probe` reachable by anyone: a corpus of hostile targets against
//! catch-all listeners, names that resolve into denied networks, redirects
//! and endless bodies, cluster nodes outside the allow-list, and secret
//! files rotated without a reload.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use crate::helpers::{
    poll, repo, series, spawn_app, write_file, AppServer, Daemon, RedisServer, TestApp,
};
use crate::topologies::Cluster;

/// Listeners that accept anything and keep what arrives.
struct CatchAll {
    port: u16,
    connections: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<u8>>>,
    bound: Vec<SocketAddr>,
}

impl CatchAll {
    /// On a free port of 127.0.0.1 and ::1, and on the probers' default
    /// ports where they are free.
    async fn start() -> Self {
        let connections = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (port, mut listeners) = loop {
            let v4 = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = v4.local_addr().unwrap().port();
            if let Ok(v6) = TcpListener::bind(("::1", port)).await {
                break (port, vec![v4, v6]);
            }
        };
        for default in [80, 443, 6379, 8000] {
            for host in ["127.0.0.1", "::1"] {
                if let Ok(listener) = TcpListener::bind((host, default)).await {
                    listeners.push(listener);
                }
            }
        }
        let bound = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        for listener in listeners {
            let (connections, received) = (connections.clone(), received.clone());
            tokio::spawn(async move {
                while let Ok((mut socket, _)) = listener.accept().await {
                    connections.fetch_add(1, Ordering::SeqCst);
                    let received = received.clone();
                    tokio::spawn(async move {
                        let mut buf = vec![0; 65536];
                        let read = socket.read(&mut buf);
                        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), read).await
                        {
                            received.lock().unwrap().extend_from_slice(&buf[..n]);
                        }
                    });
                }
            });
        }
        Self {
            port,
            connections,
            received,
            bound,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn received(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().unwrap()).into_owned()
    }
}

const REDIS_SECRET: &str = "redis-pw-7c1f0a";
const CHROMA_SECRET: &str = "chroma-tok-9d2e41";
const APP_SECRET: &str = "app-tok-3b8a77";

/// The corpus, its placeholders filled in.
fn corpus(port: u16) -> Vec<String> {
    let text = std::fs::read_to_string(repo("tests/fixtures/hostile_targets.txt")).unwrap();
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with("# ") && *l != "#")
        .map(|l| {
            l.replace("{PORT}", &port.to_string())
                .replace("{SP}", " ")
                .replace("{TAB}", "\t")
                .replace("{NUL}", "\0")
                .replace("{LF}", "\n")
                .replace("{CR}", "\r")
                .replace("{DEL}", "\u{7f}")
        })
        .collect()
}

/// The daemon binary (logging at trace level) with `config`, once ready.
async fn ready_daemon(dir: &std::path::Path, config: &str) -> Daemon {
    let path = write_file(dir, "config.toml", config);
    let daemon = Daemon::start(&["--config.file".into(), path], dir);
    poll("the daemon", Duration::from_secs(30), || async {
        daemon.try_get("/-/ready").await
    })
    .await;
    daemon
}

/// `GET base/probe?params`: the status and the body.
async fn get_probe(http: &reqwest::Client, base: &str, params: &[(&str, &str)]) -> (u16, String) {
    let url = url::Url::parse_with_params(&format!("{base}/probe"), params).unwrap();
    let response = http.get(url).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// `/probe` of the daemon.
async fn probe_daemon(daemon: &Daemon, params: &[(&str, &str)]) -> (u16, String) {
    let base = format!("http://127.0.0.1:{}", daemon.port);
    get_probe(&reqwest::Client::new(), &base, params).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_hostile_target_reaches_a_listener_or_carries_a_secret() {
    let listener = CatchAll::start().await;
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    write_file(d, "redis-password", &format!("{REDIS_SECRET}\n"));
    write_file(d, "chroma-token", &format!("{CHROMA_SECRET}\n"));
    write_file(d, "app-token", &format!("{APP_SECRET}\n"));
    let config = format!(
        "[canary]\nenabled = false\n\
         [probe.modules.redis]\nprober = \"redis\"\ntimeout = \"1s\"\n\
         allowed_targets = [\"*.redis.svc:6379\"]\npassword_file = \"{d}/redis-password\"\n\
         [probe.modules.chroma]\nprober = \"chroma\"\ntimeout = \"1s\"\n\
         allowed_targets = [\"*.chroma.svc:8000\"]\ntoken_file = \"{d}/chroma-token\"\n\
         [probe.modules.app]\nprober = \"app\"\ntimeout = \"1s\"\n\
         allowed_targets = [\"*.chat.svc\"]\ntoken_file = \"{d}/app-token\"\n\
         [probe.modules.control]\nprober = \"redis\"\ntimeout = \"1s\"\n\
         allowed_targets = [\"127.0.0.1/32\"]\npassword_file = \"{d}/redis-password\"\n",
        d = d.display()
    );
    let daemon = ready_daemon(d, &config).await;

    // The control: a module that may reach a listener like it does, with
    // the password, so a target that got through would be seen. (Its own
    // listener: the pooled client it leaves behind reconnects.)
    let control_listener = CatchAll::start().await;
    let control = format!("127.0.0.1:{}", control_listener.port);
    probe_daemon(&daemon, &[("module", "control"), ("target", &control)]).await;
    poll(
        "the control's password",
        Duration::from_secs(10),
        || async {
            control_listener
                .received()
                .contains(REDIS_SECRET)
                .then_some(())
        },
    )
    .await;

    let targets = corpus(listener.port);
    assert!(targets.len() >= 60, "{} targets", targets.len());
    let mut answers = String::new();
    let mut refused = 0;
    for target in &targets {
        for module in ["redis", "chroma", "app"] {
            for debug in ["false", "true"] {
                let params = [("module", module), ("target", target), ("debug", debug)];
                let (status, body) = probe_daemon(&daemon, &params).await;
                match status {
                    400 | 403 => refused += 1,
                    200 => assert!(
                        body.contains("probe_success 0") || body.contains("probe failed"),
                        "{module} {target:?} succeeded:\n{body}"
                    ),
                    other => panic!("{module} {target:?}: HTTP {other}\n{body}"),
                }
                answers.push_str(&body);
            }
        }
    }
    // Nothing more arrives once the probes are done: a window, not a wait.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        listener.connections(),
        0,
        "connections reached {:?}; received:\n{}",
        listener.bound,
        listener.received()
    );
    let log = daemon.log();
    for secret in [REDIS_SECRET, CHROMA_SECRET, APP_SECRET] {
        assert!(!listener.received().contains(secret), "{secret} arrived");
        assert!(!answers.contains(secret), "{secret} in an answer");
        assert!(!log.contains(secret), "{secret} in the log");
    }
    assert!(!answers.contains("pw@"), "a target's userinfo echoed");
    let metrics = daemon.get("/metrics").await;
    assert!(refused > targets.len() * 5, "{refused} refused");
    for reason in ["malformed", "not_allowed"] {
        let line = format!("llmcache_probe_refusals_total{{module=\"redis\",reason=\"{reason}\"}}");
        assert!(series(&metrics, &line) > 0.0, "{line}");
    }
}

/// A probe-only app with `modules` (TOML) on top of nothing else.
async fn probe_only(dir: &TempDir, modules: &str) -> TestApp {
    let config = format!("[canary]\nenabled = false\n{modules}");
    let path = write_file(dir.path(), "config.toml", &config);
    spawn_app(&["--config.file".into(), path]).await
}

/// `/probe` of the in-process app.
async fn probe(app: &TestApp, params: &[(&str, &str)]) -> (u16, String) {
    get_probe(&app.http, &app.url(""), params).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_resolves_into_a_denied_network_needs_a_cidr_that_names_it() {
    let redis = RedisServer::start();
    let dir = TempDir::new().unwrap();
    let app = probe_only(
        &dir,
        "[probe.modules.names]\nprober = \"redis\"\nallowed_targets = [\"localhost\"]\n\
         [probe.modules.wide]\nprober = \"redis\"\nallowed_targets = [\"0.0.0.0/0\", \"::/0\"]\n\
         [probe.modules.loopback]\nprober = \"redis\"\n\
         allowed_targets = [\"localhost\", \"127.0.0.0/8\"]\n",
    )
    .await;
    let by_name = format!("localhost:{}", redis.port);
    let (status, body) = probe(&app, &[("module", "names"), ("target", &by_name)]).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("denied network"), "{body}");
    // A CIDR that allows everything does not name loopback.
    let by_address = format!("127.0.0.1:{}", redis.port);
    let (status, body) = probe(&app, &[("module", "wide"), ("target", &by_address)]).await;
    assert_eq!(status, 403, "{body}");
    for target in [&by_name, &by_address] {
        let (status, body) = probe(&app, &[("module", "loopback"), ("target", target)]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(series(&body, "probe_success"), 1.0, "{target}: {body}");
    }
    let metrics = app.metrics().await;
    let line = r#"llmcache_probe_refusals_total{module="names",reason="denied_network"}"#;
    assert_eq!(series(&metrics, line), 1.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_target_is_one_identity_and_its_database_is_the_one_named() {
    let redis = RedisServer::start();
    let dir = TempDir::new().unwrap();
    let app = probe_only(
        &dir,
        "[probe.modules.redis]\nprober = \"redis\"\nallowed_targets = [\"127.0.0.1/32\"]\n",
    )
    .await;
    let port = redis.port;
    for spelling in [
        format!("127.0.0.1:{port}"),
        format!("redis://127.0.0.1:{port}"),
        format!("redis://127.0.0.1:{port}/0"),
        format!("[::ffff:127.0.0.1]:{port}"),
        format!("127.1:{port}"),
    ] {
        let (status, body) = probe(&app, &[("module", "redis"), ("target", &spelling)]).await;
        assert_eq!(
            series(&body, "probe_success"),
            1.0,
            "{spelling} {status}: {body}"
        );
    }
    let metrics = app.metrics().await;
    assert_eq!(
        series(
            &metrics,
            r#"llmcache_probe_pool_connections{prober="redis"}"#
        ),
        1.0,
        "five spellings, one pooled client"
    );
    assert_eq!(
        redis.cli(&["CLIENT", "LIST"]).lines().count(),
        2,
        "the probe's and the CLI's"
    );
    let db5 = format!("redis://127.0.0.1:{port}/5");
    let (_, body) = probe(&app, &[("module", "redis"), ("target", &db5)]).await;
    assert_eq!(series(&body, "probe_success"), 1.0, "{body}");
    let keys = redis.cli(&["-n", "5", "--scan", "--pattern", "llmcache:probe:fleet:*"]);
    assert!(!keys.trim().is_empty(), "no probe key in db 5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed_and_bodies_stop_at_the_limit() {
    let listener = CatchAll::start().await;
    let to = format!("http://127.0.0.1:{}/", listener.port);
    let redirecting = AppServer::start(&["--redirect", &to]);
    let endless = AppServer::start(&["--endless"]);
    let claims = AppServer::start(&["--claim-length", "10000000000"]);
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    write_file(d, "chroma-token", &format!("{CHROMA_SECRET}\n"));
    write_file(d, "app-token", &format!("{APP_SECRET}\n"));
    let config = format!(
        "[canary]\nenabled = false\n\
         [probe.modules.app]\nprober = \"app\"\ntimeout = \"5s\"\n\
         allowed_targets = [\"127.0.0.1/32\"]\ntoken_file = \"{d}/app-token\"\n\
         [probe.modules.chroma]\nprober = \"chroma\"\n\
         allowed_targets = [\"127.0.0.1/32\"]\ntoken_file = \"{d}/chroma-token\"\n",
        d = d.display()
    );
    let daemon = ready_daemon(d, &config).await;
    for module in ["app", "chroma"] {
        let params = [
            ("module", module),
            ("target", &redirecting.target()),
            ("debug", "true"),
        ];
        let (status, body) = probe_daemon(&daemon, &params).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("probe_success 0"), "{module}: {body}");
        assert!(
            body.contains("redirect to \"127.0.0.1\""),
            "{module}: {body}"
        );
    }
    let rss_before = daemon.rss_bytes();
    for server in [&endless, &claims] {
        let start = Instant::now();
        let params = [
            ("module", "app"),
            ("target", &server.target()),
            ("debug", "true"),
        ];
        let (_, body) = probe_daemon(&daemon, &params).await;
        assert!(body.contains("probe_success 0"), "{body}");
        assert!(body.contains("body_too_large"), "{body}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    }
    let grown = daemon.rss_bytes().saturating_sub(rss_before);
    assert!(grown < 10 << 20, "RSS grew by {grown} bytes");
    // A window for a late connection, not a wait for one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(listener.connections(), 0, "{}", listener.received());
    let metrics = daemon.get("/metrics").await;
    for (module, reason, count) in [
        ("app", "redirect", 1.0),
        ("chroma", "redirect", 1.0),
        ("app", "body_too_large", 2.0),
    ] {
        let line =
            format!("llmcache_probe_refusals_total{{module=\"{module}\",reason=\"{reason}\"}}");
        assert_eq!(series(&metrics, &line), count, "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_password_is_used_within_two_probes_without_a_reload() {
    let module_wide = RedisServer::start_with(&["--requirepass", "first-a"]);
    let per_target = RedisServer::start_with(&["--requirepass", "first-b"]);
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    write_file(d, "password", "first-a\n");
    // The credentials' password file as Kubernetes mounts a Secret: a
    // `..data` link to a directory of this version, swapped as a whole.
    std::fs::create_dir(d.join("..v1")).unwrap();
    write_file(&d.join("..v1"), "b", "first-b\n");
    std::os::unix::fs::symlink("..v1", d.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/b", d.join("b")).unwrap();
    write_file(
        d,
        "credentials.toml",
        &format!(
            "[[target]]\nmatch = \"127.0.0.1:{}\"\npassword_file = \"b\"\n",
            per_target.port
        ),
    );
    let app = probe_only(
        &dir,
        &format!(
            "[probe.modules.wide]\nprober = \"redis\"\nallowed_targets = [\"127.0.0.1/32\"]\n\
             password_file = \"{d}/password\"\n\
             [probe.modules.per_target]\nprober = \"redis\"\nallowed_targets = [\"127.0.0.1/32\"]\n\
             credentials_file = \"{d}/credentials.toml\"\n",
            d = d.display()
        ),
    )
    .await;
    let wide = [
        ("module", "wide"),
        ("target", &format!("127.0.0.1:{}", module_wide.port)),
    ];
    let per = [
        ("module", "per_target"),
        ("target", &format!("127.0.0.1:{}", per_target.port)),
    ];
    for params in [&wide, &per] {
        let (_, body) = probe(&app, params).await;
        assert_eq!(series(&body, "probe_success"), 1.0, "{body}");
    }
    // The passwords change in Redis (and its clients are dropped), then in
    // the files.
    module_wide.cli(&["-a", "first-a", "CONFIG", "SET", "requirepass", "second-a"]);
    per_target.cli(&["-a", "first-b", "CONFIG", "SET", "requirepass", "second-b"]);
    for (node, password) in [(&module_wide, "second-a"), (&per_target, "second-b")] {
        node.cli(&[
            "-a", password, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes",
        ]);
    }
    write_file(d, "password", "second-a\n");
    std::fs::create_dir(d.join("..v2")).unwrap();
    write_file(&d.join("..v2"), "b", "second-b\n");
    std::os::unix::fs::symlink("..v2", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    for params in [&wide, &per] {
        let mut last = String::new();
        let succeeded = async {
            for _ in 0..2 {
                let (_, body) = probe(&app, params).await;
                if series(&body, "probe_success") == 1.0 {
                    return true;
                }
                last = body;
            }
            false
        }
        .await;
        assert!(
            succeeded,
            "{params:?} still fails after two probes:\n{last}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_node_outside_the_allow_list_is_never_dialled() {
    let cluster = Cluster::start();
    let seed = &cluster.nodes[0];
    let dir = TempDir::new().unwrap();
    let app = probe_only(
        &dir,
        &format!(
            "[probe.modules.cluster]\nprober = \"redis\"\nmode = \"cluster\"\n\
             allowed_targets = [\"127.0.0.1/32:{}\"]\n\
             [probe.modules.whole]\nprober = \"redis\"\nmode = \"cluster\"\n\
             allowed_targets = [\"127.0.0.1/32\"]\n",
            seed.port
        ),
    )
    .await;
    let clients = |node: &RedisServer| {
        node.cli(&["INFO", "stats"])
            .lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap()
    };
    let before: Vec<u64> = cluster.nodes.iter().map(clients).collect();
    let target = format!("127.0.0.1:{}", seed.port);
    let (status, body) = probe(
        &app,
        &[
            ("module", "cluster"),
            ("target", &target),
            ("debug", "true"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("probe_success 0"), "{body}");
    assert!(body.contains("node_not_allowed"), "{body}");
    // Each of our own `INFO` reads is one connection; the exporter made
    // none to the other nodes.
    for (i, node) in cluster.nodes.iter().enumerate().skip(1) {
        assert_eq!(
            clients(node),
            before[i] + 1,
            "node {} was dialled",
            node.port
        );
    }
    let metrics = app.metrics().await;
    let line = r#"llmcache_probe_refusals_total{module="cluster",reason="node_not_allowed"}"#;
    assert!(series(&metrics, line) >= 1.0, "{metrics}");
    // The same cluster, every node allowed: the probe succeeds.
    let (_, body) = probe(&app, &[("module", "whole"), ("target", &target)]).await;
    assert_eq!(series(&body, "probe_success"), 1.0, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_probe_has_its_own_deadline_not_the_pooled_clients() {
    let redis = RedisServer::start();
    let dir = TempDir::new().unwrap();
    let app = probe_only(
        &dir,
        "[probe.modules.redis]\nprober = \"redis\"\ntimeout = \"5s\"\nround_trips = 1\n\
         allowed_targets = [\"127.0.0.1/32\"]\n",
    )
    .await;
    let target = format!("127.0.0.1:{}", redis.port);
    let url = url::Url::parse_with_params(
        &app.url("/probe"),
        &[("module", "redis"), ("target", target.as_str())],
    )
    .unwrap();
    let scrape = |timeout: Option<&str>| {
        let mut request = app.http.get(url.clone());
        if let Some(timeout) = timeout {
            request = request.header("X-Prometheus-Scrape-Timeout-Seconds", timeout);
        }
        async move { request.send().await.unwrap().text().await.unwrap() }
    };
    // The first probe, which makes the pooled client, has 0.3 s.
    let body = scrape(Some("0.8")).await;
    assert_eq!(series(&body, "probe_success"), 1.0, "{body}");
    // The next has 5 s, and Redis takes 0.8 s to answer.
    redis.stall();
    let resume = tokio::spawn(async {
        tokio::time::sleep(Duration::from_millis(800)).await;
    });
    let probe = tokio::spawn(scrape(None));
    resume.await.unwrap();
    redis.resume();
    let body = probe.await.unwrap();
    assert_eq!(series(&body, "probe_success"), 1.0, "{body}");
}
