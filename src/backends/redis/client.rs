//! A small Redis client: a pool of plain or TLS connections, each used by one
//! request at a time, as `redis-benchmark` uses its connections.
//!
//! A request takes an idle connection (or opens one: TCP, then TLS for
//! `rediss://`, then `AUTH` and `SELECT`), writes its commands in one write,
//! reads one reply per command, and puts the connection back. A connection
//! that failed, or whose request was cancelled by a timeout mid-reply, is
//! dropped, never reused. After a failed connect, further connects wait out a
//! [`Backoff`] (250 ms to 2 s, with jitter) and fail fast meanwhile, so a
//! down Redis is not hammered at the workload's rate.
//!
//! Nothing connects at construction.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::resp::{self, Commands, Reply, REPLY_MAX};
use crate::backends::probe::Backoff;
use crate::backends::{Backend, BackendError, ErrorKind};
use crate::config::RedisConfig;
use crate::pem;
use crate::secret::Secret;

/// Idle connections kept; more may be open while requests run.
const IDLE_MAX: usize = 32;

/// Where and how to connect.
struct Target {
    host: String,
    port: u16,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    username: Option<String>,
    password: Option<Secret>,
    db: u32,
}

/// The pool.
pub(super) struct Client {
    target: Target,
    idle: Mutex<Vec<Connection>>,
    connects: Mutex<ConnectState>,
}

#[derive(Default)]
struct ConnectState {
    backoff: Backoff,
    /// After a failed connect: no new attempt before this, and its error.
    failed: Option<(Instant, BackendError)>,
}

impl Client {
    /// Reads the TLS material and checks the URL; connects nothing.
    pub(super) fn new(config: &RedisConfig) -> Result<Self, BackendError> {
        let url = &config.url;
        let tls = if url.tls {
            let name = ServerName::try_from(url.host.clone())
                .map_err(|_| invalid(format!("{:?} is not a valid TLS server name", url.host)))?;
            Some((TlsConnector::from(Arc::new(tls_config(config)?)), name))
        } else {
            None
        };
        Ok(Self {
            target: Target {
                host: url.host.clone(),
                port: url.port,
                tls,
                username: url.username.clone(),
                password: config.password.clone(),
                db: url.db,
            },
            idle: Mutex::new(Vec::new()),
            connects: Mutex::new(ConnectState::default()),
        })
    }

    /// Sends `commands` on one connection and returns their replies, in order.
    /// Error replies are returned as [`Reply::Error`], not as `Err`.
    ///
    /// A pooled connection may have been closed while idle (by Redis's
    /// `timeout`, a proxy or a NAT). If one fails before any byte of a reply
    /// arrives, the server never read the commands, so they are sent once
    /// more on a fresh connection instead of failing the request.
    pub(super) async fn send(&self, commands: &Commands) -> Result<Vec<Reply>, BackendError> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let (connection, replies) = match idle {
            Some(mut connection) => match connection.round_trip(commands).await {
                Ok(replies) => (connection, replies),
                Err(failure) if failure.unanswered => {
                    // Its idle siblings are likely closed too.
                    self.reset();
                    let mut fresh = self.connect().await?;
                    let replies = fresh.round_trip(commands).await.map_err(|f| f.error)?;
                    (fresh, replies)
                }
                Err(failure) => return Err(failure.error),
            },
            None => {
                let mut fresh = self.connect().await?;
                let replies = fresh.round_trip(commands).await.map_err(|f| f.error)?;
                (fresh, replies)
            }
        };
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < IDLE_MAX {
            idle.push(connection);
        }
        Ok(replies)
    }

    /// Drops every idle connection (after one was found closed, its
    /// siblings likely are too).
    fn reset(&self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    async fn connect(&self) -> Result<Connection, BackendError> {
        if let Some((until, err)) = &self
            .connects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .failed
        {
            if Instant::now() < *until {
                return Err(err.clone());
            }
        }
        let result = Connection::open(&self.target).await;
        let mut state = self.connects.lock().unwrap_or_else(|e| e.into_inner());
        match &result {
            Ok(_) => {
                state.backoff.reset();
                state.failed = None;
            }
            Err(err) => {
                let delay = state.backoff.next_delay();
                state.failed = Some((Instant::now() + delay, err.clone()));
            }
        }
        result
    }
}

fn invalid(message: impl Into<String>) -> BackendError {
    BackendError::new(Backend::Redis, ErrorKind::Validation, message.into())
}

/// Connecting, TLS (rustls reports certificate errors as I/O errors), reading
/// and writing all fail the same way: the connection is unusable.
fn connection_error(context: &str, err: &io::Error) -> BackendError {
    BackendError::new(
        Backend::Redis,
        ErrorKind::Connection,
        format!("{context}: {err}"),
    )
}

