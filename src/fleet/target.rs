//! A probe's `target` parameter: `host:port`, or a URL of the prober's
//! schemes, parsed once into where to connect.

use url::Url;

use crate::config::ProberKind;

/// Where a probe goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The parameter as given: the `node` label, and the pool's key.
    pub(crate) given: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `rediss://` or `https://`.
    pub(crate) tls: bool,
    /// A URL's path (app targets).
    pub(crate) path: Option<String>,
}

impl Target {
    /// Parses `text` for `prober`; the error says what a target looks like.
    pub(crate) fn parse(text: &str, prober: ProberKind) -> Result<Self, String> {
        let text = text.trim();
        let (schemes, default_port): (&[(&str, bool)], u16) = match prober {
            ProberKind::Redis => (&[("redis", false), ("rediss", true)], 6379),
            ProberKind::Chroma => (&[("http", false), ("https", true)], 8000),
            ProberKind::App => (&[("http", false), ("https", true)], 80),
        };
        let expected = || {
            let schemes: Vec<String> = schemes.iter().map(|(s, _)| format!("{s}://")).collect();
            format!(
                "target {text:?} is neither host:port nor a {} URL",
                schemes.join(" or ")
            )
        };
        if text.contains("://") {
            let url = Url::parse(text).map_err(|_| expected())?;
            let tls = schemes
                .iter()
                .find(|(scheme, _)| *scheme == url.scheme())
                .map(|(_, tls)| *tls)
                .ok_or_else(expected)?;
            let host = url
                .host_str()
                .filter(|h| !h.is_empty())
                .ok_or_else(expected)?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = url.port().unwrap_or(if tls && prober != ProberKind::Redis {
                443
            } else {
                default_port
            });
            let path = Some(url.path()).filter(|p| *p != "/" && !p.is_empty());
            return Ok(Self {
                given: text.to_owned(),
                host,
                port,
                tls,
                path: path.map(str::to_owned),
            });
        }
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(':') => {
                (host, port.parse::<u16>().map_err(|_| expected())?)
            }
            _ => (text, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(['/', ' ', '@']) {
            return Err(expected());
        }
        Ok(Self {
            given: text.to_owned(),
            host: host.to_owned(),
            port,
            tls: false,
            path: None,
        })
    }

    /// `host:port`, with an IPv6 address in brackets.
    pub(crate) fn endpoint(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_and_urls_of_each_prober() {
        let redis = Target::parse("127.0.0.1:6401", ProberKind::Redis).unwrap();
        assert_eq!(
            (redis.host.as_str(), redis.port, redis.tls),
            ("127.0.0.1", 6401, false)
        );
        let tls = Target::parse("rediss://cache.redis.svc:6380", ProberKind::Redis).unwrap();
        assert_eq!(
            (tls.host.as_str(), tls.port, tls.tls),
            ("cache.redis.svc", 6380, true)
        );
        assert_eq!(
            Target::parse("redis-a", ProberKind::Redis).unwrap().port,
            6379
        );
        let chroma = Target::parse("https://chroma.example", ProberKind::Chroma).unwrap();
        assert_eq!((chroma.port, chroma.tls), (443, true));
        let app = Target::parse("http://10.0.0.7:8080/status", ProberKind::App).unwrap();
        assert_eq!(app.path.as_deref(), Some("/status"));
        assert_eq!(
            Target::parse("[::1]:6379", ProberKind::Redis)
                .unwrap()
                .endpoint(),
            "[::1]:6379"
        );
    }

    #[test]
    fn other_schemes_and_junk_are_refused() {
        for bad in ["http://a:1", "a:port", "", "user@host:1", "a b:1"] {
            let err = Target::parse(bad, ProberKind::Redis).unwrap_err();
            assert!(err.contains("host:port"), "{bad}: {err}");
        }
        assert!(Target::parse("redis://a:1", ProberKind::App).is_err());
    }
}
