//! One census pass over Redis: `SCAN` on every master, or with `read_from =
//! "replica"` on one replica of each cluster master that has one (`COUNT` 200, no
//! `KEYS`, no Lua), and per batch two pipelines: `TYPE`, `PTTL` and `MEMORY
//! USAGE key SAMPLES 0` (for the sampled share of keys), then the length
//! command of each key's type (a string's `STRLEN` is its size in bytes,
//! kept apart from element counts). Keys are bytes, counted in the first
//! group whose pattern matches, the others in `other`. The budget
//! (`max_keys_per_second`) sleeps between batches.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, Instant};

use redis::Value;

use super::sketch::Distribution;
use crate::backends::redis::{Failure, RedisClient, ReplyCode};
use crate::backends::{Backend, BackendError, ErrorKind};
use crate::config::{KeyGroup, ReadFrom, RedisCensus};

/// Keys per `SCAN` batch: at 200 a pipelined batch stays under a
/// millisecond of Redis's time; at 1,000 it stalled other clients.
const BATCH: u64 = 200;

/// What one group holds: counts, and distributions in memory bounded by
/// their sketches, not by the keys.
#[derive(Debug, Default, Clone)]
pub(crate) struct GroupCensus {
    pub(crate) keys: u64,
    pub(crate) without_ttl: u64,
    /// Bytes measured, over the `sampled` keys.
    pub(crate) sampled_bytes: u64,
    pub(crate) sampled: u64,
    /// Element counts of the keys that hold elements (not strings).
    pub(crate) lengths: Distribution,
    /// Sizes in bytes of the string keys (`STRLEN`).
    pub(crate) string_bytes: Distribution,
    /// Seconds to live of the keys with a TTL.
    pub(crate) ttls: Distribution,
}

impl GroupCensus {
    /// The memory of all the group's keys: what was measured, scaled up to
    /// the keys that were not; `None` when no key was measured (unknown,
    /// not nothing).
    pub(crate) fn memory(&self) -> Option<f64> {
        (self.sampled > 0)
            .then(|| self.sampled_bytes as f64 * self.keys as f64 / self.sampled as f64)
    }
}

