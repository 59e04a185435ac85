//! An LLM backend's `/health` (`tests/fixtures/app_health.py`): the seed
//! report's shape, with counters that move on every request.

use std::process::{Child, Command};

use tempfile::TempDir;

use super::*;

/// The fixture's process.
pub struct AppServer {
    child: Child,
    pub port: u16,
    _dir: TempDir,
}

impl AppServer {
    /// Starts it with `args` (`--status degraded`, `--malformed`, ...).
    pub fn start(args: &[&str]) -> Self {
        let python = require("python3", "apt-get install -y python3");
        let dir = TempDir::new().expect("temp dir");
        let port = free_port();
        let (child, _) = spawn_logged(
            Command::new(python)
                .arg(repo("tests/fixtures/app_health.py"))
                .args(["--port", &port.to_string()])
                .args(args),
            "app-health",
            port,
            dir.path(),
        );
        Self {
            child,
            port,
            _dir: dir,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn target(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for AppServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
