//! The command line: Prometheus-style dotted flags, each with an `LLMCACHE_*`
//! environment variable, and each naming the file key it sets. The flags
//! become figment providers layered over the file, named after the flag or
//! the env var, so an error about a value names exactly where it came from.
//! Help texts show defaults read from `Config::default()`.

use std::ffi::OsString;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use figment::providers::Serialized;
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};

use super::Config;

/// A flag: its name, the file key it sets (`None`: flag and env only), its
/// value's name and its help. Its type, default and checks are the field's,
/// where the key points.
type Flag = (
    &'static str,
    Option<&'static str>,
    &'static str,
    &'static str,
);

/// Every flag that takes a value.
#[rustfmt::skip]
const FLAGS: &[Flag] = &[
    ("config.file", None, "PATH", "TOML configuration file"),
    ("web.listen-address", Some("web.listen_address"), "ADDR", "Address to serve /metrics, /health and friends on"),
    ("web.config.file", None, "PATH", "Exporter-toolkit web config (TLS and basic auth) for the HTTP endpoints"),
    ("redis.mode", Some("redis.mode"), "MODE", "How to reach Redis: standalone, sentinel or cluster"),
    ("redis.url", Some("redis.url"), "URL[,URL...]", "Redis URL, redis:// or rediss://: the node; the cluster's seed nodes; the sentinels"),
    ("redis.sentinel-master", Some("redis.sentinel_master"), "NAME", "The master's name at the sentinels (sentinel mode)"),
    ("redis.sentinel-password-file", Some("redis.sentinel_password_file"), "PATH", "File holding the sentinels' own password"),
    ("redis.password-file", Some("redis.password_file"), "PATH", "File holding the Redis password (overrides a password in the URL)"),
    ("redis.tls-ca-file", Some("redis.tls_ca_file"), "PATH", "CA bundle (PEM) to verify a rediss:// server with, instead of the system roots"),
    ("redis.tls-cert-file", Some("redis.tls_cert_file"), "PATH", "Client certificate (PEM) for rediss:// mutual TLS"),
    ("redis.tls-key-file", Some("redis.tls_key_file"), "PATH", "Client key (PEM) for rediss:// mutual TLS"),
    ("chroma.url", Some("chroma.url"), "URL", "Chroma server URL, http:// or https://"),
    ("chroma.token-file", Some("chroma.token_file"), "PATH", "File holding the Chroma auth token"),
    ("chroma.tls-ca-file", Some("chroma.tls_ca_file"), "PATH", "CA bundle (PEM) to verify an https:// Chroma with"),
    ("log.level", Some("log.level"), "LEVEL", "Log level: error, warn, info, debug or trace"),
    ("log.format", Some("log.format"), "FORMAT", "Log format: logfmt or json"),
    ("log.file", Some("log.file"), "PATH", "Write logs to daily-rotated files PATH.YYYY-MM-DD instead of stderr"),
    ("path.procfs", Some("memory.procfs_path"), "PATH", "Root of the proc filesystem the memory monitor reads"),
    ("path.sysfs", Some("memory.sysfs_path"), "PATH", "Root of the sys filesystem the memory monitor reads"),
    ("canary.enabled", Some("canary.enabled"), "BOOL", "Run the canary's own workload against --redis.url and --chroma.url; false for a /probe-only deployment"),
];

/// `--redis.url` becomes `LLMCACHE_REDIS_URL`.
fn env_name(flag: &str) -> String {
    format!("LLMCACHE_{}", flag.to_uppercase().replace(['.', '-'], "_"))
}

