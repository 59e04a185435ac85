//! The HTTP surface: `/metrics`, `/health`, `/-/healthy`, `/-/ready` and the
//! landing page. Handlers only read what the background loops measured; none
//! of them talks to a backend.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::backends::Status;
use crate::health::HealthSources;
use crate::metrics::Metrics;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the handlers read.
#[derive(Clone)]
pub(crate) struct HttpState {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) health: HealthSources,
    pub(crate) ready: Arc<AtomicBool>,
}

/// All routes.
pub(crate) fn router(state: HttpState) -> Router {
    Router::new()
        .route("/", get(landing))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/-/healthy", get(healthy))
        .route("/-/ready", get(ready))
        .with_state(state)
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
    let report = state.health.report();
    let code = if report.status == Status::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
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

async fn landing(State(state): State<HttpState>) -> Html<String> {
    let report = state.health.report();
    let mut rows = String::new();
    for (name, component) in [
        ("redis", &report.redis),
        ("chroma", &report.chromadb),
        ("embeddings", &report.embeddings),
    ] {
        rows.push_str(&format!(
            "<tr><td>{name}</td><td class=\"{status}\">{status}</td><td>{details}</td></tr>\n",
            status = escape(&format!("{:?}", component.status).to_lowercase()),
            details = escape(&component.details),
        ));
    }
    Html(format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>llm-cache-exporter</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}td{{padding:.2em 1em .2em 0;vertical-align:top}}
.healthy{{color:#1a7f37}}.degraded{{color:#9a6700}}.unhealthy{{color:#cf222e}}</style></head>
<body>
<h1>llm-cache-exporter</h1>
<p>Version {version} (revision {revision}). Overall status: <b class="{overall}">{overall}</b>.</p>
<p>Cache: {cache}</p>
<table><tr><th align="left">backend</th><th align="left">status</th><th align="left">details</th></tr>
{rows}</table>
<ul>
<li><a href="metrics">/metrics</a>: Prometheus metrics</li>
<li><a href="health">/health</a>: health report (JSON)</li>
<li><a href="-/healthy">/-/healthy</a>: liveness</li>
<li><a href="-/ready">/-/ready</a>: readiness</li>
</ul>
</body></html>
"#,
        version = env!("CARGO_PKG_VERSION"),
        revision = env!("LLMCACHE_BUILD_REVISION"),
        overall = escape(&format!("{:?}", report.status).to_lowercase()),
        cache = escape(&report.cache.details),
    ))
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