fn protocol_error(message: impl Into<String>) -> BackendError {
    BackendError::new(Backend::Redis, ErrorKind::Protocol, message.into())
}

/// rustls settings for `rediss://`: the CA file or the system roots, and
/// the client certificate if one is configured.
fn tls_config(config: &RedisConfig) -> Result<rustls::ClientConfig, BackendError> {
    let roots = match &config.tls_ca_file {
        Some(path) => pem::roots(path).map_err(invalid)?,
        None => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            roots
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| invalid(err.to_string()))?
        .with_root_certificates(roots);
    match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(cert), Some(key)) => {
            let chain = pem::certificates(cert).map_err(invalid)?;
            let key = pem::private_key(key).map_err(invalid)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|err| invalid(format!("the client certificate: {err}")))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// A failed round trip, and whether the server had answered any of it.
struct Failure {
    error: BackendError,
    unanswered: bool,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// One connection and its buffers.
struct Connection {
    stream: Stream,
    read: Vec<u8>,
}

impl Connection {
    async fn open(target: &Target) -> Result<Self, BackendError> {
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|err| connection_error("connect", &err))?;
        let _ = tcp.set_nodelay(true);
        let stream = match &target.tls {
            None => Stream::Plain(tcp),
            Some((connector, name)) => Stream::Tls(Box::new(
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|err| connection_error("TLS handshake", &err))?,
            )),
        };
        let mut connection = Self {
            stream,
            read: Vec::with_capacity(16 * 1024),
        };
        let mut hello = Commands::default();
        if let Some(password) = &target.password {
            match &target.username {
                Some(user) => hello.push(&[b"AUTH", user.as_bytes(), password.expose().as_bytes()]),
                None => hello.push(&[b"AUTH", password.expose().as_bytes()]),
            };
        }
        if target.db != 0 {
            hello.push(&[b"SELECT", target.db.to_string().as_bytes()]);
        }
        if hello.count > 0 {
            for reply in connection.round_trip(&hello).await.map_err(|f| f.error)? {
                if let Reply::Error(message) = reply {
                    let message = match &target.password {
                        Some(secret) => secret.scrub(&message),
                        None => message,
                    };
                    return Err(BackendError::new(
                        Backend::Redis,
                        ErrorKind::Connection,
                        format!("authentication failed: {message}"),
                    ));
                }
            }
        }
        Ok(connection)
    }

    async fn round_trip(&mut self, commands: &Commands) -> Result<Vec<Reply>, Failure> {
        let unanswered = |error| Failure {
            error,
            unanswered: true,
        };
        let written = match &mut self.stream {
            Stream::Plain(s) => write_all(s, &commands.bytes).await,
            Stream::Tls(s) => write_all(s.as_mut(), &commands.bytes).await,
        };
        written.map_err(|err| unanswered(connection_error("write", &err)))?;
        let mut replies = Vec::with_capacity(commands.count);
        let mut parsed = 0;
        while replies.len() < commands.count {
            let failure = |error| Failure {
                unanswered: self.read.is_empty(),
                error,
            };
            match resp::parse(&self.read[parsed..]).map_err(|e| failure(protocol_error(e.0)))? {
                Some((reply, used)) => {
                    replies.push(reply);
                    parsed += used;
                }
                None => {
                    if self.read.len() > REPLY_MAX {
                        return Err(failure(protocol_error("a reply larger than 16 MiB")));
                    }
                    if self.read.capacity() - self.read.len() < 4096 {
                        self.read.reserve(16 * 1024);
                    }
                    let read = match &mut self.stream {
                        Stream::Plain(s) => s.read_buf(&mut self.read).await,
                        Stream::Tls(s) => s.read_buf(&mut self.read).await,
                    };
                    let unanswered = self.read.is_empty();
                    let error = match read {
                        Ok(0) => BackendError::new(
                            Backend::Redis,
                            ErrorKind::Connection,
                            "the server closed the connection",
                        ),
                        Ok(_) => continue,
                        Err(err) => connection_error("read", &err),
                    };
                    return Err(Failure { error, unanswered });
                }
            }
        }
        self.read.drain(..parsed);
        if self.read.capacity() > 256 * 1024 {
            // One big reply must not pin its buffer for the connection's life.
            self.read.shrink_to(16 * 1024);
        }
        Ok(replies)
    }
}

async fn write_all<S: AsyncWrite + AsyncRead + Unpin>(
    stream: &mut S,
    bytes: &[u8],
) -> io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}
