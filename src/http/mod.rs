//! The HTTP surface: `/metrics`, `/health`, `/-/healthy`, `/-/ready`,
//! `POST /-/reload`, the landing page and `/probe`, all behind the web
//! config's basic auth ([`auth`]) and TLS ([`listener`]). Handlers only read
//! what the background loops measured, except `/probe` ([`probe`]), which
//! probes its target during the scrape, as blackbox_exporter does.

pub(crate) mod auth;
mod charts;
pub(crate) mod connections;
pub(crate) mod listener;
mod probe;
pub(crate) mod series;
pub(crate) mod watch;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use tokio::sync::{mpsc, oneshot};

use crate::fleet::Fleet;
use crate::health::HealthSources;
use crate::metrics::Metrics;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A reload request: the app answers with the outcome.
pub(crate) type ReloadRequest = oneshot::Sender<Result<(), String>>;

/// What the handlers read.
#[derive(Clone)]
pub(crate) struct HttpState {
    pub(crate) metrics: Arc<Metrics>,
    /// Swapped by a reload.
    pub(crate) health: Arc<ArcSwap<HealthSources>>,
    pub(crate) ready: Arc<AtomicBool>,
    pub(crate) reload: mpsc::Sender<ReloadRequest>,
    /// The last 30 minutes, for the landing page and `/api/v1/series`.
    pub(crate) series: series::Series,
    /// `/probe`'s modules and pools; swapped by a reload.
    pub(crate) fleet: Arc<ArcSwap<Fleet>>,
}

/// All routes, each behind basic auth when users are configured.
pub(crate) fn router(state: HttpState, auth: auth::BasicAuth) -> Router {
    Router::new()
        .route("/", get(landing))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/-/healthy", get(healthy))
        .route("/-/ready", get(ready))
        .route("/-/reload", post(reload).put(reload))
        .route("/api/v1/series", get(api_series))
        .route("/probe", get(probe::probe))
        .fallback(not_found)
        .with_state(state)
        .layer(middleware::from_fn_with_state(auth, auth::require))
}

/// An unknown path: 404, with the way back.
async fn not_found() -> (StatusCode, Html<&'static str>) {
    (
        StatusCode::NOT_FOUND,
        Html(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Not found</title></head>\n\
             <body><p>Nothing here. See <a href=\"/\">/</a>, <a href=\"/metrics\">/metrics</a> \
             or <a href=\"/health\">/health</a>.</p></body></html>\n",
        ),
    )
}

/// Like Prometheus: 200 once the new configuration runs, 500 with the reason
/// when it was refused (the old one keeps running).
async fn reload(State(state): State<HttpState>) -> Response {
    let (reply, outcome) = oneshot::channel();
    if state.reload.send(reply).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    match outcome.await {
        Ok(Ok(())) => (StatusCode::OK, "configuration reloaded\n").into_response(),
        Ok(Err(reason)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload config: {reason}\n"),
        )
            .into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}

async fn metrics(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (encoded, content_type) = if prefers_openmetrics(accept) {
        (state.metrics.encode_openmetrics(), OPENMETRICS)
    } else {
        (state.metrics.encode_prometheus_text(), PROMETHEUS_TEXT)
    };
    match encoded {
        Ok(body) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(_) => {
            tracing::error!("encoding metrics failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding metrics failed\n",
            )
                .into_response()
        }
    }
}

/// Content negotiation between OpenMetrics and the 0.0.4 text format: the
/// higher `q` wins, text on a tie or when nothing matches.
fn prefers_openmetrics(accept: &str) -> bool {
    let mut openmetrics_q = 0.0_f64;
    let mut text_q = 0.0_f64;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.strip_prefix("q="))
            .find_map(|q| q.parse::<f64>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "application/openmetrics-text" => openmetrics_q = openmetrics_q.max(q),
            "text/plain" => text_q = text_q.max(q),
            _ => {}
        }
    }
    openmetrics_q > 0.0 && openmetrics_q > text_q
}

async fn health(State(state): State<HttpState>) -> Response {
    let report = state.health.load().report();
    let code = if report.serves_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(report)).into_response()
}

async fn healthy() -> &'static str {
    "llm-cache-exporter is Healthy.\n"
}

async fn ready(State(state): State<HttpState>) -> Response {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "llm-cache-exporter is Ready.\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "llm-cache-exporter is not ready.\n",
        )
            .into_response()
    }
}

/// The page's own rules: nothing loads from anywhere, inline styles only.
const LANDING_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:";

