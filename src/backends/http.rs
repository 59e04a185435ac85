//! What the HTTP clients share: no redirect is ever followed (a token must
//! not go wherever a server points), a fleet probe's client dials only the
//! addresses its target was checked with, and no answer is read past a
//! limit.

use std::net::SocketAddr;

use reqwest::{ClientBuilder, Response, StatusCode};

use super::{error_chain, Backend, BackendError, ErrorKind};

/// An answer the client would not take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// A 3xx: not followed.
    Redirect,
    /// Longer than the limit: not read.
    BodyTooLarge,
}

/// `builder`, following no redirect; with `pin`, a fleet probe's: no proxy,
/// and the target's name answered by the addresses that were checked.
pub(crate) fn guarded(builder: ClientBuilder, pin: Option<(&str, &[SocketAddr])>) -> ClientBuilder {
    let builder = builder.redirect(reqwest::redirect::Policy::none());
    match pin {
        None => builder,
        Some((host, addresses)) if host.parse::<std::net::IpAddr>().is_err() => {
            builder.no_proxy().resolve_to_addrs(host, addresses)
        }
        Some(_) => builder.no_proxy(),
    }
}

/// What a redirect says: its status and the host it points to (only the
/// host, escaped: the rest is the server's text).
pub(crate) fn redirect_message(response: &Response) -> String {
    let to = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .and_then(|l| response.url().join(l).ok())
        .and_then(|url| url.host_str().map(|h| format!("{h:?}")))
        .unwrap_or_else(|| "no valid Location".into());
    format!(
        "HTTP {}: a redirect to {to}, not followed",
        response.status()
    )
}

/// A redirect, as a backend's error.
pub(crate) fn redirect_error(backend: Backend, response: &Response) -> BackendError {
    BackendError {
        http_status: Some(response.status().as_u16()),
        refused: Some(Refused::Redirect),
        ..BackendError::new(backend, ErrorKind::Protocol, redirect_message(response))
    }
}

/// Why a body was not read.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// Longer than the limit (in bytes).
    TooLarge(u64),
    /// The transport failed while reading.
    Read(reqwest::Error),
}

impl BodyError {
    /// As a backend's error.
    pub(crate) fn into_backend(self, backend: Backend) -> BackendError {
        match self {
            Self::TooLarge(limit) => BackendError {
                refused: Some(Refused::BodyTooLarge),
                ..BackendError::new(
                    backend,
                    ErrorKind::Protocol,
                    format!("the answer is larger than the limit of {limit} bytes"),
                )
            },
            Self::Read(err) => BackendError::from_reqwest(backend, err),
        }
    }

    /// What went wrong, without the URL.
    pub(crate) fn message(self) -> String {
        match self {
            Self::TooLarge(limit) => {
                format!("the answer is larger than the limit of {limit} bytes")
            }
            Self::Read(err) => format!(
                "reading the answer failed: {}",
                error_chain(&err.without_url())
            ),
        }
    }
}

/// The body of `response`, at most `limit` bytes: a longer one is an
/// error as soon as it shows (by its length, or as it streams in), and
/// nothing past the limit is buffered.
pub(crate) async fn read_limited(
    mut response: Response,
    limit: u64,
) -> Result<(StatusCode, Vec<u8>), BodyError> {
    let status = response.status();
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge(limit));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Read)? {
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(BodyError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body))
}
