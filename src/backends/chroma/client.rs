//! A small Chroma v2 HTTP client: the handful of calls the canary makes, each
//! with a timeout, a latency observation and a typed error.
//!
//! Record calls (`add`, `query`, `count`, `delete`) take the collection's UUID;
//! `get`/`delete` on `collections/{x}` take its name. Errors never carry the
//! URL (reqwest's `without_url`) or the token.

use std::time::Instant;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::backends::http::{guarded, read_limited, redirect_error};
use crate::backends::{
    error_chain, request_labels, Backend, BackendError, BackendMetrics, ErrorKind,
};
use crate::config::{ChromaConfig, TokenHeader};

request_labels! {
    /// A request to Chroma, as the `request` label spells it.
    pub(crate) enum ChromaRequest for Chroma {
        Heartbeat => "heartbeat" (housekeeping),
        GetCollection => "get_collection" (housekeeping),
        CreateCollection => "create_collection" (housekeeping),
        DeleteCollection => "delete_collection" (housekeeping),
        Add => "add",
        Query => "query",
        Count => "count" (housekeeping),
        ListCollections => "list_collections" (housekeeping),
        Delete => "delete",
    }
}

/// A Chroma error of `kind`.
pub(crate) fn chroma_error(kind: ErrorKind, message: impl Into<String>) -> BackendError {
    BackendError::new(Backend::Chroma, kind, message)
}

fn from_reqwest(err: reqwest::Error) -> BackendError {
    BackendError::from_reqwest(Backend::Chroma, err)
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

/// A request body, serialized straight from borrowed data: an embedding is
/// written as it is, never built into a `serde_json::Value` tree of numbers.
fn json<T: Serialize>(body: &T) -> Result<Vec<u8>, BackendError> {
    serde_json::to_vec(body).map_err(|err| {
        chroma_error(
            ErrorKind::Validation,
            format!("cannot encode the request: {err}"),
        )
    })
}

#[derive(Serialize)]
struct AddBody<'a> {
    ids: &'a [String],
    embeddings: &'a [Vec<f32>],
    documents: &'a [String],
}

#[derive(Serialize)]
struct QueryBody<'a> {
    query_embeddings: [&'a [f32]; 1],
    n_results: usize,
    include: [&'static str; 2],
    #[serde(skip_serializing_if = "Option::is_none")]
    ids: Option<&'a [String]>,
}

#[derive(Serialize)]
struct DeleteBody<'a> {
    ids: &'a [String],
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
    /// The canary's request series; `None` for a fleet probe, which times
    /// its requests in its own registry.
    metrics: Option<BackendMetrics>,
    /// The longest answer read.
    body_limit: u64,
}

/// The longest answer the canary's own client reads: far above any answer
/// of the few calls it makes.
const CANARY_BODY_LIMIT: u64 = 64 * 1024 * 1024;

impl ChromaClient {
    /// Builds the client; no request is made.
    pub(crate) fn new(
        config: &ChromaConfig,
        metrics: Option<BackendMetrics>,
    ) -> Result<Self, BackendError> {
        Self::build(config, metrics, None, CANARY_BODY_LIMIT)
    }

    /// A fleet probe's client: it dials only `addresses` for the target's
    /// `host`, and reads no answer past `body_limit`.
    pub(crate) fn for_probe(
        config: &ChromaConfig,
        host: &str,
        addresses: &[std::net::SocketAddr],
        body_limit: u64,
    ) -> Result<Self, BackendError> {
        Self::build(config, None, Some((host, addresses)), body_limit)
    }

