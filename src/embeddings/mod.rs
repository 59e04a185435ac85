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

use crate::backends::probe::{millis_since, ComponentHealth, HealthPublisher, Status};
use crate::backends::{request_labels, Backend, BackendError, BackendMetrics, ErrorKind};
use crate::config::{EmbeddingsConfig, EmbeddingsProvider};

pub(crate) use hash::embed as hash_embed;

request_labels! {
    /// A request to the embeddings endpoint, as the `request` label spells it.
    pub(crate) enum EmbeddingsRequest for Embeddings {
        Embed => "embed",
    }
}

fn invalid(message: impl Into<String>) -> BackendError {
    BackendError::new(Backend::Embeddings, ErrorKind::Validation, message)
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
    health: HealthPublisher,
}

impl Embedder {
    /// Builds the embedder; no request is made.
    pub(crate) fn new(
        config: &EmbeddingsConfig,
        metrics: BackendMetrics,
    ) -> Result<Self, BackendError> {
        let dimensions = config.dimensions;
        let (provider, health) = match &config.provider {
            EmbeddingsProvider::Hash => (
                Provider::Hash,
                ComponentHealth::new(
                    Status::Healthy,
                    format!("hash provider, {dimensions} dimensions"),
                    None,
                ),
            ),
            EmbeddingsProvider::OpenAi => {
                // The configuration's check made both required.
                let (Some(url), Some(model)) = (&config.url, &config.model) else {
                    return Err(invalid("provider = \"openai\" needs a url and a model"));
                };
                let mut headers = reqwest::header::HeaderMap::new();
                if let Some(key) = config.api_key_file.as_ref().map(|file| &file.secret) {
                    let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
                        .map_err(|_| invalid("the API key is not a valid HTTP header value"))?;
                    value.set_sensitive(true);
                    headers.insert(AUTHORIZATION, value);
                }
                let http = reqwest::Client::builder()
                    .default_headers(headers)
                    .timeout(config.timeout)
                    .connect_timeout(config.timeout)
                    .build()
                    .map_err(|err| BackendError::from_reqwest(Backend::Embeddings, err))?;
                let url = url
                    .0
                    .join("embeddings")
                    .map_err(|err| invalid(format!("cannot build the embeddings URL: {err}")))?;
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
        Ok(Self {
            provider,
            dimensions,
            health: HealthPublisher::new(Backend::Embeddings, metrics.clone(), health),
            metrics,
        })
    }

    /// Publishes the state it was built with (the hash embedder is healthy
    /// from the start), once its generation runs.
    pub(crate) fn start(&self) {
        self.health.start();
    }

    /// The health last published.
    pub(crate) fn health(&self) -> watch::Receiver<ComponentHealth> {
        self.health.subscribe()
    }

    /// The vector for `text`.
    pub(crate) async fn embed(&self, text: &str) -> Result<Vec<f32>, BackendError> {
        let Provider::OpenAi { http, url, model } = &self.provider else {
            return Ok(hash_embed(text, self.dimensions));
        };
        let start = Instant::now();
        let result = self.request(http, url, model, text).await;
        self.metrics
            .observe(EmbeddingsRequest::Embed, start, &result);
        let host = url.host_str().unwrap_or("?");
        let verdict = match &result {
            Ok(_) => ComponentHealth::new(
                Status::Healthy,
                format!(
                    "openai provider ({model}) at {host}, {} dimensions",
                    self.dimensions
                ),
                Some(millis_since(start)),
            ),
            Err(err) => ComponentHealth::down(format!(
                "openai provider ({model}) at {host} failed ({}): {err}",
                err.kind.as_str()
            )),
        };
        self.health.publish(verdict, start);
        result
    }

    async fn request(
        &self,
        http: &reqwest::Client,
        url: &Url,
        model: &str,
        text: &str,
    ) -> Result<Vec<f32>, BackendError> {
        let body = serde_json::json!({ "model": model, "input": [text] });
        let response = http
            .post(url.clone())
            .json(&body)
            .send()
            .await
            .map_err(from_reqwest)?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let start: String = text.chars().take(200).collect();
            return Err(BackendError::from_http_status(
                Backend::Embeddings,
                status,
                &start,
            ));
        }
        let parsed: EmbeddingsResponse = response.json().await.map_err(from_reqwest)?;
        let vector = parsed
            .data
            .into_iter()
            .next()
            .map(|item| item.embedding)
            .ok_or_else(|| {
                let message = "unexpected answer: no embedding in the response";
                BackendError::new(Backend::Embeddings, ErrorKind::Protocol, message)
            })?;
        if vector.len() != self.dimensions {
            return Err(invalid(format!(
                "the model returned {} dimensions; embeddings.dimensions is {}",
                vector.len(),
                self.dimensions
            )));
        }
        Ok(vector)
    }
}

fn from_reqwest(err: reqwest::Error) -> BackendError {
    BackendError::from_reqwest(Backend::Embeddings, err)
}
