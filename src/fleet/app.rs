//! The `app` prober: an LLM backend's own `/health` document, its real cache
//! statistics turned into series. The document's shape is this daemon's own
//! `/health` (the seed report's) unless the module maps its fields with
//! JSON pointers. A field that is missing or of the wrong type leaves its
//! series out, and the log says which and why; a document that does not
//! parse fails the probe.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::registry::Unit;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use serde_json::Value;

use super::guard::Reason;
use super::report::{Report, Timings};
use super::Probe;
use crate::backends::error_chain;
use crate::backends::http::{guarded, read_limited, redirect_message, BodyError};
use crate::config::AppFields;
use crate::metrics::label_values;

label_values! {
    /// An application component, as the `component` label spells it.
    enum Component {
        Redis => "redis",
        Chromadb => "chromadb",
        Embeddings => "embeddings",
        Cache => "cache",
    }
}

label_values! {
    /// An application's overall status, as the `status` label spells it.
    enum AppStatus {
        Healthy => "healthy",
        Degraded => "degraded",
        Unhealthy => "unhealthy",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentLabels {
    component: Component,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: AppStatus,
}

/// The HTTP client for one target: its TLS roots and token; it dials only
/// the checked addresses and follows no redirect. Each request has its
/// probe's own deadline.
fn client(probe: &Probe<'_>) -> Result<reqwest::Client, String> {
    let mut headers = HeaderMap::new();
    if let Some(token) = probe.token() {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| "the token is not a valid HTTP header value".to_owned())?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    let mut builder = reqwest::Client::builder()
        .default_headers(headers)
        .connect_timeout(probe.module.timeout)
        .pool_max_idle_per_host(1)
        .user_agent(concat!("llm-cache-exporter/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &probe.module.tls_ca_file {
        let pem =
            std::fs::read(path).map_err(|err| format!("cannot read {}: {err}", path.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|err| error_chain(&err))? {
            builder = builder.add_root_certificate(cert);
        }
    }
    let host = probe.target.host_str();
    guarded(builder, Some((&host, probe.addresses)))
        .build()
        .map_err(|err| error_chain(&err))
}

/// Reads one application's health document; returns whether it was read,
/// parsed, and not `unhealthy`.
pub(crate) async fn probe(probe: &Probe<'_>, report: &mut Report) -> bool {
    let http = match probe
        .pools
        .app
        .get_or_try_insert(probe.pool_key(), || client(probe))
    {
        Ok(http) => http,
        Err(err) => {
            report.log(format!("cannot set up a client for the target: {err}"));
            return false;
        }
    };
    let target = probe.target;
    let scheme = if target.tls { "https" } else { "http" };
    let path = target.path.as_deref().unwrap_or(&probe.module.path);
    let url = format!("{scheme}://{}{path}", target.endpoint());
    let mut timings = Timings::default();
    let start = std::time::Instant::now();
    let response = http.get(&url).timeout(probe.deadline).send().await;
    // A failure says why, and what the guard refused, if it was that.
    let document: Result<Value, (Option<Reason>, String)> = match response {
        Ok(response) if response.status().is_redirection() => {
            timings.record("health", start.elapsed());
            let why = redirect_message(&response);
            Err((Some(Reason::Redirect), format!("GET {path}: {why}")))
        }
        Ok(response) => {
            let status = response.status();
            report.log(format!("GET {path}: HTTP {status}"));
            let body = read_limited(response, probe.module.body_size_limit).await;
            timings.record("health", start.elapsed());
            match body {
                Ok((_, body)) => serde_json::from_slice::<Value>(&body)
                    .map_err(|err| (None, format!("the document is not JSON: {err}"))),
                Err(BodyError::TooLarge(limit)) => Err((
                    Some(Reason::BodyTooLarge),
                    format!(
                        "GET {path}: the answer is larger than body_size_limit ({limit} bytes)"
                    ),
                )),
                Err(err) => Err((None, err.message())),
            }
        }
        Err(err) => {
            timings.record("health", start.elapsed());
            let why = error_chain(&err.without_url());
            Err((None, format!("GET {path} failed: {why}")))
        }
    };
    timings.report(report);
    let document = match document {
        Ok(document) => document,
        Err((Some(reason), why)) => {
            report.refuse(reason, why);
            return false;
        }
        Err((None, why)) => {
            report.log(why);
            return false;
        }
    };
    let status = read(&document, &probe.module.fields, report);
    match status {
        Some(AppStatus::Unhealthy) => {
            report.log("the application reports itself unhealthy");
            false
        }
        Some(_) => true,
        None => false,
    }
}

/// Turns the document into series; returns the status it reports, if any.
fn read(document: &Value, fields: &AppFields, report: &mut Report) -> Option<AppStatus> {
    let mut field = Field { document, report };
    if let Some(hits) = field.count(&fields.hits, "hits") {
        field.report.counters::<NoLabels>(
            "app_cache_hits",
            "The application's cache hits, from its health document",
            vec![(NoLabels {}, hits)],
        );
    }
    if let Some(misses) = field.count(&fields.misses, "misses") {
        field.report.counters::<NoLabels>(
            "app_cache_misses",
            "The application's cache misses, from its health document",
            vec![(NoLabels {}, misses)],
        );
    }
    if let Some(ratio) = field.percent(&fields.hit_rate, "hit_rate") {
        field.report.gauge(
            "app_cache_hit_ratio",
            "The application's cache hit rate (its \"XX.X%\" as 0 to 1)",
            None,
            ratio,
        );
    }
    if let Some(entries) = field.number(&fields.entries, "entries") {
        field.report.gauge(
            "app_cache_entries",
            "Entries in the application's cache",
            None,
            entries,
        );
    }
    if let Some(megabytes) = field.number(&fields.memory_mb, "memory_mb") {
        field.report.gauge(
            "app_cache_memory",
            "Memory the application's cache holds",
            Some(Unit::Bytes),
            megabytes * 1024.0 * 1024.0,
        );
    }
    if let Some(pressure) = field.boolean(&fields.memory_pressure, "memory_pressure") {
        field.report.gauge(
            "app_memory_pressure",
            "Whether the application reports memory pressure",
            None,
            f64::from(u8::from(pressure)),
        );
    }
    let components = [
        (Component::Redis, &fields.redis),
        (Component::Chromadb, &fields.chromadb),
        (Component::Embeddings, &fields.embeddings),
        (Component::Cache, &fields.cache),
    ];
    let up: Vec<(ComponentLabels, f64)> = components
        .into_iter()
        .filter_map(|(component, pointer)| {
            let status = field.status(pointer, component.as_str())?;
            Some((
                ComponentLabels { component },
                f64::from(u8::from(status != AppStatus::Unhealthy)),
            ))
        })
        .collect();
    field.report.gauges(
        "app_component_up",
        "Whether each component of the application is up (not unhealthy)",
        None,
        up,
    );
    let status = field.status(&fields.status, "status");
    if let Some(current) = status {
        let all = AppStatus::ALL
            .iter()
            .map(|s| {
                (
                    StatusLabels { status: *s },
                    f64::from(u8::from(*s == current)),
                )
            })
            .collect();
        field.report.gauges(
            "app_status",
            "The application's overall status: 1 for the current one",
            None,
            all,
        );
    }
    status
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NoLabels {}

/// Reads fields of the document, logging each that cannot be read.
struct Field<'a> {
    document: &'a Value,
    report: &'a mut Report,
}

impl Field<'_> {
    /// The value at `pointer` as `parse` reads it; logs what is missing,
    /// or what was found where `wanted` was expected.
    fn read<T>(
        &mut self,
        pointer: &str,
        name: &str,
        wanted: &str,
        parse: impl FnOnce(&Value) -> Option<T>,
    ) -> Option<T> {
        let Some(value) = self.document.pointer(pointer) else {
            self.report
                .log(format!("fields.{name}: nothing at {pointer}"));
            return None;
        };
        let parsed = parse(value);
        if parsed.is_none() {
            let found: String = value.to_string().chars().take(40).collect();
            self.report
                .log(format!("fields.{name}: {pointer} is {found}, not {wanted}"));
        }
        parsed
    }

    fn number(&mut self, pointer: &str, name: &str) -> Option<f64> {
        self.read(pointer, name, "a number of at least 0", |v| {
            v.as_f64().filter(|n| n.is_finite() && *n >= 0.0)
        })
    }

    fn count(&mut self, pointer: &str, name: &str) -> Option<u64> {
        self.read(pointer, name, "a whole number of at least 0", Value::as_u64)
    }

    /// "87.5%" as 0.875.
    fn percent(&mut self, pointer: &str, name: &str) -> Option<f64> {
        self.read(pointer, name, "a percentage such as \"87.5%\"", |v| {
            let text = v.as_str()?.trim().strip_suffix('%')?;
            let percent = text.trim().parse::<f64>().ok()?;
            (0.0..=100.0).contains(&percent).then_some(percent / 100.0)
        })
    }

    fn boolean(&mut self, pointer: &str, name: &str) -> Option<bool> {
        self.read(pointer, name, "true or false", Value::as_bool)
    }

    fn status(&mut self, pointer: &str, name: &str) -> Option<AppStatus> {
        self.read(pointer, name, "healthy, degraded or unhealthy", |v| {
            let text = v.as_str()?.trim();
            AppStatus::ALL
                .iter()
                .copied()
                .find(|s| s.as_str().eq_ignore_ascii_case(text))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(document: &str) -> (Option<AppStatus>, String, String) {
        let mut report = Report::new();
        let value: Value = serde_json::from_str(document).unwrap();
        let status = read(&value, &AppFields::default(), &mut report);
        let log = report.lines().to_owned();
        let (text, ..) = report.finish(true);
        (status, text, log)
    }

    const SEED: &str = r#"{"status": "degraded",
        "redis": {"status": "healthy"}, "chromadb": {"status": "unhealthy"},
        "embeddings": {"status": "healthy"},
        "cache": {"status": "healthy", "stats": {"total_hits": 875, "total_misses": 125,
          "hit_rate": "87.5%", "cache_size": 42, "memory_usage_mb": 1.5, "memory_pressure": false}}}"#;

    #[test]
    fn the_seed_shape_becomes_series() {
        let (status, text, log) = exposition(SEED);
        assert_eq!(status, Some(AppStatus::Degraded));
        for line in [
            "llmcache_app_cache_hits_total 875",
            "llmcache_app_cache_misses_total 125",
            "llmcache_app_cache_hit_ratio 0.875",
            "llmcache_app_cache_entries 42.0",
            "llmcache_app_cache_memory_bytes 1572864.0",
            "llmcache_app_memory_pressure 0.0",
            "llmcache_app_component_up{component=\"chromadb\"} 0.0",
            "llmcache_app_component_up{component=\"redis\"} 1.0",
            "llmcache_app_status{status=\"degraded\"} 1.0",
            "llmcache_app_status{status=\"healthy\"} 0.0",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        assert!(log.is_empty(), "{log}");
    }

    #[test]
    fn a_wrong_field_leaves_its_series_out_and_says_why() {
        let broken = SEED
            .replace("\"87.5%\"", "\"most\"")
            .replace("875", "\"lots\"");
        let (status, text, log) = exposition(&broken);
        assert_eq!(status, Some(AppStatus::Degraded));
        assert!(!text.contains("app_cache_hit_ratio"), "{text}");
        assert!(!text.contains("app_cache_hits_total"), "{text}");
        assert!(text.contains("app_cache_misses_total 125"), "{text}");
        assert!(log.contains("fields.hit_rate"), "{log}");
        assert!(log.contains("fields.hits"), "{log}");
        let (status, _, log) = exposition(r#"{"status": 7}"#);
        assert_eq!(status, None);
        assert!(log.contains("fields.status: /status is 7"), "{log}");
    }
}
