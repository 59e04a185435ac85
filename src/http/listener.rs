//! The HTTP listener: plain TCP, or TLS when the web config asks for it.
//!
//! TLS handshakes run in their own tasks, so a client that connects and says
//! nothing cannot hold up everyone behind it. They are bounded in number and
//! in time. The TLS configuration is read per connection, so a reload that
//! changes certificates, client CAs, or turns TLS on or off applies to the next
//! connection without closing the socket.
//!
//! Open connections are capped: at the cap the listener stops accepting and
//! the kernel's backlog holds newcomers, so a flood of clients costs a bounded
//! amount of memory.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Handshakes in progress at once; connections beyond are closed at once.
const HANDSHAKES_MAX: usize = 64;
/// Connections open at once (each holds a few kilobytes of buffers).
const CONNECTIONS_MAX: usize = 1024;
/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What Go's servers answer to plain HTTP on a TLS port, so users of curl and
/// of Prometheus's `scheme: http` see the mistake, not a reset.
const PLAIN_ON_TLS: &[u8] =
    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// The TLS settings the listener reads per connection; `None` is plain HTTP.
pub(crate) type TlsSetting = Arc<ArcSwapOption<ServerConfig>>;

/// A connection, plain or TLS, holding its place under the cap.
pub(crate) struct Conn {
    stream: Stream,
    _slot: OwnedSemaphorePermit,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// An `axum::serve` listener fed by the accept task.
pub(crate) struct WebListener {
    incoming: mpsc::Receiver<(Conn, SocketAddr)>,
    addr: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
}

impl WebListener {
    /// Starts accepting on `listener`.
    pub(crate) fn new(listener: TcpListener, tls: TlsSetting) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        let (sender, incoming) = mpsc::channel(HANDSHAKES_MAX);
        let accept = tokio::spawn(accept_loop(listener, tls, sender));
        Ok(Self {
            incoming,
            addr,
            accept,
        })
    }
}

impl Drop for WebListener {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl axum::serve::Listener for WebListener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(accepted) => accepted,
            // The accept task only stops when aborted, which drops us first.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: TlsSetting,
    sender: mpsc::Sender<(Conn, SocketAddr)>,
) {
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES_MAX));
    let connections = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let Ok(slot) = connections.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // EMFILE and friends: back off rather than spin.
                tracing::warn!(error = %err, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(config) = tls.load_full() else {
            let conn = Conn {
                stream: Stream::Plain(stream),
                _slot: slot,
            };
            if sender.send((conn, peer)).await.is_err() {
                return;
            }
            continue;
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many TLS handshakes in progress; closing");
            continue;
        };
        let sender = sender.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(stream, config)).await {
                Ok(Ok(stream)) => {
                    let conn = Conn {
                        stream: Stream::Tls(Box::new(stream)),
                        _slot: slot,
                    };
                    let _ = sender.send((conn, peer)).await;
                }
                Ok(Err(err)) => tracing::debug!(%peer, error = %err, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
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

macro_rules! both {
    ($self:ident, $stream:ident => $call:expr) => {
        match &mut $self.get_mut().stream {
            Stream::Plain($stream) => {
                let $stream = Pin::new($stream);
                $call
            }
            Stream::Tls($stream) => {
                let $stream = Pin::new($stream.as_mut());
                $call
            }
        }
    };
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        both!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        both!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        both!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        both!(self, s => s.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        both!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}
