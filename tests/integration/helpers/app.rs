//! The daemon: in process ([`TestApp`]) or as its binary ([`Daemon`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use llm_cache_exporter::{App, Config, Mode};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::*;

/// The daemon, running in process on a free port.
pub struct TestApp {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Builds and starts the app with these flags (after the program name and
/// `--web.listen-address 127.0.0.1:0`).
pub async fn spawn_app(flags: &[String]) -> TestApp {
    install_crypto();
    let mut args = vec![
        "llm-cache-exporter".to_owned(),
        "--web.listen-address".into(),
        "127.0.0.1:0".into(),
    ];
    args.extend(flags.iter().cloned());
    let invocation =
        Config::from_args(args.clone()).unwrap_or_else(|err| panic!("bad test config: {err}"));
    assert_eq!(invocation.mode, Mode::Run);
    let source = Box::new(move || Config::from_args(args.clone()).map(|i| i.config));
    let app = App::build(invocation.config, source)
        .await
        .expect("app builds");
    let addr = app.local_addr();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run(async move {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        http: reqwest::Client::new(),
        shutdown: Some(tx),
        task: Some(task),
    }
}

/// Flags pointing the app at these servers.
pub fn backend_flags(redis: &RedisServer, chroma: &ChromaServer) -> Vec<String> {
    vec![
        "--redis.url".into(),
        redis.url(),
        "--chroma.url".into(),
        chroma.url(),
    ]
}

/// Starts the app against these servers with `toml` as its config file.
pub async fn spawn_app_with_config(
    redis: &RedisServer,
    chroma: &ChromaServer,
    toml: &str,
) -> (TestApp, TempDir) {
    let dir = TempDir::new().expect("temp dir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, toml).expect("config file");
    let mut flags = backend_flags(redis, chroma);
    flags.extend(["--config.file".into(), path.display().to_string()]);
    (spawn_app(&flags).await, dir)
}

/// Starts the app against `chroma` with `toml` as its config file, which
/// names the Redis (a cluster's seed, the sentinels).
pub async fn spawn_app_with_chroma(chroma: &ChromaServer, toml: &str) -> (TestApp, TempDir) {
    let dir = TempDir::new().expect("temp dir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, toml).expect("config file");
    let flags = [
        "--chroma.url".to_owned(),
        chroma.url(),
        "--config.file".into(),
        path.display().to_string(),
    ];
    (spawn_app(&flags).await, dir)
}

impl TestApp {
    /// `http://ADDR/PATH`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `/metrics` in the Prometheus text format.
    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("body")
    }

    /// `/health`: status code and document.
    pub async fn health(&self) -> (u16, serde_json::Value) {
        let response = self
            .http
            .get(self.url("/health"))
            .send()
            .await
            .expect("GET /health");
        let status = response.status().as_u16();
        (status, response.json().await.expect("/health is JSON"))
    }

    /// The value of one series in `/metrics`, e.g. `llmcache_backend_up{backend="redis"}`,
    /// or `None` while it is absent.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        metric_value(&self.metrics().await, series)
    }

    /// The value of one series in `/metrics`; an absent series fails the test.
    pub async fn series(&self, name: &str) -> f64 {
        series(&self.metrics().await, name)
    }

    /// Waits until `/health` reports `component` down after its first
    /// probe; returns the details it gives.
    #[allow(dead_code)]
    pub async fn wait_down(&self, component: &str) -> String {
        poll(
            &format!("{component} reported down"),
            Duration::from_secs(20),
            || async {
                let (_, health) = self.health().await;
                let details = health[component]["details"].as_str()?.to_owned();
                (health[component]["status"] == "unhealthy" && details != "not probed yet")
                    .then_some(details)
            },
        )
        .await
    }

    /// Waits until Redis and Chroma are both reported up.
    pub async fn wait_backends_up(&self) {
        for backend in ["redis", "chroma"] {
            self.wait_for_metric(
                &format!("llmcache_backend_up{{backend=\"{backend}\"}}"),
                1.0,
                Duration::from_secs(15),
            )
            .await;
        }
    }

    /// Waits until `series` is at least `value`, or fails after `timeout`.
    pub async fn wait_for_at_least(&self, series: &str, value: f64, timeout: Duration) -> f64 {
        self.wait_until(series, &format!(">= {value}"), timeout, |seen| {
            seen >= value
        })
        .await
    }

    /// Waits until `series` equals `value`, or fails after `timeout`.
    pub async fn wait_for_metric(&self, series: &str, value: f64, timeout: Duration) {
        self.wait_until(series, &format!("{value}"), timeout, |seen| seen == value)
            .await;
    }

    async fn wait_until(
        &self,
        series: &str,
        wanted: &str,
        timeout: Duration,
        done: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.metric(series).await;
            if let Some(seen) = seen.filter(|v| done(*v)) {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "{series} stayed {seen:?}, wanted {wanted} within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the app and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("app task").expect("app ran cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The daemon binary as a child process, logging at trace level to a file.
pub struct Daemon {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Daemon {
    pub fn start(args: &[String], dir: &std::path::Path) -> Self {
        install_crypto();
        let port = free_port();
        let log = dir.join("stderr.log");
        let child = Command::new(binary())
            .args([
                "--web.listen-address",
                &format!("127.0.0.1:{port}"),
                "--log.level",
                "trace",
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self { child, port, log }
    }

    /// The body at `path`, or `None` while the daemon is not listening yet.
    pub async fn try_get(&self, path: &str) -> Option<String> {
        let response = reqwest::get(format!("http://127.0.0.1:{}{path}", self.port))
            .await
            .ok()?;
        response.text().await.ok()
    }

    pub async fn get(&self, path: &str) -> String {
        self.try_get(path).await.expect("the daemon answers")
    }

    /// Its resident set size, from `/proc`.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the daemon's /proc status");
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS");
        kb * 1024
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal by name (`HUP`, `STOP`, …).
    pub fn signal(&self, name: &str) {
        signal(&self.child, name);
    }

    /// SIGTERM, wait, and return everything it logged.
    pub fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        std::fs::read_to_string(&self.log).unwrap()
    }
}

impl Drop for Daemon {
    /// A test that fails midway must not leave the daemon running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
