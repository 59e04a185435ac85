//! A small Chroma v2 HTTP client: the handful of calls the canary makes, each
//! with a timeout, a latency observation and a typed error.
//!
//! Record calls (`add`, `query`, `count`, `delete`) take the collection's UUID;
//! `get`/`delete` on `collections/{x}` take its name. Errors never carry the
//! URL (reqwest's `without_url`) or the token.

use std::time::Instant;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::backends::{error_chain, Backend, BackendMetrics, ErrorKind, Request};
use crate::config::{ChromaConfig, TokenHeader};

/// A failed Chroma call.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ChromaError {
    /// No answer within `chroma.timeout`.
    #[error("no answer within the timeout")]
    Timeout,
    /// Could not connect or the connection broke.
    #[error("connection failed: {0}")]
    Connection(String),
    /// An answer that was not what the v2 API promises.
    #[error("unexpected answer: {0}")]
    Protocol(String),
    /// HTTP 4xx: the request was refused (404 included).
    #[error("HTTP {status}: {message}")]
    Rejected {
        /// The HTTP status.
        status: StatusCode,
        /// Chroma's `error: message`, or the body's start.
        message: String,
    },
    /// The configured collection is not the daemon's: nothing is sent.
    #[error("refusing to touch collection {0:?}: it exists without the created_by=llm-cache-exporter marker")]
    NotOwned(String),
    /// HTTP 5xx.
    #[error("HTTP {status}: {message}")]
    Server {
        /// The HTTP status.
        status: StatusCode,
        /// Chroma's `error: message`, or the body's start.
        message: String,
    },
}

impl ChromaError {
    /// The `kind` label for this error.
    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            Self::Timeout => ErrorKind::Timeout,
            Self::Connection(_) => ErrorKind::Connection,
            Self::Protocol(_) => ErrorKind::Protocol,
            Self::Rejected { .. } | Self::NotOwned(_) => ErrorKind::Validation,
            Self::Server { .. } => ErrorKind::Server,
        }
    }

    /// Whether this is a 404, e.g. a collection that does not exist.
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, Self::Rejected { status, .. } if *status == StatusCode::NOT_FOUND)
    }

    fn from_reqwest(err: reqwest::Error) -> Self {
        let err = err.without_url();
        if err.is_timeout() {
            Self::Timeout
        } else if err.is_decode() || err.is_body() {
            Self::Protocol(error_chain(&err))
        } else {
            Self::Connection(error_chain(&err))
        }
    }
}

/// A collection as the v2 API describes it (the fields we use).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Collection {
    pub(crate) id: String,
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The nearest records to one query embedding.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct QueryHits {
    pub(crate) ids: Vec<String>,
    pub(crate) documents: Vec<Option<String>>,
    pub(crate) distances: Vec<Option<f32>>,
}

#[derive(Deserialize)]
struct QueryResponse {
    ids: Vec<Vec<String>>,
    #[serde(default)]
    documents: Option<Vec<Vec<Option<String>>>>,
    #[serde(default)]
    distances: Option<Vec<Vec<Option<f32>>>>,
}

/// Query results are nested per query embedding; we send one.
fn first_query<T>(nested: Option<Vec<Vec<T>>>) -> Vec<T> {
    nested
        .and_then(|n| n.into_iter().next())
        .unwrap_or_default()
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: String,
    #[serde(default)]
    message: String,
}

#[derive(Serialize)]
struct CreateCollection<'a> {
    name: &'a str,
    metadata: serde_json::Value,
    get_or_create: bool,
}

/// The HTTP client bound to one tenant and database.
#[derive(Debug, Clone)]
pub(crate) struct ChromaClient {
    http: reqwest::Client,
    heartbeat_url: Url,
    collections_url: Url,
    metrics: BackendMetrics,
}

