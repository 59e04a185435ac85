//! `GET /probe?target=&module=[&debug=true]`: hands the request to the
//! current generation's [`Fleet`] and answers with what it says: the
//! probe's series (Prometheus text), its debug report, or a refusal.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{HttpState, PROMETHEUS_TEXT};
use crate::fleet::ProbeRequest;

/// The header Prometheus sends with each scrape's timeout.
const SCRAPE_TIMEOUT: &str = "x-prometheus-scrape-timeout-seconds";

pub(super) async fn probe(
    State(state): State<HttpState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let debug = params.get("debug").is_some_and(|v| v == "true");
    let request = ProbeRequest {
        target: params.get("target").cloned(),
        module: params.get("module").cloned(),
        debug,
        scrape_timeout: headers
            .get(SCRAPE_TIMEOUT)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok()),
    };
    let fleet = state.fleet.load_full();
    let answer = fleet.probe(request).await;
    let content_type = if answer.status == 200 && !debug {
        PROMETHEUS_TEXT
    } else {
        "text/plain; charset=utf-8"
    };
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, content_type)], answer.body).into_response()
}
