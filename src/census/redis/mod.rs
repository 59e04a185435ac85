//! One census pass over Redis: `SCAN` on every master, or with `read_from =
//! "replica"` on one replica of each cluster master that has one (`COUNT`
//! 200, no `KEYS`, no Lua), each batch in pipelines of cheap commands that
//! leave the keys' access times alone ([`batch`]). Before its first batch
//! the census asks each node (`INFO server`, `INFO replication`) whether it
//! has `CLIENT NO-TOUCH` (7.2 and later) and whether it is a replica: only
//! there, or with `allow_touch`, are lengths read. Keys are bytes, counted
//! in the first group whose pattern matches, the others in `other`. The
//! budget (`max_keys_per_second`) sleeps between batches.

mod batch;

use std::time::{Duration, Instant};

use super::sketch::Distribution;
use crate::backends::redis::{parse_info, Failure, RedisClient, ReplyCode, Shard};
use crate::config::{ReadFrom, RedisCensus};
use batch::Reader;

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
    /// Of the `sampled` keys, those measured by Redis's sampled estimate
    /// (too large for `SAMPLES 0`).
    pub(crate) memory_estimated: u64,
    /// Element counts of the keys that hold elements (not strings).
    pub(crate) lengths: Distribution,
    /// Sizes in bytes of the string keys (`STRLEN`).
    pub(crate) string_bytes: Distribution,
    /// Seconds to live of the keys with a TTL.
    pub(crate) ttls: Distribution,
}

impl GroupCensus {
    /// The memory of all the group's keys: what was measured, scaled up to
    /// the keys that were not; 0 for no keys, and `None` for keys of which
    /// none was measured (unknown, not nothing).
    pub(crate) fn memory(&self) -> Option<f64> {
        if self.keys == 0 {
            return Some(0.0);
        }
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
    pub(crate) memory_estimated: u64,
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
            memory_estimated: self.memory_estimated,
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
    /// The nodes whose lengths were not read, and why.
    pub(crate) without_lengths: Vec<String>,
    /// `DBSIZE` of each node read, at the end of its scan, summed: SCAN
    /// returns every key present throughout at least once, and may return
    /// one twice; the census does not deduplicate (that would keep every
    /// key), so its counts may exceed this by the repeats, and differ by
    /// the keys that came and went during the pass.
    pub(crate) dbsize: u64,
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
    let readers: Vec<&String> = if topology.shards.is_empty() {
        // One master (standalone, or the one the sentinels name).
        topology.masters.iter().collect()
    } else {
        plan(&topology.shards, config.read_from)?
    };
    let started = Instant::now();
    let mut total = 0u64;
    let mut without_lengths = Vec::new();
    let mut dbsize = 0;
    for node in readers {
        let reader = reader(client, node, config).await?;
        if !reader.lengths {
            without_lengths.push(format!(
                "{node} is a master without CLIENT NO-TOUCH (Redis before 7.2): its keys' \
                 lengths are not read, since LLEN and the like would reset their access \
                 times; read a replica (census.redis.read_from = \"replica\") or accept \
                 that (census.redis.allow_touch = true)"
            ));
        }
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
            batch::batch(&reader, &keys, config, &mut groups).await?;
            total += n;
            scanned(n);
            pace(config.max_keys_per_second, total, started).await;
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let size: u64 = client
            .on_master(node, &redis::cmd("DBSIZE"))
            .await
            .map_err(|f| failed("DBSIZE", &f))?;
        dbsize += size;
    }
    Ok(RedisPass {
        groups: groups
            .into_iter()
            .map(|(name, census)| (name, census.summary()))
            .collect(),
        scanned: total,
        without_lengths,
        dbsize,
    })
}

/// The node to read for each shard of a cluster: its master (a replica
/// with `read_from = "replica"`), or a replica of a failed master; and the
/// proof that they cover all 16,384 slots. A pass that cannot read some
/// slots fails, naming them: a partial count is never published as the
/// whole.
fn plan(shards: &[Shard], read_from: ReadFrom) -> Result<Vec<&String>, PassError> {
    let mut readers = Vec::new();
    let mut covered = vec![false; SLOTS];
    let mut unread = Vec::new();
    for shard in shards {
        let master = (!shard.failed).then_some(&shard.master);
        let chosen = match read_from {
            ReadFrom::Master => master.or(shard.replicas.first()),
            ReadFrom::Replica => shard.replicas.first().or(master),
        };
        match chosen {
            Some(node) => {
                readers.push(node);
                for (start, end) in &shard.slots {
                    let end = usize::from(*end).min(SLOTS - 1);
                    if let Some(range) = covered.get_mut(usize::from(*start)..=end) {
                        range.fill(true);
                    }
                }
            }
            None => unread.push(format!(
                "master {} is failed and has no healthy replica",
                shard.master
            )),
        }
    }
    let missing = ranges(&covered);
    if missing.is_empty() {
        return Ok(readers);
    }
    let why = if unread.is_empty() {
        "no master claims them".to_owned()
    } else {
        unread.join("; ")
    };
    Err(PassError(format!(
        "slots {missing} have no node to read ({why}); the pass is not published, so \
         the last complete one stays"
    )))
}

/// Redis Cluster's slots.
const SLOTS: usize = 16_384;

/// The slots not covered, as `a-b, c`.
fn ranges(covered: &[bool]) -> String {
    let mut out = Vec::new();
    let mut slot = 0;
    while slot < covered.len() {
        if covered[slot] {
            slot += 1;
            continue;
        }
        let start = slot;
        while slot < covered.len() && !covered[slot] {
            slot += 1;
        }
        out.push(if slot - 1 == start {
            start.to_string()
        } else {
            format!("{start}-{}", slot - 1)
        });
    }
    out.join(", ")
}

/// How the census may read `node`: with `CLIENT NO-TOUCH` where the server
/// has it, and lengths only where reading them moves no eviction.
async fn reader<'a>(
    client: &'a RedisClient,
    node: &'a str,
    config: &RedisCensus,
) -> Result<Reader<'a>, PassError> {
    let mut info = redis::cmd("INFO");
    info.arg("server").arg("replication");
    let text: String = client
        .on_master(node, &info)
        .await
        .map_err(|f| failed("INFO", &f))?;
    let info = parse_info(&text);
    let no_touch = info
        .redis_version
        .as_deref()
        .is_some_and(|v| version_at_least(v, (7, 2)));
    let replica = info.role.as_deref() == Some("slave");
    Ok(Reader {
        client,
        node,
        no_touch,
        lengths: no_touch || replica || config.allow_touch,
    })
}

