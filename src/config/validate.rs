//! Turns the raw layers (flags and env vars, file, defaults) into a typed
//! [`Config`]. Each error names the flag, env var or file key it is about.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::ArgMatches;
use url::Url;

use super::cli::{origin, Cli};
use super::file::{CacheTableFile, FileConfig};
use super::values::{parse_byte_size, parse_duration, Secret};
use super::web_file::{self, WebSecurity};
use super::{
    CacheConfig, CacheTable, ChromaConfig, Config, ConfigError, EmbeddingsConfig,
    EmbeddingsProvider, LogConfig, LogFormat, LogLevel, MemoryConfig, Mix, RedisConfig,
    TokenHeader, WebConfig, WorkloadConfig,
};

/// Where values come from, so errors can blame the right key.
struct Layers<'a> {
    cli: &'a Cli,
    matches: &'a ArgMatches,
    file: FileConfig,
    file_path: Option<PathBuf>,
}

impl Layers<'_> {
    /// How a file key is named in errors: `redis.timeout (in /etc/x.toml)`.
    fn file_key(&self, key: &str) -> String {
        match &self.file_path {
            Some(path) => format!("{key} (in {})", path.display()),
            None => key.to_owned(),
        }
    }

    /// A flag-or-env value, else the file's value, with the name to blame.
    fn layered(
        &self,
        id: &str,
        cli: &Option<String>,
        file_key: &str,
        file: &Option<String>,
    ) -> Option<(String, String)> {
        if let Some(value) = cli {
            return Some((value.clone(), origin(self.matches, id)));
        }
        file.as_ref()
            .map(|value| (value.clone(), self.file_key(file_key)))
    }

    /// A file-only duration with a default, which must be positive.
    fn duration(
        &self,
        key: &str,
        value: &Option<String>,
        default: &str,
    ) -> Result<Duration, ConfigError> {
        let text = value.as_deref().unwrap_or(default);
        let duration =
            parse_duration(text).map_err(|m| ConfigError::invalid(self.file_key(key), m))?;
        if duration.is_zero() {
            return Err(ConfigError::invalid(
                self.file_key(key),
                "must be greater than zero",
            ));
        }
        Ok(duration)
    }

    /// A file-only number that must lie in `min..=max`.
    fn number(
        &self,
        key: &str,
        value: Option<f64>,
        default: f64,
        min: f64,
        max: f64,
    ) -> Result<f64, ConfigError> {
        let value = value.unwrap_or(default);
        if !value.is_finite() || value < min || value > max {
            return Err(ConfigError::invalid(
                self.file_key(key),
                format!("{value} is outside {min}..={max}"),
            ));
        }
        Ok(value)
    }

    /// A file-only integer that must lie in `min..=max`.
    fn integer(
        &self,
        key: &str,
        value: Option<u64>,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        let value = value.unwrap_or(default);
        if value < min || value > max {
            return Err(ConfigError::invalid(
                self.file_key(key),
                format!("{value} is outside {min}..={max}"),
            ));
        }
        Ok(value)
    }
}

/// Validates every layer into a [`Config`].
pub(super) fn validate(cli: &Cli, matches: &ArgMatches) -> Result<Config, ConfigError> {
    let file_path = cli.config_file.as_ref().map(PathBuf::from);
    let file = match &file_path {
        Some(path) => FileConfig::read(path)?,
        None => FileConfig::default(),
    };
    let layers = Layers {
        cli,
        matches,
        file,
        file_path: file_path.clone(),
    };
    Ok(Config {
        web: web(&layers)?,
        redis: redis(&layers)?,
        chroma: chroma(&layers)?,
        log: log(&layers)?,
        embeddings: embeddings(&layers)?,
        cache: cache(&layers)?,
        workload: workload(&layers)?,
        memory: memory(&layers)?,
        config_file: file_path,
    })
}

