//! Configuration: flags, then `LLMCACHE_*` env vars, then the TOML file, then
//! defaults. Everything is validated once, here, into typed values; the rest of
//! the daemon never sees a raw string. [`Config`] serializes back to TOML (with
//! secrets as `***`) for `--check-config`.

mod cli;
mod file;
mod validate;
pub(crate) mod values;
mod web_file;

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use url::Url;

pub use values::Secret;
use values::{serialize_byte_size, serialize_duration};
pub(crate) use web_file::WebSecurity;

/// What the command line asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Run the daemon until SIGINT or SIGTERM.
    Run,
    /// Print the effective configuration with secrets redacted, then exit 0.
    CheckConfig,
    /// Run each operation once, print a JSON report, exit 0 or 1.
    Once,
}

/// A parsed and validated command line.
#[derive(Debug)]
pub struct Invocation {
    /// The effective configuration.
    pub config: Config,
    /// What to do with it.
    pub mode: Mode,
}

/// Why the configuration was refused.
#[derive(Debug)]
pub enum ConfigError {
    /// Help, version, or a malformed command line: clap formats and exits.
    Usage(clap::Error),
    /// A value that does not validate; `key` names the flag, env var or file key.
    Invalid {
        /// The flag, env var or dotted file key.
        key: String,
        /// Why it was refused.
        message: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Usage(err) => write!(f, "{}", err.to_string().trim_end()),
            Self::Invalid { key, message } => write!(f, "invalid {key}: {message}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The validated configuration. Field names mirror the TOML file's keys.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub(crate) web: WebConfig,
    pub(crate) redis: RedisConfig,
    pub(crate) chroma: ChromaConfig,
    pub(crate) log: LogConfig,
    pub(crate) embeddings: EmbeddingsConfig,
    pub(crate) cache: CacheConfig,
    pub(crate) workload: WorkloadConfig,
    pub(crate) memory: MemoryConfig,
    #[serde(skip)]
    pub(crate) config_file: Option<PathBuf>,
}

/// `[web]`
#[derive(Debug, Clone, Serialize)]
pub(crate) struct WebConfig {
    pub(crate) listen_address: SocketAddr,
    /// `--web.config.file`, which has no TOML key.
    #[serde(skip)]
    pub(crate) config_file: Option<PathBuf>,
    /// What that file says.
    #[serde(skip)]
    pub(crate) security: WebSecurity,
}

/// `[redis]`
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RedisConfig {
    /// The URL without its password (the username stays).
    #[serde(serialize_with = "serialize_url")]
    pub(crate) url: Url,
    pub(crate) password: Option<Secret>,
    #[serde(serialize_with = "serialize_duration")]
    pub(crate) timeout: Duration,
    pub(crate) key_prefix: String,
    pub(crate) tls_ca_file: Option<PathBuf>,
    pub(crate) tls_cert_file: Option<PathBuf>,
    pub(crate) tls_key_file: Option<PathBuf>,
}

/// `[chroma]`
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ChromaConfig {
    /// The URL without userinfo.
    #[serde(serialize_with = "serialize_url")]
    pub(crate) url: Url,
    pub(crate) token: Option<Secret>,
    pub(crate) token_header: TokenHeader,
    pub(crate) tls_ca_file: Option<PathBuf>,
    pub(crate) tenant: String,
    pub(crate) database: String,
    pub(crate) collection: String,
    #[serde(serialize_with = "serialize_duration")]
    pub(crate) timeout: Duration,
}

/// How the Chroma token is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum TokenHeader {
    /// `X-Chroma-Token: <token>`
    XChromaToken,
    /// `Authorization: Bearer <token>`
    Authorization,
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct LogConfig {
    pub(crate) level: LogLevel,
    pub(crate) format: LogFormat,
    pub(crate) file: Option<PathBuf>,
}

/// `--log.level`
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// `--log.format`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    Logfmt,
    Json,
}

/// `[embeddings]`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct EmbeddingsConfig {
    #[serde(flatten)]
    pub(crate) provider: EmbeddingsProvider,
    pub(crate) dimensions: usize,
    #[serde(serialize_with = "serialize_duration")]
    pub(crate) timeout: Duration,
}

