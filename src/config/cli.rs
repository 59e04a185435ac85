//! The command line: Prometheus-style dotted flags, each with an `LLMCACHE_*`
//! environment variable. Values stay strings here so that validation can name
//! exactly where a bad one came from (flag, env var or file key).

use std::ffi::OsString;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};

/// Flags and their environment variables. Precedence between a flag and its env
/// var is clap's: the flag wins.
#[derive(Parser, Debug, Default)]
#[command(
    name = "llm-cache-exporter",
    version,
    about = "Canary and Prometheus exporter for an LLM chat backend's Redis + Chroma cache path"
)]
pub(crate) struct Cli {
    /// TOML configuration file.
    #[arg(
        long = "config.file",
        env = "LLMCACHE_CONFIG_FILE",
        value_name = "PATH"
    )]
    pub(crate) config_file: Option<String>,

    /// Address to serve /metrics, /health and friends on [default: 0.0.0.0:9860].
    #[arg(
        long = "web.listen-address",
        env = "LLMCACHE_WEB_LISTEN_ADDRESS",
        value_name = "ADDR"
    )]
    pub(crate) web_listen_address: Option<String>,

    /// Exporter-toolkit web config (TLS and basic auth) for the HTTP endpoints.
    #[arg(
        long = "web.config.file",
        env = "LLMCACHE_WEB_CONFIG_FILE",
        value_name = "PATH"
    )]
    pub(crate) web_config_file: Option<String>,

    /// Redis URL, redis:// or rediss:// [default: redis://127.0.0.1:6379].
    #[arg(
        long = "redis.url",
        env = "LLMCACHE_REDIS_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub(crate) redis_url: Option<String>,

    /// File holding the Redis password (overrides a password in the URL).
    #[arg(
        long = "redis.password-file",
        env = "LLMCACHE_REDIS_PASSWORD_FILE",
        value_name = "PATH"
    )]
    pub(crate) redis_password_file: Option<String>,

    /// CA bundle (PEM) to verify a rediss:// server with, instead of the system roots.
    #[arg(
        long = "redis.tls-ca-file",
        env = "LLMCACHE_REDIS_TLS_CA_FILE",
        value_name = "PATH"
    )]
    pub(crate) redis_tls_ca_file: Option<String>,

    /// Client certificate (PEM) for rediss:// mutual TLS.
    #[arg(
        long = "redis.tls-cert-file",
        env = "LLMCACHE_REDIS_TLS_CERT_FILE",
        value_name = "PATH"
    )]
    pub(crate) redis_tls_cert_file: Option<String>,

    /// Client key (PEM) for rediss:// mutual TLS.
    #[arg(
        long = "redis.tls-key-file",
        env = "LLMCACHE_REDIS_TLS_KEY_FILE",
        value_name = "PATH"
    )]
    pub(crate) redis_tls_key_file: Option<String>,

    /// Chroma server URL, http:// or https:// [default: http://127.0.0.1:8000].
    #[arg(
        long = "chroma.url",
        env = "LLMCACHE_CHROMA_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub(crate) chroma_url: Option<String>,

    /// File holding the Chroma auth token.
    #[arg(
        long = "chroma.token-file",
        env = "LLMCACHE_CHROMA_TOKEN_FILE",
        value_name = "PATH"
    )]
    pub(crate) chroma_token_file: Option<String>,

    /// CA bundle (PEM) to verify an https:// Chroma with.
    #[arg(
        long = "chroma.tls-ca-file",
        env = "LLMCACHE_CHROMA_TLS_CA_FILE",
        value_name = "PATH"
    )]
    pub(crate) chroma_tls_ca_file: Option<String>,

    /// Log level: error, warn, info, debug or trace [default: info].
    #[arg(long = "log.level", env = "LLMCACHE_LOG_LEVEL", value_name = "LEVEL")]
    pub(crate) log_level: Option<String>,

    /// Log format: logfmt or json [default: logfmt].
    #[arg(
        long = "log.format",
        env = "LLMCACHE_LOG_FORMAT",
        value_name = "FORMAT"
    )]
    pub(crate) log_format: Option<String>,

    /// Write logs to daily-rotated files PATH.YYYY-MM-DD instead of stderr.
    #[arg(long = "log.file", env = "LLMCACHE_LOG_FILE", value_name = "PATH")]
    pub(crate) log_file: Option<String>,

    /// Root of the proc filesystem the memory monitor reads [default: /proc].
    #[arg(
        long = "path.procfs",
        env = "LLMCACHE_PATH_PROCFS",
        value_name = "PATH"
    )]
    pub(crate) path_procfs: Option<String>,

    /// Root of the sys filesystem the memory monitor reads [default: /sys].
    #[arg(long = "path.sysfs", env = "LLMCACHE_PATH_SYSFS", value_name = "PATH")]
    pub(crate) path_sysfs: Option<String>,

    /// Validate the configuration, print it with secrets redacted, and exit.
    #[arg(long = "check-config", env = "LLMCACHE_CHECK_CONFIG")]
    pub(crate) check_config: bool,

    /// Run each operation once, print a JSON report, exit 0 if all succeeded, else 1.
    #[arg(long = "once", env = "LLMCACHE_ONCE", conflicts_with = "check_config")]
    pub(crate) once: bool,
}

impl Cli {
    /// Parses `args` (program name first), reading env vars for unset flags.
    pub(crate) fn parse_from_args<I, T>(args: I) -> Result<(Self, ArgMatches), clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = Self::command().try_get_matches_from(args)?;
        let cli = Self::from_arg_matches(&matches)?;
        Ok((cli, matches))
    }
}

/// Names the flag or env var a command-line value came from, for error messages.
pub(crate) fn origin(matches: &ArgMatches, id: &str) -> String {
    let command = Cli::command();
    let Some(arg) = command.get_arguments().find(|a| a.get_id() == id) else {
        return id.to_owned();
    };
    match matches.value_source(id) {
        Some(ValueSource::EnvVariable) => arg
            .get_env()
            .map(|env| env.to_string_lossy().into_owned())
            .unwrap_or_else(|| id.to_owned()),
        _ => arg
            .get_long()
            .map(|long| format!("--{long}"))
            .unwrap_or_else(|| id.to_owned()),
    }
}
