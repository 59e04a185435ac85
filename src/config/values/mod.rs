//! The domain types settings are parsed into at the edge, and the checks a
//! type cannot carry by itself, as `deserialize_with` functions that a field
//! names beside its declaration. Nothing downstream parses a setting again.
//!
//! Parsing here is pure (except [`readable_file`], [`directory`] and
//! [`SecretFile`], which look at the file system), so every accepted and
//! rejected spelling is unit-tested.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{Error as _, IntoDeserializer};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use url::Url;

use crate::secret::Secret;

/// A file holding a secret (`--redis.password-file` and friends), read when
/// the setting is parsed. It prints as its path; the secret as `***`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SecretFile {
    pub(crate) path: PathBuf,
    pub(crate) secret: Secret,
}

/// Reads the file, dropping one trailing newline; an empty file is refused.
impl<'de> Deserialize<'de> for SecretFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let path = PathBuf::deserialize(d)?;
        let text = std::fs::read_to_string(&path)
            .map_err(|err| D::Error::custom(format!("cannot read {}: {err}", path.display())))?;
        let value = text.strip_suffix('\n').unwrap_or(&text);
        let value = value.strip_suffix('\r').unwrap_or(value);
        if value.is_empty() {
            return Err(D::Error::custom(format!("{} is empty", path.display())));
        }
        let secret = Secret::new(value);
        Ok(Self { path, secret })
    }
}

impl Serialize for SecretFile {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.path.serialize(serializer)
    }
}

/// `serde(with = "byte_size")`: a byte count, written as `64MiB`,
/// `1.5GiB`, `4096` or `10 MB`.
pub(crate) mod byte_size {
    use super::*;

    /// Writes the syntax [`parse_byte_size`] reads.
    pub(crate) fn serialize<S: Serializer>(value: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_byte_size(*value))
    }

    /// Reads a byte size.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        parse_byte_size(&String::deserialize(d)?).map_err(D::Error::custom)
    }
}

/// Parses a byte size: a plain integer of bytes, or a number with a unit,
/// `KB`/`MB`/`GB` (powers of 1000) or `KiB`/`MiB`/`GiB` (powers of 1024).
pub(crate) fn parse_byte_size(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|size| size.0)
        .map_err(|err| format!("{text:?} is not a byte size such as \"64MiB\": {err}"))
}

/// Formats a byte count the way [`parse_byte_size`] reads it back, choosing the
/// largest binary unit that represents it exactly.
pub(crate) fn format_byte_size(bytes: u64) -> String {
    for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= size && bytes % size == 0 {
            return format!("{}{unit}", bytes / size);
        }
    }
    format!("{bytes}B")
}

/// Parses a duration such as `1s`, `250ms` or `1h 30m` (humantime syntax).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|err| format!("{text:?} is not a duration such as \"1s\" or \"250ms\": {err}"))
}

/// `serde(with = "duration")`: a humantime duration greater than zero.
pub(crate) mod duration {
    use super::*;

    /// Writes the syntax [`parse_duration`] reads.
    pub(crate) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*value).to_string())
    }

    /// Reads a duration and refuses zero.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let value = or_zero::deserialize(d)?;
        if value.is_zero() {
            return Err(D::Error::custom("must be greater than zero"));
        }
        Ok(value)
    }

    /// `serde(with = "duration::or_zero")`: the same syntax, zero allowed.
    pub(crate) mod or_zero {
        use super::*;

        pub(crate) use super::serialize;

        /// Reads a duration.
        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
            parse_duration(&String::deserialize(d)?).map_err(D::Error::custom)
        }
    }
}

/// An integer in `MIN..=MAX`, converted to the field's type.
pub(crate) fn int<'de, D, T, const MIN: u64, const MAX: u64>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    let value = u64::deserialize(d)?;
    if !(MIN..=MAX).contains(&value) {
        return Err(D::Error::custom(format!(
            "{value} is outside {MIN}..={MAX}"
        )));
    }
    T::try_from(value).map_err(|_| D::Error::custom(format!("{value} is too large")))
}

/// A number in `MIN..=MAX`; with `OPEN`, `MIN` itself is refused.
pub(crate) fn float<'de, D, const MIN: u64, const MAX: u64, const OPEN: bool>(
    d: D,
) -> Result<f64, D::Error>
where
    D: Deserializer<'de>,
{
    let value = f64::deserialize(d)?;
    let (min, max) = (MIN as f64, MAX as f64);
    if !value.is_finite() || value < min || value > max {
        return Err(D::Error::custom(format!(
            "{value} is outside {min}..={max}"
        )));
    }
    if OPEN && value == min {
        return Err(D::Error::custom("must be greater than zero"));
    }
    Ok(value)
}

/// An enum whose names are lower case, read in any case (`INFO`, `Json`).
pub(crate) fn any_case<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let text = String::deserialize(d)?.trim().to_ascii_lowercase();
    T::deserialize(text.into_deserializer())
}

/// A file that exists and can be opened.
pub(crate) fn readable_file<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let path = PathBuf::deserialize(d)?;
    std::fs::File::open(&path)
        .map_err(|err| D::Error::custom(format!("cannot read {}: {err}", path.display())))?;
    Ok(Some(path))
}

