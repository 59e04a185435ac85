//! `/probe?target=&module=`: one probe of one target, blackbox_exporter
//! style. Prometheus's service discovery supplies the targets and
//! relabeling points the scrape here; the daemon keeps no list of them.
//!
//! [`Fleet::probe`] is the handler's whole logic: it parses the target once
//! into its canonical value ([`target`]; 400 for a malformed one, a missing
//! `target` or an unknown `module`), checks it against the module's
//! `allowed_targets` and `probe.denied_networks` and resolves a name once
//! ([`guard`]; 403), takes a slot (503 past `max_concurrent`), derives the
//! deadline from the scrape timeout, and runs the module's prober
//! ([`redis`], [`chroma`] or [`app`]) against the checked addresses with a
//! fresh [`Report`]; the handler, not the prober, adds `probe_success` and
//! `probe_duration_seconds`. Clients are pooled per canonical target and
//! address ([`pool`]); a module's secret files, its `credentials_file`
//! among them, are read again when they change ([`secrets`],
//! [`credentials`]); a module's `census` counts each target's data in the
//! background, and a probe returns its last complete pass ([`census`]).

mod app;
mod census;
mod chroma;
mod credentials;
mod guard;
mod metrics;
mod pool;
mod redis;
mod report;
mod secrets;
mod target;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::backends::chroma::ChromaClient;
use crate::config::{ModuleConfig, ProbeConfig, ProberKind};
use census::Censuses;
use credentials::Login;
use guard::{Policy, Reason, Refusal};
pub(crate) use metrics::{FleetMetrics, ProbeResult};
use pool::{Pool, PoolKey};
use report::Report;
use secrets::{Secrets, Watched};
use target::Target;

/// What the scrape timeout leaves the probe: blackbox_exporter's offset.
const SCRAPE_TIMEOUT_OFFSET: Duration = Duration::from_millis(500);

/// The shortest deadline a probe gets, however short the scrape timeout.
const MIN_DEADLINE: Duration = Duration::from_millis(100);

/// A module, ready to probe with.
struct Module {
    config: ModuleConfig,
    prober: ProberKind,
    policy: Arc<Policy>,
    secrets: Arc<Watched>,
}

/// Every prober's pooled clients, and the censuses of probed targets.
pub(crate) struct Pools {
    redis: Pool<redis::Pooled>,
    chroma: Pool<ChromaClient>,
    app: Pool<reqwest::Client>,
    census: Censuses,
}

/// One generation's modules, bounds and pools. A reload builds a new one.
pub(crate) struct Fleet {
    modules: BTreeMap<String, Module>,
    slots: Arc<Semaphore>,
    pools: Pools,
    metrics: FleetMetrics,
    /// Tells this exporter's probe keys and records from another's.
    exporter_id: String,
    /// Events in the secret files' directories, as the watcher counts them.
    secret_events: Arc<std::sync::atomic::AtomicU64>,
}

/// One probe's request.
pub(crate) struct ProbeRequest {
    pub(crate) target: Option<String>,
    pub(crate) module: Option<String>,
    pub(crate) debug: bool,
    /// `X-Prometheus-Scrape-Timeout-Seconds`, if sent.
    pub(crate) scrape_timeout: Option<f64>,
}

/// The answer: an HTTP status and a text body.
pub(crate) struct ProbeAnswer {
    pub(crate) status: u16,
    pub(crate) body: String,
}

impl ProbeAnswer {
    fn refused(status: u16, body: String) -> Self {
        Self {
            status,
            body: body + "\n",
        }
    }
}

/// What a prober is handed: the target, the addresses it may dial for it,
/// the module's policy for any other, and the secrets of this reading.
pub(crate) struct Probe<'a> {
    module_name: &'a str,
    module: &'a ModuleConfig,
    target: &'a Target,
    addresses: &'a [SocketAddr],
    policy: &'a Arc<Policy>,
    secrets: &'a Secrets,
    login: Login,
    deadline: Duration,
    pools: &'a Pools,
    exporter_id: &'a str,
}

impl Probe<'_> {
    fn pool_key(&self) -> PoolKey {
        (
            self.module_name.to_owned(),
            self.target.to_string(),
            self.login.version,
            self.addresses.to_vec(),
        )
    }

    /// The module's token, or the credentials file's for this target.
    fn token(&self) -> Option<crate::secret::Secret> {
        self.login
            .password
            .clone()
            .or_else(|| self.secrets.token.clone())
    }
}

