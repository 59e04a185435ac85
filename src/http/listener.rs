//! The HTTP server: plain TCP, or TLS when the web config asks for it, each
//! connection served by hyper's HTTP/1 with the router.
//!
//! Every accepted connection takes a slot in [`Connections`], which closes
//! connections whose request waits too long, idle ones, and at the cap the
//! quietest one, so clients that connect and send nothing (or half a
//! request) cannot lock anyone out. TLS handshakes run in their connection's
//! own task, bounded in time. The TLS configuration is read per connection,
//! so a change to certificates, client CAs, or TLS on or off applies to the
//! next connection without closing the socket. Headers larger than
//! [`MAX_HEAD`] get 431 from hyper.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use super::connections::{CloseReason, Connections, Slot};

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request line and headers accepted (hyper answers 431 past it).
const MAX_HEAD: usize = 64 * 1024;
/// How long a shutdown waits for requests in progress.
const DRAIN: Duration = Duration::from_secs(5);

/// What Go's servers answer to plain HTTP on a TLS port, so users of curl and
/// of Prometheus's `scheme: http` see the mistake, not a reset.
const PLAIN_ON_TLS: &[u8] =
    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// The TLS settings read per connection; `None` is plain HTTP.
pub(crate) type TlsSetting = Arc<ArcSwapOption<ServerConfig>>;

/// A connection, plain or TLS, recording its activity in its slot.
struct Tracked {
    stream: Either<TcpStream, TlsStream<TcpStream>>,
    slot: Slot,
    /// How much of the blank line that ends a request head was read last.
    head_end: usize,
}

/// The blank line that ends an HTTP/1 request head.
const HEAD_END: &[u8] = b"\r\n\r\n";

/// Advances `matched` (how much of [`HEAD_END`] the bytes before ended
/// with) over `bytes`; returns whether a head ended in them.
fn scan_head_end(matched: &mut usize, bytes: &[u8]) -> bool {
    let mut ended = false;
    for byte in bytes {
        *matched = if *byte == HEAD_END[*matched] {
            *matched + 1
        } else {
            usize::from(*byte == HEAD_END[0])
        };
        if *matched == HEAD_END.len() {
            ended = true;
            *matched = 0;
        }
    }
    ended
}

/// Serves `router` on `listener` until `stop`, then lets requests in progress
/// finish (bounded) and returns.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: TlsSetting,
    connections: Arc<Connections>,
    router: Router,
    stop: CancellationToken,
) {
    let mut http = http1::Builder::new();
    // The read-header and idle timeouts are the slots' (hyper's own
    // header timer would also cut idle keep-alive connections).
    http.timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_header_size(MAX_HEAD);
    let http = Arc::new(http);
    let graceful = GracefulShutdown::new();
    tokio::spawn(connections.clone().watch(stop.clone()));
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE and friends: back off rather than spin.
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let slot = connections.admit();
        let close = slot.activity.close.clone();
        let config = tls.load_full();
        let (http, router, watcher) = (http.clone(), router.clone(), graceful.watcher());
        let connections = connections.clone();
        tokio::spawn(async move {
            let stream = match config {
                None => {
                    // hyper allocates its buffers as soon as it serves a
                    // connection; one that says nothing costs only its socket.
                    tokio::select! {
                        () = close.cancelled() => return,
                        readable = stream.readable() => if readable.is_err() { return },
                    }
                    Either::Left(stream)
                }
                Some(config) => {
                    // Boxed, like the serving below: the task stays small
                    // while the client has not said anything yet.
                    let handshake = Box::pin(tokio::time::timeout(
                        HANDSHAKE_TIMEOUT,
                        handshake(stream, config),
                    ));
                    match tokio::select! {
                        () = close.cancelled() => return,
                        done = handshake => done,
                    } {
                        Ok(Ok(stream)) => Either::Right(stream),
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, error = %err, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            connections.metrics().closed(CloseReason::HandshakeTimeout);
                            return;
                        }
                    }
                }
            };
            let io = TokioIo::new(Tracked {
                stream,
                slot,
                head_end: 0,
            });
            let service = TowerToHyperService::new(router);
            let connection = Box::pin(watcher.watch(http.serve_connection(io, service)));
            tokio::select! {
                () = close.cancelled() => {}
                _ = connection => {}
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP requests still in progress {DRAIN:?} after the shutdown");
    }
}

async fn handshake(
    mut stream: TcpStream,
    config: Arc<ServerConfig>,
) -> io::Result<TlsStream<TcpStream>> {
    let mut first = [0u8; 1];
    // 0x16 opens every TLS handshake record.
    if stream.peek(&mut first).await? == 1 && first[0] != 0x16 {
        let _ = stream.write_all(PLAIN_ON_TLS).await;
        let _ = stream.shutdown().await;
        return Err(io::Error::other("plain HTTP on the HTTPS port"));
    }
    TlsAcceptor::from(config).accept(stream).await
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.slot.activity.read();
            // The read-header timeout stops with the head: the handler may
            // take as long as it needs (a reload takes seconds).
            if scan_head_end(&mut this.head_end, &buf.filled()[before..]) {
                this.slot.activity.head_read();
            }
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.slot.activity.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.slot.activity.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_ends_at_its_blank_line_however_the_reads_split_it() {
        let head = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
        for split in 1..head.len() {
            let mut matched = 0;
            let first = scan_head_end(&mut matched, &head[..split]);
            let second = scan_head_end(&mut matched, &head[split..]);
            assert!(!first && second, "split at {split}");
        }
        let mut matched = 0;
        assert!(!scan_head_end(
            &mut matched,
            b"GET / HTTP/1.1\r\nHost: x\r\n"
        ));
        assert!(!scan_head_end(&mut matched, b"\r\r\n\n"));
    }
}
