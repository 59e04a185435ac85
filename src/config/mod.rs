//! Configuration: flags, then `LLMCACHE_*` env vars, then the TOML file, then
//! defaults, layered by figment.
//!
//! [`Config`] is the schema. Each setting is declared once, as a field: its
//! type (a domain type parsed at the edge), its default (`#[default]`), its
//! file key (the field's path), and its check (`deserialize_with`, where the
//! type cannot carry it). A flag is one line in `flags.rs` naming that key.
//! The few checks that span fields run in [`Config::check`]. Nothing
//! downstream parses a setting again. [`Config`] serializes back to TOML (with
//! secrets as `***`) for `--check-config`.

mod cache;
mod census;
mod check;
mod flags;
mod probe;
pub(crate) mod values;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;
use smart_default::SmartDefault;

use crate::secret::Secret;
use crate::web_config::{self, WebSettings};
pub(crate) use cache::{CacheConfig, SimilarityMode};
pub(crate) use census::{CensusConfig, KeyGroup, ModuleCensus, ReadFrom, RedisCensus};
use flags::{blame, CommandLine};
pub(crate) use probe::{
    canonical_ip, AppFields, CanaryConfig, Host, ModuleConfig, ProbeConfig, ProberKind,
    TargetPattern,
};
use values::{
    any_case, chroma_name, directory, duration, float, int, key_prefix, listen_address, log_file,
    readable_file, HttpUrl, RedisUrl, RedisUrls, SecretFile,
};

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
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Help, version, or a malformed command line: clap formats and exits.
    #[error("{}", .0.to_string().trim_end())]
    Usage(clap::Error),
    /// A value that does not validate; `key` names the flag, env var or file key.
    #[error("invalid {key}: {message}")]
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

/// The configuration. Field names are the TOML file's keys.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub(crate) web: WebConfig,
    pub(crate) redis: RedisConfig,
    pub(crate) chroma: ChromaConfig,
    pub(crate) log: LogConfig,
    pub(crate) embeddings: EmbeddingsConfig,
    pub(crate) cache: CacheConfig,
    pub(crate) workload: WorkloadConfig,
    pub(crate) memory: MemoryConfig,
    pub(crate) canary: CanaryConfig,
    pub(crate) probe: ProbeConfig,
    pub(crate) census: CensusConfig,
    #[serde(skip)]
    pub(crate) config_file: Option<PathBuf>,
}

/// `[web]`
#[derive(Debug, Clone, SmartDefault, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct WebConfig {
    #[default(SocketAddr::from(([0, 0, 0, 0], 9860)))]
    #[serde(deserialize_with = "listen_address")]
    pub(crate) listen_address: SocketAddr,
    /// How long a request may take to arrive, from its first byte.
    #[default(Duration::from_secs(10))]
    #[serde(with = "duration")]
    pub(crate) read_header_timeout: Duration,
    /// How long a keep-alive connection may sit idle.
    #[default(Duration::from_secs(300))]
    #[serde(with = "duration")]
    pub(crate) idle_timeout: Duration,
    /// Connections open at once; at the cap the quietest is closed.
    #[default(1024)]
    #[serde(deserialize_with = "int::<_, _, 1, 65_536>")]
    pub(crate) max_connections: usize,
    /// `--web.config.file` (which has no TOML key) and what it says.
    #[serde(skip)]
    pub(crate) file: WebSettings,
}

/// `[redis]`
#[skip_serializing_none]
#[derive(Debug, Clone, SmartDefault, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RedisConfig {
    #[serde(deserialize_with = "any_case")]
    pub(crate) mode: RedisMode,
    #[default(RedisUrls(vec![RedisUrl::parse("redis://127.0.0.1:6379").expect("a valid literal")]))]
    pub(crate) url: RedisUrls,
    /// Required in sentinel mode.
    pub(crate) sentinel_master: Option<String>,
    /// The sentinels' own password.
    pub(crate) sentinel_password_file: Option<SecretFile>,
    /// The data nodes' password; overrides a password in the URL.
    pub(crate) password_file: Option<SecretFile>,
    /// The password file's, else the first URL's; filled by [`Config::check`].
    #[serde(skip_deserializing)]
    pub(crate) password: Option<Secret>,
    #[default(Duration::from_secs(1))]
    #[serde(with = "duration")]
    pub(crate) timeout: Duration,
    #[default("llmcache:probe:".to_owned())]
    #[serde(deserialize_with = "key_prefix")]
    pub(crate) key_prefix: String,
    #[serde(deserialize_with = "readable_file")]
    pub(crate) tls_ca_file: Option<PathBuf>,
    #[serde(deserialize_with = "readable_file")]
    pub(crate) tls_cert_file: Option<PathBuf>,
    #[serde(deserialize_with = "readable_file")]
    pub(crate) tls_key_file: Option<PathBuf>,
}

