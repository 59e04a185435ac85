//! Where a module may connect. A target must match the module's
//! `allowed_targets` (a name a name glob, an address a CIDR), and every
//! address dialled, the target's own or one its name resolves to, must lie
//! outside `probe.denied_networks` unless a CIDR of the module contains it.
//!
//! A name is resolved once per probe ([`Policy::resolve`]) and the client
//! dials the addresses that passed, never the name again. Nodes the server
//! names later (a cluster's `CLUSTER SLOTS`, `MOVED` and `ASK`) go through
//! [`NodeGuard`], the Redis client's resolver, which checks them the same
//! way before anything connects.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;

use super::target::{canonical_ip, Host, Target};
use crate::backends::http::Refused;
use crate::config::TargetPattern;
use crate::metrics::label_values;

label_values! {
    /// Why a probe was refused or cut short, as the `reason` label spells it.
    pub(crate) enum Reason {
        Malformed => "malformed",
        NotAllowed => "not_allowed",
        DeniedNetwork => "denied_network",
        NodeNotAllowed => "node_not_allowed",
        Redirect => "redirect",
        BodyTooLarge => "body_too_large",
    }
}

impl From<Refused> for Reason {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::Redirect => Self::Redirect,
            Refused::BodyTooLarge => Self::BodyTooLarge,
        }
    }
}

/// A refusal: its reason and what to tell the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) reason: Reason,
    pub(crate) message: String,
}

/// One module's allow-list, and the networks denied to every module.
#[derive(Debug)]
pub(crate) struct Policy {
    module: String,
    allowed: Vec<TargetPattern>,
    denied: Arc<Vec<IpNet>>,
}

/// How a name resolved: the addresses that may be dialled.
pub(crate) type Addresses = Vec<SocketAddr>;

impl Policy {
    pub(crate) fn new(module: &str, allowed: &[TargetPattern], denied: Arc<Vec<IpNet>>) -> Self {
        Self {
            module: module.to_owned(),
            allowed: allowed.to_vec(),
            denied,
        }
    }

    /// Whether `host:port` is on the module's allow-list, and, for an
    /// address, outside the denied networks (or inside a module CIDR).
    pub(crate) fn check(&self, host: &Host, port: u16, reason: Reason) -> Result<(), Refusal> {
        let endpoint = format!("{host}:{port}");
        if !self.allowed.iter().any(|p| p.allows(host, port)) {
            return Err(Refusal {
                reason,
                message: format!(
                    "{endpoint} is outside module {m}'s allowed_targets \
                     (probe.modules.{m}.allowed_targets)",
                    m = self.module
                ),
            });
        }
        match host {
            Host::Ip(ip) => self.admit(*ip, port).map_err(|message| Refusal {
                reason: Reason::DeniedNetwork,
                message,
            }),
            Host::Name(_) => Ok(()),
        }
    }

    /// Whether `ip` may be dialled: outside `probe.denied_networks`, or
    /// named by a CIDR of the module that lies inside the denied network.
    fn admit(&self, ip: IpAddr, port: u16) -> Result<(), String> {
        let ip = canonical_ip(ip);
        let denied = self.denied.iter().filter(|net| net.contains(&ip));
        for net in denied {
            if !self.allowed.iter().any(|p| p.names(net, ip, port)) {
                return Err(format!(
                    "{ip} is in the denied network {net} (probe.denied_networks); a CIDR inside \
                     it that contains the address, in module {m}'s allowed_targets, lets the \
                     module reach it",
                    m = self.module
                ));
            }
        }
        Ok(())
    }

    /// The addresses to dial for `host:port`, checked: an address as it is,
    /// a name resolved (within `within`). `Ok(Err(..))` is a name that did
    /// not resolve (a failed probe, not a refusal).
    pub(crate) async fn resolve(
        &self,
        host: &Host,
        port: u16,
        within: Duration,
    ) -> Result<Result<Addresses, String>, Refusal> {
        let name = match host {
            Host::Ip(ip) => {
                self.admit(*ip, port).map_err(|message| Refusal {
                    reason: Reason::DeniedNetwork,
                    message,
                })?;
                return Ok(Ok(vec![SocketAddr::new(*ip, port)]));
            }
            Host::Name(name) => name,
        };
        let found = match tokio::time::timeout(
            within,
            tokio::net::lookup_host((name.as_str(), port)),
        )
        .await
        {
            Err(_) => return Ok(Err(format!("{name} did not resolve within {within:?}"))),
            Ok(Err(err)) => return Ok(Err(format!("{name} does not resolve: {err}"))),
            Ok(Ok(found)) => found,
        };
        let mut admitted = Vec::new();
        let mut denied = Vec::new();
        for addr in found {
            let addr = SocketAddr::new(canonical_ip(addr.ip()), addr.port());
            match self.admit(addr.ip(), port) {
                Ok(()) if !admitted.contains(&addr) => admitted.push(addr),
                Ok(()) => {}
                Err(why) => denied.push(why),
            }
        }
        match (admitted.is_empty(), denied.first()) {
            (true, Some(why)) => Err(Refusal {
                reason: Reason::DeniedNetwork,
                message: format!("{name} resolves into a denied network: {why}"),
            }),
            (true, None) => Ok(Err(format!("{name} resolves to no address"))),
            (false, _) => {
                admitted.sort();
                Ok(Ok(admitted))
            }
        }
    }
}

