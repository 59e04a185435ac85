//! Real servers for the tests: `redis-server`, the Chroma server from the
//! `chromadb` wheel, and `prometheus`, each on a free loopback port, in its own
//! temp dir, killed on drop. A missing binary fails the test with the command
//! that installs it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use llm_cache_exporter::{App, Config, Mode};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// reqwest is built without a default TLS provider (the daemon picks ring);
/// every test client needs one installed first.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// The path of `program` on PATH, or a panic saying how to install it.
pub fn require(program: &str, install: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{program} not found on PATH; install it with `{install}` (or run scripts/test.sh)"
            )
        })
}

pub fn wait_for_port(port: u16, child: &mut Child, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited with {status}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!(
        "{what} did not listen on {port} within 30 s: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Starts `command` with its output in `{dir}/{name}.log` and waits until
/// it listens on `port`; a server that exits first fails the test with its
/// log.
pub fn spawn_logged(command: &mut Command, name: &str, port: u16, dir: &Path) -> (Child, PathBuf) {
    let log = dir.join(format!("{name}.log"));
    let log_file = std::fs::File::create(&log).expect("server log");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("server log"))
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {name}: {err}"));
    wait_for_port(port, &mut child, name, &log);
    (child, log)
}

/// Prometheus (and Alertmanager) listen before they are ready, and answer
/// `/-/ready` with 503 until then.
pub fn wait_for_ready(port: u16, log: &Path) {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let mut answer = String::new();
        let ready = TcpStream::connect(("127.0.0.1", port))
            .and_then(|mut stream| {
                stream.write_all(b"GET /-/ready HTTP/1.0\r\n\r\n")?;
                stream.read_to_string(&mut answer)
            })
            .is_ok()
            && answer.split(' ').nth(1) == Some("200");
        if ready {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "the server on {port} was not ready within 30 s: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn signal(child: &Child, name: &str) {
    let _ = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status();
}

/// A `redis-server` process.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts a Redis with no persistence.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a Redis with extra command-line arguments (e.g. `--requirepass`).
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_on(free_port(), extra)
    }

    /// Starts a Redis on a given port.
    pub fn start_on(port: u16, extra: &[&str]) -> Self {
        let mut server = Self {
            child: None,
            port,
            dir: TempDir::new().expect("temp dir"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let binary = require("redis-server", "apt-get install -y redis-server");
        let log = self.dir.path().join("redis.log");
        let mut child = Command::new(binary)
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args([
                "--dir",
                &self.dir.path().display().to_string(),
                "--logfile",
                &log.display().to_string(),
            ])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start redis-server");
        wait_for_port(self.port, &mut child, "redis-server", &log);
        self.child = Some(child);
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Whether it runs (it was not killed, or was restarted).
    #[allow(dead_code)]
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGSTOP: the server holds its connections but answers nothing.
    #[allow(dead_code)]
    pub fn stall(&self) {
        if let Some(child) = &self.child {
            signal(child, "STOP");
        }
    }

    /// SIGCONT after [`RedisServer::stall`].
    #[allow(dead_code)]
    pub fn resume(&self) {
        if let Some(child) = &self.child {
            signal(child, "CONT");
        }
    }

    /// Runs `redis-cli` against this server and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let binary = require("redis-cli", "apt-get install -y redis-tools");
        let out = Command::new(binary)
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("cannot run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Fills this server (started with a `maxmemory` under `noeviction`)
    /// with the user's keys until it refuses a write with OOM.
    pub fn fill_until_oom(&self) {
        let value = "x".repeat(64 * 1024);
        for i in 0..1000 {
            if self
                .cli(&["SET", &format!("user:fill:{i}"), &value])
                .contains("OOM")
            {
                return;
            }
        }
        panic!("Redis never refused a write");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            signal(child, "CONT");
        }
        self.kill();
    }
}

/// The Python interpreter of the venv that holds the `chromadb` wheel.
fn chroma_python() -> PathBuf {
    let python = std::env::var_os("LLMCACHE_TEST_CHROMA_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    let ok = Command::new(&python)
        .args(["-c", "import chromadb_rust_bindings"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "the Chroma server is not installed at {}; install it with \
         `python3 -m venv .venv && .venv/bin/pip install --no-deps chromadb==1.5.9` (or run scripts/test.sh)",
        python.display()
    );
    python
}

/// A Chroma server process.
pub struct ChromaServer {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
}

impl ChromaServer {
    /// Starts Chroma with an empty database.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts Chroma on a given port.
    pub fn start_on(port: u16) -> Self {
        install_crypto();
        let mut server = Self {
            child: None,
            port,
            dir: TempDir::new().expect("temp dir"),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let data = self.dir.path().join("data");
        let mut command = Command::new(chroma_python());
        command
            .args([
                "-c",
                "import sys, chromadb_rust_bindings as b; b.cli(['chroma'] + sys.argv[1:])",
                "run",
                "--path",
                &data.display().to_string(),
                "--host",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
            ])
            .env("ANONYMIZED_TELEMETRY", "False");
        let (child, _) = spawn_logged(&mut command, "chroma", self.port, self.dir.path());
        self.child = Some(child);
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The collections endpoint of the default tenant and database.
    pub fn collections_url(&self) -> String {
        format!(
            "{}/api/v2/tenants/default_tenant/databases/default_database/collections",
            self.url()
        )
    }

    /// `GET collections/{path}`: the status and the JSON body (`Null` if none).
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let response = reqwest::get(format!("{}/{path}", self.collections_url()))
            .await
            .expect("chroma GET");
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    /// The collection called `name`, as Chroma describes it.
    pub async fn collection(&self, name: &str) -> serde_json::Value {
        self.get(name).await.1
    }

    /// The number of records in the collection with UUID `id`.
    pub async fn count(&self, id: &str) -> u64 {
        self.get(&format!("{id}/count"))
            .await
            .1
            .as_u64()
            .expect("count")
    }

    /// Creates a user's collection (not the daemon's: no marker) holding one
    /// record; returns its UUID.
    pub async fn create_user_collection(&self, name: &str, metadata: serde_json::Value) -> String {
        let client = reqwest::Client::new();
        let created: serde_json::Value = client
            .post(self.collections_url())
            .json(&serde_json::json!({"name": name, "metadata": metadata}))
            .send()
            .await
            .expect("create collection")
            .json()
            .await
            .expect("collection JSON");
        let id = created["id"].as_str().expect("collection id").to_owned();
        client
            .post(format!("{}/{id}/add", self.collections_url()))
            .json(&serde_json::json!({"ids": ["u1"], "embeddings": [[0.1, 0.2]], "documents": ["user data"]}))
            .send()
            .await
            .expect("add")
            .error_for_status()
            .expect("add accepted");
        id
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for ChromaServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `prometheus` server scraping one target every second.
pub struct PrometheusServer {
    child: Child,
    pub port: u16,
    _dir: TempDir,
}

impl PrometheusServer {
    /// Starts Prometheus scraping `target` every second as job
    /// `llm-cache-exporter` (the name the alert rules expect), loading `rule_files`.
    pub fn start(target: SocketAddr, rule_files: &[PathBuf]) -> Self {
        Self::start_with_job(target, rule_files, "")
    }

    /// As [`Self::start`], with `job` (lines indented four spaces, such as
    /// `scheme:`, `basic_auth:` or `tls_config:`) added to the scrape job.
    pub fn start_with_job(target: SocketAddr, rule_files: &[PathBuf], job: &str) -> Self {
        Self::start_config(&[target], rule_files, job, "")
    }

    /// As [`Self::start`] with several daemons in the job, sending its alerts
    /// to the Alertmanager on `alertmanager`.
    pub fn start_alerting(
        targets: &[SocketAddr],
        rule_files: &[PathBuf],
        alertmanager: u16,
    ) -> Self {
        let alerting = format!(
            "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{alertmanager}']\n"
        );
        Self::start_config(targets, rule_files, "", &alerting)
    }

    fn start_config(
        targets: &[SocketAddr],
        rule_files: &[PathBuf],
        job: &str,
        alerting: &str,
    ) -> Self {
        let binary = require("prometheus", "apt-get install -y prometheus");
        let dir = TempDir::new().expect("temp dir");
        let port = free_port();
        let rules = rule_files
            .iter()
            .map(|p| format!("  - {}\n", p.display()))
            .collect::<String>();
        let targets = targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n{alerting}rule_files:\n{rules}\
             scrape_configs:\n  - job_name: llm-cache-exporter\n{job}    static_configs:\n      - targets: [{targets}]\n",
            rules = if rules.is_empty() { "  []\n".to_owned() } else { rules }
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("prometheus config");
        let (child, log) = spawn_logged(
            Command::new(binary)
                .arg(format!("--config.file={}", config_path.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}")),
            "prometheus",
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

    /// `GET /api/v1/<path>`: the whole answer.
    pub async fn api(&self, path: &str) -> serde_json::Value {
        reqwest::get(format!("http://127.0.0.1:{}/api/v1/{path}", self.port))
            .await
            .expect("prometheus API")
            .json()
            .await
            .expect("prometheus answer")
    }

    /// Runs an instant query; returns the whole answer, errors included.
    pub async fn try_query(&self, expr: &str) -> serde_json::Value {
        let url = url::Url::parse_with_params(
            &format!("http://127.0.0.1:{}/api/v1/query", self.port),
            &[("query", expr)],
        )
        .expect("query URL");
        reqwest::get(url)
            .await
            .expect("prometheus query")
            .json()
            .await
            .expect("prometheus answer")
    }

    /// Runs an instant query; returns the `data.result` array.
    pub async fn query(&self, expr: &str) -> serde_json::Value {
        let body = self.try_query(expr).await;
        assert_eq!(body["status"], "success", "query {expr} failed: {body}");
        body["data"]["result"].clone()
    }

    /// Waits until `expr`'s first sample has the value `wanted` (as Prometheus
    /// prints it, e.g. `"1"`).
    pub async fn wait_for_value(&self, expr: &str, wanted: &str) {
        poll(
            &format!("{expr} = {wanted}"),
            Duration::from_secs(30),
            || async { (self.query(expr).await[0]["value"][1] == wanted).then_some(()) },
        )
        .await;
    }

    /// Waits until `expr` returns any series.
    pub async fn wait_for_any(&self, expr: &str) {
        poll(
            &format!("any result for {expr}"),
            Duration::from_secs(30),
            || async {
                let result = self.query(expr).await;
                result
                    .as_array()
                    .is_some_and(|r| !r.is_empty())
                    .then_some(())
            },
        )
        .await;
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

/// The value of `series` (name plus exact label set) in exposition text.
/// A series that is not there fails the test, naming it and listing the
/// series of the same metric that are, so a misspelt label cannot pass.
pub fn series(text: &str, series: &str) -> f64 {
    metric_value(text, series).unwrap_or_else(|| {
        let name = series.split('{').next().unwrap_or(series);
        let family: Vec<&str> = text.lines().filter(|line| line.starts_with(name)).collect();
        panic!(
            "no series {series} in /metrics; {name} has:\n{}",
            family.join("\n")
        )
    })
}

/// The value of `series`, or `None` while it is absent: for waits, and for
/// asserting that a series is not exported.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
}

/// Polls `check` until it returns `Some`, or fails naming `what`.
pub async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
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

/// Writes `text` to `dir/name`; returns the path, as a flag value.
pub fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("test file");
    path.display().to_string()
}

/// The built daemon binary, for tests of the process itself.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_llm-cache-exporter")
}

/// Every failed operation in `text` (a `/metrics` body), whatever the
/// operation and kind.
pub fn operation_errors(text: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with("llmcache_operation_errors_total{"))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// A file of this repository.
pub fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The mixin rendered by Debian's jsonnet with `config` (jsonnet, merged
/// into `_config`) as `format` (`rules` or `prometheusrule`): the text, or
/// jsonnet's error.
pub fn render_mixin(config: &str, format: &str) -> Result<String, String> {
    let jsonnet = require("jsonnet", "apt-get install -y jsonnet");
    let output = Command::new(jsonnet)
        .arg("-S")
        .arg("-J")
        .arg(repo("mixin"))
        .arg(repo("mixin/build.jsonnet"))
        .args(["--tla-code", &format!("config={config}")])
        .args(["--tla-str", &format!("format={format}")])
        .output()
        .expect("cannot run jsonnet");
    if output.status.success() {
        Ok(String::from_utf8(output.stdout).expect("UTF-8 rules"))
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// `scripts/embeddings-server.py`: WordLlama, a real 256-dimension embedding
/// model, behind an OpenAI-compatible `/v1/embeddings`, from the venv.
pub struct EmbeddingsServer {
    child: Child,
    pub port: u16,
    _dir: TempDir,
}

impl EmbeddingsServer {
    pub fn start() -> Self {
        let python = chroma_python();
        let ok = Command::new(&python)
            .args(["-c", "import wordllama"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "wordllama is not installed in the venv of {}; install it with \
             `{} -m pip install wordllama==0.4.0.post1` (or run scripts/test.sh)",
            python.display(),
            python.display()
        );
        let dir = TempDir::new().expect("temp dir");
        let port = free_port();
        let (child, _) = spawn_logged(
            Command::new(python)
                .arg(repo("scripts/embeddings-server.py"))
                .args(["--port", &port.to_string()]),
            "embeddings-server",
            port,
            dir.path(),
        );
        Self {
            child,
            port,
            _dir: dir,
        }
    }

    /// The `[embeddings]` table pointing the openai provider here.
    pub fn config(&self) -> String {
        format!(
            "[embeddings]\nprovider = \"openai\"\nurl = \"http://127.0.0.1:{}/v1\"\n\
             model = \"wordllama-l2-supercat-256\"\ndimensions = 256\n",
            self.port
        )
    }
}

impl Drop for EmbeddingsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
