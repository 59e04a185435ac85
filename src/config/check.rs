//! The checks that span fields of [`Config`] (a Redis mode's required keys,
//! TLS files only for TLS URLs, shares that fit the budget, each probe
//! module's keys), run once after the layers are merged; each refusal names
//! the key, as its flag, env var or `key (in FILE)`.

use std::path::PathBuf;

use super::census::ReadFrom;
use super::{
    CensusConfig, Config, ConfigError, EmbeddingsProvider, ModuleCensus, ModuleConfig, ProberKind,
    RedisMode,
};

/// Why `read_from = "replica"` is refused for a standalone node.
const REPLICAS_UNNAMED: &str = "\"replica\" reads each cluster master's replicas (CLUSTER NODES names them) \
     or, in sentinel mode, a replica the sentinels name; nothing names a standalone node's replicas, \
     so it needs mode = \"cluster\" (or, for [redis], \"sentinel\")";

impl Config {
    /// The checks that span fields, and the values derived from several.
    pub(super) fn check(&mut self, blame: impl Fn(&str) -> String) -> Result<(), ConfigError> {
        let redis = &mut self.redis;
        let file_password = redis.password_file.as_ref().map(|f| f.secret.clone());
        redis.password = file_password.or_else(|| redis.url.first().password.clone());
        let urls = &redis.url.0;
        let tls = redis.url.first().tls;
        let (cache, mix, embeddings) = (&self.cache, &self.workload.mix, &self.embeddings);
        let shares = cache.chat_history.share + cache.similarity.share + cache.embeddings.share;
        let weights = [
            mix.get_chat_history,
            mix.store_chat_entry,
            mix.query_similar_memories,
        ];
        let openai = embeddings.provider == EmbeddingsProvider::OpenAi;
        let not_rediss = |file: &Option<PathBuf>| file.is_some() && !tls;
        let mode = redis.mode;
        let no_master = redis
            .sentinel_master
            .as_deref()
            .is_none_or(|m| m.trim().is_empty());
        let no_model = embeddings
            .model
            .as_deref()
            .is_none_or(|m| m.trim().is_empty());
        let sentinel = mode == RedisMode::Sentinel;
        let rediss_only = "only applies to a rediss:// URL";
        let sentinel_only = "only applies to --redis.mode sentinel";
        let openai_needs = "is required with provider = \"openai\"";
        let one_url = format!(
            "names {} URLs; standalone mode takes one (sentinel and cluster take several)",
            urls.len()
        );
        let too_much = format!("the shares add up to {shares}, more than the whole budget (1.0)");
        #[rustfmt::skip]
        let refusals: [(bool, String, &str); 14] = [
            (mode == RedisMode::Standalone && urls.len() > 1, blame("redis.url"), &one_url),
            (urls.iter().any(|url| url.tls != tls), blame("redis.url"), "mixes redis:// and rediss://; TLS applies to every node or none"),
            (sentinel && no_master, blame("redis.sentinel_master"), "is required with --redis.mode sentinel"),
            (!sentinel && redis.sentinel_master.is_some(), blame("redis.sentinel_master"), sentinel_only),
            (!sentinel && redis.sentinel_password_file.is_some(), blame("redis.sentinel_password_file"), sentinel_only),
            (not_rediss(&redis.tls_ca_file), blame("redis.tls_ca_file"), rediss_only),
            (not_rediss(&redis.tls_cert_file), blame("redis.tls_cert_file"), rediss_only),
            (not_rediss(&redis.tls_key_file), blame("redis.tls_key_file"), rediss_only),
            (redis.tls_cert_file.is_some() != redis.tls_key_file.is_some(), "--redis.tls-cert-file/--redis.tls-key-file".into(), "a client certificate needs its key, and a key its certificate"),
            (self.chroma.tls_ca_file.is_some() && self.chroma.url.0.scheme() != "https", blame("chroma.tls_ca_file"), "only applies to an https:// URL"),
            (openai && embeddings.url.is_none(), blame("embeddings.url"), openai_needs),
            (openai && no_model, blame("embeddings.model"), openai_needs),
            (shares > 1.0 + 1e-9, blame("cache.similarity.share").replace("similarity", "*"), &too_much),
            (weights.iter().sum::<f64>() + mix.store_memory <= 0.0, blame("workload.mix.store_memory").replace(".store_memory", ""), "at least one weight must be positive"),
        ];
        let refused = refusals.into_iter().find(|(refused, ..)| *refused);
        if let Some((_, key, message)) = refused {
            return Err(ConfigError::invalid(key, message));
        }
        // Without the canary, [census] is only what `census = true` in a module
        // takes, checked there.
        let replica = self.census.redis.read_from == ReadFrom::Replica;
        if self.canary.enabled && replica && mode == RedisMode::Standalone {
            return Err(ConfigError::invalid(
                blame("census.redis.read_from"),
                REPLICAS_UNNAMED,
            ));
        }
        self.share_census(&blame)?;
        self.check_modules(&blame)
    }

