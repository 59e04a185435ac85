//! `[canary]` and `[probe]`: whether the daemon runs its own workload, and
//! the modules `/probe?target=&module=` runs against a fleet. Each module is
//! data, checked here once; a target is checked against the module's
//! `allowed_targets` ([`TargetPattern`]) for every probe.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smart_default::SmartDefault;

use super::values::{any_case, byte_size, duration, int, key_prefix, readable_file, SecretFile};
use super::{ModuleCensus, RedisMode};

/// `[canary]`
#[derive(Debug, Clone, SmartDefault, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct CanaryConfig {
    /// Whether the daemon runs its own workload against its own Redis and
    /// Chroma. Off: a probe-only deployment, with no primary backends.
    #[default(true)]
    #[serde(deserialize_with = "boolean")]
    pub(crate) enabled: bool,
}

/// `[probe]`
#[derive(Debug, Clone, SmartDefault, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ProbeConfig {
    /// Probes running at once; one more gets 503 at once.
    #[default(32)]
    #[serde(deserialize_with = "int::<_, _, 1, 4096>")]
    pub(crate) max_concurrent: usize,
    /// Pooled clients per prober, least recently used out first.
    #[default(1000)]
    #[serde(deserialize_with = "int::<_, _, 1, 1_000_000>")]
    pub(crate) max_pooled_targets: u64,
    /// A pooled client unused this long is closed (and a target's census
    /// stopped).
    #[default(Duration::from_secs(300))]
    #[serde(with = "duration")]
    pub(crate) pool_idle_timeout: Duration,
    /// Census passes of probed targets running at once; the others wait
    /// their turn, so a fleet's censuses cannot take the exporter's CPU
    /// from its probes.
    #[default(4)]
    #[serde(deserialize_with = "int::<_, _, 1, 1024>")]
    pub(crate) max_concurrent_censuses: usize,
    /// Addresses no probe connects to, whether a target names them or a
    /// name resolves to them, unless a CIDR in the module's
    /// `allowed_targets` contains them: loopback, link-local (the cloud
    /// metadata address among them) and "this network", in IPv4 and IPv6.
    #[default(default_denied_networks())]
    #[serde(deserialize_with = "networks")]
    pub(crate) denied_networks: Vec<IpNet>,
    pub(crate) modules: BTreeMap<String, ModuleConfig>,
}

/// What a module probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ProberKind {
    /// A Redis node (or cluster, by a seed).
    Redis,
    /// A Chroma server.
    Chroma,
    /// An LLM backend's own `/health` document.
    App,
}

impl ProberKind {
    /// The `prober` label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Chroma => "chroma",
            Self::App => "app",
        }
    }
}

/// `[probe.modules.NAME]`: the settings of one module. Which keys apply
/// depends on `prober`; [`super::Config::check`] refuses the others.
#[derive(Debug, Clone, SmartDefault, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ModuleConfig {
    /// Required.
    #[serde(deserialize_with = "optional_any_case")]
    pub(crate) prober: Option<ProberKind>,
    /// The probe's deadline is the smaller of this and the scrape timeout
    /// Prometheus sends, less 0.5 s.
    #[default(Duration::from_secs(5))]
    #[serde(with = "duration")]
    pub(crate) timeout: Duration,
    /// Required: a probe of any other target is refused (403).
    pub(crate) allowed_targets: Option<Vec<TargetPattern>>,
    /// Per-target usernames and passwords, overriding the module's.
    #[serde(deserialize_with = "readable_file")]
    pub(crate) credentials_file: Option<PathBuf>,
    /// chroma and app: the largest answer read; past it the probe fails.
    #[default(1024 * 1024)]
    #[serde(with = "byte_size")]
    pub(crate) body_size_limit: u64,

    /// redis: standalone, or cluster (the target is a seed node).
    #[serde(deserialize_with = "any_case")]
    pub(crate) mode: RedisMode,
    /// redis: the ACL user.
    pub(crate) username: Option<String>,
    /// redis: the password for every target (a credentials file overrides it).
    pub(crate) password_file: Option<SecretFile>,
    /// The CA bundle (PEM) to verify `rediss://` or `https://` targets with.
    #[serde(deserialize_with = "readable_file")]
    pub(crate) tls_ca_file: Option<PathBuf>,
    #[serde(deserialize_with = "readable_file")]
    pub(crate) tls_cert_file: Option<PathBuf>,
    #[serde(deserialize_with = "readable_file")]
    pub(crate) tls_key_file: Option<PathBuf>,
    /// redis: the probe key lives under it.
    #[default("llmcache:probe:".to_owned())]
    #[serde(deserialize_with = "key_prefix")]
    pub(crate) key_prefix: String,
    /// redis: chat writes and reads per probe.
    #[default(5)]
    #[serde(deserialize_with = "int::<_, _, 1, 1000>")]
    pub(crate) round_trips: u32,

    /// chroma: where the probe collection lives.
    #[default("default_tenant".to_owned())]
    pub(crate) tenant: String,
    #[default("default_database".to_owned())]
    pub(crate) database: String,
    /// chroma: the probe's own collection, marked as the daemon's.
    #[default("llmcache_probe_fleet".to_owned())]
    pub(crate) collection: String,
    /// chroma: the token (X-Chroma-Token); app: a bearer token.
    pub(crate) token_file: Option<SecretFile>,

    /// redis and chroma: the census of each probed target, in the
    /// background on `census.interval`; `/probe` returns its last complete
    /// pass. `true` for `[census]`'s settings, or a table with the keys of
    /// `[census]`: a redis module reads `census.redis`, a chroma module
    /// `census.chroma`.
    #[serde(skip_serializing_if = "ModuleCensus::is_off")]
    pub(crate) census: ModuleCensus,

    /// app: the health document's path, for a `host:port` target.
    #[default("/health".to_owned())]
    pub(crate) path: String,
    /// app: where each value sits in the document (JSON pointers).
    pub(crate) fields: AppFields,
}