impl Fleet {
    /// Builds the modules of `config`; probes nothing.
    pub(crate) fn new(config: &ProbeConfig, metrics: FleetMetrics) -> Self {
        let denied = Arc::new(config.denied_networks.clone());
        let secret_events = Arc::default();
        let modules = config
            .modules
            .iter()
            .filter_map(|(name, module)| {
                let prober = module.prober?;
                let allowed = module.allowed_targets.as_deref().unwrap_or_default();
                Some((
                    name.clone(),
                    Module {
                        prober,
                        policy: Arc::new(Policy::new(name, allowed, denied.clone())),
                        secrets: Arc::new(Watched::new(module, prober, Arc::clone(&secret_events))),
                        config: module.clone(),
                    },
                ))
            })
            .collect();
        let (capacity, idle) = (config.max_pooled_targets, config.pool_idle_timeout);
        Self {
            modules,
            slots: Arc::new(Semaphore::new(config.max_concurrent)),
            pools: Pools {
                redis: Pool::new(capacity, idle),
                chroma: Pool::new(capacity, idle),
                app: Pool::new(capacity, idle),
                census: Censuses::new(
                    capacity,
                    idle,
                    config.max_concurrent_censuses,
                    metrics.clone(),
                ),
            },
            metrics,
            exporter_id: format!("{:08x}", fastrand::u32(..)),
            secret_events,
        }
    }

    /// Runs one probe, or says why not.
    pub(crate) async fn probe(&self, request: ProbeRequest) -> ProbeAnswer {
        let Some(name) = request.module.as_deref().filter(|m| !m.is_empty()) else {
            self.metrics.count("", ProbeResult::BadRequest);
            return ProbeAnswer::refused(400, "missing parameter module".into());
        };
        let Some(module) = self.modules.get(name) else {
            self.metrics.count("", ProbeResult::BadRequest);
            let known: Vec<&str> = self.modules.keys().map(String::as_str).collect();
            return ProbeAnswer::refused(
                400,
                format!("unknown module {name:?} (parameter module); configured: {known:?}"),
            );
        };
        let Some(given) = request.target.as_deref().filter(|t| !t.trim().is_empty()) else {
            self.metrics.count(name, ProbeResult::BadRequest);
            return ProbeAnswer::refused(400, "missing parameter target".into());
        };
        // The raw text is never echoed: it may hold a password.
        let target = match Target::parse(given, module.prober) {
            Ok(target) => target,
            Err(err) => {
                self.metrics.count(name, ProbeResult::BadRequest);
                self.metrics.refused(name, Reason::Malformed);
                return ProbeAnswer::refused(400, format!("target {err} (parameter target)"));
            }
        };
        if let Some(refusal) = refused(name, module, &target) {
            return self.refuse(name, &refusal);
        }
        let Ok(_slot) = self.slots.clone().try_acquire_owned() else {
            self.metrics.count(name, ProbeResult::Busy);
            return ProbeAnswer::refused(
                503,
                "too many probes at once (probe.max_concurrent); try again".into(),
            );
        };
        let deadline = deadline(module.config.timeout, request.scrape_timeout);
        let addresses = match module
            .policy
            .resolve(&target.host, target.port, deadline)
            .await
        {
            Err(refusal) => return self.refuse(name, &refusal),
            Ok(addresses) => addresses,
        };
        let (success, text, log, took, refusals) =
            self.run(name, module, &target, addresses, deadline).await;
        for reason in refusals {
            self.metrics.refused(name, reason);
        }
        self.metrics.observe(name, took.as_secs_f64());
        self.metrics.count(
            name,
            if success {
                ProbeResult::Success
            } else {
                ProbeResult::Failure
            },
        );
        self.metrics
            .pooled(ProberKind::Redis, self.pools.redis.len());
        self.metrics
            .pooled(ProberKind::Chroma, self.pools.chroma.len());
        self.metrics.pooled(ProberKind::App, self.pools.app.len());
        if request.debug {
            let module_toml = toml::to_string_pretty(&module.config)
                .unwrap_or_else(|err| format!("# cannot render: {err}\n"));
            let body = format!(
                "Logs for the probe:\n{log}\n\nMetrics that would have been returned:\n{text}\n\
                 Module configuration ({name}; secrets as ***, files by path):\n{module_toml}"
            );
            return ProbeAnswer { status: 200, body };
        }
        ProbeAnswer {
            status: 200,
            body: text,
        }
    }