/// `--redis.mode`: how the URLs are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RedisMode {
    /// One node.
    #[default]
    Standalone,
    /// The URLs are sentinels, which name the master.
    Sentinel,
    /// The URLs are seed nodes of a Redis Cluster.
    Cluster,
}

/// `[chroma]`
#[skip_serializing_none]
#[derive(Debug, Clone, SmartDefault, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ChromaConfig {
    #[default(HttpUrl(url::Url::parse("http://127.0.0.1:8000/").expect("a valid literal")))]
    pub(crate) url: HttpUrl,
    pub(crate) token_file: Option<SecretFile>,
    pub(crate) token_header: TokenHeader,
    #[serde(deserialize_with = "readable_file")]
    pub(crate) tls_ca_file: Option<PathBuf>,
    #[default("default_tenant".to_owned())]
    #[serde(deserialize_with = "chroma_name")]
    pub(crate) tenant: String,
    #[default("default_database".to_owned())]
    #[serde(deserialize_with = "chroma_name")]
    pub(crate) database: String,
    #[default("llmcache_probe_memories".to_owned())]
    #[serde(deserialize_with = "chroma_name")]
    pub(crate) collection: String,
    #[default(Duration::from_secs(2))]
    #[serde(with = "duration")]
    pub(crate) timeout: Duration,
}

/// How the Chroma token is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum TokenHeader {
    /// `X-Chroma-Token: <token>`
    #[default]
    XChromaToken,
    /// `Authorization: Bearer <token>`
    Authorization,
}

/// `[log]`
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct LogConfig {
    #[serde(deserialize_with = "any_case")]
    pub(crate) level: LogLevel,
    #[serde(deserialize_with = "any_case")]
    pub(crate) format: LogFormat,
    #[serde(deserialize_with = "log_file")]
    pub(crate) file: Option<PathBuf>,
}

/// `--log.level`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

/// `--log.format`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    #[default]
    Logfmt,
    Json,
}

/// `[embeddings]`
#[skip_serializing_none]
#[derive(Debug, Clone, SmartDefault, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct EmbeddingsConfig {
    pub(crate) provider: EmbeddingsProvider,
    /// Required with `provider = "openai"`.
    pub(crate) url: Option<HttpUrl>,
    /// Required with `provider = "openai"`.
    pub(crate) model: Option<String>,
    pub(crate) api_key_file: Option<SecretFile>,
    #[default(256)]
    #[serde(deserialize_with = "int::<_, _, 1, 65_536>")]
    pub(crate) dimensions: usize,
    #[default(Duration::from_secs(5))]
    #[serde(with = "duration")]
    pub(crate) timeout: Duration,
}

/// Where embeddings come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum EmbeddingsProvider {
    /// The built-in deterministic feature-hashing embedder.
    #[default]
    #[serde(rename = "hash")]
    Hash,
    /// An OpenAI-compatible `/v1/embeddings` endpoint.
    #[serde(rename = "openai")]
    OpenAi,
}

/// `[workload]`
#[derive(Debug, Clone, SmartDefault, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct WorkloadConfig {
    #[default(20.0)]
    #[serde(deserialize_with = "float::<_, 0, 100_000, true>")]
    pub(crate) rate: f64,
    #[default(16)]
    #[serde(deserialize_with = "int::<_, _, 1, 4096>")]
    pub(crate) concurrency: usize,
    #[default(1000)]
    #[serde(deserialize_with = "int::<_, _, 1, 100_000_000>")]
    pub(crate) sessions: u64,
    #[default(1.1)]
    #[serde(deserialize_with = "float::<_, 0, 10, true>")]
    pub(crate) zipf_exponent: f64,
    #[default(50)]
    #[serde(deserialize_with = "int::<_, _, 1, 10_000>")]
    pub(crate) history_limit: usize,
    #[default(5)]
    #[serde(deserialize_with = "int::<_, _, 1, 1000>")]
    pub(crate) top_k: usize,
    #[default(Duration::from_secs(3600))]
    #[serde(with = "duration")]
    pub(crate) key_ttl: Duration,
    pub(crate) seed: u64,
    #[default(true)]
    pub(crate) cleanup_on_exit: bool,
    /// Share of Chroma queries whose answer is checked against an exact
    /// search over the canary's own records.
    #[default(0.05)]
    #[serde(deserialize_with = "float::<_, 0, 1, false>")]
    pub(crate) recall_check_fraction: f64,
    /// How long a stored memory may take to show up in a query before it
    /// counts as invisible.
    #[default(Duration::from_secs(10))]
    #[serde(with = "duration")]
    pub(crate) write_visibility_timeout: Duration,
    /// The canary's memories kept in the probe collection; past it the
    /// oldest are deleted, a tenth of the cap at a time.
    #[default(1000)]
    #[serde(deserialize_with = "int::<_, _, 10, 1_000_000>")]
    pub(crate) memory_cap: usize,
    pub(crate) mix: Mix,
}

