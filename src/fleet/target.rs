//! A probe's `target` parameter, parsed once into a canonical [`Target`]:
//! scheme, host (a name, an IPv4 or an IPv6 address), port, and a
//! database (redis) or a path (app). The allow-list, the pool, the census,
//! the credentials match, the connection and `debug=true` all use this one
//! value; nothing reads the raw string again.
//!
//! Anything a URL parser could read two ways is refused rather than
//! guessed at: userinfo, a query or fragment, `\`, `%`, whitespace or a
//! control character, an IPv6 zone, a port that is not plain digits. The
//! host is read by the `url` crate's WHATWG host parser, so every numeric
//! IPv4 spelling (`127.1`, `2130706433`, `0x7f000001`, `017700000001`)
//! becomes the dotted quad it dials; an IPv4-mapped or IPv4-compatible IPv6
//! address becomes its IPv4.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use crate::config::ProberKind;
pub(crate) use crate::config::{canonical_ip, Host};

/// One target, canonical: two spellings of the same target are equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Target {
    /// `rediss://` or `https://`.
    pub(crate) tls: bool,
    pub(crate) host: Host,
    pub(crate) port: u16,
    /// redis: the database (`redis://h:6379/5`); 0 elsewhere.
    pub(crate) db: u32,
    /// app: the document's path, when the target names one.
    pub(crate) path: Option<String>,
    prober: ProberKind,
}

/// The scheme of each prober, plain and with TLS.
fn schemes(prober: ProberKind) -> (&'static str, &'static str) {
    match prober {
        ProberKind::Redis => ("redis", "rediss"),
        ProberKind::Chroma | ProberKind::App => ("http", "https"),
    }
}

fn default_port(prober: ProberKind, tls: bool) -> u16 {
    match (prober, tls) {
        (ProberKind::Redis, _) => 6379,
        (_, true) => 443,
        (ProberKind::Chroma, false) => 8000,
        (ProberKind::App, false) => 80,
    }
}

impl Target {
    /// Parses `text` for `prober`. The error says what is wrong, and never
    /// repeats the text (it may hold a password).
    pub(crate) fn parse(text: &str, prober: ProberKind) -> Result<Self, String> {
        if text.is_empty() {
            return Err("is empty".into());
        }
        if let Some(c) = text.chars().find(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!(
                "holds whitespace or a control character ({:?})",
                c.escape_unicode().to_string()
            ));
        }
        for (c, what) in [
            ('\\', "holds a backslash"),
            ('#', "has a fragment (#...)"),
            ('?', "has a query (?...)"),
            (
                '@',
                "has userinfo (user@ or user:password@); give logins in the module's \
                 credentials_file, never in the target",
            ),
        ] {
            if text.contains(c) {
                return Err(what.into());
            }
        }
        let (plain, secure) = schemes(prober);
        let (tls, rest) = match text.split_once("://") {
            None => (false, text),
            Some((scheme, rest)) => match scheme.to_ascii_lowercase() {
                s if s == plain => (false, rest),
                s if s == secure => (true, rest),
                _ => {
                    return Err(format!(
                        "is neither host:port nor a {plain}:// or {secure}:// URL"
                    ))
                }
            },
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (host, port) = split_host_port(authority)?;
        let port = match port {
            None => default_port(prober, tls),
            Some(port) => parse_port(port)?,
        };
        let (db, path) = parse_path(path, prober)?;
        Ok(Self {
            tls,
            host: parse_host(host)?,
            port,
            db,
            path,
            prober,
        })
    }

    /// `host:port`, an IPv6 address in brackets: what is dialled, and what
    /// a credentials file's `match` is compared with.
    pub(crate) fn endpoint(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The host as a resolver or TLS takes it (an IPv6 address bare).
    pub(crate) fn host_str(&self) -> String {
        match &self.host {
            Host::Name(name) => name.clone(),
            Host::Ip(ip) => ip.to_string(),
        }
    }
}

/// The canonical spelling: `redis://h:6379/0`, `http://h:8000`,
/// `https://h:443/status`. It parses back to the same value.
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (plain, secure) = schemes(self.prober);
        let scheme = if self.tls { secure } else { plain };
        write!(f, "{scheme}://{}", self.endpoint())?;
        match self.prober {
            ProberKind::Redis => write!(f, "/{}", self.db),
            _ => f.write_str(self.path.as_deref().unwrap_or("")),
        }
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(bracketed) = authority.strip_prefix('[') {
        let (inside, after) = bracketed
            .split_once(']')
            .ok_or("opens an IPv6 address with [ and never closes it")?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or("has something other than :port after ]")?,
            ),
        };
        return Ok((authority.get(..inside.len() + 2).unwrap_or(inside), port));
    }
    match authority.split_once(':') {
        None => Ok((authority, None)),
        Some((_, port)) if port.contains(':') => {
            Err("has more than one ':'; an IPv6 address goes in brackets, as [::1]:6379".into())
        }
        Some((host, port)) => Ok((host, Some(port))),
    }
}

