//! Chroma: the probe collection's ownership, and the probe loop that checks the
//! heartbeat, makes sure the collection exists, and publishes health,
//! `backend_up{backend="chroma"}` and `llmcache_chroma_collection_records`.
//!
//! Ownership is the data-safety rule: the daemon only writes to a collection
//! that carries `{"created_by": "llm-cache-exporter"}`. It looks the collection
//! up by name first and creates it (with the marker) only if it is missing, so
//! a user's collection of the same name is never touched, only reported.

mod client;

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use client::chroma_error;
pub(crate) use client::{ChromaClient, Collection, QueryHits};

use super::probe::{millis_since, probe_loop, ComponentHealth, HealthPublisher, Probe, Status};
use super::{Backend, BackendError, BackendMetrics, ErrorKind};
use crate::config::ChromaConfig;
use crate::metrics::Sampled;

/// The metadata key and value that mark a collection as the daemon's own.
pub(crate) const OWNER_KEY: &str = "created_by";
/// See [`OWNER_KEY`].
pub(crate) const OWNER_VALUE: &str = "llm-cache-exporter";

/// What the daemon knows about the configured collection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Ownership {
    /// Not resolved yet (Chroma down, or the collection just vanished).
    Unknown,
    /// Ours: carries the marker. Safe to write.
    Owned {
        /// The collection's UUID.
        id: String,
    },
    /// Someone else's: exists without the marker. Never written to.
    Foreign,
}

/// The Chroma client and its probe state.
pub(crate) struct ChromaBackend {
    client: ChromaClient,
    collection: String,
    endpoint: String,
    records: Sampled,
    ownership: watch::Sender<Ownership>,
    resolving: tokio::sync::Mutex<()>,
    health: HealthPublisher,
}

impl ChromaBackend {
    /// Builds the client without making a request.
    pub(crate) fn new(
        config: &ChromaConfig,
        metrics: BackendMetrics,
        records: Sampled,
    ) -> Result<Self, BackendError> {
        let endpoint = format!(
            "{}:{}",
            config.url.0.host_str().unwrap_or("?"),
            config.url.0.port_or_known_default().unwrap_or(8000)
        );
        Ok(Self {
            client: ChromaClient::new(config, Some(metrics.clone()))?,
            collection: config.collection.clone(),
            endpoint,
            health: HealthPublisher::new(Backend::Chroma, metrics, ComponentHealth::starting()),
            records,
            ownership: watch::Sender::new(Ownership::Unknown),
            resolving: tokio::sync::Mutex::new(()),
        })
    }

    /// The health the probe loop last published.
    pub(crate) fn health(&self) -> watch::Receiver<ComponentHealth> {
        self.health.subscribe()
    }

    /// The UUID of the probe collection, if the daemon owns it. Every read
    /// and write of records goes through this, so a foreign collection is
    /// never touched.
    pub(crate) async fn owned_collection(&self) -> Result<String, BackendError> {
        match self.ensure_ownership().await? {
            Ownership::Owned { id } => Ok(id),
            Ownership::Foreign | Ownership::Unknown => {
                Err(chroma_error(
                    ErrorKind::Validation,
                    format!(
                        "refusing to touch collection {:?}: it exists without the {OWNER_KEY}={OWNER_VALUE} marker",
                        self.collection
                    ),
                ))
            }
        }
    }

    /// The ownership, resolving it first if it is unknown. One resolution
    /// runs at a time; callers that arrive meanwhile reuse its answer.
    async fn ensure_ownership(&self) -> Result<Ownership, BackendError> {
        let current = self.ownership.borrow().clone();
        if current != Ownership::Unknown {
            return Ok(current);
        }
        let _one_at_a_time = self.resolving.lock().await;
        let current = self.ownership.borrow().clone();
        if current != Ownership::Unknown {
            return Ok(current);
        }
        let resolved = self.resolve_ownership().await?;
        if resolved == Ownership::Foreign {
            tracing::error!(
                collection = %self.collection,
                marker = %format!("{OWNER_KEY}={OWNER_VALUE}"),
                "refusing to write: the collection exists and was not created by llm-cache-exporter; \
                 set chroma.collection to a name of the daemon's own"
            );
        }
        self.ownership.send_replace(resolved.clone());
        Ok(resolved)
    }

    /// The HTTP client, for the workload's reads and writes.
    pub(crate) fn client(&self) -> &ChromaClient {
        &self.client
    }