/// A group as a finished pass publishes it: the quantiles computed once, at
/// the end of the pass, not at each scrape.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct GroupSummary {
    pub(crate) keys: u64,
    pub(crate) without_ttl: u64,
    /// `None` when no key was measured.
    pub(crate) memory: Option<f64>,
    pub(crate) sampled: u64,
    /// `(quantile label, value)`, absent when the group had no such key.
    pub(crate) lengths: Vec<(&'static str, f64)>,
    pub(crate) string_bytes: Vec<(&'static str, f64)>,
    pub(crate) ttls: Vec<(&'static str, f64)>,
}

impl GroupCensus {
    fn summary(self) -> GroupSummary {
        GroupSummary {
            keys: self.keys,
            without_ttl: self.without_ttl,
            memory: self.memory(),
            sampled: self.sampled,
            lengths: self.lengths.whole_quantiles(),
            string_bytes: self.string_bytes.whole_quantiles(),
            ttls: self.ttls.quantiles(),
        }
    }
}

/// A finished pass: each group in configured order, then `other`.
#[derive(Debug, Default, Clone)]
pub(crate) struct RedisPass {
    pub(crate) groups: Vec<(String, GroupSummary)>,
    pub(crate) scanned: u64,
}

/// Why a pass failed.
#[derive(Debug)]
pub(crate) struct PassError(pub(crate) String);

/// Counts every key on every master (or a replica of it).
pub(crate) async fn pass(
    client: &RedisClient,
    config: &RedisCensus,
    mut scanned: impl FnMut(u64),
) -> Result<RedisPass, PassError> {
    let topology = client
        .topology()
        .await
        .map_err(|f| failed("topology", &f))?;
    let mut groups: Vec<(String, GroupCensus)> = config
        .groups
        .iter()
        .map(|g| (g.name.clone(), GroupCensus::default()))
        .chain([("other".to_owned(), GroupCensus::default())])
        .collect();
    let readers: Vec<&String> = match config.read_from {
        ReadFrom::Master => topology.masters.iter().collect(),
        ReadFrom::Replica => topology
            .masters
            .iter()
            .enumerate()
            .map(|(i, master)| {
                let replicas = topology.replicas_of.get(i).map(Vec::as_slice);
                replicas.and_then(<[String]>::first).unwrap_or(master)
            })
            .collect(),
    };
    let started = Instant::now();
    let mut total = 0u64;
    for node in readers {
        let mut cursor: u64 = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor).arg("COUNT").arg(BATCH);
            // Keys are bytes: a name that is not UTF-8 is counted like any
            // other.
            let (next, keys): (u64, Vec<Vec<u8>>) = client
                .on_master(node, &scan)
                .await
                .map_err(|f| failed("SCAN", &f))?;
            let n = keys.len() as u64;
            batch(client, node, &keys, config, &mut groups).await?;
            total += n;
            scanned(n);
            pace(config.max_keys_per_second, total, started).await;
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(RedisPass {
        groups: groups
            .into_iter()
            .map(|(name, census)| (name, census.summary()))
            .collect(),
        scanned: total,
    })
}

/// Sleeps so that `done` keys take at least `done / rate` seconds.
async fn pace(rate: u64, done: u64, started: Instant) {
    if rate == 0 {
        return;
    }
    let due = Duration::from_secs_f64(done as f64 / rate as f64);
    if let Some(ahead) = due.checked_sub(started.elapsed()) {
        tokio::time::sleep(ahead).await;
    }
}

/// Whether `key`'s memory is measured: a stable choice per key, so a pass
/// samples the same keys as the last.
fn sampled(key: &[u8], share: f64) -> bool {
    if share >= 1.0 {
        return true;
    }
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() as f64 / u64::MAX as f64) < share
}

/// The command that counts a key's elements, by its type.
fn length_command(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "list" => "LLEN",
        "hash" => "HLEN",
        "set" => "SCARD",
        "zset" => "ZCARD",
        "stream" => "XLEN",
        "string" => "STRLEN",
        _ => return None,
    })
}

/// The first group `key` belongs to (the last is `other`).
fn group_of(groups: &[KeyGroup], key: &[u8]) -> usize {
    groups
        .iter()
        .position(|g| g.pattern.matches(key))
        .unwrap_or(groups.len())
}