    /// A 403, counted by its reason.
    fn refuse(&self, name: &str, refusal: &Refusal) -> ProbeAnswer {
        self.metrics.count(name, ProbeResult::Refused);
        self.metrics.refused(name, refusal.reason);
        ProbeAnswer::refused(403, refusal.message.clone())
    }

    /// Keeps every module's secret files current until `cancel`.
    pub(crate) fn watch_secrets(
        &self,
        cancel: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let modules = self.modules.values().map(|m| m.secrets.clone()).collect();
        secrets::watch(modules, self.secret_events.clone(), cancel)
    }

    /// The prober within the deadline, against `addresses` (or the reason
    /// the name did not resolve); returns the verdict, the exposition, the
    /// log, how long it took, and what it refused on the way.
    async fn run(
        &self,
        name: &str,
        module: &Module,
        target: &Target,
        addresses: Result<Vec<SocketAddr>, String>,
        deadline: Duration,
    ) -> (bool, String, String, Duration, Vec<Reason>) {
        let mut report = Report::new();
        report.log(format!(
            "probing {target} with module {name} ({} prober), deadline {deadline:?}",
            module.prober.as_str()
        ));
        module.secrets.catch_up().await;
        let secrets = module.secrets.current();
        let success = match (secrets.login(target), addresses) {
            (Err(err), _) => {
                report.log(format!("credentials_file: {err}"));
                false
            }
            (_, Err(why)) => {
                report.log(why);
                false
            }
            (Ok(login), Ok(addresses)) => {
                let shown: Vec<String> = addresses.iter().map(ToString::to_string).collect();
                report.log(format!("dialling {}", shown.join(", ")));
                let probe = Probe {
                    module_name: name,
                    module: &module.config,
                    target,
                    addresses: &addresses,
                    policy: &module.policy,
                    secrets: &secrets,
                    login,
                    deadline,
                    pools: &self.pools,
                    exporter_id: &self.exporter_id,
                };
                let run = async {
                    match module.prober {
                        ProberKind::Redis => redis::probe(&probe, &mut report).await,
                        ProberKind::Chroma => chroma::probe(&probe, &mut report).await,
                        ProberKind::App => app::probe(&probe, &mut report).await,
                    }
                };
                let success = match tokio::time::timeout(deadline, run).await {
                    Ok(success) => success,
                    Err(_) => {
                        report.log(format!("the deadline ({deadline:?}) passed"));
                        false
                    }
                };
                // Whatever the probe found: the census runs on its own.
                self.pools.census.report(&probe, &mut report);
                success
            }
        };
        report.log(if success {
            "probe succeeded"
        } else {
            "probe failed"
        });
        let refusals = report.refusals().to_vec();
        let (text, log, took) = report.finish(success);
        (success, text, log, took, refusals)
    }
}

/// Why `target` may not be probed with the module, if it may not.
fn refused(name: &str, module: &Module, target: &Target) -> Option<Refusal> {
    if module.config.allowed_targets.is_none() {
        return Some(Refusal {
            reason: Reason::NotAllowed,
            message: format!(
                "module {name} has no allowed_targets (probe.modules.{name}.allowed_targets): \
                 it probes nothing until it lists the CIDRs and host globs it may reach"
            ),
        });
    }
    module
        .policy
        .check(&target.host, target.port, Reason::NotAllowed)
        .err()
}

/// The smaller of the module's timeout and the scrape timeout less the
/// offset.
fn deadline(timeout: Duration, scrape_timeout: Option<f64>) -> Duration {
    let scrape = scrape_timeout
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|s| Duration::from_secs_f64(s).saturating_sub(SCRAPE_TIMEOUT_OFFSET));
    scrape
        .map_or(timeout, |scrape| scrape.min(timeout))
        .max(MIN_DEADLINE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_is_the_smaller_of_the_timeout_and_the_scrape_timeout_less_half_a_second() {
        let five = Duration::from_secs(5);
        assert_eq!(deadline(five, None), five);
        assert_eq!(deadline(five, Some(2.0)), Duration::from_millis(1500));
        assert_eq!(deadline(five, Some(10.0)), five);
        assert_eq!(deadline(five, Some(0.3)), MIN_DEADLINE);
        assert_eq!(deadline(five, Some(f64::NAN)), five);
    }
}