/// Where embeddings come from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "provider", rename_all = "lowercase")]
pub(crate) enum EmbeddingsProvider {
    /// The built-in deterministic feature-hashing embedder.
    Hash,
    /// An OpenAI-compatible `/v1/embeddings` endpoint.
    #[serde(rename = "openai")]
    OpenAi {
        #[serde(serialize_with = "serialize_url")]
        url: Url,
        model: String,
        api_key: Option<Secret>,
    },
}

/// `[cache]`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct CacheConfig {
    #[serde(serialize_with = "serialize_byte_size")]
    pub(crate) memory_budget: u64,
    pub(crate) chat_history: CacheTable,
    pub(crate) similarity: CacheTable,
    pub(crate) embeddings: CacheTable,
}

/// `[cache.<name>]`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct CacheTable {
    #[serde(serialize_with = "serialize_duration")]
    pub(crate) ttl: Duration,
    pub(crate) share: f64,
}

/// `[workload]`
#[derive(Debug, Clone, Serialize)]
pub(crate) struct WorkloadConfig {
    pub(crate) rate: f64,
    pub(crate) concurrency: usize,
    pub(crate) sessions: u64,
    pub(crate) zipf_exponent: f64,
    pub(crate) history_limit: usize,
    pub(crate) top_k: usize,
    #[serde(serialize_with = "serialize_duration")]
    pub(crate) key_ttl: Duration,
    pub(crate) seed: u64,
    pub(crate) cleanup_on_exit: bool,
    pub(crate) mix: Mix,
}

/// `[workload.mix]`: relative weights; at least one is positive.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Mix {
    pub(crate) get_chat_history: f64,
    pub(crate) store_chat_entry: f64,
    pub(crate) query_similar_memories: f64,
    pub(crate) store_memory: f64,
}

/// `[memory]`
#[derive(Debug, Clone, Serialize)]
pub(crate) struct MemoryConfig {
    #[serde(serialize_with = "serialize_duration")]
    pub(crate) sample_interval: Duration,
    pub(crate) host_available_min_ratio: f64,
    pub(crate) cgroup_usage_max_ratio: f64,
    pub(crate) psi_some_avg10_max_ratio: f64,
    pub(crate) redis_used_max_ratio: f64,
    pub(crate) hysteresis: f64,
    #[serde(serialize_with = "serialize_duration")]
    pub(crate) min_dwell: Duration,
    pub(crate) shrink_factor: f64,
    pub(crate) procfs_path: PathBuf,
    pub(crate) sysfs_path: PathBuf,
}

fn serialize_url<S: serde::Serializer>(url: &Url, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(url.as_str())
}

impl Config {
    /// Parses a command line (program name first), layering env vars, the file
    /// named by `--config.file` and defaults, and validates the result.
    pub fn from_args<I, T>(args: I) -> Result<Invocation, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let (cli, matches) = cli::Cli::parse_from_args(args).map_err(ConfigError::Usage)?;
        let mode = if cli.check_config {
            Mode::CheckConfig
        } else if cli.once {
            Mode::Once
        } else {
            Mode::Run
        };
        let config = validate::validate(&cli, &matches)?;
        Ok(Invocation { config, mode })
    }

    /// The effective configuration as TOML, secrets shown as `***`.
    pub fn to_redacted_toml(&self) -> String {
        let mut out = String::from("# effective configuration (secrets redacted)\n");
        if let Some(path) = &self.config_file {
            out.push_str(&format!("# config file: {}\n", path.display()));
        }
        match toml::to_string_pretty(self) {
            Ok(text) => out.push_str(&text),
            Err(err) => out.push_str(&format!("# cannot render: {err}\n")),
        }
        out
    }
}