impl ChromaClient {
    /// Builds the client; no request is made.
    pub(crate) fn new(config: &ChromaConfig, metrics: BackendMetrics) -> Result<Self, ChromaError> {
        let mut headers = HeaderMap::new();
        if let Some(token) = &config.token {
            let (name, value) = match config.token_header {
                TokenHeader::XChromaToken => (
                    HeaderName::from_static("x-chroma-token"),
                    token.expose().to_owned(),
                ),
                TokenHeader::Authorization => (AUTHORIZATION, format!("Bearer {}", token.expose())),
            };
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                ChromaError::Connection("the Chroma token is not a valid HTTP header value".into())
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .pool_max_idle_per_host(8)
            .user_agent(concat!("llm-cache-exporter/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &config.tls_ca_file {
            let pem = std::fs::read(path).map_err(|err| {
                ChromaError::Connection(format!("cannot read {}: {err}", path.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|err| {
                ChromaError::Connection(format!("{}: {}", path.display(), error_chain(&err)))
            })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(ChromaError::from_reqwest)?;
        let api = |path: &str| {
            config
                .url
                .join(path)
                .map_err(|err| ChromaError::Connection(format!("cannot build the API URL: {err}")))
        };
        let collections = format!(
            "api/v2/tenants/{}/databases/{}/collections",
            config.tenant, config.database
        );
        Ok(Self {
            http,
            heartbeat_url: api("api/v2/heartbeat")?,
            collections_url: api(&collections)?,
            metrics,
        })
    }

    /// `GET /api/v2/heartbeat`.
    pub(crate) async fn heartbeat(&self) -> Result<(), ChromaError> {
        let url = self.heartbeat_url.clone();
        self.call::<serde_json::Value>(Request::Heartbeat, Method::GET, url, None)
            .await
            .map(drop)
    }

    /// The collection called `name`, or `None` if there is none.
    pub(crate) async fn get_collection(
        &self,
        name: &str,
    ) -> Result<Option<Collection>, ChromaError> {
        let url = self.collection_url(name, "")?;
        match self
            .call(Request::GetCollection, Method::GET, url, None)
            .await
        {
            Ok(collection) => Ok(Some(collection)),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Creates `name` with `metadata`, or returns it unchanged if it exists.
    pub(crate) async fn get_or_create_collection(
        &self,
        name: &str,
        metadata: serde_json::Value,
    ) -> Result<Collection, ChromaError> {
        let body = serde_json::to_value(CreateCollection {
            name,
            metadata,
            get_or_create: true,
        })
        .map_err(|err| ChromaError::Protocol(err.to_string()))?;
        let url = self.collections_url.clone();
        self.call(Request::CreateCollection, Method::POST, url, Some(body))
            .await
    }

    /// Deletes the collection called `name`.
    pub(crate) async fn delete_collection(&self, name: &str) -> Result<(), ChromaError> {
        let url = self.collection_url(name, "")?;
        self.call::<serde_json::Value>(Request::DeleteCollection, Method::DELETE, url, None)
            .await
            .map(drop)
    }

    /// Adds records to the collection with UUID `id`.
    pub(crate) async fn add(
        &self,
        id: &str,
        ids: &[String],
        embeddings: &[Vec<f32>],
        documents: &[String],
    ) -> Result<(), ChromaError> {
        let body =
            serde_json::json!({ "ids": ids, "embeddings": embeddings, "documents": documents });
        let url = self.collection_url(id, "add")?;
        self.call::<serde_json::Value>(Request::Add, Method::POST, url, Some(body))
            .await
            .map(drop)
    }

    /// The `n_results` nearest records to `embedding`.
    pub(crate) async fn query(
        &self,
        id: &str,
        embedding: &[f32],
        n_results: usize,
    ) -> Result<QueryHits, ChromaError> {
        let body = serde_json::json!({
            "query_embeddings": [embedding],
            "n_results": n_results,
            "include": ["documents", "distances"],
        });
        let url = self.collection_url(id, "query")?;
        let response: QueryResponse = self
            .call(Request::Query, Method::POST, url, Some(body))
            .await?;
        Ok(QueryHits {
            ids: first_query(Some(response.ids)),
            documents: first_query(response.documents),
            distances: first_query(response.distances),
        })
    }

    /// The number of records in the collection with UUID `id`.
    pub(crate) async fn count(&self, id: &str) -> Result<u64, ChromaError> {
        let url = self.collection_url(id, "count")?;
        self.call(Request::Count, Method::GET, url, None).await
    }

    /// Deletes records by id from the collection with UUID `id`.
    pub(crate) async fn delete(&self, id: &str, ids: &[String]) -> Result<(), ChromaError> {
        let body = serde_json::json!({ "ids": ids });
        let url = self.collection_url(id, "delete")?;
        self.call::<serde_json::Value>(Request::Delete, Method::POST, url, Some(body))
            .await
            .map(drop)
    }

    fn collection_url(&self, name_or_id: &str, action: &str) -> Result<Url, ChromaError> {
        let mut url = self.collections_url.clone();
        url.path_segments_mut()
            .map_err(|()| ChromaError::Connection("the Chroma URL cannot take a path".into()))?
            .pop_if_empty()
            .push(name_or_id)
            .extend((!action.is_empty()).then_some(action));
        Ok(url)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        request: Request,
        method: Method,
        url: Url,
        body: Option<serde_json::Value>,
    ) -> Result<T, ChromaError> {
        let start = Instant::now();
        let result = self.send(method, url, body).await;
        self.metrics
            .observe(Backend::Chroma, request, start.elapsed());
        result
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<serde_json::Value>,
    ) -> Result<T, ChromaError> {
        let mut builder = self.http.request(method, url);
        if let Some(body) = body {
            builder = builder.json(&body);
        }
        let response = builder.send().await.map_err(ChromaError::from_reqwest)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(ChromaError::from_reqwest)?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|err| {
                ChromaError::Protocol(format!(
                    "HTTP {status} with a body that does not parse: {err}"
                ))
            });
        }
        let message = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) if !body.message.is_empty() => format!("{}: {}", body.error, body.message),
            _ => String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
        };
        if status.is_server_error() {
            Err(ChromaError::Server { status, message })
        } else {
            Err(ChromaError::Rejected { status, message })
        }
    }
}
