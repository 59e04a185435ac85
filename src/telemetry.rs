//! Logging: logfmt (default) or JSON, to stderr or to daily-rotated files.
//!
//! Building the subscriber is kept apart from installing it, so tests can build
//! one around their own writer. Our own events follow `--log.level`; other
//! crates are capped at `warn`, because HTTP and Redis client internals at
//! trace level can print request headers and AUTH frames.

use std::io;
use std::path::Path;

use tracing::level_filters::LevelFilter;
use tracing::Subscriber;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

use crate::config::{Config, LogFormat, LogLevel};

/// Keeps the file writer's background thread alive; drop it last, at exit, so
/// buffered lines are flushed.
#[must_use = "dropping the guard stops file logging"]
pub struct TelemetryGuard {
    _guard: Option<WorkerGuard>,
}

/// Installs the global subscriber described by `config.log`.
pub fn init(config: &Config) -> io::Result<TelemetryGuard> {
    let log = &config.log;
    let guard = match &log.file {
        None => {
            install(subscriber(log.level, log.format, io::stderr))?;
            None
        }
        Some(path) => {
            let appender = rolling_appender(path)?;
            let (writer, guard) = tracing_appender::non_blocking(appender);
            install(subscriber(log.level, log.format, writer))?;
            Some(guard)
        }
    };
    Ok(TelemetryGuard { _guard: guard })
}

fn install(subscriber: impl Subscriber + Send + Sync + 'static) -> io::Result<()> {
    tracing::subscriber::set_global_default(subscriber).map_err(io::Error::other)
}

/// Daily files named `<file name>.YYYY-MM-DD` in the file's directory, which is
/// created if missing. A week of files is kept.
fn rolling_appender(path: &Path) -> io::Result<RollingFileAppender> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let prefix = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "llm-cache-exporter.log".into());
    RollingFileAppender::builder()
        .rotation(Rotation::DAILY)
        .filename_prefix(prefix)
        .max_log_files(7)
        .build(dir)
        .map_err(io::Error::other)
}

/// Builds (without installing) a subscriber writing to `writer`.
pub(crate) fn subscriber<W>(
    level: LogLevel,
    format: LogFormat,
    writer: W,
) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let ours = level_filter(level);
    let theirs = ours.min(LevelFilter::WARN);
    let filter = Targets::new()
        .with_target(env!("CARGO_CRATE_NAME"), ours)
        .with_default(theirs);
    let layer = match format {
        LogFormat::Logfmt => tracing_logfmt::builder()
            .with_span_name(false)
            .with_span_path(false)
            .layer()
            .with_writer(writer)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(writer)
            .boxed(),
    };
    tracing_subscriber::registry().with(layer.with_filter(filter))
}

fn level_filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    }
}