/// `[workload.mix]`: relative weights; at least one is positive.
#[derive(Debug, Clone, SmartDefault, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Mix {
    #[default(0.5)]
    #[serde(deserialize_with = "float::<_, 0, 1_000_000, false>")]
    pub(crate) get_chat_history: f64,
    #[default(0.2)]
    #[serde(deserialize_with = "float::<_, 0, 1_000_000, false>")]
    pub(crate) store_chat_entry: f64,
    #[default(0.25)]
    #[serde(deserialize_with = "float::<_, 0, 1_000_000, false>")]
    pub(crate) query_similar_memories: f64,
    #[default(0.05)]
    #[serde(deserialize_with = "float::<_, 0, 1_000_000, false>")]
    pub(crate) store_memory: f64,
}

/// `[memory]`
#[derive(Debug, Clone, SmartDefault, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct MemoryConfig {
    #[default(Duration::from_secs(5))]
    #[serde(with = "duration")]
    pub(crate) sample_interval: Duration,
    #[default(0.1)]
    #[serde(deserialize_with = "float::<_, 0, 1, false>")]
    pub(crate) host_available_min_ratio: f64,
    #[default(0.9)]
    #[serde(deserialize_with = "float::<_, 0, 1, false>")]
    pub(crate) cgroup_usage_max_ratio: f64,
    #[default(0.1)]
    #[serde(deserialize_with = "float::<_, 0, 1, false>")]
    pub(crate) psi_some_avg10_max_ratio: f64,
    #[default(0.9)]
    #[serde(deserialize_with = "float::<_, 0, 1, false>")]
    pub(crate) redis_used_max_ratio: f64,
    #[default(0.05)]
    #[serde(deserialize_with = "float::<_, 0, 1, false>")]
    pub(crate) hysteresis: f64,
    /// Zero is allowed: no dwell at all.
    #[default(Duration::from_secs(30))]
    #[serde(with = "duration::or_zero")]
    pub(crate) min_dwell: Duration,
    #[default(0.5)]
    #[serde(deserialize_with = "float::<_, 0, 1, true>")]
    pub(crate) shrink_factor: f64,
    #[default(PathBuf::from("/proc"))]
    #[serde(deserialize_with = "directory")]
    pub(crate) procfs_path: PathBuf,
    #[default(PathBuf::from("/sys"))]
    #[serde(deserialize_with = "directory")]
    pub(crate) sysfs_path: PathBuf,
}

impl Config {
    /// Parses a command line (program name first), layering env vars, the file
    /// named by `--config.file` and defaults, and validates the result.
    pub fn from_args<I, T>(args: I) -> Result<Invocation, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let command_line = CommandLine::parse(args).map_err(ConfigError::Usage)?;
        let mode = if command_line.is_set("check-config") {
            Mode::CheckConfig
        } else if command_line.is_set("once") {
            Mode::Once
        } else {
            Mode::Run
        };
        // Defaults as a layer (not only serde's), so a table the file gives
        // in part keeps the defaults of the keys it leaves out.
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        let config_file = command_line.value("config.file");
        if let Some((path, origin)) = &config_file {
            std::fs::metadata(path).map_err(|err| {
                ConfigError::invalid(origin, format!("cannot read {path}: {err}"))
            })?;
            figment = figment.merge(Toml::file_exact(path));
        }
        for layer in command_line.layers() {
            figment = figment.merge(layer);
        }
        let mut config: Config = figment.extract().map_err(|err| {
            // The first error is the one a user fixes first.
            let err = err.into_iter().next().unwrap_or_else(|| "invalid".into());
            let key = err.path.join(".");
            ConfigError::invalid(blame(err.metadata.as_ref(), &key), one_line(&err.kind))
        })?;
        config.config_file = config_file.map(|(path, _)| PathBuf::from(path));
        if let Some((path, origin)) = command_line.value("web.config.file") {
            let path = PathBuf::from(path);
            let security = web_config::load(&path)
                .map_err(|err| ConfigError::invalid(err.blame(&path, &origin), err.message()))?;
            config.web.file = WebSettings {
                path: Some(path),
                security,
            };
        }
        config.check(|key| blame(figment.find_metadata(key), key))?;
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

/// A figment error as one line: TOML syntax errors come with a multi-line
/// excerpt of the file, which is dropped here (the line number stays).
fn one_line(kind: &figment::error::Kind) -> String {
    kind.to_string()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.contains('|'))
        .collect::<Vec<_>>()
        .join(": ")
}
