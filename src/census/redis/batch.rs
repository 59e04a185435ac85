//! One `SCAN` batch of keys, in pipelines whose every command is cheap and
//! leaves the keys' access times alone:
//!
//! 1. `TYPE`, `PTTL` and `OBJECT ENCODING` of each key (none touches it);
//! 2. each key's length command (`LLEN`, `HLEN`, `SCARD`, `ZCARD`, `XLEN`,
//!    `STRLEN`), only where it cannot move eviction: after `CLIENT NO-TOUCH
//!    ON` at the head of the same pipeline (Redis 7.2 and later), on a
//!    replica, or where the user allowed it; and `MEMORY USAGE key SAMPLES
//!    0` of the keys whose size is small by their encoding (strings and
//!    listpack, ziplist or intset aggregates);
//! 3. for the other keys, once their length is known: `SAMPLES 0` in one
//!    pipeline for those of at most `exact_memory_max_elements`, and Redis's
//!    sampled estimate for each larger one, alone. Where lengths are not
//!    read, every such key gets the estimate.

use redis::Value;

use super::{failed, GroupCensus, PassError};
use crate::backends::redis::{Failure, RedisClient, ReplyCode};
use crate::backends::{Backend, BackendError, ErrorKind};
use crate::config::{KeyGroup, RedisCensus};

/// A node as the census reads it.
pub(super) struct Reader<'a> {
    pub(super) client: &'a RedisClient,
    pub(super) node: &'a str,
    /// `CLIENT NO-TOUCH ON` heads every pipeline of length commands.
    pub(super) no_touch: bool,
    /// Whether length commands are sent at all.
    pub(super) lengths: bool,
}

/// What the first pipeline found of a key that exists.
struct Found<'k> {
    key: &'k [u8],
    kind: String,
    pttl: Option<i64>,
    compact: bool,
    measure: bool,
    length: Option<i64>,
    memory: Option<i64>,
    estimated: bool,
}

impl Found<'_> {
    /// Whether its length command goes in the second pipeline.
    fn reads_length(&self, reader: &Reader<'_>) -> bool {
        reader.lengths && length_command(&self.kind).is_some()
    }

    /// Whether its memory is measured in the second pipeline: exactly when
    /// it is small by its encoding, by estimate when no length will tell
    /// whether it is small.
    fn measured_early(&self, reader: &Reader<'_>) -> bool {
        self.measure && (self.compact || !reader.lengths)
    }

    /// Whether its memory waits for its length (the third step).
    fn measured_late(&self, reader: &Reader<'_>) -> bool {
        self.measure && !self.measured_early(reader)
    }
}

/// Whether `key`'s memory is measured: a stable choice per key, so a pass
/// samples the same keys as the last.
pub(super) fn sampled(key: &[u8], share: f64) -> bool {
    use std::hash::{DefaultHasher, Hash, Hasher};
    if share >= 1.0 {
        return true;
    }
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() as f64 / u64::MAX as f64) < share
}

/// The command that counts a key's elements (a string's bytes), by its type.
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

/// Whether a key of this type and encoding is small by construction, so
/// measuring it exactly costs little: a string's `MEMORY USAGE` is constant,
/// and listpack, ziplist and intset aggregates are bounded by the server's
/// `*-max-listpack-*` settings.
fn compact(kind: &str, encoding: Option<&str>) -> bool {
    kind == "string" || matches!(encoding, Some("listpack" | "ziplist" | "intset"))
}

/// The first group `key` belongs to (the last is `other`).
fn group_of(groups: &[KeyGroup], key: &[u8]) -> usize {
    groups
        .iter()
        .position(|g| g.pattern.matches(key))
        .unwrap_or(groups.len())
}

fn memory_usage(pipe: &mut redis::Pipeline, key: &[u8], exact: bool) {
    let cmd = pipe.cmd("MEMORY").arg("USAGE").arg(key);
    if exact {
        cmd.arg("SAMPLES").arg(0);
    }
}

/// Counts one batch of `keys` into `groups`.
pub(super) async fn batch(
    reader: &Reader<'_>,
    keys: &[Vec<u8>],
    config: &RedisCensus,
    groups: &mut [(String, GroupCensus)],
) -> Result<(), PassError> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut found = describe(reader, keys, config).await?;
    measure(reader, &mut found, config).await?;
    for key in found {
        let group = &mut groups[group_of(&config.groups, key.key)].1;
        group.keys += 1;
        match key.pttl {
            Some(-1) => group.without_ttl += 1,
            Some(ms) if ms >= 0 => group.ttls.add(ms as f64 / 1000.0),
            _ => {}
        }
        if key.measure {
            if let Some(bytes) = key.memory {
                group.sampled += 1;
                group.sampled_bytes += u64::try_from(bytes).unwrap_or(0);
                group.memory_estimated += u64::from(key.estimated);
            }
        }
        if let Some(length) = key.length {
            let into = if key.kind == "string" {
                &mut group.string_bytes
            } else {
                &mut group.lengths
            };
            into.add(length.max(0) as f64);
        }
    }
    Ok(())
}