/// A directory that exists.
pub(crate) fn directory<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let path = PathBuf::deserialize(d)?;
    if !path.is_dir() {
        return Err(D::Error::custom(format!(
            "{:?} is not a directory",
            path.display().to_string()
        )));
    }
    Ok(path)
}

/// A path naming a file (not a directory) to write logs to.
pub(crate) fn log_file<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let text = String::deserialize(d)?;
    let path = PathBuf::from(&text);
    if path.file_name().is_none() || text.ends_with('/') {
        return Err(D::Error::custom(format!("{text:?} names no file")));
    }
    if path.is_dir() {
        return Err(D::Error::custom(format!(
            "{text:?} is a directory; name a file in it"
        )));
    }
    Ok(Some(path))
}

/// `host:port`, `[v6]:port` or Prometheus's `:port` (all interfaces).
pub(crate) fn listen_address<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    parse_listen_address(&String::deserialize(d)?).map_err(D::Error::custom)
}

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

/// A Redis node's URL, parsed once: where to connect and as whom. The
/// password is split off into a [`Secret`]; the URL prints without it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RedisUrl {
    /// The URL without its password (the username stays).
    pub(crate) url: Url,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) db: u32,
    pub(crate) tls: bool,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<Secret>,
}

impl RedisUrl {
    /// Parses a `redis://` or `rediss://` URL. Errors never echo the URL,
    /// which may carry a password.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut url = Url::parse(text.trim()).map_err(|err| format!("not a URL ({err})"))?;
        let tls = match url.scheme() {
            "redis" => false,
            "rediss" => true,
            other => return Err(format!("scheme {other:?} is not redis:// or rediss://")),
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("has no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let db = match url.path().trim_start_matches('/') {
            "" => 0,
            db => db
                .parse()
                .map_err(|_| "path must be a database number such as /0")?,
        };
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(text)
                .decode_utf8_lossy()
                .into_owned()
        };
        let username = Some(url.username()).filter(|u| !u.is_empty()).map(decode);
        let password = url.password().map(|p| Secret::new(decode(p)));
        // Infallible for a URL with a host.
        let _ = url.set_password(None);
        Ok(Self {
            port: url.port().unwrap_or(6379),
            url,
            host,
            db,
            tls,
            username,
            password,
        })
    }

    /// `host:port`, for messages and labels.
    pub(crate) fn endpoint(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// `redis.url`: one URL or several, as a comma-separated string or (in the
/// file) an array of strings. It prints as the comma-separated string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RedisUrls(pub(crate) Vec<RedisUrl>);

impl RedisUrls {
    fn parse<'a>(texts: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let urls = texts
            .into_iter()
            .map(str::trim)
            .filter(|text| !text.is_empty())
            .enumerate()
            .map(|(i, text)| RedisUrl::parse(text).map_err(|err| format!("URL {}: {err}", i + 1)))
            .collect::<Result<Vec<_>, _>>()?;
        if urls.is_empty() {
            return Err("names no URL".into());
        }
        Ok(Self(urls))
    }

    /// The first URL (the only one in standalone mode).
    pub(crate) fn first(&self) -> &RedisUrl {
        &self.0[0]
    }
}

impl<'de> Deserialize<'de> for RedisUrls {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        let parsed = match Raw::deserialize(d)
            .map_err(|_| D::Error::custom("is not a URL string or an array of URL strings"))?
        {
            Raw::One(text) => Self::parse(text.split(',')),
            Raw::Many(texts) => Self::parse(texts.iter().map(String::as_str)),
        };
        parsed.map_err(D::Error::custom)
    }
}

impl Serialize for RedisUrls {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let urls: Vec<&str> = self.0.iter().map(|url| url.url.as_str()).collect();
        serializer.serialize_str(&urls.join(","))
    }
}

/// An http(s) base URL without credentials, query or fragment, with a
/// trailing `/` so that joining `api/v2/...` keeps any path prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HttpUrl(pub(crate) Url);

impl HttpUrl {
    fn parse(text: &str) -> Result<Self, String> {
        let mut url = Url::parse(text.trim()).map_err(|err| format!("not a URL ({err})"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "scheme {:?} is not http:// or https://",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("has no host".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not carry credentials; put the secret in a token or key file".into());
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("must not have a query or fragment".into());
        }
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        Ok(Self(url))
    }
}

impl<'de> Deserialize<'de> for HttpUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(&String::deserialize(d)?).map_err(D::Error::custom)
    }
}

impl Serialize for HttpUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.as_str())
    }
}

/// `redis.key_prefix`: it bounds every key the daemon touches, and cleanup
/// runs `SCAN MATCH {prefix}*`, so a glob character would widen that to
/// users' keys.
pub(crate) fn key_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let prefix = String::deserialize(d)?;
    check_key_prefix(&prefix).map_err(D::Error::custom)?;
    Ok(prefix)
}

fn check_key_prefix(prefix: &str) -> Result<(), String> {
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

/// A Chroma tenant, database or collection name, checked early so a typo is
/// a config error rather than a stream of 400s.
pub(crate) fn chroma_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    check_chroma_name(&name).map_err(D::Error::custom)?;
    Ok(name)
}

fn check_chroma_name(name: &str) -> Result<(), String> {
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

#[cfg(test)]
mod tests;