fn web(layers: &Layers<'_>) -> Result<WebConfig, ConfigError> {
    let (text, key) = layers
        .layered(
            "web_listen_address",
            &layers.cli.web_listen_address,
            "web.listen_address",
            &layers.file.web.listen_address,
        )
        .unwrap_or_else(|| ("0.0.0.0:9860".into(), "web.listen_address".into()));
    let listen_address = parse_listen_address(&text).map_err(|m| ConfigError::invalid(key, m))?;
    let config_file = layers.cli.web_config_file.as_ref().map(PathBuf::from);
    let security = match &config_file {
        None => WebSecurity::default(),
        Some(path) => web_file::load(path)
            .map_err(|err| err.blame(path, &origin(layers.matches, "web_config_file")))?,
    };
    Ok(WebConfig {
        listen_address,
        config_file,
        security,
    })
}

/// Accepts `host:port`, `[v6]:port` and Prometheus's `:port` (all interfaces).
fn parse_listen_address(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    let full = if text.starts_with(':') {
        format!("0.0.0.0{text}")
    } else {
        text.to_owned()
    };
    if let Ok(addr) = full.parse() {
        return Ok(addr);
    }
    if !full.contains(':') {
        return Err(format!(
            "{text:?} has no port; use host:port such as 0.0.0.0:9860"
        ));
    }
    full.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| format!("{text:?} is not an address such as 0.0.0.0:9860"))
}

fn redis(layers: &Layers<'_>) -> Result<RedisConfig, ConfigError> {
    let file = &layers.file.redis;
    let (text, url_key) = layers
        .layered("redis_url", &layers.cli.redis_url, "redis.url", &file.url)
        .unwrap_or_else(|| ("redis://127.0.0.1:6379".into(), "redis.url".into()));
    let mut url = Url::parse(text.trim()).map_err(|err| {
        // Never echo the URL: it may carry a password.
        ConfigError::invalid(&url_key, format!("not a URL ({err})"))
    })?;
    if !matches!(url.scheme(), "redis" | "rediss") {
        return Err(ConfigError::invalid(
            &url_key,
            format!("scheme {:?} is not redis:// or rediss://", url.scheme()),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::invalid(&url_key, "has no host"));
    }
    let db = url.path().trim_start_matches('/');
    if !db.is_empty() && db.parse::<u32>().is_err() {
        return Err(ConfigError::invalid(
            &url_key,
            "path must be a database number such as /0",
        ));
    }
    let mut password = url.password().map(|p| {
        Secret::new(
            percent_encoding::percent_decode_str(p)
                .decode_utf8_lossy()
                .into_owned(),
        )
    });
    // Infallible for a URL with a host.
    let _ = url.set_password(None);
    if let Some((path, key)) = layers.layered(
        "redis_password_file",
        &layers.cli.redis_password_file,
        "redis.password_file",
        &file.password_file,
    ) {
        password = Some(read_secret(&path, &key)?);
    }
    let tls = url.scheme() == "rediss";
    let tls_ca_file = tls_file(
        layers,
        "redis_tls_ca_file",
        &layers.cli.redis_tls_ca_file,
        "redis.tls_ca_file",
        &file.tls_ca_file,
        tls,
    )?;
    let tls_cert_file = tls_file(
        layers,
        "redis_tls_cert_file",
        &layers.cli.redis_tls_cert_file,
        "redis.tls_cert_file",
        &file.tls_cert_file,
        tls,
    )?;
    let tls_key_file = tls_file(
        layers,
        "redis_tls_key_file",
        &layers.cli.redis_tls_key_file,
        "redis.tls_key_file",
        &file.tls_key_file,
        tls,
    )?;
    if tls_cert_file.is_some() != tls_key_file.is_some() {
        return Err(ConfigError::invalid(
            "--redis.tls-cert-file/--redis.tls-key-file",
            "a client certificate needs its key, and a key its certificate",
        ));
    }
    let key_prefix = file
        .key_prefix
        .clone()
        .unwrap_or_else(|| "llmcache:probe:".into());
    validate_key_prefix(&key_prefix)
        .map_err(|m| ConfigError::invalid(layers.file_key("redis.key_prefix"), m))?;
    Ok(RedisConfig {
        url,
        password,
        timeout: layers.duration("redis.timeout", &file.timeout, "1s")?,
        key_prefix,
        tls_ca_file,
        tls_cert_file,
        tls_key_file,
    })
}

/// The prefix bounds every key the daemon touches, and cleanup runs
/// `SCAN MATCH {prefix}*`: a glob character would widen that to users' keys.
fn validate_key_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Err("must not be empty: it fences the daemon's keys off from yours".into());
    }
    if let Some(c) = prefix
        .chars()
        .find(|c| matches!(c, '*' | '?' | '[' | ']' | '\\'))
    {
        return Err(format!(
            "{prefix:?} contains the glob character {c:?}; cleanup's SCAN MATCH would reach other keys"
        ));
    }
    if prefix.chars().any(char::is_control) {
        return Err(format!("{prefix:?} contains a control character"));
    }
    Ok(())
}