/// Plain decimal digits, 1 to 65535.
fn parse_port(port: &str) -> Result<u16, String> {
    let bad = || "has a port that is not a number from 1 to 65535".to_owned();
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    port.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)
}

/// A host as the WHATWG parser reads it, but only from characters that
/// mean one thing: letters, digits, `-`, `.` and `_` (or an IPv6 address in
/// brackets).
fn parse_host(host: &str) -> Result<Host, String> {
    if host.is_empty() || host == "[]" {
        return Err("has no host".into());
    }
    if let Some(inside) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        if inside.contains('%') {
            return Err("has an IPv6 zone (%...), which is not taken".into());
        }
        let v6: Ipv6Addr = inside
            .parse()
            .map_err(|_| "has a host in brackets that is not an IPv6 address".to_owned())?;
        return Ok(Host::Ip(canonical_ip(IpAddr::V6(v6))));
    }
    if host.contains('%') {
        return Err("has percent-encoding (%) in the host".into());
    }
    if let Some(c) = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        return Err(format!(
            "has {c:?} in the host; a host is a name of letters, digits, '-', '.' and '_', \
             an IPv4 address, or an IPv6 address in brackets"
        ));
    }
    if host.starts_with('.') || host.contains("..") {
        return Err("has an empty label in the host name".into());
    }
    match url::Host::parse(host) {
        Ok(url::Host::Domain(name)) => Ok(Host::Name(name.to_ascii_lowercase())),
        Ok(url::Host::Ipv4(v4)) => Ok(Host::Ip(IpAddr::V4(v4))),
        Ok(url::Host::Ipv6(v6)) => Ok(Host::Ip(canonical_ip(IpAddr::V6(v6)))),
        Err(err) => Err(format!("has a host that does not parse ({err})")),
    }
}