/// The clap command, with every flag, its env var and its default.
fn command() -> Command {
    let defaults = Figment::from(Serialized::defaults(Config::default()));
    let mut command = Command::new("llm-cache-exporter")
        .version(env!("CARGO_PKG_VERSION"))
        .about(
            "Canary and Prometheus exporter for an LLM chat backend's Redis + Chroma cache path",
        );
    for &(name, key, value_name, help) in FLAGS {
        let default = key
            .and_then(|key| defaults.find_value(key).ok())
            .and_then(|value| value.into_string());
        let help = match default {
            Some(default) => format!("{help} [default: {default}]"),
            None => help.to_owned(),
        };
        command = command.arg(
            Arg::new(name)
                .long(name)
                .env(env_name(name))
                .value_name(value_name)
                .help(help)
                // A URL may carry a password.
                .hide_env_values(name.ends_with(".url")),
        );
    }
    command
        .arg(
            Arg::new("check-config")
                .long("check-config")
                .env("LLMCACHE_CHECK_CONFIG")
                .action(ArgAction::SetTrue)
                .help("Validate the configuration, print it with secrets redacted, and exit"),
        )
        .arg(
            Arg::new("once")
                .long("once")
                .env("LLMCACHE_ONCE")
                .action(ArgAction::SetTrue)
                .conflicts_with("check-config")
                .help(
                    "Run each operation once, print a JSON report, exit 0 if all succeeded, else 1",
                ),
        )
}

/// A parsed command line.
pub(super) struct CommandLine(ArgMatches);

impl CommandLine {
    /// Parses `args` (program name first), reading env vars for unset flags.
    pub(super) fn parse<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        command().try_get_matches_from(args).map(Self)
    }

    /// A boolean flag.
    pub(super) fn is_set(&self, name: &str) -> bool {
        self.0.get_flag(name)
    }

    /// A flag's value and where it came from: `--flag` or `LLMCACHE_FLAG`.
    pub(super) fn value(&self, name: &str) -> Option<(String, String)> {
        let value = self.0.get_one::<String>(name)?.clone();
        let origin = match self.0.value_source(name) {
            Some(ValueSource::EnvVariable) => env_name(name),
            _ => format!("--{name}"),
        };
        Some((value, origin))
    }

    /// The flags and env vars that set file keys, as figment providers.
    pub(super) fn layers(&self) -> impl Iterator<Item = Layer> + '_ {
        FLAGS.iter().filter_map(|&(name, key, ..)| {
            let (value, origin) = self.value(name)?;
            Some(Layer {
                origin,
                key: key?,
                value,
            })
        })
    }
}

/// One value from a flag or env var, provided at its file key.
pub(super) struct Layer {
    origin: String,
    key: &'static str,
    value: String,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.origin.clone()).source(Source::Custom(self.origin.clone()))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let nested = figment::util::nest(self.key, Value::from(self.value.clone()));
        Ok(Profile::Default.collect(nested.into_dict().unwrap_or_default()))
    }
}

/// How an error names the value at `key` from `source`: the flag or env var,
/// `key (in FILE)`, or the bare key for a default.
pub(super) fn blame(source: Option<&Metadata>, key: &str) -> String {
    match source.and_then(|m| m.source.as_ref()) {
        Some(Source::Custom(origin)) => origin.clone(),
        Some(Source::File(path)) if key.is_empty() => format!("--config.file {}", path.display()),
        Some(Source::File(path)) => format!("{key} (in {})", path.display()),
        _ if key.is_empty() => "the configuration".to_owned(),
        _ => key.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use figment::error::Kind;

    use super::*;

    #[test]
    fn every_flag_sets_a_key_the_schema_knows() {
        for &(name, key, ..) in FLAGS.iter().filter(|flag| flag.1.is_some()) {
            let layer = |key| Layer {
                origin: name.into(),
                key,
                value: "/".into(),
            };
            let errors = Figment::from(layer(key.unwrap())).extract::<Config>().err();
            let unknown = errors
                .into_iter()
                .flatten()
                .any(|e| matches!(e.kind, Kind::UnknownField(..)));
            assert!(!unknown, "{name} sets {key:?}, which Config does not have");
        }
        assert_eq!(
            env_name("web.listen-address"),
            "LLMCACHE_WEB_LISTEN_ADDRESS"
        );
    }

    #[test]
    fn help_shows_the_defaults_of_config_default() {
        let help = command().render_long_help().to_string();
        assert!(help.contains("[default: redis://127.0.0.1:6379]"), "{help}");
        assert!(help.contains("[default: 0.0.0.0:9860]"), "{help}");
        assert!(help.contains("LLMCACHE_PATH_PROCFS"), "{help}");
    }
}
