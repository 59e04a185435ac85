//! WordLlama behind an OpenAI-compatible endpoint.

use std::process::{Child, Command, Stdio};

use tempfile::TempDir;

use super::chroma::chroma_python;
use super::*;

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
