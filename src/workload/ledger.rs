//! What this run wrote, for the checks that judge what it reads back: the
//! chat histories it wrote and when (a read that finds one empty within its
//! TTL has found a lost key), its memories in the probe collection (and
//! those trimmed whose delete has not succeeded yet), and the writes to the
//! collection in flight (a recall check overlapping one is not counted).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cache::Embedding;

/// At most this many chat histories are remembered as written.
const WRITTEN_CAP: usize = 10_000;

/// The chat histories this run wrote, and when: a read that finds one empty
/// while its TTL cannot have run out has found it evicted (or deleted by
/// someone else). Keys of earlier runs, and keys written beyond the cap, are
/// not remembered, so they are never counted.
pub(super) struct Written {
    /// 90 % of `workload.key_ttl`, from before the write was sent: safely
    /// inside the TTL Redis counts from when the write arrived.
    ttl: Duration,
    writes: Mutex<HashMap<String, (Instant, Instant)>>,
}

impl Written {
    pub(super) fn new(key_ttl: Duration) -> Self {
        Self {
            ttl: key_ttl.mul_f64(0.9),
            writes: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Instant)>> {
        self.writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A write to `key` sent at `sent` succeeded.
    pub(super) fn record(&self, key: &str, sent: Instant) {
        let mut writes = self.lock();
        if writes.len() >= WRITTEN_CAP && !writes.contains_key(key) {
            writes.retain(|_, (sent, _)| sent.elapsed() < self.ttl);
            if writes.len() >= WRITTEN_CAP {
                return;
            }
        }
        writes.insert(key.to_owned(), (sent, Instant::now()));
    }

    /// A read of `key` sent at `sent` found it empty: whether a write had
    /// finished before that read and its TTL is still running. A lost key is
    /// forgotten, so it counts once.
    pub(super) fn lost(&self, key: &str, sent: Instant) -> bool {
        let mut writes = self.lock();
        let lost = writes
            .get(key)
            .is_some_and(|(written, done)| *done < sent && written.elapsed() < self.ttl);
        if lost {
            writes.remove(key);
        }
        lost
    }
}

/// This run's memories in the collection, and those on their way out.
#[derive(Default)]
pub(super) struct Memories {
    pub(super) kept: VecDeque<(String, Embedding)>,
    pub(super) delete_pending: HashSet<String>,
}

/// Writes to the collection, concurrent ones included.
#[derive(Default)]
pub(super) struct Writes {
    in_flight: AtomicU64,
    finished: AtomicU64,
}

impl Writes {
    /// `Some(mark)` when no write is in flight; a later [`Self::quiet_since`]
    /// with that mark says whether none started since.
    pub(super) fn quiet(&self) -> Option<u64> {
        let finished = self.finished.load(Ordering::Acquire);
        (self.in_flight.load(Ordering::Acquire) == 0).then_some(finished)
    }

    pub(super) fn quiet_since(&self, mark: Option<u64>) -> bool {
        mark.is_some() && self.quiet() == mark
    }
}

/// Marks a write to the collection as in flight, until dropped.
pub(super) struct Writing<'a>(&'a Writes);

impl<'a> Writing<'a> {
    pub(super) fn start(writes: &'a Writes) -> Self {
        writes.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(writes)
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_read_after_a_finished_write_is_a_lost_key_once() {
        let written = Written::new(Duration::from_secs(3600));
        let sent = Instant::now();
        written.record("k", sent);
        let read = Instant::now();
        assert!(written.lost("k", read));
        assert!(!written.lost("k", Instant::now()), "counted once");
        assert!(!written.lost("never-written", read));
    }

    #[test]
    fn a_read_sent_before_the_write_finished_is_not_a_lost_key() {
        let written = Written::new(Duration::from_secs(3600));
        let read = Instant::now();
        written.record("k", read);
        assert!(!written.lost("k", read));
    }

    #[test]
    fn a_key_near_its_ttl_is_not_a_lost_key() {
        let written = Written::new(Duration::from_millis(20));
        written.record("k", Instant::now());
        std::thread::sleep(Duration::from_millis(30));
        assert!(!written.lost("k", Instant::now()));
    }

    #[test]
    fn the_record_is_bounded() {
        let written = Written::new(Duration::from_secs(3600));
        for n in 0..WRITTEN_CAP + 10 {
            written.record(&n.to_string(), Instant::now());
        }
        assert_eq!(written.lock().len(), WRITTEN_CAP);
        assert!(!written.lost(&(WRITTEN_CAP + 5).to_string(), Instant::now()));
    }
}

#[cfg(test)]
mod writes_tests {
    use super::*;

    #[test]
    fn a_check_is_quiet_only_if_no_write_overlapped_it() {
        let writes = Writes::default();
        let mark = writes.quiet();
        assert!(writes.quiet_since(mark));
        // Two writes at once, one finishing during the check.
        let a = Writing::start(&writes);
        assert_eq!(writes.quiet(), None);
        let b = Writing::start(&writes);
        drop(a);
        assert!(!writes.quiet_since(mark), "b is still in flight");
        drop(b);
        assert!(
            !writes.quiet_since(mark),
            "two writes finished since the mark"
        );
        let mark = writes.quiet();
        assert!(writes.quiet_since(mark));
    }
}