/// `[probe.modules.NAME.fields]`: JSON pointers into an application's health
/// document; the defaults read the shape this daemon's own `/health` has.
#[derive(Debug, Clone, SmartDefault, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct AppFields {
    #[default("/status".to_owned())]
    pub(crate) status: String,
    #[default("/cache/stats/total_hits".to_owned())]
    pub(crate) hits: String,
    #[default("/cache/stats/total_misses".to_owned())]
    pub(crate) misses: String,
    #[default("/cache/stats/hit_rate".to_owned())]
    pub(crate) hit_rate: String,
    #[default("/cache/stats/cache_size".to_owned())]
    pub(crate) entries: String,
    #[default("/cache/stats/memory_usage_mb".to_owned())]
    pub(crate) memory_mb: String,
    #[default("/cache/stats/memory_pressure".to_owned())]
    pub(crate) memory_pressure: String,
    #[default("/redis/status".to_owned())]
    pub(crate) redis: String,
    #[default("/chromadb/status".to_owned())]
    pub(crate) chromadb: String,
    #[default("/embeddings/status".to_owned())]
    pub(crate) embeddings: String,
    #[default("/cache/status".to_owned())]
    pub(crate) cache: String,
}

/// Where a target lives: a host name (lower case, as DNS compares it) or an
/// address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Host {
    Name(String),
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(name) => f.write_str(name),
            Self::Ip(IpAddr::V4(v4)) => write!(f, "{v4}"),
            Self::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]"),
        }
    }
}

/// An IPv4-mapped (`::ffff:a.b.c.d`) or IPv4-compatible (`::a.b.c.d`) IPv6
/// address as its IPv4, so one address has one spelling; `::` and `::1`
/// stay IPv6.
pub(crate) fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let compatible = v6.segments()[..6].iter().all(|s| *s == 0)
                && !v6.is_unspecified()
                && !v6.is_loopback();
            match v6.to_ipv4() {
                Some(v4) if compatible => IpAddr::V4(v4),
                _ => ip,
            }
        }
        IpAddr::V4(_) => ip,
    }
}

/// An entry of `allowed_targets`: a CIDR (`10.0.0.0/8`, `127.0.0.1/32`; a
/// bare address is its own /32 or /128) or a host-name glob
/// (`*.redis.svc`), either with an optional `:port`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TargetPattern {
    pub(crate) host: HostPattern,
    pub(crate) port: Option<u16>,
    text: String,
}

/// The host part of a [`TargetPattern`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum HostPattern {
    /// Addresses: an IP target must fall inside one.
    Net(IpNet),
    /// Names: a name target must match one (case-insensitive).
    Name(glob::Pattern),
}

