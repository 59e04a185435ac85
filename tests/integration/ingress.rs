//! An HTTPS ingress with token auth in front of the real Chroma server.
//!
//! Chroma 1.x's own server has no authentication; production deployments put
//! it behind a TLS-terminating reverse proxy that checks a token (the Chroma
//! cookbook's advice). This is that proxy, small: TLS is terminated with
//! rustls, the token is checked the way Chroma's token auth checks it (401 with
//! Chroma's error shape otherwise), and the request is forwarded unchanged.
//!
//! The fault tests use it plain, to make the real Chroma behind it answer
//! 500s or garbage for a while ([`Fault`]).

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::pki::Leaf;

/// What the ingress does to every request for now.
#[derive(Clone, Copy)]
#[repr(u8)]
pub enum Fault {
    /// Forward it.
    None = 0,
    /// Answer 500 with Chroma's error shape.
    ServerError = 1,
    /// Answer 200 with a body that is not JSON.
    Garbage = 2,
}

/// The running ingress.
pub struct Ingress {
    pub port: u16,
    /// Requests refused for a missing or wrong token.
    pub refused: Arc<AtomicU64>,
    fault: Arc<AtomicU8>,
    tls: bool,
    tasks: Vec<JoinHandle<()>>,
}

struct Proxy {
    upstream: String,
    token: Option<(HeaderName, String)>,
    client: reqwest::Client,
    refused: Arc<AtomicU64>,
    fault: Arc<AtomicU8>,
}

impl Ingress {
    /// Serves HTTPS with `server`'s certificate, forwarding to `upstream`
    /// (`http://host:port`) only requests whose `header` equals `expected`.
    pub async fn start(upstream: &str, server: &Leaf, header: &str, expected: &str) -> Self {
        let token = (
            HeaderName::from_bytes(header.as_bytes()).unwrap(),
            expected.to_owned(),
        );
        Self::launch(upstream, Some(server), Some(token)).await
    }

    /// Plain HTTP, no auth: for injecting faults in front of `upstream`.
    pub async fn plain(upstream: &str) -> Self {
        Self::launch(upstream, None, None).await
    }

    /// Applies `fault` to every request from now on.
    pub fn inject(&self, fault: Fault) {
        self.fault.store(fault as u8, Ordering::Relaxed);
    }

    async fn launch(
        upstream: &str,
        server: Option<&Leaf>,
        token: Option<(HeaderName, String)>,
    ) -> Self {
        crate::helpers::install_crypto();
        let refused = Arc::new(AtomicU64::new(0));
        let fault = Arc::new(AtomicU8::new(Fault::None as u8));
        let proxy = Arc::new(Proxy {
            upstream: upstream.to_owned(),
            token,
            client: reqwest::Client::new(),
            refused: refused.clone(),
            fault: fault.clone(),
        });
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let inner_addr = inner.local_addr().unwrap();
        let app = axum::Router::new().fallback(forward).with_state(proxy);
        let serve = tokio::spawn(async move {
            let _ = axum::serve(inner, app).await;
        });
        let Some(server) = server else {
            return Self {
                port: inner_addr.port(),
                refused,
                fault,
                tls: false,
                tasks: vec![serve],
            };
        };
        // TLS terminated in front of the plain inner port.

        let chain = CertificateDer::pem_file_iter(&server.cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&server.key).unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let outer = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = outer.local_addr().unwrap().port();
        let terminate = tokio::spawn(async move {
            while let Ok((stream, _)) = outer.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let Ok(mut plain) = tokio::net::TcpStream::connect(inner_addr).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        Self {
            port,
            refused,
            fault,
            tls: true,
            tasks: vec![serve, terminate],
        }
    }

    /// `https://localhost:PORT`, or `http://` when plain.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://localhost:{}", self.port)
    }
}

impl Drop for Ingress {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn forward(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    match proxy.fault.load(Ordering::Relaxed) {
        1 => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                [("content-type", "application/json")],
                r#"{"error":"InternalError","message":"injected by the test"}"#,
            )
                .into_response()
        }
        2 => return (StatusCode::OK, "<html>surprise</html>").into_response(),
        _ => {}
    }
    let authorized = proxy.token.as_ref().is_none_or(|(header, expected)| {
        request
            .headers()
            .get(header)
            .and_then(|value| value.to_str().ok())
            == Some(expected.as_str())
    });
    if !authorized {
        proxy.refused.fetch_add(1, Ordering::Relaxed);
        return (
            StatusCode::UNAUTHORIZED,
            [("content-type", "application/json")],
            r#"{"error":"AuthError","message":"Unauthorized"}"#,
        )
            .into_response();
    }
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20).await.unwrap();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut upstream = proxy
        .client
        .request(parts.method, format!("{}{path}", proxy.upstream))
        .body(body);
    if let Some(content_type) = parts.headers.get("content-type") {
        upstream = upstream.header("content-type", content_type);
    }
    match upstream.send().await {
        Ok(answer) => {
            let status = answer.status();
            let content_type = answer.headers().get("content-type").cloned();
            let bytes = answer.bytes().await.unwrap_or_default();
            let mut response = Response::new(Body::from(bytes));
            *response.status_mut() = status;
            if let Some(content_type) = content_type {
                response.headers_mut().insert("content-type", content_type);
            }
            response
        }
        Err(err) => (StatusCode::BAD_GATEWAY, err.to_string()).into_response(),
    }
}