fn tls_file(
    layers: &Layers<'_>,
    id: &str,
    cli: &Option<String>,
    file_key: &str,
    file: &Option<String>,
    tls: bool,
) -> Result<Option<PathBuf>, ConfigError> {
    let Some((path, key)) = layers.layered(id, cli, file_key, file) else {
        return Ok(None);
    };
    if !tls {
        return Err(ConfigError::invalid(key, "only applies to a rediss:// URL"));
    }
    readable_file(&path, &key).map(Some)
}

fn readable_file(path: &str, key: &str) -> Result<PathBuf, ConfigError> {
    let path = PathBuf::from(path);
    std::fs::File::open(&path).map_err(|err| {
        ConfigError::invalid(key, format!("cannot read {}: {err}", path.display()))
    })?;
    Ok(path)
}

/// Reads a secret from a file, dropping one trailing newline.
fn read_secret(path: &str, key: &str) -> Result<Secret, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| ConfigError::invalid(key, format!("cannot read {path}: {err}")))?;
    let value = text.strip_suffix('\n').unwrap_or(&text);
    let value = value.strip_suffix('\r').unwrap_or(value);
    if value.is_empty() {
        return Err(ConfigError::invalid(key, format!("{path} is empty")));
    }
    Ok(Secret::new(value))
}

fn chroma(layers: &Layers<'_>) -> Result<ChromaConfig, ConfigError> {
    let file = &layers.file.chroma;
    let (text, url_key) = layers
        .layered(
            "chroma_url",
            &layers.cli.chroma_url,
            "chroma.url",
            &file.url,
        )
        .unwrap_or_else(|| ("http://127.0.0.1:8000".into(), "chroma.url".into()));
    let url = http_url(&text, &url_key, "--chroma.token-file")?;
    let token = layers
        .layered(
            "chroma_token_file",
            &layers.cli.chroma_token_file,
            "chroma.token_file",
            &file.token_file,
        )
        .map(|(path, key)| read_secret(&path, &key))
        .transpose()?;
    let token_header = match file.token_header.as_deref() {
        None | Some("x-chroma-token") => TokenHeader::XChromaToken,
        Some("authorization") => TokenHeader::Authorization,
        Some(other) => {
            return Err(ConfigError::invalid(
                layers.file_key("chroma.token_header"),
                format!("{other:?} is not x-chroma-token or authorization"),
            ))
        }
    };
    let tls_ca_file = layers
        .layered(
            "chroma_tls_ca_file",
            &layers.cli.chroma_tls_ca_file,
            "chroma.tls_ca_file",
            &file.tls_ca_file,
        )
        .map(|(path, key)| {
            if url.scheme() != "https" {
                return Err(ConfigError::invalid(
                    &key,
                    "only applies to an https:// URL",
                ));
            }
            readable_file(&path, &key)
        })
        .transpose()?;
    let name = |key: &str, value: &Option<String>, default: &str| -> Result<String, ConfigError> {
        let value = value.clone().unwrap_or_else(|| default.into());
        validate_chroma_name(&value).map_err(|m| ConfigError::invalid(layers.file_key(key), m))?;
        Ok(value)
    };
    Ok(ChromaConfig {
        url,
        token,
        token_header,
        tls_ca_file,
        tenant: name("chroma.tenant", &file.tenant, "default_tenant")?,
        database: name("chroma.database", &file.database, "default_database")?,
        collection: name(
            "chroma.collection",
            &file.collection,
            "llmcache_probe_memories",
        )?,
        timeout: layers.duration("chroma.timeout", &file.timeout, "2s")?,
    })
}

