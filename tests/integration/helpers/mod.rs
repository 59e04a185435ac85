//! Real servers for the tests: `redis-server`, the Chroma server from the
//! `chromadb` wheel, `prometheus`, the embeddings model server and the
//! daemon itself, one module per fixture, each on a free loopback port, in
//! its own temp dir, killed on drop. A missing binary fails the test with
//! the command that installs it.

mod app;
mod app_health;
mod chroma;
mod embeddings;
mod prometheus;
mod redis;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use app::{
    backend_flags, spawn_app, spawn_app_with_chroma, spawn_app_with_config, Daemon, TestApp,
};
pub use app_health::AppServer;
pub use chroma::ChromaServer;
pub use embeddings::EmbeddingsServer;
pub use prometheus::PrometheusServer;
pub use redis::RedisServer;

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
/// into `_config`) as `format` (`rules`, `prometheusrule` or `dashboard`):
/// the text, or jsonnet's error.
pub fn render_mixin(config: &str, format: &str) -> Result<String, String> {
    let jsonnet = require("jsonnet", "apt-get install -y jsonnet");
    let mut command = Command::new(jsonnet);
    // The rule files are YAML text; the dashboard is a JSON document.
    if !format.ends_with("dashboard") {
        command.arg("-S");
    }
    let output = command
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