    /// `census = true` in a module: `[census]`'s settings, for the module's
    /// store only.
    fn share_census(&mut self, blame: &impl Fn(&str) -> String) -> Result<(), ConfigError> {
        let shared = &self.census;
        for (name, module) in &mut self.probe.modules {
            // An app module's (or one without a prober) is refused below.
            let store = matches!(module.prober, Some(ProberKind::Redis | ProberKind::Chroma));
            if module.census != ModuleCensus::Shared || !store {
                continue;
            }
            let key = blame(&format!("probe.modules.{name}.census"));
            if shared.interval.is_zero() {
                return Err(ConfigError::invalid(
                    key,
                    "true takes [census]'s settings, and census.interval is 0s (off): \
                     give the module a census table with an interval of its own",
                ));
            }
            let defaults = CensusConfig::default();
            let mut own = shared.clone();
            if module.prober == Some(ProberKind::Redis) {
                own.chroma = defaults.chroma;
            } else {
                own.redis = defaults.redis;
            }
            let replica = own.redis.read_from == ReadFrom::Replica;
            if module.prober == Some(ProberKind::Redis)
                && replica
                && module.mode != RedisMode::Cluster
            {
                return Err(ConfigError::invalid(
                    key,
                    "true takes [census]'s settings, whose census.redis.read_from = \"replica\" \
                     needs a module with mode = \"cluster\"",
                ));
            }
            module.census = ModuleCensus::Own(own);
        }
        Ok(())
    }

    /// Each `[probe.modules.NAME]`: a prober, and only the keys it reads.
    fn check_modules(&self, blame: &impl Fn(&str) -> String) -> Result<(), ConfigError> {
        let defaults = ModuleConfig::default();
        for (name, module) in &self.probe.modules {
            let key = |field: &str| blame(&format!("probe.modules.{name}.{field}"));
            let Some(prober) = module.prober else {
                return Err(ConfigError::invalid(
                    key("prober"),
                    "is required: redis, chroma or app",
                ));
            };
            if prober == ProberKind::Redis && module.mode == RedisMode::Sentinel {
                return Err(ConfigError::invalid(
                    key("mode"),
                    "a redis module probes standalone nodes or clusters (by a seed); a sentinel's master is a target of its own",
                ));
            }
            let redis_only = [
                ("mode", module.mode != defaults.mode),
                ("username", module.username.is_some()),
                ("password_file", module.password_file.is_some()),
                ("tls_cert_file", module.tls_cert_file.is_some()),
                ("tls_key_file", module.tls_key_file.is_some()),
                ("key_prefix", module.key_prefix != defaults.key_prefix),
                ("round_trips", module.round_trips != defaults.round_trips),
            ];
            let chroma_only = [
                ("tenant", module.tenant != defaults.tenant),
                ("database", module.database != defaults.database),
                ("collection", module.collection != defaults.collection),
            ];
            let app_only = [
                ("path", module.path != defaults.path),
                ("fields", module.fields != defaults.fields),
            ];
            let foreign = [
                (ProberKind::Redis, &redis_only[..]),
                (ProberKind::Chroma, &chroma_only[..]),
                (ProberKind::App, &app_only[..]),
            ]
            .into_iter()
            .filter(|(owner, _)| *owner != prober)
            .flat_map(|(owner, keys)| keys.iter().map(move |(field, set)| (owner, *field, *set)))
            .find(|(.., set)| *set);
            if let Some((owner, field, _)) = foreign {
                return Err(ConfigError::invalid(
                    key(field),
                    format!(
                        "applies to a {} module; this one's prober is {}",
                        owner.as_str(),
                        prober.as_str()
                    ),
                ));
            }
            if prober == ProberKind::Redis && module.body_size_limit != defaults.body_size_limit {
                return Err(ConfigError::invalid(
                    key("body_size_limit"),
                    "applies to chroma and app modules (their HTTP answers); this one's prober is redis",
                ));
            }
            if module.body_size_limit == 0 {
                return Err(ConfigError::invalid(
                    key("body_size_limit"),
                    "must be at least one byte",
                ));
            }
            if let Some((field, why)) = census_refusal(prober, module) {
                return Err(ConfigError::invalid(key(field), why));
            }
            if prober == ProberKind::App && !module.path.starts_with('/') {
                return Err(ConfigError::invalid(key("path"), "must start with /"));
            }
        }
        Ok(())
    }
}

/// Why a module's census is refused, and the key to blame: a census (`true`
/// or a table) in an app module; the other store's keys; replica reads
/// from a standalone node.
fn census_refusal(
    prober: ProberKind,
    module: &ModuleConfig,
) -> Option<(&'static str, &'static str)> {
    if module.census.is_off() {
        return None;
    }
    let Some(census) = module.census.config() else {
        // `true`, left unresolved by `share_census` in an app module.
        return Some(("census", "applies to a redis or chroma module"));
    };
    let defaults = CensusConfig::default();
    match prober {
        ProberKind::App => Some(("census", "applies to a redis or chroma module")),
        ProberKind::Redis if census.chroma != defaults.chroma => Some((
            "census.chroma",
            "applies to a chroma module; this one's prober is redis",
        )),
        ProberKind::Chroma if census.redis != defaults.redis => Some((
            "census.redis",
            "applies to a redis module; this one's prober is chroma",
        )),
        ProberKind::Redis
            if census.redis.read_from == ReadFrom::Replica && module.mode != RedisMode::Cluster =>
        {
            Some(("census.redis.read_from", REPLICAS_UNNAMED))
        }
        _ => None,
    }
}
