//! `[census]`: the background, read-only count of the application's own
//! data in the configured Redis and Chroma.

use std::time::Duration;

use serde::de::{Error as _, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smart_default::SmartDefault;

use super::values::{any_case, duration, float, int};

/// `[census]`
#[derive(Debug, Clone, SmartDefault, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct CensusConfig {
    /// Between the starts of two passes; 0 turns the census off. The first
    /// pass starts at start-up.
    #[default(Duration::from_secs(300))]
    #[serde(with = "duration::or_zero")]
    pub(crate) interval: Duration,
    pub(crate) redis: RedisCensus,
    pub(crate) chroma: ChromaCensus,
}

/// `[census.redis]`
#[derive(Debug, Clone, SmartDefault, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RedisCensus {
    /// `[[census.redis.groups]]`: the key groups, matched in order; each
    /// name once.
    #[serde(deserialize_with = "unique_groups")]
    pub(crate) groups: Vec<KeyGroup>,
    /// Keys looked at per second at most; 0: no limit.
    #[default(5000)]
    #[serde(deserialize_with = "int::<_, _, 0, 10_000_000>")]
    pub(crate) max_keys_per_second: u64,
    /// The share of keys whose memory is measured; the rest is estimated.
    #[default(1.0)]
    #[serde(deserialize_with = "float::<_, 0, 1, true>")]
    pub(crate) memory_sample: f64,
    /// Where to read: the masters, or their replicas (cluster and sentinel
    /// modes).
    #[serde(deserialize_with = "any_case")]
    pub(crate) read_from: ReadFrom,
    /// Keys of at most this many elements have their memory measured
    /// exactly (`MEMORY USAGE key SAMPLES 0`, whose cost grows with the
    /// elements); larger ones get Redis's sampled estimate, each alone.
    #[default(1000)]
    #[serde(deserialize_with = "int::<_, _, 0, 1_000_000>")]
    pub(crate) exact_memory_max_elements: u64,
    /// Lets the census read lengths on a master that has no `CLIENT
    /// NO-TOUCH` (before Redis 7.2): `LLEN` and the like reset a key's
    /// access time (LRU) and raise its LFU counter, so eviction follows the
    /// census's scan instead of the application's use.
    #[serde(deserialize_with = "super::probe::boolean")]
    pub(crate) allow_touch: bool,
}

/// `census.redis.read_from`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ReadFrom {
    #[default]
    Master,
    Replica,
}

/// A key group: its name (the `group` label) and a SCAN MATCH glob.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyGroup {
    #[serde(deserialize_with = "group_name")]
    pub(crate) name: String,
    pub(crate) pattern: KeyPattern,
}

/// A Redis glob (`*`, `?`, `[...]`, `[^...]`, `\\` escapes), checked at
/// load, matched against keys as bytes, as Redis's `SCAN MATCH` does. The
/// `globset` crate does the matching; the pattern is handed to it with the
/// characters it reads and Redis does not (`{`, `}`) escaped, and Redis's
/// `[^` as its `[!`.
#[derive(Debug, Clone)]
pub(crate) struct KeyPattern {
    glob: globset::GlobMatcher,
    text: String,
}

impl PartialEq for KeyPattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl KeyPattern {
    /// Reads a Redis glob; the error says what is wrong.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("must not be empty".into());
        }
        let mut translated = String::with_capacity(text.len() + 4);
        let mut chars = text.chars().peekable();
        let mut in_class = false;
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    translated.push('\\');
                    if let Some(next) = chars.next() {
                        translated.push(next);
                    }
                }
                '[' if !in_class => {
                    in_class = true;
                    translated.push('[');
                    if chars.peek() == Some(&'^') {
                        chars.next();
                        translated.push('!');
                    }
                }
                ']' if in_class => {
                    in_class = false;
                    translated.push(']');
                }
                '{' | '}' if !in_class => {
                    translated.push('\\');
                    translated.push(c);
                }
                c => translated.push(c),
            }
        }
        let glob = globset::GlobBuilder::new(&translated)
            .literal_separator(false)
            .backslash_escape(true)
            .build()
            .map_err(|err| format!("{text:?} is not a glob such as message_store:* ({err})"))?
            .compile_matcher();
        Ok(Self {
            glob,
            text: text.to_owned(),
        })
    }

    /// Whether `key` (bytes, as Redis keeps it) matches.
    pub(crate) fn matches(&self, key: &[u8]) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let candidate =
            globset::Candidate::new(std::path::Path::new(std::ffi::OsStr::from_bytes(key)));
        self.glob.is_match_candidate(&candidate)
    }
}

impl<'de> Deserialize<'de> for KeyPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(D::Error::custom)
    }
}

impl Serialize for KeyPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.text.serialize(serializer)
    }
}

/// Groups whose names are each given once: two groups of one name would be
/// one series fed by two patterns.
fn unique_groups<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<KeyGroup>, D::Error> {
    let groups = Vec::<KeyGroup>::deserialize(d)?;
    for (i, group) in groups.iter().enumerate() {
        if groups[..i].iter().any(|g| g.name == group.name) {
            return Err(D::Error::custom(format!(
                "names the group {:?} twice; each group's name is its series' label",
                group.name
            )));
        }
    }
    Ok(groups)
}

fn group_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    let good = !name.is_empty()
        && name != "other"
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    if good {
        Ok(name)
    } else {
        Err(D::Error::custom(format!(
            "{name:?} is not a group name: up to 64 letters, digits, _ - . :, and not \"other\" (the keys no group matches)"
        )))
    }
}

/// `[census.chroma]`
#[derive(Debug, Clone, SmartDefault, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ChromaCensus {
    /// Collections reported by name, the largest first; the rest are summed
    /// as `other`.
    #[default(20)]
    #[serde(deserialize_with = "int::<_, _, 0, 1000>")]
    pub(crate) top_collections: usize,
}

/// A probe module's `census`: `true` takes `[census]`'s settings, `false`
/// (the default) is none, and a table has the module's own (the keys of
/// `[census]`). Loading the configuration resolves `true` into the table
/// ([`super::Config::check`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) enum ModuleCensus {
    #[default]
    Off,
    Shared,
    Own(CensusConfig),
}

impl ModuleCensus {
    /// The settings, once resolved; `None` for no census.
    pub(crate) fn config(&self) -> Option<&CensusConfig> {
        match self {
            Self::Own(config) => Some(config),
            _ => None,
        }
    }

    pub(crate) fn is_off(&self) -> bool {
        *self == Self::Off
    }
}

impl Serialize for ModuleCensus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Off => false.serialize(serializer),
            Self::Shared => true.serialize(serializer),
            Self::Own(config) => config.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for ModuleCensus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Either;
        impl<'de> Visitor<'de> for Either {
            type Value = ModuleCensus;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "true ([census]'s settings), false, or a table with the keys of [census]",
                )
            }

            fn visit_bool<E: serde::de::Error>(self, on: bool) -> Result<ModuleCensus, E> {
                Ok(if on {
                    ModuleCensus::Shared
                } else {
                    ModuleCensus::Off
                })
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ModuleCensus, A::Error> {
                CensusConfig::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(ModuleCensus::Own)
            }
        }
        d.deserialize_any(Either)
    }
}