async fn landing(State(state): State<HttpState>) -> Response {
    let report = state.health.load().report();
    let mut rows = String::new();
    let canary = report.canary.as_ref();
    let components = canary.map(|c| {
        [
            ("redis", &c.redis),
            ("chroma", &c.chromadb),
            ("embeddings", &c.embeddings),
        ]
    });
    for (name, component) in components.into_iter().flatten() {
        rows.push_str(&format!(
            "<tr><td>{name}</td><td class=\"{status}\">{status}</td><td>{details}</td></tr>\n",
            status = escape(&format!("{:?}", component.status).to_lowercase()),
            details = escape(&component.details),
        ));
    }
    let samples = state.series.window(Duration::from_secs(30 * 60));
    let charts = if samples.is_empty() {
        "<p>The charts start after the first 10 s.</p>".to_owned()
    } else {
        charts::all(&samples)
    };
    let page = format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="10"><title>llm-cache-exporter</title>
<style>body{{font-family:sans-serif;max-width:90em;margin:1em auto;padding:0 1em}}td{{padding:.2em 1em .2em 0;vertical-align:top}}td:last-child{{overflow-wrap:anywhere}}
.healthy{{color:#1a7f37}}.degraded{{color:#9a6700}}.unhealthy{{color:#cf222e}}
.charts{{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,28em),1fr));gap:1em}}
figure{{margin:0}}svg{{width:100%;height:auto;display:block}}figcaption{{font-size:.9em}}.legend{{font-size:.8em}}</style></head>
<body>
<h1>llm-cache-exporter</h1>
<p>Version {version} (revision {revision}). Overall status: <b class="{overall}">{overall}</b>.</p>
<p>Cache: {cache}</p>
<table><tr><th align="left">backend</th><th align="left">status</th><th align="left">details</th></tr>
{rows}</table>
<ul>
<li><a href="metrics">/metrics</a>: Prometheus metrics</li>
<li><a href="health">/health</a>: health report (JSON)</li>
<li><a href="api/v1/series">/api/v1/series</a>: the charts' data (JSON)</li>
<li><a href="-/healthy">/-/healthy</a>: liveness</li>
<li><a href="-/ready">/-/ready</a>: readiness</li>
<li>POST /-/reload: re-read the configuration</li>
</ul>
<h2>The last 30 minutes</h2>
<div class="charts">
{charts}</div>
</body></html>
"#,
        version = env!("CARGO_PKG_VERSION"),
        revision = env!("LLMCACHE_BUILD_REVISION"),
        overall = escape(&format!("{:?}", report.status).to_lowercase()),
        cache = escape(
            canary.map_or("the canary is off (canary.enabled = false)", |c| {
                c.cache.details.as_str()
            })
        ),
    );
    ([(header::CONTENT_SECURITY_POLICY, LANDING_CSP)], Html(page)).into_response()
}

/// `?window=` (a duration such as `5m`; the whole ring by default).
#[derive(serde::Deserialize)]
struct SeriesQuery {
    window: Option<String>,
}

/// The ring as JSON, for scripts.
async fn api_series(
    State(state): State<HttpState>,
    query: Result<axum::extract::Query<SeriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let window = match query.map(|q| q.0.window) {
        Ok(None) => Duration::from_secs(30 * 60),
        Ok(Some(text)) => match humantime::parse_duration(&text) {
            Ok(window) => window,
            Err(err) => {
                let message =
                    format!("invalid window: {text:?} is not a duration such as 5m ({err})\n");
                return (StatusCode::BAD_REQUEST, message).into_response();
            }
        },
        Err(err) => {
            return (StatusCode::BAD_REQUEST, format!("invalid query: {err}\n")).into_response()
        }
    };
    Json(serde_json::json!({
        "interval_seconds": series::INTERVAL.as_secs(),
        "caches": series::CACHES,
        "operations": series::OPERATIONS,
        "kinds": series::KINDS,
        "scopes": series::SCOPES,
        "backends": series::BACKENDS,
        "samples": state.series.window(window),
    }))
    .into_response()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_default_accept_header_gets_openmetrics() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(prefers_openmetrics(prometheus));
    }

    #[test]
    fn plain_clients_get_text() {
        assert!(!prefers_openmetrics(""));
        assert!(!prefers_openmetrics("*/*"));
        assert!(!prefers_openmetrics("text/plain"));
        assert!(!prefers_openmetrics(
            "text/plain;version=0.0.4,application/openmetrics-text;q=0.5"
        ));
        assert!(!prefers_openmetrics("application/openmetrics-text;q=0"));
    }

    #[test]
    fn escape_neutralises_markup() {
        assert_eq!(
            escape("<a href=\"x\">&</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
    }
}