/// Whether `version` (`7.0.15`) is at least `major.minor`.
fn version_at_least(version: &str, (major, minor): (u32, u32)) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
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

/// A failed step, named; a missing permission names the command to allow.
fn failed(step: &str, failure: &Failure) -> PassError {
    if failure.codes.contains(&ReplyCode::NoPerm) {
        return PassError(format!(
            "{step} was refused (NOPERM): the census's ACL user needs +scan +dbsize +type +pttl \
             +object|encoding +memory|usage +info, and to read lengths +llen +hlen +scard +zcard \
             +xlen +strlen (with +client|no-touch on Redis 7.2 and later): {}",
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

    fn shard(master: &str, failed: bool, slots: (u16, u16), replicas: &[&str]) -> Shard {
        Shard {
            master: master.into(),
            failed,
            slots: vec![slots],
            replicas: replicas.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn a_failed_master_is_read_through_its_replica_and_unread_slots_fail_the_pass() {
        let healthy = [
            shard("a:1", false, (0, 5460), &["a:2"]),
            shard("b:1", false, (5461, 10922), &[]),
            shard("c:1", true, (10923, 16383), &["c:2"]),
        ];
        let readers = plan(&healthy, ReadFrom::Master).unwrap();
        assert_eq!(readers, ["a:1", "b:1", "c:2"]);
        let readers = plan(&healthy, ReadFrom::Replica).unwrap();
        assert_eq!(readers, ["a:2", "b:1", "c:2"]);
        let orphan = [
            shard("a:1", false, (0, 5460), &[]),
            shard("c:1", true, (10923, 16383), &[]),
        ];
        let err = plan(&orphan, ReadFrom::Master).unwrap_err().0;
        assert!(err.contains("slots 5461-16383"), "{err}");
        assert!(err.contains("master c:1 is failed"), "{err}");
        let mut gap = healthy.clone();
        gap[1].slots = vec![(5461, 5461), (5463, 10922)];
        let err = plan(&gap, ReadFrom::Master).unwrap_err().0;
        assert!(err.contains("slots 5462 have no node"), "{err}");
    }

    #[test]
    fn no_touch_from_7_2_and_valkeys_7_2_4() {
        assert!(!version_at_least("7.0.15", (7, 2)));
        assert!(version_at_least("7.2.4", (7, 2)));
        assert!(version_at_least("8.0.0", (7, 2)));
        assert!(!version_at_least("6.2.14", (7, 2)));
        assert!(!version_at_least("garbage", (7, 2)));
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
        assert_eq!(
            GroupCensus::default().memory(),
            Some(0.0),
            "no keys, no bytes"
        );
        let unmeasured = GroupCensus {
            keys: 100,
            ..GroupCensus::default()
        };
        assert_eq!(unmeasured.memory(), None, "unknown, not 0");
    }
}