impl TargetPattern {
    /// Parses one entry; the error says what a good one looks like.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bad = || {
            format!(
                "{text:?} is neither a CIDR such as 10.0.0.0/8 nor a host glob such as \
                 *.redis.svc, either with an optional :port"
            )
        };
        let port = |p: &str| p.parse::<u16>().map_err(|_| bad());
        let (host, port) = if let Some((address, prefix)) = text.split_once('/') {
            // CIDR, the port after the prefix length: 10.0.0.0/8:6379.
            let (prefix, port) = match prefix.split_once(':') {
                Some((prefix, p)) => (prefix, Some(port(p)?)),
                None => (prefix, None),
            };
            let net: IpNet = format!("{address}/{prefix}").parse().map_err(|_| bad())?;
            (HostPattern::Net(canonical_net(net.trunc())), port)
        } else if let Ok(address) = text
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            (HostPattern::Net(IpNet::from(canonical_ip(address))), None)
        } else {
            let (host, port) = match text.rsplit_once(':') {
                Some((host, p)) => (host, Some(port(p)?)),
                None => (text, None),
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if let Ok(address) = host.parse::<IpAddr>() {
                (HostPattern::Net(IpNet::from(canonical_ip(address))), port)
            } else {
                if host.is_empty() || host.contains(['/', ' ']) {
                    return Err(bad());
                }
                let glob = glob::Pattern::new(&host.to_ascii_lowercase()).map_err(|_| bad())?;
                (HostPattern::Name(glob), port)
            }
        };
        Ok(Self {
            host,
            port,
            text: text.to_owned(),
        })
    }

    /// Whether `host:port` is allowed by this entry: an address by a CIDR,
    /// a name by a name glob; and the port, if the entry names one.
    pub(crate) fn allows(&self, host: &Host, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        match (&self.host, host) {
            (HostPattern::Net(net), Host::Ip(address)) => net.contains(address),
            (HostPattern::Name(glob), Host::Name(name)) => glob.matches(name),
            _ => false,
        }
    }

    /// Whether this entry is a CIDR inside the `denied` network that
    /// contains `address` (and its port, if it names one): what lets a
    /// module reach a denied network. It must lie inside it, so naming the
    /// network is deliberate: `127.0.0.0/8` or `127.0.0.1/32` lets a module
    /// reach loopback, `0.0.0.0/0` does not.
    pub(crate) fn names(&self, denied: &IpNet, address: IpAddr, port: u16) -> bool {
        match &self.host {
            HostPattern::Net(net) => denied.contains(net) && self.allows(&Host::Ip(address), port),
            HostPattern::Name(_) => false,
        }
    }
}

impl<'de> Deserialize<'de> for TargetPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(D::Error::custom)
    }
}

impl Serialize for TargetPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.text.serialize(serializer)
    }
}

/// An IPv4-mapped IPv6 network as its IPv4 network, as targets are
/// checked as their IPv4.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        _ => net,
    }
}

/// The default `probe.denied_networks`.
fn default_denied_networks() -> Vec<IpNet> {
    [
        "127.0.0.0/8",
        "::1/128",
        "169.254.0.0/16",
        "fe80::/10",
        "0.0.0.0/8",
        "::/128",
    ]
    .iter()
    .filter_map(|net| net.parse().ok())
    .collect()
}

/// A list of CIDRs; a bare address is its own /32 or /128.
fn networks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|text| {
            let text = text.trim();
            text.parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                .map(|net| canonical_net(net.trunc()))
                .map_err(|_| D::Error::custom(format!("{text:?} is not a CIDR such as 10.0.0.0/8")))
        })
        .collect()
}

/// A boolean, written `true`/`false` in the file, or as the string a flag
/// or env var gives (`--canary.enabled false`).
pub(super) fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Spelling {
        Bool(bool),
        Text(String),
    }
    match Spelling::deserialize(d)? {
        Spelling::Bool(value) => Ok(value),
        Spelling::Text(text) => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            other => Err(D::Error::custom(format!("{other:?} is not true or false"))),
        },
    }
}

/// [`any_case`], for an optional value.
fn optional_any_case<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    any_case(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_and_globs_with_and_without_ports() {
        let allows = |pattern: &str, host: &str, port: u16| {
            let host = host
                .parse::<IpAddr>()
                .map_or_else(|_| Host::Name(host.to_ascii_lowercase()), Host::Ip);
            TargetPattern::parse(pattern).unwrap().allows(&host, port)
        };
        assert!(allows("127.0.0.1/32", "127.0.0.1", 6379));
        assert!(!allows("127.0.0.1/32", "127.0.0.2", 6379));
        assert!(allows("10.0.0.0/8:6379", "10.1.2.3", 6379));
        assert!(!allows("10.0.0.0/8:6379", "10.1.2.3", 6380));
        assert!(allows("127.0.0.1", "127.0.0.1", 1));
        assert!(allows("::1/128", "::1", 6379));
        assert!(allows("*.redis.svc:6379", "a.redis.svc", 6379));
        assert!(allows("*.redis.svc", "A.Redis.SVC", 1));
        assert!(!allows("*.redis.svc:6379", "a.redis.svc", 6380));
        // An address must match a CIDR, a name a name pattern.
        assert!(!allows("*", "127.0.0.1", 6379));
        assert!(!allows("10.0.0.0/8", "ten.example", 6379));
        assert!(!allows("localhost", "127.0.0.1", 6379));
        assert!(allows("localhost:6379", "localhost", 6379));
        // A mapped network is its IPv4 network.
        assert!(allows("::ffff:127.0.0.0/104", "127.0.0.9", 1));
    }

    #[test]
    fn bad_patterns_say_what_a_good_one_looks_like() {
        for bad in ["10.0.0.0/33", "10.0.0.0/8:port", "a b", "", "host:99999"] {
            let err = TargetPattern::parse(bad).unwrap_err();
            assert!(err.contains("CIDR such as 10.0.0.0/8"), "{bad}: {err}");
        }
    }
}
