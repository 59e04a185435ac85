//! The Chroma server from the `chromadb` wheel.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use tempfile::TempDir;

use super::*;

/// The Python interpreter of the venv that holds the `chromadb` wheel.
pub(super) fn chroma_python() -> PathBuf {
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
        self.create_user_collection_of(name, metadata, 1).await
    }

    /// Creates a user's collection holding `records` records (`r0`, `r1`,
    /// …); returns its UUID.
    pub async fn create_user_collection_of(
        &self,
        name: &str,
        metadata: serde_json::Value,
        records: u64,
    ) -> String {
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
        let ids: Vec<String> = (0..records).map(|i| format!("r{i}")).collect();
        let embeddings: Vec<[f32; 2]> = (0..records).map(|i| [i as f32, 1.0]).collect();
        let documents: Vec<String> = (0..records).map(|i| format!("user data {i}")).collect();
        client
            .post(format!("{}/{id}/add", self.collections_url()))
            .json(
                &serde_json::json!({"ids": ids, "embeddings": embeddings, "documents": documents}),
            )
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
