//! The TOML configuration file, deserialized as written: every key optional,
//! unknown keys rejected. Validation into typed values happens in `validate`.

use std::path::Path;

use serde::Deserialize;

use super::ConfigError;

/// The whole file. Missing tables are empty tables.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct FileConfig {
    pub(crate) web: WebFile,
    pub(crate) redis: RedisFile,
    pub(crate) chroma: ChromaFile,
    pub(crate) log: LogFile,
    pub(crate) embeddings: EmbeddingsFile,
    pub(crate) cache: CacheFile,
    pub(crate) workload: WorkloadFile,
    pub(crate) memory: MemoryFile,
}

/// `[web]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct WebFile {
    pub(crate) listen_address: Option<String>,
}

/// `[redis]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RedisFile {
    pub(crate) url: Option<String>,
    pub(crate) password_file: Option<String>,
    pub(crate) timeout: Option<String>,
    pub(crate) key_prefix: Option<String>,
    pub(crate) tls_ca_file: Option<String>,
    pub(crate) tls_cert_file: Option<String>,
    pub(crate) tls_key_file: Option<String>,
}

/// `[chroma]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ChromaFile {
    pub(crate) url: Option<String>,
    pub(crate) token_file: Option<String>,
    pub(crate) token_header: Option<String>,
    pub(crate) tls_ca_file: Option<String>,
    pub(crate) tenant: Option<String>,
    pub(crate) database: Option<String>,
    pub(crate) collection: Option<String>,
    pub(crate) timeout: Option<String>,
}

/// `[log]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LogFile {
    pub(crate) level: Option<String>,
    pub(crate) format: Option<String>,
    pub(crate) file: Option<String>,
}

/// `[embeddings]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct EmbeddingsFile {
    pub(crate) provider: Option<String>,
    pub(crate) url: Option<String>,
    pub(crate) model: Option<String>,
    pub(crate) api_key_file: Option<String>,
    pub(crate) dimensions: Option<u64>,
    pub(crate) timeout: Option<String>,
}

/// `[cache]` with its three sub-tables.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct CacheFile {
    pub(crate) memory_budget: Option<String>,
    pub(crate) chat_history: CacheTableFile,
    pub(crate) similarity: CacheTableFile,
    pub(crate) embeddings: CacheTableFile,
}

/// `[cache.<name>]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct CacheTableFile {
    pub(crate) ttl: Option<String>,
    pub(crate) share: Option<f64>,
}

/// `[workload]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct WorkloadFile {
    pub(crate) rate: Option<f64>,
    pub(crate) concurrency: Option<u64>,
    pub(crate) sessions: Option<u64>,
    pub(crate) zipf_exponent: Option<f64>,
    pub(crate) history_limit: Option<u64>,
    pub(crate) top_k: Option<u64>,
    pub(crate) key_ttl: Option<String>,
    pub(crate) seed: Option<u64>,
    pub(crate) cleanup_on_exit: Option<bool>,
    pub(crate) mix: MixFile,
}

/// `[workload.mix]`: relative weights of the four operations.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct MixFile {
    pub(crate) get_chat_history: Option<f64>,
    pub(crate) store_chat_entry: Option<f64>,
    pub(crate) query_similar_memories: Option<f64>,
    pub(crate) store_memory: Option<f64>,
}

/// `[memory]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct MemoryFile {
    pub(crate) sample_interval: Option<String>,
    pub(crate) host_available_min_ratio: Option<f64>,
    pub(crate) cgroup_usage_max_ratio: Option<f64>,
    pub(crate) psi_some_avg10_max_ratio: Option<f64>,
    pub(crate) redis_used_max_ratio: Option<f64>,
    pub(crate) hysteresis: Option<f64>,
    pub(crate) min_dwell: Option<String>,
    pub(crate) shrink_factor: Option<f64>,
    pub(crate) procfs_path: Option<String>,
    pub(crate) sysfs_path: Option<String>,
}

impl FileConfig {
    /// Reads and deserializes `path`. Errors name the file, the dotted key and,
    /// for syntax errors, the line.
    pub(crate) fn read(path: &Path) -> Result<Self, ConfigError> {
        let key = "--config.file";
        let text = std::fs::read_to_string(path).map_err(|err| {
            ConfigError::invalid(key, format!("cannot read {}: {err}", path.display()))
        })?;
        Self::parse(&text).map_err(|(dotted, message)| {
            ConfigError::invalid(
                if dotted.is_empty() {
                    format!("{key} {}", path.display())
                } else {
                    format!("{dotted} (in {})", path.display())
                },
                message,
            )
        })
    }

    /// Parses TOML text. On error, returns the dotted key path (empty when the
    /// text is not TOML at all) and a one-line message.
    pub(crate) fn parse(text: &str) -> Result<Self, (String, String)> {
        let deserializer =
            toml::Deserializer::parse(text).map_err(|err| (String::new(), one_line(text, &err)))?;
        serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let path = err.path().to_string();
            let path = if path == "." { String::new() } else { path };
            (path, one_line(text, err.inner()))
        })
    }
}

/// A TOML error as one line: its message, plus the line number when known.
fn one_line(text: &str, err: &toml::de::Error) -> String {
    let message = err.message().trim().replace('\n', " ");
    match err.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("{message} (line {line})")
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_all_defaults() {
        let file = FileConfig::parse("").map_err(|e| e.1).unwrap();
        assert!(file.redis.url.is_none());
        assert!(file.cache.chat_history.share.is_none());
    }

    #[test]
    fn unknown_key_is_named_with_its_table() {
        let (path, message) = FileConfig::parse("[redis]\nurll = \"x\"\n").unwrap_err();
        assert_eq!(path, "redis.urll");
        assert!(message.contains("unknown field `urll`"), "{message}");
        assert!(message.contains("line 2"), "{message}");
    }

    #[test]
    fn wrong_type_names_the_dotted_key() {
        let (path, message) = FileConfig::parse("[workload]\nrate = \"fast\"\n").unwrap_err();
        assert_eq!(path, "workload.rate");
        assert!(message.contains("invalid type"), "{message}");
    }

    #[test]
    fn nested_tables_parse() {
        let text = "[cache]\nmemory_budget = \"8MiB\"\n[cache.similarity]\nttl = \"1m\"\nshare = 0.5\n[workload.mix]\nstore_memory = 2.0\n";
        let file = FileConfig::parse(text).map_err(|e| e.1).unwrap();
        assert_eq!(file.cache.similarity.share, Some(0.5));
        assert_eq!(file.workload.mix.store_memory, Some(2.0));
    }

    #[test]
    fn syntax_error_is_one_line() {
        let (path, message) = FileConfig::parse("[redis\nurl = 1").unwrap_err();
        assert!(path.is_empty());
        assert!(!message.contains('\n'));
    }
}
