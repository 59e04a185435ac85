//! The `chroma` prober, through the canary's own client ([`ChromaClient`]),
//! pooled per target: a heartbeat; the module's probe collection, created
//! with the daemon's marker and refused if it exists without it; a fixed
//! seed set, written once, that recall@k is judged against by exact search;
//! one record added and queried until it shows (write visibility), then
//! deleted; and the collection's count.
//!
//! The canary's data-safety rules hold: the probe writes only to a
//! collection carrying `created_by = llm-cache-exporter`, and deletes only
//! the record it added.

use std::time::{Duration, Instant};

use prometheus_client::registry::Unit;
use url::Url;

use super::guard::Reason;
use super::report::{Report, Timings};
use super::Probe;
use crate::backends::chroma::{is_ours, ChromaClient, OWNER_KEY, OWNER_VALUE};
use crate::backends::BackendError;
use crate::cache::Embedding;
use crate::config::values::{HttpUrl, SecretFile};
use crate::config::ChromaConfig;
use crate::embeddings::hash_embed;
use crate::workload::recall::recall;

/// The seed set: its size, its vectors' dimension, the ids' prefix, and
/// the neighbours a query asks for.
const SEEDS: usize = 16;
const DIMENSIONS: usize = 16;
const SEED_PREFIX: &str = "llmcache-seed-";
const K: usize = 4;

fn seed(i: usize) -> (String, Vec<f32>, String) {
    let text = format!("seed memory {i}: the probe's fixed record number {i}");
    (
        format!("{SEED_PREFIX}{i:02}"),
        hash_embed(&text, DIMENSIONS),
        text,
    )
}

/// The client settings for this target: the module's, with the target's
/// address, the token the credentials file gives it (or the module's of
/// this reading), and `timeout` per request.
pub(super) fn client_config(probe: &Probe<'_>, timeout: Duration) -> Result<ChromaConfig, String> {
    let module = probe.module;
    let scheme = if probe.target.tls { "https" } else { "http" };
    // The canonical endpoint, which the `url` crate reads as the target's
    // own host and port (a property test holds it to that).
    let url = Url::parse(&format!("{scheme}://{}/", probe.target.endpoint()))
        .map_err(|err| format!("not a URL: {err}"))?;
    let token = probe.token().map(|secret| SecretFile {
        path: "(token_file or credentials_file)".into(),
        secret,
    });
    Ok(ChromaConfig {
        url: HttpUrl(url),
        token_file: token,
        tls_ca_file: module.tls_ca_file.clone().filter(|_| probe.target.tls),
        tenant: module.tenant.clone(),
        database: module.database.clone(),
        collection: module.collection.clone(),
        timeout,
        ..ChromaConfig::default()
    })
}

/// A client for this target that dials only the checked addresses, follows
/// no redirect and reads no answer past the module's `body_size_limit`.
pub(super) fn client(probe: &Probe<'_>) -> Result<ChromaClient, String> {
    let config = client_config(probe, probe.module.timeout)?;
    ChromaClient::for_probe(
        &config,
        &probe.target.host_str(),
        probe.addresses,
        probe.module.body_size_limit,
    )
    .map_err(|err| err.message)
}

/// Probes one Chroma; returns whether every step answered as it should.
pub(crate) async fn probe(probe: &Probe<'_>, report: &mut Report) -> bool {
    let client = match probe
        .pools
        .chroma
        .get_or_try_insert(probe.pool_key(), || client(probe))
    {
        Ok(client) => client,
        Err(err) => {
            report.log(format!("cannot set up a client for the target: {err}"));
            return false;
        }
    };
    let mut timings = Timings::default();
    let ok = steps(probe, &client, &mut timings, report).await;
    timings.report(report);
    ok
}

/// Times `step` as `request`; logs a failure.
async fn timed<T>(
    timings: &mut Timings,
    report: &mut Report,
    request: &'static str,
    step: impl std::future::Future<Output = Result<T, BackendError>>,
) -> Option<T> {
    let start = Instant::now();
    let result = step.await;
    timings.record(request, start.elapsed());
    result
        .map_err(|err| match err.refused {
            Some(refused) => report.refuse(Reason::from(refused), format!("{request}: {err}")),
            None => report.log(format!("{request} failed ({}): {err}", err.kind.as_str())),
        })
        .ok()
}