    fn build(
        config: &ChromaConfig,
        metrics: Option<BackendMetrics>,
        pin: Option<(&str, &[std::net::SocketAddr])>,
        body_limit: u64,
    ) -> Result<Self, BackendError> {
        let mut headers = HeaderMap::new();
        if let Some(token) = config.token_file.as_ref().map(|file| &file.secret) {
            let (name, value) = match config.token_header {
                TokenHeader::XChromaToken => (
                    HeaderName::from_static("x-chroma-token"),
                    token.expose().to_owned(),
                ),
                TokenHeader::Authorization => (AUTHORIZATION, format!("Bearer {}", token.expose())),
            };
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                chroma_error(
                    ErrorKind::Connection,
                    "the Chroma token is not a valid HTTP header value",
                )
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
                chroma_error(
                    ErrorKind::Connection,
                    format!("cannot read {}: {err}", path.display()),
                )
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|err| {
                chroma_error(
                    ErrorKind::Connection,
                    format!("{}: {}", path.display(), error_chain(&err)),
                )
            })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = guarded(builder, pin).build().map_err(from_reqwest)?;
        let api = |path: &str| {
            config.url.0.join(path).map_err(|err| {
                chroma_error(
                    ErrorKind::Connection,
                    format!("cannot build the API URL: {err}"),
                )
            })
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
            body_limit,
        })
    }

    /// `GET /api/v2/heartbeat`.
    pub(crate) async fn heartbeat(&self) -> Result<(), BackendError> {
        let url = self.heartbeat_url.clone();
        self.call::<serde_json::Value>(ChromaRequest::Heartbeat, Method::GET, url, None)
            .await
            .map(drop)
    }

    /// The collection called `name`, or `None` if there is none.
    pub(crate) async fn get_collection(
        &self,
        name: &str,
    ) -> Result<Option<Collection>, BackendError> {
        let url = self.collection_url(name, "")?;
        match self
            .call(ChromaRequest::GetCollection, Method::GET, url, None)
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
    ) -> Result<Collection, BackendError> {
        let body = json(&CreateCollection {
            name,
            metadata,
            get_or_create: true,
        })?;
        let url = self.collections_url.clone();
        self.call(
            ChromaRequest::CreateCollection,
            Method::POST,
            url,
            Some(body),
        )
        .await
    }

    /// A page of the database's collections: at most `limit`, from `offset`.
    pub(crate) async fn list_collections(
        &self,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<Collection>, BackendError> {
        let mut url = self.collections_url.clone();
        url.query_pairs_mut()
            .append_pair("limit", &limit.to_string())
            .append_pair("offset", &offset.to_string());
        self.call(ChromaRequest::ListCollections, Method::GET, url, None)
            .await
    }

    /// Deletes the collection called `name`.
    pub(crate) async fn delete_collection(&self, name: &str) -> Result<(), BackendError> {
        let url = self.collection_url(name, "")?;
        self.call::<serde_json::Value>(ChromaRequest::DeleteCollection, Method::DELETE, url, None)
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
    ) -> Result<(), BackendError> {
        let body = json(&AddBody {
            ids,
            embeddings,
            documents,
        })?;
        let url = self.collection_url(id, "add")?;
        self.call::<serde_json::Value>(ChromaRequest::Add, Method::POST, url, Some(body))
            .await
            .map(drop)
    }

    /// The `n_results` nearest records to `embedding`.
    pub(crate) async fn query(
        &self,
        id: &str,
        embedding: &[f32],
        n_results: usize,
    ) -> Result<QueryHits, BackendError> {
        self.query_among(id, embedding, n_results, None).await
    }

    /// As [`Self::query`], among the records `among` only, when given.
    pub(crate) async fn query_among(
        &self,
        id: &str,
        embedding: &[f32],
        n_results: usize,
        among: Option<&[String]>,
    ) -> Result<QueryHits, BackendError> {
        let body = json(&QueryBody {
            query_embeddings: [embedding],
            n_results,
            include: ["documents", "distances"],
            ids: among,
        })?;
        let url = self.collection_url(id, "query")?;
        let response: QueryResponse = self
            .call(ChromaRequest::Query, Method::POST, url, Some(body))
            .await?;
        Ok(QueryHits {
            ids: first_query(Some(response.ids)),
            documents: first_query(response.documents),
            distances: first_query(response.distances),
        })
    }

    /// The number of records in the collection with UUID `id`.
    pub(crate) async fn count(&self, id: &str) -> Result<u64, BackendError> {
        let url = self.collection_url(id, "count")?;
        self.call(ChromaRequest::Count, Method::GET, url, None)
            .await
    }

    /// Deletes records by id from the collection with UUID `id`.
    pub(crate) async fn delete(&self, id: &str, ids: &[String]) -> Result<(), BackendError> {
        let body = json(&DeleteBody { ids })?;
        let url = self.collection_url(id, "delete")?;
        self.call::<serde_json::Value>(ChromaRequest::Delete, Method::POST, url, Some(body))
            .await
            .map(drop)
    }

    fn collection_url(&self, name_or_id: &str, action: &str) -> Result<Url, BackendError> {
        let mut url = self.collections_url.clone();
        url.path_segments_mut()
            .map_err(|()| chroma_error(ErrorKind::Connection, "the Chroma URL cannot take a path"))?
            .pop_if_empty()
            .push(name_or_id)
            .extend((!action.is_empty()).then_some(action));
        Ok(url)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        request: ChromaRequest,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<T, BackendError> {
        let start = Instant::now();
        let result = self.send(method, url, body).await;
        if let Some(metrics) = &self.metrics {
            metrics.observe(request, start, &result);
        }
        result
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<T, BackendError> {
        let mut builder = self.http.request(method, url);
        if let Some(body) = body {
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let response = builder.send().await.map_err(from_reqwest)?;
        if response.status().is_redirection() {
            return Err(redirect_error(Backend::Chroma, &response));
        }
        let (status, bytes) = read_limited(response, self.body_limit)
            .await
            .map_err(|err| err.into_backend(Backend::Chroma))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|err| {
                chroma_error(
                    ErrorKind::Protocol,
                    format!("HTTP {status} with a body that does not parse: {err}"),
                )
            });
        }
        let message = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) if !body.message.is_empty() => format!("{}: {}", body.error, body.message),
            _ => String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
        };
        Err(BackendError::from_http_status(
            Backend::Chroma,
            status,
            &message,
        ))
    }
}
