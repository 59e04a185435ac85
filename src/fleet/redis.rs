//! The `redis` prober: `PING`, then `round_trips` chat writes (`MULTI`
//! `RPUSH` `LTRIM` `PEXPIRE` `EXEC`) and reads (`LRANGE`) on one probe key
//! with a TTL, then `INFO` on every master. Through the canary's own client
//! ([`RedisClient`]), pooled per target.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::registry::Unit;

use super::guard::{node_host, NodeGuard, Policy, Reason};
use super::report::{NodeLabels, Report, Timings};
use super::Probe;
use crate::backends::redis::{info_series, parse_info, Dial, Failure, RedisClient, ReplyCode};
use crate::backends::BackendError;
use crate::config::values::{RedisUrl, RedisUrls, SecretFile};
use crate::config::RedisConfig;

/// Entries the probe key keeps, and how long it lives.
const KEEP: i64 = 10;
const KEY_TTL_MS: u64 = 60_000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: ReplyCode,
}

/// A pooled client, and the resolver that checks the nodes it dials.
pub(crate) struct Pooled {
    client: RedisClient,
    guard: Arc<NodeGuard>,
}

/// The client settings for this target: the module's, with the target's
/// address, the login the credentials file gives it (or the module's
/// password of this reading), and `timeout` per request.
pub(super) fn client_config(probe: &Probe<'_>, timeout: Duration) -> Result<RedisConfig, String> {
    let module = probe.module;
    let target = probe.target;
    let url = RedisUrl {
        // The canonical spelling, which the `url` crate reads as the
        // target's own host and port (a property test holds it to that);
        // the client connects from the fields beside it.
        url: url::Url::parse(&target.to_string()).map_err(|err| format!("not a URL: {err}"))?,
        host: target.host_str(),
        port: target.port,
        db: target.db,
        tls: target.tls,
        username: probe
            .login
            .username
            .clone()
            .or_else(|| module.username.clone()),
        password: None,
    };
    let password = probe
        .login
        .password
        .clone()
        .or_else(|| probe.secrets.password.clone());
    // The TLS files apply to `rediss://` targets only.
    let tls = |file: &Option<std::path::PathBuf>| file.clone().filter(|_| target.tls);
    Ok(RedisConfig {
        mode: module.mode,
        url: RedisUrls(vec![url]),
        password,
        timeout,
        tls_ca_file: tls(&module.tls_ca_file),
        tls_cert_file: tls(&module.tls_cert_file),
        tls_key_file: tls(&module.tls_key_file),
        password_file: None::<SecretFile>,
        ..RedisConfig::default()
    })
}

/// How this probe's clients dial: the checked address, and a guard on
/// every node the server names.
pub(super) fn dial(probe: &Probe<'_>) -> Result<(Dial, Arc<NodeGuard>), String> {
    let address = *probe
        .addresses
        .first()
        .ok_or("the target resolved to no address")?;
    let guard = Arc::new(NodeGuard::new(
        probe.policy.clone(),
        probe.target,
        probe.addresses.to_vec(),
    ));
    let dial = Dial {
        address,
        resolver: guard.clone(),
    };
    Ok((dial, guard))
}

/// Probes one Redis; returns whether everything answered without an error.
pub(crate) async fn probe(probe: &Probe<'_>, report: &mut Report) -> bool {
    // The pooled client's own timeout is the module's: each probe's
    // deadline is its own, around the whole probe.
    let pooled = probe.pools.redis.get_or_try_insert(probe.pool_key(), || {
        let (dial, guard) = dial(probe)?;
        let config = client_config(probe, probe.module.timeout)?;
        RedisClient::for_probe(&config, &dial)
            .map(|client| Pooled { client, guard })
            .map_err(|err| err.message)
    });
    let pooled = match pooled {
        Ok(pooled) => pooled,
        Err(err) => {
            report.log(format!("cannot set up a client for the target: {err}"));
            return false;
        }
    };
    let client = &pooled.client;
    let mut run = Run {
        client,
        policy: probe.policy,
        timings: Timings::default(),
        replies: Vec::new(),
        ok: true,
    };
    let key = format!("{}fleet:{{{}}}", probe.module.key_prefix, probe.exporter_id);
    let entry = format!("{{\"role\":\"probe\",\"from\":\"{}\"}}", probe.exporter_id);
    let reached = run
        .step(report, "ping", client.query::<String>(&redis::cmd("PING")))
        .await;
    if reached {
        for _ in 0..probe.module.round_trips {
            let wrote = run
                .step(
                    report,
                    "store_entry",
                    client.push_trimmed(&key, &entry, KEEP, KEY_TTL_MS),
                )
                .await;
            let read = run
                .step(report, "lrange", client.lrange(&key, -KEEP, -1))
                .await;
            if !(wrote && read) {
                break;
            }
        }
        run.info(report).await;
    }
    for why in pooled.guard.take_refused() {
        report.refuse(Reason::NodeNotAllowed, why);
        run.ok = false;
    }
    run.timings.report(report);
    let mut replies: Vec<(CodeLabels, f64)> = Vec::new();
    for code in &run.replies {
        match replies.iter_mut().find(|(l, _)| l.code == *code) {
            Some((_, n)) => *n += 1.0,
            None => replies.push((CodeLabels { code: *code }, 1.0)),
        }
    }
    report.gauges(
        "probe_error_replies",
        "Error replies to this probe's requests, by code",
        None,
        replies,
    );
    run.ok
}

