//! llm-cache-exporter: a canary for LLM chat backends. It drives a synthetic
//! workload through an instrumented cache against real Redis and Chroma and
//! exports what it sees as Prometheus metrics.
//!
//! The binary is a thin shell over [`App`]; tests start the same `App` in
//! process on port 0.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod app;
mod backends;
mod cache;
mod census;
mod config;
mod embeddings;
mod fleet;
mod health;
mod http;
mod memory;
mod metrics;
mod pem;
mod process;
mod secret;
pub mod telemetry;
mod web_config;
mod workload;
mod zipf;

#[cfg(test)]
mod proptests;

#[cfg(feature = "bench")]
#[doc(hidden)]
pub mod bench;

pub use app::{App, ConfigSource, OnceOutcome, ReloadHandle};
pub use config::{Config, ConfigError, Invocation, Mode};