/// The path: a database number on redis, none on chroma, a plain path on
/// app (its own characters only, no dot segments).
fn parse_path(path: &str, prober: ProberKind) -> Result<(u32, Option<String>), String> {
    if path.is_empty() || path == "/" {
        return Ok((0, None));
    }
    match prober {
        ProberKind::Redis => {
            let db = &path[1..];
            if db.len() > 9 || !db.bytes().all(|b| b.is_ascii_digit()) {
                return Err(
                    "has a path that is not a database number such as /5 (redis targets)".into(),
                );
            }
            Ok((db.parse().map_err(|_| "has a bad database number")?, None))
        }
        ProberKind::Chroma => Err(
            "has a path; a chroma target is host:port or a URL without one \
             (the API paths are the prober's)"
                .into(),
        ),
        ProberKind::App => {
            let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:/".contains(c);
            if let Some(c) = path.chars().find(|c| !allowed(*c)) {
                return Err(format!("has {c:?} in the path"));
            }
            if path
                .split('/')
                .skip(1)
                .any(|segment| segment == "." || segment == "..")
            {
                return Err("has a . or .. segment in the path".into());
            }
            Ok((0, Some(path.to_owned())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, prober: ProberKind) -> Target {
        Target::parse(text, prober).unwrap_or_else(|err| panic!("{text}: {err}"))
    }

    #[test]
    fn hostile_spellings_are_refused_without_echoing_them() {
        for (bad, why) in [
            ("redis://user:hunter2@h:6379", "userinfo"),
            ("hunter2@h", "userinfo"),
            ("[::ffff:127.0.0.1]:1#x.redis.svc:6379", "fragment"),
            ("[::ffff:127.0.0.1]:1?x.chroma.svc:8000", "query"),
            ("127.0.0.1:1\\x.chat.svc:80", "backslash"),
            ("localhost#.chat.svc", "fragment"),
            ("h%2ex", "percent"),
            ("[fe80::1%25eth0]:6379", "zone"),
            ("a b:1", "whitespace"),
            ("h\t:1", "whitespace"),
            ("h\u{0}:1", "control"),
            ("h:+80", "port"),
            ("h:0", "port"),
            ("h:65536", "port"),
            ("h:", "port"),
            (":6379", "no host"),
            ("redis://:6379", "no host"),
            ("[]:6379", "no host"),
            ("::1:6379", "more than one"),
            ("[::1", "never closes"),
            ("[::1]x", "after ]"),
            ("[127.0.0.1]:1", "not an IPv6"),
            ("h/x", "database number"),
            ("redis://h/5x", "database number"),
            ("1.2.3.4.5", "does not parse"),
            ("999.0.0.1", "does not parse"),
            ("a..b", "empty label"),
            ("http://h:1", "neither"),
            ("h*", "in the host"),
        ] {
            let err = Target::parse(bad, ProberKind::Redis).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
            assert!(!err.contains("hunter2"), "{bad}: {err}");
        }
        let err = Target::parse("http://h:8000/api", ProberKind::Chroma).unwrap_err();
        assert!(err.contains("path"), "{err}");
        for bad in ["http://h/a/../b", "http://h/%2e%2e/", "http://h/ä"] {
            assert!(Target::parse(bad, ProberKind::App).is_err(), "{bad}");
        }
    }

    #[test]
    fn one_target_has_one_value_however_it_is_spelled() {
        let one = parse("h", ProberKind::Redis);
        for same in [
            "h:6379",
            "redis://h:6379",
            "redis://h:6379/0",
            "REDIS://H/",
            "redis://h/00",
        ] {
            assert_eq!(parse(same, ProberKind::Redis), one, "{same}");
        }
        assert_eq!(one.to_string(), "redis://h:6379/0");
        assert_eq!(parse("redis://h:6379/5", ProberKind::Redis).db, 5);
        assert_ne!(parse("redis://h:6379/5", ProberKind::Redis), one);
        assert_ne!(parse("rediss://h", ProberKind::Redis), one);
        let loopback = Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        for spelling in [
            "127.0.0.1",
            "127.1",
            "2130706433",
            "0x7f000001",
            "017700000001",
            "0x7f.0.0.1",
            "[::ffff:127.0.0.1]",
            "[::ffff:7f00:1]",
            "[::127.0.0.1]",
        ] {
            assert_eq!(
                parse(spelling, ProberKind::Redis).host,
                loopback,
                "{spelling}"
            );
        }
        assert_eq!(
            parse("[::1]:6379", ProberKind::Redis).endpoint(),
            "[::1]:6379"
        );
        assert_eq!(
            parse("[::]", ProberKind::Redis).host,
            Host::Ip(IpAddr::V6(Ipv6Addr::UNSPECIFIED))
        );
    }

    #[test]
    fn each_prober_has_its_schemes_ports_and_paths() {
        let tls = parse("rediss://cache.redis.svc:6380", ProberKind::Redis);
        assert_eq!(
            (tls.host_str(), tls.port, tls.tls),
            ("cache.redis.svc".into(), 6380, true)
        );
        let chroma = parse("https://Chroma.Example", ProberKind::Chroma);
        assert_eq!((chroma.port, chroma.tls), (443, true));
        assert_eq!(chroma.to_string(), "https://chroma.example:443");
        assert_eq!(parse("c", ProberKind::Chroma).port, 8000);
        let app = parse("http://10.0.0.7:8080/status", ProberKind::App);
        assert_eq!(app.path.as_deref(), Some("/status"));
        assert_eq!(app.to_string(), "http://10.0.0.7:8080/status");
        assert_eq!(parse("a.chat.svc", ProberKind::App).port, 80);
        assert_eq!(parse("http://a/", ProberKind::App).path, None);
        assert!(Target::parse("redis://a:1", ProberKind::App).is_err());
    }

    use std::net::Ipv4Addr;

    mod property {
        use super::*;
        use proptest::prelude::*;

        /// Pieces a target is made of, the hostile ones among them.
        fn piece() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("redis://".to_owned()),
                Just("rediss://".to_owned()),
                Just("http://".to_owned()),
                Just("https://".to_owned()),
                Just("[::ffff:127.0.0.1]".to_owned()),
                Just("[::1]".to_owned()),
                Just("[::ffff:7f00:1]".to_owned()),
                Just("0x7f000001".to_owned()),
                Just("127.1".to_owned()),
                Just("x.redis.svc".to_owned()),
                Just("localhost".to_owned()),
                Just(":6379".to_owned()),
                Just(":80".to_owned()),
                Just("/5".to_owned()),
                Just("/health".to_owned()),
                "[#?\\\\@%:/\\[\\]. a-zA-Z0-9_~-]{0,6}",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4000))]

            #[test]
            fn what_is_accepted_is_dialled_as_checked_and_parses_back(
                pieces in prop::collection::vec(piece(), 1..5),
                which in 0usize..3,
            ) {
                let prober = [ProberKind::Redis, ProberKind::Chroma, ProberKind::App][which];
                let text = pieces.concat();
                if let Ok(target) = Target::parse(&text, prober) {
                    let canonical = target.to_string();
                    prop_assert_eq!(&Target::parse(&canonical, prober).unwrap(), &target);
                    // A URL parser reads the canonical form's host and port
                    // as the value that was checked.
                    let url = url::Url::parse(&canonical).unwrap();
                    prop_assert_eq!(url.port_or_known_default(), Some(target.port));
                    let read = match url.host().unwrap() {
                        // redis:// is not a special scheme: its host is
                        // opaque text, which the resolver reads as an
                        // address where it is one.
                        url::Host::Domain(d) => d
                            .parse::<IpAddr>()
                            .map_or_else(|_| Host::Name(d.to_owned()), Host::Ip),
                        url::Host::Ipv4(v4) => Host::Ip(IpAddr::V4(v4)),
                        url::Host::Ipv6(v6) => Host::Ip(IpAddr::V6(v6)),
                    };
                    prop_assert_eq!(&read, &target.host);
                    prop_assert!(url.username().is_empty() && url.password().is_none());
                    prop_assert!(url.query().is_none() && url.fragment().is_none());
                    // An address is dialled as the checked one.
                    if let Host::Ip(ip) = target.host {
                        let dialled: std::net::SocketAddr = target.endpoint().parse().unwrap();
                        prop_assert_eq!(dialled, std::net::SocketAddr::new(ip, target.port));
                    }
                }
            }
        }
    }
}