async fn steps(
    probe: &Probe<'_>,
    client: &ChromaClient,
    timings: &mut Timings,
    report: &mut Report,
) -> bool {
    let name = &probe.module.collection;
    timed(timings, report, "heartbeat", client.heartbeat())
        .await
        .is_some()
        && {
            let marker = serde_json::json!({ OWNER_KEY: OWNER_VALUE });
            let create = client.get_or_create_collection(name, marker);
            match timed(timings, report, "get_or_create_collection", create).await {
                Some(collection) if is_ours(&collection) => {
                    with_collection(probe, client, &collection.id, timings, report).await
                }
                Some(_) => {
                    report.log(format!(
                        "refusing to write: collection {name:?} exists without the \
                         {OWNER_KEY}={OWNER_VALUE} marker; set the module's collection to a name of the daemon's own"
                    ));
                    false
                }
                None => false,
            }
        }
}

async fn with_collection(
    probe: &Probe<'_>,
    client: &ChromaClient,
    id: &str,
    timings: &mut Timings,
    report: &mut Report,
) -> bool {
    let seeds: Vec<(String, Vec<f32>, String)> = (0..SEEDS).map(seed).collect();
    let Some(count) = timed(timings, report, "count", client.count(id)).await else {
        return false;
    };
    if count < SEEDS as u64 {
        let ids: Vec<String> = seeds.iter().map(|s| s.0.clone()).collect();
        let vectors: Vec<Vec<f32>> = seeds.iter().map(|s| s.1.clone()).collect();
        let texts: Vec<String> = seeds.iter().map(|s| s.2.clone()).collect();
        report.log(format!("writing the seed set ({SEEDS} records)"));
        if timed(
            timings,
            report,
            "add",
            client.add(id, &ids, &vectors, &texts),
        )
        .await
        .is_none()
        {
            return false;
        }
    }
    let mut ok = true;
    // Recall@k of the seed set against exact search.
    let query = hash_embed("which fixed record is the probe's nearest", DIMENSIONS);
    let known: Vec<(String, Embedding)> = seeds
        .iter()
        .map(|(id, vector, _)| (id.clone(), Embedding::from(vector.as_slice())))
        .collect();
    if let Some(hits) = timed(timings, report, "query", client.query(id, &query, K)).await {
        match recall(&query, &hits.ids, &known, SEED_PREFIX) {
            Some(ratio) => {
                report.log(format!("recall@{K} of the seed set: {ratio}"));
                report.gauge(
                    "vector_recall_ratio",
                    "recall@k of the seed set against exact search, this probe",
                    None,
                    ratio,
                );
            }
            None => {
                report.log("the seed set's query returned none of the seeds");
                ok = false;
            }
        }
    } else {
        ok = false;
    }
    ok &= write_visibility(probe, client, id, timings, report).await;
    if let Some(records) = timed(timings, report, "count", client.count(id)).await {
        report.gauge(
            "chroma_collection_records",
            "Records in the probe collection",
            None,
            records as f64,
        );
    } else {
        ok = false;
    }
    ok
}

/// Adds one record, queries among it alone until Chroma returns it (within
/// half the deadline), and deletes it.
async fn write_visibility(
    probe: &Probe<'_>,
    client: &ChromaClient,
    id: &str,
    timings: &mut Timings,
    report: &mut Report,
) -> bool {
    let record = format!(
        "llmcache-fleet-{}-{:08x}",
        probe.exporter_id,
        fastrand::u32(..)
    );
    let vector = hash_embed(&record, DIMENSIONS);
    let document = ["a probe's write, deleted at once".to_owned()];
    let add = client.add(
        id,
        std::slice::from_ref(&record),
        std::slice::from_ref(&vector),
        &document,
    );
    if timed(timings, report, "add", add).await.is_none() {
        return false;
    }
    let added = Instant::now();
    let among = [record.clone()];
    let patience = probe.deadline / 2;
    let mut pause = Duration::from_millis(5);
    let visible = loop {
        let query = client.query_among(id, &vector, 1, Some(&among));
        if let Some(hits) = timed(timings, report, "query", query).await {
            if hits.ids.contains(&record) {
                break Some(added.elapsed());
            }
        }
        if added.elapsed() + pause > patience {
            break None;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    };
    let deleted = timed(timings, report, "delete", client.delete(id, &among)).await;
    match visible {
        Some(took) => {
            report.gauge(
                "vector_write_visibility",
                "From add to the first query that returned the record, this probe",
                Some(Unit::Seconds),
                took.as_secs_f64(),
            );
            deleted.is_some()
        }
        None => {
            report.log(format!("the added record did not show within {patience:?}"));
            false
        }
    }
}