    /// Deletes the probe collection if, checked again right now, it still
    /// carries the marker and is the one the daemon resolved. Returns whether
    /// it deleted anything.
    pub(crate) async fn delete_owned_collection(&self) -> Result<bool, BackendError> {
        let Ownership::Owned { id } = self.ownership.borrow().clone() else {
            return Ok(false);
        };
        match self.client.get_collection(&self.collection).await? {
            Some(current) if current.id == id && is_ours(&current) => {
                self.client.delete_collection(&self.collection).await?;
                self.ownership.send_replace(Ownership::Unknown);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Probes until `cancel`.
    pub(crate) async fn run_probe(self: Arc<Self>, cancel: CancellationToken) {
        probe_loop(self.as_ref(), &self.health, cancel).await;
    }

    /// Resolves ownership if needed and counts our collection's records.
    async fn check_collection(&self) -> Result<(Status, String), BackendError> {
        let ownership = self.ensure_ownership().await?;
        match ownership {
            // `resolve_ownership` never answers Unknown.
            Ownership::Foreign | Ownership::Unknown => {
                self.records.clear();
                Ok((
                    Status::Degraded,
                    format!(
                        "refusing to write to collection {:?}: it exists without the {OWNER_KEY}={OWNER_VALUE} marker",
                        self.collection
                    ),
                ))
            }
            Ownership::Owned { id } => match self.client.count(&id).await {
                Ok(records) => {
                    self.records.set(records as f64);
                    Ok((
                        Status::Healthy,
                        format!(
                            "collection {:?} (owned, {records} records)",
                            self.collection
                        ),
                    ))
                }
                Err(err) => {
                    self.records.clear();
                    if err.is_not_found() {
                        // Deleted behind our back: recreate on the next probe.
                        self.ownership.send_replace(Ownership::Unknown);
                    }
                    Err(err)
                }
            },
        }
    }

    async fn resolve_ownership(&self) -> Result<Ownership, BackendError> {
        let collection = match self.client.get_collection(&self.collection).await? {
            Some(existing) => existing,
            None => {
                let marker = serde_json::json!({ OWNER_KEY: OWNER_VALUE });
                let created = self
                    .client
                    .get_or_create_collection(&self.collection, marker)
                    .await?;
                tracing::info!(collection = %created.name, id = %created.id, "created the probe collection");
                created
            }
        };
        Ok(if is_ours(&collection) {
            Ownership::Owned { id: collection.id }
        } else {
            Ownership::Foreign
        })
    }
}

impl Probe for ChromaBackend {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Heartbeat, collection ownership, count.
    async fn probe(&self) -> ComponentHealth {
        let start = Instant::now();
        if let Err(err) = self.client.heartbeat().await {
            self.records.clear();
            return ComponentHealth::down(format!(
                "heartbeat {} failed ({}): {err}",
                self.endpoint,
                err.kind.as_str()
            ));
        }
        let latency_ms = millis_since(start);
        let (status, collection) = match self.check_collection().await {
            Ok(text) => text,
            Err(err) => (
                Status::Degraded,
                format!(
                    "collection {:?} unavailable ({}): {err}",
                    self.collection,
                    err.kind.as_str()
                ),
            ),
        };
        let details = format!(
            "chroma at {}: heartbeat in {latency_ms:.2} ms; {collection}",
            self.endpoint
        );
        ComponentHealth::new(status, details, Some(latency_ms))
    }
}

/// Whether a collection carries the daemon's marker.
pub(crate) fn is_ours(collection: &Collection) -> bool {
    collection
        .metadata
        .as_ref()
        .and_then(|m| m.get(OWNER_KEY))
        .and_then(|v| v.as_str())
        == Some(OWNER_VALUE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collection(metadata: serde_json::Value) -> Collection {
        serde_json::from_value(serde_json::json!({"id": "u", "name": "n", "metadata": metadata}))
            .unwrap()
    }

    #[test]
    fn only_the_exact_marker_means_ours() {
        assert!(is_ours(&collection(
            serde_json::json!({"created_by": "llm-cache-exporter"})
        )));
        assert!(!is_ours(&collection(
            serde_json::json!({"created_by": "someone"})
        )));
        assert!(!is_ours(&collection(
            serde_json::json!({"owner": "llm-cache-exporter"})
        )));
        assert!(!is_ours(&collection(serde_json::Value::Null)));
    }
}