async fn batch(
    client: &RedisClient,
    node: &str,
    keys: &[Vec<u8>],
    config: &RedisCensus,
    groups: &mut [(String, GroupCensus)],
) -> Result<(), PassError> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut first = redis::pipe();
    let measured: Vec<bool> = keys
        .iter()
        .map(|k| sampled(k, config.memory_sample))
        .collect();
    for (key, measure) in keys.iter().zip(&measured) {
        first.cmd("TYPE").arg(key).cmd("PTTL").arg(key);
        if *measure {
            first
                .cmd("MEMORY")
                .arg("USAGE")
                .arg(key)
                .arg("SAMPLES")
                .arg(0);
        }
    }
    let step = "TYPE, PTTL and MEMORY USAGE";
    let replies = client
        .pipeline_on(node, &first)
        .await
        .map_err(|f| failed(step, &f))?;
    refused(step, &replies)?;
    let mut replies = replies.into_iter();
    let mut found = Vec::with_capacity(keys.len());
    for (key, measure) in keys.iter().zip(&measured) {
        let kind = text(replies.next());
        let pttl = integer(replies.next());
        let memory = if *measure {
            integer(replies.next())
        } else {
            None
        };
        // Deleted since the SCAN: TYPE says "none"; skipped.
        if kind.as_deref() == Some("none") || kind.is_none() {
            continue;
        }
        found.push((key, kind.unwrap_or_default(), pttl, memory, *measure));
    }
    let mut second = redis::pipe();
    for (key, kind, ..) in &found {
        if let Some(command) = length_command(kind) {
            second.cmd(command).arg(*key);
        }
    }
    let lengths = if found
        .iter()
        .any(|(_, kind, ..)| length_command(kind).is_some())
    {
        let step = "the length commands";
        let replies = client
            .pipeline_on(node, &second)
            .await
            .map_err(|f| failed(step, &f))?;
        refused(step, &replies)?;
        replies
    } else {
        Vec::new()
    };
    let mut lengths = lengths.into_iter();
    for (key, kind, pttl, memory, measure) in found {
        let length = length_command(&kind).and_then(|_| integer(lengths.next()));
        let group = &mut groups[group_of(&config.groups, key)].1;
        group.keys += 1;
        match pttl {
            Some(-1) => group.without_ttl += 1,
            Some(ms) if ms >= 0 => group.ttls.add(ms as f64 / 1000.0),
            _ => {}
        }
        if measure {
            if let Some(bytes) = memory {
                group.sampled += 1;
                group.sampled_bytes += u64::try_from(bytes).unwrap_or(0);
            }
        }
        if let Some(length) = length {
            let into = if kind == "string" {
                &mut group.string_bytes
            } else {
                &mut group.lengths
            };
            into.add(length.max(0) as f64);
        }
    }
    Ok(())
}

fn text(value: Option<Value>) -> Option<String> {
    match value? {
        Value::SimpleString(s) => Some(s),
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::Okay => Some("OK".into()),
        _ => None,
    }
}

fn integer(value: Option<Value>) -> Option<i64> {
    match value? {
        Value::Int(n) => Some(n),
        _ => None,
    }
}

/// An error reply inside a pipeline's replies fails the pass (a key that
/// vanished is not one: its commands answer "none", -2 or nil).
fn refused(step: &str, replies: &[Value]) -> Result<(), PassError> {
    let Some(Value::ServerError(error)) =
        replies.iter().find(|v| matches!(v, Value::ServerError(_)))
    else {
        return Ok(());
    };
    let failure = Failure {
        error: BackendError::new(
            Backend::Redis,
            ErrorKind::Server,
            format!("{}: {}", error.code(), error.details().unwrap_or_default()),
        ),
        codes: vec![ReplyCode::of(error.code())],
    };
    Err(failed(step, &failure))
}

/// A failed step, named; a missing permission names the command to allow.
fn failed(step: &str, failure: &Failure) -> PassError {
    if failure.codes.contains(&ReplyCode::NoPerm) {
        return PassError(format!(
            "{step} was refused (NOPERM): the census's ACL user needs +scan +type +pttl +llen +hlen \
             +scard +zcard +xlen +strlen +memory|usage (and +info): {}",
            failure.error
        ));
    }
    PassError(format!(
        "{step} failed ({}): {}",
        failure.error.kind.as_str(),
        failure.error
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_is_stable_and_near_its_share() {
        let keys: Vec<Vec<u8>> = (0..10_000).map(|i| format!("k{i}").into_bytes()).collect();
        let picked = keys.iter().filter(|k| sampled(k, 0.25)).count();
        assert!((2200..2800).contains(&picked), "{picked}");
        assert!(keys.iter().all(|k| sampled(k, 0.25) == sampled(k, 0.25)));
        assert!(keys.iter().all(|k| sampled(k, 1.0)));
    }

    #[test]
    fn estimated_memory_scales_the_measured_share() {
        let group = GroupCensus {
            keys: 100,
            sampled: 25,
            sampled_bytes: 2500,
            ..GroupCensus::default()
        };
        assert_eq!(group.memory(), Some(10_000.0));
        assert_eq!(GroupCensus::default().memory(), None, "unknown, not 0");
    }
}
