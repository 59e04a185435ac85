//! Embeddings: the built-in `hash` embedder, or an OpenAI-compatible
//! `POST {url}/embeddings` endpoint (OpenAI, vLLM, Ollama's OpenAI API, TEI).
//! Owns `backend_up{backend="embeddings"}` and the `/health` `embeddings`
//! section, both set from real calls (the hash embedder cannot fail).

mod hash;

use std::time::Instant;

use reqwest::header::{HeaderValue, AUTHORIZATION};
use serde::Deserialize;
use tokio::sync::watch;
use url::Url;

use crate::backends::{
    error_chain, millis_since, Backend, BackendMetrics, ComponentHealth, ErrorKind, Request, Status,
};
use crate::config::{EmbeddingsConfig, EmbeddingsProvider};

pub(crate) use hash::embed as hash_embed;

/// A failed embedding request.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum EmbeddingError {
    /// No answer within `embeddings.timeout`.
    #[error("no answer within the timeout")]
    Timeout,
    /// Could not connect, or the connection broke.
    #[error("connection failed: {0}")]
    Connection(String),
    /// An answer that is not an embeddings response.
    #[error("unexpected answer: {0}")]
    Protocol(String),
    /// HTTP 5xx.
    #[error("HTTP {0}")]
    Server(u16),
    /// HTTP 4xx, or a vector of the wrong dimension.
    #[error("{0}")]
    Validation(String),
}

impl EmbeddingError {
    /// The `kind` label for this error.
    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            Self::Timeout => ErrorKind::Timeout,
            Self::Connection(_) => ErrorKind::Connection,
            Self::Protocol(_) => ErrorKind::Protocol,
            Self::Server(_) => ErrorKind::Server,
            Self::Validation(_) => ErrorKind::Validation,
        }
    }
}

#[derive(Deserialize)]
struct EmbeddingsResponse {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    embedding: Vec<f32>,
}

enum Provider {
    Hash,
    OpenAi {
        http: reqwest::Client,
        url: Url,
        model: String,
    },
}

/// Turns text into vectors of `dimensions` floats.
pub(crate) struct Embedder {
    provider: Provider,
    dimensions: usize,
    metrics: BackendMetrics,
    health: watch::Sender<ComponentHealth>,
}

impl Embedder {
    /// Builds the embedder; no request is made.
    pub(crate) fn new(
        config: &EmbeddingsConfig,
        metrics: BackendMetrics,
    ) -> Result<Self, EmbeddingError> {
        let dimensions = config.dimensions;
        let (provider, health) = match &config.provider {
            EmbeddingsProvider::Hash => (
                Provider::Hash,
                ComponentHealth {
                    status: Status::Healthy,
                    details: format!("hash provider, {dimensions} dimensions"),
                    latency_ms: None,
                    used_memory_mb: None,
                },
            ),
            EmbeddingsProvider::OpenAi {
                url,
                model,
                api_key,
            } => {
                let mut headers = reqwest::header::HeaderMap::new();
                if let Some(key) = api_key {
                    let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
                        .map_err(|_| {
                            EmbeddingError::Validation(
                                "the API key is not a valid HTTP header value".into(),
                            )
                        })?;
                    value.set_sensitive(true);
                    headers.insert(AUTHORIZATION, value);
                }
                let http = reqwest::Client::builder()
                    .default_headers(headers)
                    .timeout(config.timeout)
                    .connect_timeout(config.timeout)
                    .build()
                    .map_err(|err| EmbeddingError::Connection(err.without_url().to_string()))?;
                let url = url.join("embeddings").map_err(|err| {
                    EmbeddingError::Validation(format!("cannot build the embeddings URL: {err}"))
                })?;
                (
                    Provider::OpenAi {
                        http,
                        url,
                        model: model.clone(),
                    },
                    ComponentHealth::down(format!("openai provider ({model}): no request yet")),
                )
            }
        };
        metrics.set_up(Backend::Embeddings, health.status != Status::Unhealthy);
        Ok(Self {
            provider,
            dimensions,
            metrics,
            health: watch::Sender::new(health),
        })
    }

    /// The health last published.
    pub(crate) fn health(&self) -> watch::Receiver<ComponentHealth> {
        self.health.subscribe()
    }

    /// The vector for `text`.
    pub(crate) async fn embed(&self, text: &str) -> Result<Vec<f32>, EmbeddingError> {
        let Provider::OpenAi { http, url, model } = &self.provider else {
            return Ok(hash_embed(text, self.dimensions));
        };
        let start = Instant::now();
        let result = self.request(http, url, model, text).await;
        self.metrics
            .observe(Backend::Embeddings, Request::Embed, start.elapsed());
        self.metrics.set_up(Backend::Embeddings, result.is_ok());
        let host = url.host_str().unwrap_or("?");
        self.health.send_replace(match &result {
            Ok(_) => ComponentHealth {
                status: Status::Healthy,
                details: format!(
                    "openai provider ({model}) at {host}, {} dimensions",
                    self.dimensions
                ),
                latency_ms: Some(millis_since(start)),
                used_memory_mb: None,
            },
            Err(err) => ComponentHealth::down(format!(
                "openai provider ({model}) at {host} failed ({}): {err}",
                err.kind().as_str()
            )),
        });
        result
    }

    async fn request(
        &self,
        http: &reqwest::Client,
        url: &Url,
        model: &str,
        text: &str,
    ) -> Result<Vec<f32>, EmbeddingError> {
        let body = serde_json::json!({ "model": model, "input": [text] });
        let response = http
            .post(url.clone())
            .json(&body)
            .send()
            .await
            .map_err(from_reqwest)?;
        let status = response.status();
        if status.is_server_error() {
            return Err(EmbeddingError::Server(status.as_u16()));
        }
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(EmbeddingError::Validation(format!(
                "HTTP {}: {}",
                status.as_u16(),
                text.chars().take(200).collect::<String>()
            )));
        }
        let parsed: EmbeddingsResponse = response.json().await.map_err(from_reqwest)?;
        let vector = parsed
            .data
            .into_iter()
            .next()
            .map(|item| item.embedding)
            .ok_or_else(|| EmbeddingError::Protocol("no embedding in the response".into()))?;
        if vector.len() != self.dimensions {
            return Err(EmbeddingError::Validation(format!(
                "the model returned {} dimensions; embeddings.dimensions is {}",
                vector.len(),
                self.dimensions
            )));
        }
        Ok(vector)
    }
}

/// As the Chroma client classifies them: a body that does not decode is the
/// server's answer (`protocol`); anything else is the connection.
fn from_reqwest(err: reqwest::Error) -> EmbeddingError {
    let err = err.without_url();
    if err.is_timeout() {
        EmbeddingError::Timeout
    } else if err.is_decode() || err.is_body() {
        EmbeddingError::Protocol(error_chain(&err))
    } else {
        EmbeddingError::Connection(error_chain(&err))
    }
}