/// The first pipeline: what each key is; keys gone since the `SCAN` are
/// left out.
async fn describe<'k>(
    reader: &Reader<'_>,
    keys: &'k [Vec<u8>],
    config: &RedisCensus,
) -> Result<Vec<Found<'k>>, PassError> {
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd("TYPE").arg(key).cmd("PTTL").arg(key);
        pipe.cmd("OBJECT").arg("ENCODING").arg(key);
    }
    let replies = send(reader, "TYPE, PTTL and OBJECT ENCODING", &pipe).await?;
    let mut replies = replies.into_iter();
    let mut found = Vec::with_capacity(keys.len());
    for key in keys {
        let kind = text(replies.next());
        let pttl = integer(replies.next());
        let encoding = text(replies.next());
        // Deleted since the SCAN: TYPE says "none"; skipped.
        let Some(kind) = kind.filter(|k| k != "none") else {
            continue;
        };
        found.push(Found {
            key,
            compact: compact(&kind, encoding.as_deref()),
            measure: sampled(key, config.memory_sample),
            kind,
            pttl,
            length: None,
            memory: None,
            estimated: false,
        });
    }
    Ok(found)
}

/// The second and third pipelines: lengths where they may be read, and
/// memory, exact where it is cheap, estimated where it is not.
async fn measure(
    reader: &Reader<'_>,
    found: &mut [Found<'_>],
    config: &RedisCensus,
) -> Result<(), PassError> {
    let mut pipe = redis::pipe();
    let no_touch = reader.no_touch && found.iter().any(|k| k.reads_length(reader));
    if no_touch {
        pipe.cmd("CLIENT").arg("NO-TOUCH").arg("ON");
    }
    for key in found.iter() {
        if let Some(command) = length_command(&key.kind).filter(|_| key.reads_length(reader)) {
            pipe.cmd(command).arg(key.key);
        }
        if key.measured_early(reader) {
            memory_usage(&mut pipe, key.key, key.compact);
        }
    }
    if pipe.cmd_iter().next().is_some() {
        let replies = send(reader, "the length commands and MEMORY USAGE", &pipe).await?;
        let mut replies = replies.into_iter();
        if no_touch {
            replies.next();
        }
        for key in found.iter_mut() {
            if key.reads_length(reader) {
                key.length = integer(replies.next());
            }
            if key.measured_early(reader) {
                key.memory = integer(replies.next());
                key.estimated = !key.compact;
            }
        }
    }
    // The large keys, now that their lengths are known.
    let limit = i64::try_from(config.exact_memory_max_elements).unwrap_or(i64::MAX);
    let mut exact = redis::pipe();
    let mut small = Vec::new();
    for key in found.iter_mut().filter(|k| k.measured_late(reader)) {
        match key.length {
            Some(length) if length <= limit => {
                memory_usage(&mut exact, key.key, true);
                small.push(key);
            }
            _ => {
                // Alone: Redis's sampled estimate, never inside a batch.
                let mut alone = redis::pipe();
                memory_usage(&mut alone, key.key, false);
                let reply = send(reader, "MEMORY USAGE (sampled)", &alone).await?;
                key.memory = integer(reply.into_iter().next());
                key.estimated = true;
            }
        }
    }
    if !small.is_empty() {
        let replies = send(reader, "MEMORY USAGE", &exact).await?;
        for (key, reply) in small.into_iter().zip(replies) {
            key.memory = integer(Some(reply));
        }
    }
    Ok(())
}

/// Sends `pipe` to the reader's node; an error reply fails the pass.
async fn send(
    reader: &Reader<'_>,
    step: &str,
    pipe: &redis::Pipeline,
) -> Result<Vec<Value>, PassError> {
    let replies = reader
        .client
        .pipeline_on(reader.node, pipe)
        .await
        .map_err(|f| failed(step, &f))?;
    refused(step, &replies)?;
    Ok(replies)
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
    fn small_encodings_are_measured_exactly_and_big_ones_are_not() {
        assert!(compact("string", Some("raw")));
        assert!(compact("hash", Some("listpack")));
        assert!(compact("set", Some("intset")));
        assert!(compact("zset", Some("ziplist")));
        assert!(!compact("hash", Some("hashtable")));
        assert!(!compact("list", Some("quicklist")));
        assert!(!compact("zset", Some("skiplist")));
        assert!(!compact("stream", Some("stream")));
        assert!(!compact("list", None));
    }
}