/// One probe's requests and what they found.
struct Run<'a> {
    client: &'a RedisClient,
    policy: &'a Policy,
    timings: Timings,
    replies: Vec<ReplyCode>,
    ok: bool,
}

impl Run<'_> {
    /// Whether the node at `addr` (`host:port`, as the server names it) is
    /// on the module's allow-list and outside the denied networks.
    fn node_allowed(&self, addr: &str) -> Result<(), String> {
        let (host, port) = addr
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
            .ok_or_else(|| format!("the server named a node {addr:?} that is not host:port"))?;
        self.policy
            .check(&node_host(host)?, port, Reason::NodeNotAllowed)
            .map_err(|refusal| format!("node {}", refusal.message))
    }

    /// Times `request`; a failure is logged, counted by code, and fails the
    /// probe. Returns whether it succeeded.
    async fn step<T>(
        &mut self,
        report: &mut Report,
        request: &'static str,
        send: impl std::future::Future<Output = Result<T, Failure>>,
    ) -> bool {
        let start = Instant::now();
        let result = send.await;
        self.timings.record(request, start.elapsed());
        match result {
            Ok(_) => true,
            Err(failure) => {
                let error: BackendError = failure.clone().into();
                report.log(format!(
                    "{request} failed ({}): {error}",
                    error.kind.as_str()
                ));
                self.replies.extend(failure.codes);
                self.ok = false;
                false
            }
        }
    }

    /// `INFO` on every master: the canary's per-node series, plus
    /// `connected_clients`.
    async fn info(&mut self, report: &mut Report) {
        let topology = match self.client.topology().await {
            Ok(topology) => topology,
            Err(failure) => {
                report.log(format!("topology failed: {}", failure.error));
                self.ok = false;
                return;
            }
        };
        // Every node the server names passes the module's checks before
        // anything is sent to it (the client's resolver refuses to dial
        // one that does not, whoever asks).
        let mut allowed = Vec::new();
        let replicas = topology.shards.iter().flat_map(|shard| &shard.replicas);
        for node in topology.masters.iter().chain(replicas) {
            match self.node_allowed(node) {
                Ok(()) => allowed.push(node.clone()),
                Err(why) => {
                    report.refuse(Reason::NodeNotAllowed, why);
                    self.ok = false;
                }
            }
        }
        let mut masters = Vec::new();
        for master in topology.masters.iter().filter(|m| allowed.contains(m)) {
            let start = Instant::now();
            match self
                .client
                .on_master::<String>(master, &redis::cmd("INFO"))
                .await
            {
                Ok(text) => masters.push((master.clone(), parse_info(&text))),
                Err(failure) => {
                    report.log(format!("INFO on {master} failed: {}", failure.error));
                    self.replies.extend(failure.codes);
                    self.ok = false;
                }
            }
            self.timings.record("info", start.elapsed());
        }
        report.log(format!(
            "{}; INFO from {} master(s)",
            topology.summary,
            masters.len()
        ));
        let clients = masters
            .iter()
            .filter_map(|(node, info)| {
                let labels = NodeLabels { node: node.clone() };
                info.connected_clients.map(|n| (labels, n as f64))
            })
            .collect();
        report.gauges(
            "redis_connected_clients",
            "Clients connected to each master, from INFO",
            None::<Unit>,
            clients,
        );
        report.collector("redis", info_series(masters));
    }
}