/// An http(s) base URL without credentials, with a trailing `/` so that
/// joining `api/v2/...` keeps any path prefix.
fn http_url(text: &str, key: &str, secret_hint: &str) -> Result<Url, ConfigError> {
    let mut url = Url::parse(text.trim())
        .map_err(|err| ConfigError::invalid(key, format!("not a URL ({err})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::invalid(
            key,
            format!("scheme {:?} is not http:// or https://", url.scheme()),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::invalid(key, "has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::invalid(
            key,
            format!("must not carry credentials; use {secret_hint}"),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::invalid(
            key,
            "must not have a query or fragment",
        ));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// Chroma's rule for tenant, database and collection names, checked early so a
/// typo is a config error rather than a stream of 400s.
fn validate_chroma_name(name: &str) -> Result<(), String> {
    let ok_len = (3..=512).contains(&name.len());
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    let ok_ends = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok_len && ok_chars && ok_ends {
        Ok(())
    } else {
        Err(format!(
            "{name:?} must be 3-512 characters of [a-zA-Z0-9._-], starting and ending with a letter or digit"
        ))
    }
}

fn log(layers: &Layers<'_>) -> Result<LogConfig, ConfigError> {
    let file = &layers.file.log;
    let level = match layers.layered("log_level", &layers.cli.log_level, "log.level", &file.level) {
        None => LogLevel::Info,
        Some((text, key)) => match text.trim().to_ascii_lowercase().as_str() {
            "error" => LogLevel::Error,
            "warn" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            _ => {
                return Err(ConfigError::invalid(
                    key,
                    format!("{text:?} is not one of error, warn, info, debug, trace"),
                ))
            }
        },
    };
    let format = match layers.layered(
        "log_format",
        &layers.cli.log_format,
        "log.format",
        &file.format,
    ) {
        None => LogFormat::Logfmt,
        Some((text, key)) => match text.trim().to_ascii_lowercase().as_str() {
            "logfmt" => LogFormat::Logfmt,
            "json" => LogFormat::Json,
            _ => {
                return Err(ConfigError::invalid(
                    key,
                    format!("{text:?} is not logfmt or json"),
                ))
            }
        },
    };
    let file = layers
        .layered("log_file", &layers.cli.log_file, "log.file", &file.file)
        .map(|(text, key)| {
            let path = PathBuf::from(&text);
            if path.file_name().is_none() || text.ends_with('/') {
                return Err(ConfigError::invalid(key, format!("{text:?} names no file")));
            }
            if path.is_dir() {
                return Err(ConfigError::invalid(
                    key,
                    format!("{text:?} is a directory; name a file in it"),
                ));
            }
            Ok(path)
        })
        .transpose()?;
    Ok(LogConfig {
        level,
        format,
        file,
    })
}

fn embeddings(layers: &Layers<'_>) -> Result<EmbeddingsConfig, ConfigError> {
    let file = &layers.file.embeddings;
    let provider = match file.provider.as_deref().unwrap_or("hash") {
        "hash" => EmbeddingsProvider::Hash,
        "openai" => {
            let url_key = layers.file_key("embeddings.url");
            let text = file.url.as_deref().ok_or_else(|| {
                ConfigError::invalid(&url_key, "is required with provider = \"openai\"")
            })?;
            let model = file
                .model
                .clone()
                .filter(|m| !m.trim().is_empty())
                .ok_or_else(|| {
                    ConfigError::invalid(
                        layers.file_key("embeddings.model"),
                        "is required with provider = \"openai\"",
                    )
                })?;
            let api_key = file
                .api_key_file
                .as_deref()
                .map(|path| read_secret(path, &layers.file_key("embeddings.api_key_file")))
                .transpose()?;
            EmbeddingsProvider::OpenAi {
                url: http_url(text, &url_key, "embeddings.api_key_file")?,
                model,
                api_key,
            }
        }
        other => {
            return Err(ConfigError::invalid(
                layers.file_key("embeddings.provider"),
                format!("{other:?} is not hash or openai"),
            ))
        }
    };
    Ok(EmbeddingsConfig {
        provider,
        dimensions: layers.integer("embeddings.dimensions", file.dimensions, 256, 1, 65_536)?
            as usize,
        timeout: layers.duration("embeddings.timeout", &file.timeout, "5s")?,
    })
}

fn cache(layers: &Layers<'_>) -> Result<CacheConfig, ConfigError> {
    let file = &layers.file.cache;
    let key = layers.file_key("cache.memory_budget");
    let memory_budget = parse_byte_size(file.memory_budget.as_deref().unwrap_or("64MiB"))
        .map_err(|m| ConfigError::invalid(key, m))?;
    let table = |name: &str,
                 raw: &CacheTableFile,
                 ttl: &str,
                 share: f64|
     -> Result<CacheTable, ConfigError> {
        Ok(CacheTable {
            ttl: layers.duration(&format!("cache.{name}.ttl"), &raw.ttl, ttl)?,
            share: layers.number(&format!("cache.{name}.share"), raw.share, share, 0.0, 1.0)?,
        })
    };
    let config = CacheConfig {
        memory_budget,
        chat_history: table("chat_history", &file.chat_history, "5m", 0.25)?,
        similarity: table("similarity", &file.similarity, "10m", 0.25)?,
        embeddings: table("embeddings", &file.embeddings, "1h", 0.5)?,
    };
    let total = config.chat_history.share + config.similarity.share + config.embeddings.share;
    if total > 1.0 + 1e-9 {
        return Err(ConfigError::invalid(
            layers.file_key("cache.*.share"),
            format!("the shares add up to {total}, more than the whole budget (1.0)"),
        ));
    }
    Ok(config)
}

fn workload(layers: &Layers<'_>) -> Result<WorkloadConfig, ConfigError> {
    let file = &layers.file.workload;
    let rate = layers.number("workload.rate", file.rate, 20.0, 0.0, 100_000.0)?;
    if rate <= 0.0 {
        return Err(ConfigError::invalid(
            layers.file_key("workload.rate"),
            "must be greater than zero",
        ));
    }
    let zipf_exponent =
        layers.number("workload.zipf_exponent", file.zipf_exponent, 1.1, 0.0, 10.0)?;
    if zipf_exponent <= 0.0 {
        return Err(ConfigError::invalid(
            layers.file_key("workload.zipf_exponent"),
            "must be greater than zero",
        ));
    }
    let weight = |name: &str, value: Option<f64>, default: f64| {
        layers.number(&format!("workload.mix.{name}"), value, default, 0.0, 1e6)
    };
    let mix = Mix {
        get_chat_history: weight("get_chat_history", file.mix.get_chat_history, 0.5)?,
        store_chat_entry: weight("store_chat_entry", file.mix.store_chat_entry, 0.2)?,
        query_similar_memories: weight(
            "query_similar_memories",
            file.mix.query_similar_memories,
            0.25,
        )?,
        store_memory: weight("store_memory", file.mix.store_memory, 0.05)?,
    };
    if mix.get_chat_history + mix.store_chat_entry + mix.query_similar_memories + mix.store_memory
        <= 0.0
    {
        return Err(ConfigError::invalid(
            layers.file_key("workload.mix"),
            "at least one weight must be positive",
        ));
    }
    Ok(WorkloadConfig {
        rate,
        concurrency: layers.integer("workload.concurrency", file.concurrency, 16, 1, 4096)?
            as usize,
        sessions: layers.integer("workload.sessions", file.sessions, 1000, 1, 100_000_000)?,
        zipf_exponent,
        history_limit: layers.integer(
            "workload.history_limit",
            file.history_limit,
            50,
            1,
            10_000,
        )? as usize,
        top_k: layers.integer("workload.top_k", file.top_k, 5, 1, 1000)? as usize,
        key_ttl: layers.duration("workload.key_ttl", &file.key_ttl, "1h")?,
        seed: file.seed.unwrap_or(0),
        cleanup_on_exit: file.cleanup_on_exit.unwrap_or(true),
        mix,
    })
}

fn memory(layers: &Layers<'_>) -> Result<MemoryConfig, ConfigError> {
    let file = &layers.file.memory;
    let shrink_factor = layers.number("memory.shrink_factor", file.shrink_factor, 0.5, 0.0, 1.0)?;
    if shrink_factor <= 0.0 {
        return Err(ConfigError::invalid(
            layers.file_key("memory.shrink_factor"),
            "must be in (0, 1]",
        ));
    }
    let hysteresis = layers.number("memory.hysteresis", file.hysteresis, 0.05, 0.0, 1.0)?;
    let root =
        |id: &str, cli: &Option<String>, key: &str, value: &Option<String>, default: &str| {
            let (text, key) = layers
                .layered(id, cli, key, value)
                .unwrap_or_else(|| (default.into(), key.into()));
            let path = PathBuf::from(&text);
            if Path::new(&path).is_dir() {
                Ok(path)
            } else {
                Err(ConfigError::invalid(
                    key,
                    format!("{text:?} is not a directory"),
                ))
            }
        };
    Ok(MemoryConfig {
        sample_interval: layers.duration("memory.sample_interval", &file.sample_interval, "5s")?,
        host_available_min_ratio: layers.number(
            "memory.host_available_min_ratio",
            file.host_available_min_ratio,
            0.10,
            0.0,
            1.0,
        )?,
        cgroup_usage_max_ratio: layers.number(
            "memory.cgroup_usage_max_ratio",
            file.cgroup_usage_max_ratio,
            0.90,
            0.0,
            1.0,
        )?,
        psi_some_avg10_max_ratio: layers.number(
            "memory.psi_some_avg10_max_ratio",
            file.psi_some_avg10_max_ratio,
            0.10,
            0.0,
            1.0,
        )?,
        redis_used_max_ratio: layers.number(
            "memory.redis_used_max_ratio",
            file.redis_used_max_ratio,
            0.90,
            0.0,
            1.0,
        )?,
        hysteresis,
        min_dwell: match &file.min_dwell {
            None => Duration::from_secs(30),
            Some(text) => parse_duration(text)
                .map_err(|m| ConfigError::invalid(layers.file_key("memory.min_dwell"), m))?,
        },
        shrink_factor,
        procfs_path: root(
            "path_procfs",
            &layers.cli.path_procfs,
            "memory.procfs_path",
            &file.procfs_path,
            "/proc",
        )?,
        sysfs_path: root(
            "path_sysfs",
            &layers.cli.path_sysfs,
            "memory.sysfs_path",
            &file.sysfs_path,
            "/sys",
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_address_accepts_prometheus_spellings() {
        assert_eq!(parse_listen_address(":9860").unwrap().port(), 9860);
        assert_eq!(parse_listen_address("127.0.0.1:0").unwrap().port(), 0);
        assert!(parse_listen_address("[::1]:9860").unwrap().is_ipv6());
        assert!(parse_listen_address("9860").is_err());
        assert!(parse_listen_address("nowhere:port").is_err());
    }

    #[test]
    fn key_prefix_refuses_globs() {
        assert!(validate_key_prefix("llmcache:probe:").is_ok());
        for bad in ["", "*", "llm*", "a?b", "x[ab]", "back\\slash"] {
            assert!(validate_key_prefix(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn chroma_names_follow_chromas_rule() {
        assert!(validate_chroma_name("llmcache_probe_memories").is_ok());
        for bad in ["ab", "-abc", "abc-", "a b c", "ünï"] {
            assert!(validate_chroma_name(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn http_urls_gain_a_trailing_slash_and_lose_nothing_else() {
        let url = http_url("http://chroma:8000/prefix", "k", "h").unwrap();
        assert_eq!(url.as_str(), "http://chroma:8000/prefix/");
        assert!(http_url("http://u:p@chroma:8000", "k", "h").is_err());
        assert!(http_url("ftp://chroma", "k", "h").is_err());
    }
}