/// A node's host as a server names it (an IPv6 address bare or in
/// brackets), read as a target's host is.
pub(crate) fn node_host(host: &str) -> Result<Host, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => Ok(Host::Ip(canonical_ip(ip))),
        Err(_) => Target::parse(bare, crate::config::ProberKind::Redis)
            .map(|t| t.host)
            .map_err(|err| format!("a node the server named {err}")),
    }
}

/// The Redis client's resolver for one target: the target's own host
/// gives the addresses the probe checked; any other node the server names
/// is checked against the module's policy first, and refused (never
/// dialled) if it fails. Refusals are kept for the probe to report.
pub(crate) struct NodeGuard {
    policy: Arc<Policy>,
    target: (String, u16),
    addresses: Addresses,
    refused: Mutex<Vec<String>>,
}

impl NodeGuard {
    pub(crate) fn new(policy: Arc<Policy>, target: &Target, addresses: Addresses) -> Self {
        Self {
            policy,
            target: (target.host_str(), target.port),
            addresses,
            refused: Mutex::new(Vec::new()),
        }
    }

    /// The nodes refused since the last call.
    pub(crate) fn take_refused(&self) -> Vec<String> {
        std::mem::take(&mut *self.refused.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Checks one node the server named; `Err` says why it may not be
    /// dialled.
    pub(crate) async fn check_node(&self, host: &str, port: u16) -> Result<Addresses, String> {
        if (host, port) == (self.target.0.as_str(), self.target.1) {
            return Ok(self.addresses.clone());
        }
        let verdict = match node_host(host) {
            Err(err) => Err(err),
            Ok(node) => match self.policy.check(&node, port, Reason::NodeNotAllowed) {
                Err(refusal) => Err(format!("node {}", refusal.message)),
                Ok(()) => match self
                    .policy
                    .resolve(&node, port, Duration::from_secs(5))
                    .await
                {
                    Ok(Ok(addresses)) => return Ok(addresses),
                    Ok(Err(why)) => return Err(why),
                    Err(refusal) => Err(format!("node {}", refusal.message)),
                },
            },
        };
        if let Err(why) = &verdict {
            tracing::warn!(node = %format!("{host}:{port}"), %why, "refused a node the server named");
            let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
            if refused.len() < 16 {
                refused.push(why.clone());
            }
        }
        verdict
    }
}

impl redis::io::AsyncDNSResolver for NodeGuard {
    fn resolve<'a, 'b: 'a>(
        &'a self,
        host: &'b str,
        port: u16,
    ) -> redis::RedisFuture<'a, Box<dyn Iterator<Item = SocketAddr> + Send + 'a>> {
        Box::pin(async move {
            match self.check_node(host, port).await {
                Ok(addresses) => {
                    Ok(Box::new(addresses.into_iter())
                        as Box<dyn Iterator<Item = SocketAddr> + Send>)
                }
                Err(why) => Err(redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    why,
                ))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProberKind;

    fn policy(allowed: &[&str]) -> Policy {
        let allowed: Vec<TargetPattern> = allowed
            .iter()
            .map(|p| TargetPattern::parse(p).unwrap())
            .collect();
        let denied = [
            "127.0.0.0/8",
            "::1/128",
            "169.254.0.0/16",
            "::/128",
            "0.0.0.0/8",
        ]
        .iter()
        .map(|n| n.parse().unwrap())
        .collect();
        Policy::new("m", &allowed, Arc::new(denied))
    }

    fn host(text: &str) -> Host {
        Target::parse(text, ProberKind::Redis).unwrap().host
    }

    #[test]
    fn an_address_needs_a_cidr_and_a_denied_one_a_cidr_that_contains_it() {
        let names = policy(&["*.redis.svc", "localhost"]);
        let refused = names.check(&host("127.0.0.1"), 6379, Reason::NotAllowed);
        assert_eq!(refused.unwrap_err().reason, Reason::NotAllowed);
        let wide = policy(&["0.0.0.0/0", "::/0"]);
        for denied in [
            "127.0.0.1",
            "[::ffff:127.0.0.1]",
            "169.254.169.254",
            "0.0.0.0",
            "[::]",
            "[::1]",
        ] {
            let err = wide
                .check(&host(denied), 6379, Reason::NotAllowed)
                .unwrap_err();
            assert_eq!(err.reason, Reason::DeniedNetwork, "{denied}");
        }
        assert!(wide
            .check(&host("10.1.2.3"), 6379, Reason::NotAllowed)
            .is_ok());
        let loopback = policy(&["127.0.0.1/32"]);
        assert!(loopback
            .check(&host("127.1"), 6379, Reason::NotAllowed)
            .is_ok());
        assert!(loopback
            .check(&host("127.0.0.2"), 6379, Reason::NotAllowed)
            .is_err());
    }

    #[tokio::test]
    async fn a_name_that_resolves_into_a_denied_network_is_refused_unless_a_cidr_names_it() {
        let by_name = policy(&["localhost"]);
        let err = by_name
            .resolve(&host("localhost"), 6379, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(err.reason, Reason::DeniedNetwork, "{err:?}");
        let with_cidr = policy(&["localhost", "127.0.0.0/8", "::1/128"]);
        let addresses = with_cidr
            .resolve(&host("localhost"), 6379, Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        assert!(
            addresses.iter().all(|a| a.ip().is_loopback()),
            "{addresses:?}"
        );
    }
}
