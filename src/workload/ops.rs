//! The four operations, exactly as the spec describes them, through the
//! instrumented caches against real Redis and Chroma.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::metrics::WorkloadMetrics;
use super::model::{normalize, Op};
use super::recall::recall;
use crate::backends::chroma::{ChromaBackend, QueryHits};
use crate::backends::redis::RedisBackend;
use crate::backends::{BackendError, ErrorKind};
use crate::cache::{heap, CacheManager, ChatHistory, DimensionMismatch, Embedding, Lookup, Weigh};
use crate::config::Config;
use crate::embeddings::Embedder;
use crate::metrics::label_values;

label_values! {
    /// How an operation ended, as the `outcome` label spells it.
    pub(crate) enum Outcome {
        CacheHit => "cache_hit",
        CacheMiss => "cache_miss",
        Success => "success",
        Error => "error",
    }
}

impl From<Lookup> for Outcome {
    fn from(lookup: Lookup) -> Self {
        match lookup {
            Lookup::Hit | Lookup::SemanticHit => Self::CacheHit,
            Lookup::Miss => Self::CacheMiss,
        }
    }
}

/// Why an operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum OpError {
    #[error("{}: {}", .0.backend.as_str(), .0.message)]
    Backend(#[from] BackendError),
    /// The daemon will not do this (e.g. write to a collection it does not own).
    #[error("{0}")]
    Refused(String),
}

impl From<DimensionMismatch> for OpError {
    fn from(err: DimensionMismatch) -> Self {
        Self::Refused(format!("the similarity cache cannot match: {err}"))
    }
}

impl OpError {
    /// The `kind` label for this error.
    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            Self::Backend(err) => err.kind,
            Self::Refused(_) => ErrorKind::Validation,
        }
    }
}

/// What the similarity cache holds: the nearest memories to a query.
pub(crate) type Similar = Arc<QueryHits>;

/// The caches the operations read through.
pub(crate) type Caches = CacheManager<Similar>;

impl Weigh for Similar {
    fn weight(&self) -> usize {
        let ids: usize = self.ids.iter().map(|s| heap(s.capacity())).sum();
        let documents: usize = self
            .documents
            .iter()
            .map(|d| d.as_ref().map_or(0, |d| heap(d.capacity())))
            .sum();
        heap(16 + std::mem::size_of::<QueryHits>())
            + heap(24 * self.ids.capacity())
            + ids
            + heap(24 * self.documents.capacity())
            + documents
            + heap(8 * self.distances.capacity())
    }
}

/// A chat entry as stored in Redis.
#[derive(Serialize)]
struct ChatEntry<'a> {
    role: &'a str,
    content: &'a str,
    ts: f64,
}

/// At most this many chat histories are remembered as written.
const WRITTEN_CAP: usize = 10_000;

/// The chat histories this run wrote, and when: a read that finds one empty
/// while its TTL cannot have run out has found it evicted (or deleted by
/// someone else). Keys of earlier runs, and keys written beyond the cap, are
/// not remembered, so they are never counted.
struct Written {
    /// 90 % of `workload.key_ttl`, from before the write was sent: safely
    /// inside the TTL Redis counts from when the write arrived.
    ttl: Duration,
    writes: Mutex<HashMap<String, (Instant, Instant)>>,
}

impl Written {
    fn new(key_ttl: Duration) -> Self {
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
    fn record(&self, key: &str, sent: Instant) {
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
    fn lost(&self, key: &str, sent: Instant) -> bool {
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

/// Everything the operations need.
pub(crate) struct Operations {
    pub(crate) redis: Arc<RedisBackend>,
    pub(crate) chroma: Arc<ChromaBackend>,
    pub(crate) cache: Arc<Caches>,
    pub(crate) embedder: Arc<Embedder>,
    prefix: String,
    history_limit: i64,
    key_ttl_ms: u64,
    top_k: usize,
    /// `mem-{run id}-`: this run's memory ids start with it, which tells
    /// them from an earlier run's.
    memory_prefix: String,
    next_memory: AtomicU64,
    /// `workload.memory_cap`: the probe collection keeps at most this many
    /// of the daemon's memories (plus a batch); older ones are deleted a
    /// tenth of the cap at a time, so a long-running canary stays small.
    memory_cap: usize,
    /// The memories this run stored and has not trimmed, with their
    /// embeddings, for exact search; and those trimmed whose delete has not
    /// succeeded yet ("delete pending"): Chroma rightly still returns them,
    /// so recall counts them neither as hits nor as misses.
    memories: Mutex<Memories>,
    /// The checks that ride on operations, off their clock: they belong to
    /// this generation, and [`Operations::stop_checks`] ends them.
    checks: TaskTracker,
    stop_checks: CancellationToken,
    /// This run's adds to and trims of the collection: in flight now, and
    /// finished so far. A recall check whose query overlapped one is not
    /// counted.
    writes: Writes,
    written: Written,
    metrics: WorkloadMetrics,
    recall_check_fraction: f64,
    verify_fraction: f64,
    visibility_timeout: Duration,
    /// One write-visibility check at a time.
    visibility_busy: Arc<AtomicBool>,
}

/// This run's memories in the collection, and those on their way out.
#[derive(Default)]
struct Memories {
    kept: VecDeque<(String, Embedding)>,
    delete_pending: HashSet<String>,
}

/// Writes to the collection, concurrent ones included.
#[derive(Default)]
struct Writes {
    in_flight: AtomicU64,
    finished: AtomicU64,
}

impl Writes {
    /// `Some(mark)` when no write is in flight; a later [`Self::quiet_since`]
    /// with that mark says whether none started since.
    fn quiet(&self) -> Option<u64> {
        let finished = self.finished.load(Ordering::Acquire);
        (self.in_flight.load(Ordering::Acquire) == 0).then_some(finished)
    }

    fn quiet_since(&self, mark: Option<u64>) -> bool {
        mark.is_some() && self.quiet() == mark
    }
}

/// Marks a write to the collection as in flight, until dropped.
struct Writing<'a>(&'a Writes);

impl<'a> Writing<'a> {
    fn start(writes: &'a Writes) -> Self {
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

impl Operations {
    /// Binds the operations to the backends and the cache.
    pub(crate) fn new(
        config: &Config,
        redis: Arc<RedisBackend>,
        chroma: Arc<ChromaBackend>,
        cache: Arc<Caches>,
        embedder: Arc<Embedder>,
        metrics: WorkloadMetrics,
    ) -> Self {
        Self {
            redis,
            chroma,
            cache,
            embedder,
            prefix: config.redis.key_prefix.clone(),
            history_limit: i64::try_from(config.workload.history_limit).unwrap_or(i64::MAX),
            key_ttl_ms: u64::try_from(config.workload.key_ttl.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            top_k: config.workload.top_k,
            memory_prefix: format!("mem-{:016x}-", fastrand::u64(..)),
            next_memory: AtomicU64::new(0),
            memory_cap: config.workload.memory_cap,
            memories: Mutex::new(Memories::default()),
            checks: TaskTracker::new(),
            stop_checks: CancellationToken::new(),
            writes: Writes::default(),
            written: Written::new(config.workload.key_ttl),
            metrics,
            recall_check_fraction: config.workload.recall_check_fraction,
            verify_fraction: config.cache.similarity.verify_fraction,
            visibility_timeout: config.workload.write_visibility_timeout,
            visibility_busy: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The Redis key of a session's history: always under the prefix.
    pub(crate) fn chat_key(&self, session: &str) -> String {
        // The hash tag keeps a session's keys in one Redis Cluster slot.
        format!("{}chat:{{{session}}}", self.prefix)
    }

    /// Runs one operation; returns its outcome.
    pub(crate) async fn run(&self, op: &Op) -> Result<Outcome, OpError> {
        match op {
            Op::GetChatHistory { session } => self
                .get_chat_history(&session.to_string())
                .await
                .map(|(_, l)| l.into()),
            Op::StoreChatEntry {
                session,
                role,
                content,
            } => self
                .store_chat_entry(&session.to_string(), role, content)
                .await
                .map(|()| Outcome::Success),
            Op::QuerySimilarMemories { text } => self
                .query_similar_memories(text, self.top_k)
                .await
                .map(|(_, l)| l.into()),
            Op::StoreMemory { text } => self.store_memory(text).await.map(|()| Outcome::Success),
        }
    }

    /// `LRANGE {prefix}chat:{session} -N -1` through the `chat_history`
    /// cache; an empty history this run wrote within its TTL counts in
    /// `llmcache_redis_lost_keys_total`.
    pub(crate) async fn get_chat_history(
        &self,
        session: &str,
    ) -> Result<(ChatHistory, Lookup), OpError> {
        let key = self.chat_key(session);
        let load = || async {
            let sent = Instant::now();
            let entries = self.redis.lrange(&key, -self.history_limit, -1).await?;
            if entries.is_empty() && self.written.lost(&key, sent) {
                self.redis.count_lost_key();
            }
            Ok::<ChatHistory, OpError>(entries.into())
        };
        self.cache.chat_history.get_or_load(&key, load).await
    }

    /// `RPUSH` + `LTRIM` + `PEXPIRE` in one `MULTI`, then invalidates the
    /// session's cache entry, so no later read misses this entry.
    pub(crate) async fn store_chat_entry(
        &self,
        session: &str,
        role: &str,
        content: &str,
    ) -> Result<(), OpError> {
        let key = self.chat_key(session);
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let entry = serde_json::to_string(&ChatEntry { role, content, ts })
            .map_err(|err| OpError::Refused(format!("cannot encode a chat entry: {err}")))?;
        let sent = Instant::now();
        self.redis
            .push_trimmed(&key, &entry, self.history_limit, self.key_ttl_ms)
            .await?;
        self.written.record(&key, sent);
        self.cache.chat_history.invalidate(&key).await;
        Ok(())
    }

    /// Embeds through the `embeddings` cache, then answers from the
    /// `similarity` cache (in semantic mode, from the nearest cached query
    /// within the threshold) or Chroma's `query`. A share of semantic hits is
    /// verified against Chroma, and a share of Chroma's answers against exact
    /// search, both off the operation's clock.
    pub(crate) async fn query_similar_memories(
        &self,
        text: &str,
        k: usize,
    ) -> Result<(Arc<QueryHits>, Lookup), OpError> {
        let normalized = normalize(text);
        let embedding = self.embed(&normalized).await?;
        let key = format!("{k}\u{1f}{normalized}");
        let load = || async {
            let id = self.chroma.owned_collection().await?;
            let hits = self.chroma.client().query(&id, &embedding, k).await?;
            Ok::<_, OpError>(Arc::new(hits))
        };
        let quiet = self.writes.quiet();
        let (hits, lookup) = self
            .cache
            .similarity
            .get_or_load_near(&key, &embedding, load)
            .await?;
        match lookup {
            Lookup::SemanticHit => self.verify(&embedding, k, &hits),
            Lookup::Miss if self.writes.quiet_since(quiet) => {
                self.check_recall(&embedding, &hits);
            }
            Lookup::Miss | Lookup::Hit => {}
        }
        Ok((hits, lookup))
    }

    /// With `verify_fraction`'s probability, asks Chroma what a semantic hit
    /// answered from the cache, in the background, and counts whether the
    /// top-k ids agree.
    fn verify(&self, embedding: &Embedding, k: usize, cached: &QueryHits) {
        let Some(semantic) = self.cache.similarity.semantic() else {
            return;
        };
        if fastrand::f64() >= self.verify_fraction {
            return;
        }
        let (metrics, chroma) = (semantic.metrics.clone(), self.chroma.clone());
        let (embedding, cached) = (embedding.clone(), cached.ids.clone());
        self.spawn_check(async move {
            let fresh = async {
                let id = chroma.owned_collection().await?;
                chroma.client().query(&id, &embedding, k).await
            };
            // A failed request is counted as a backend request, like any.
            if let Ok(fresh) = fresh.await {
                metrics.verified(&cached, &fresh.ids, k);
            }
        });
    }

    /// With `recall_check_fraction`'s probability, compares Chroma's answer
    /// with exact search over this run's memories, in the background.
    fn check_recall(&self, embedding: &Embedding, answer: &QueryHits) {
        if fastrand::f64() >= self.recall_check_fraction {
            return;
        }
        let (known, answer) = {
            let memories = self.lock_memories();
            let known: Vec<(String, Embedding)> = memories.kept.iter().cloned().collect();
            let answer: Vec<String> = answer
                .ids
                .iter()
                .filter(|id| !memories.delete_pending.contains(*id))
                .cloned()
                .collect();
            (known, answer)
        };
        let (metrics, embedding) = (self.metrics.clone(), embedding.clone());
        let prefix = self.memory_prefix.clone();
        self.spawn_check(async move {
            if let Some(ratio) = recall(&embedding, &answer, &known, &prefix) {
                metrics.recall.observe(ratio);
                metrics.recall_checks.inc();
            }
        });
    }

    fn lock_memories(&self) -> std::sync::MutexGuard<'_, Memories> {
        self.memories
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs a check in the background, as part of this generation.
    fn spawn_check(&self, check: impl std::future::Future<Output = ()> + Send + 'static) {
        let stop = self.stop_checks.clone();
        self.checks.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = check => {}
            }
        });
    }

    /// Ends the background checks and waits for them: a stopped generation
    /// leaves none running.
    pub(crate) async fn stop_checks(&self) {
        self.stop_checks.cancel();
        self.checks.close();
        self.checks.wait().await;
    }

    /// Embeds, adds to the probe collection, then makes every similarity
    /// entry stale, and (one at a time) measures how long until a query
    /// returns the new memory.
    pub(crate) async fn store_memory(&self, text: &str) -> Result<(), OpError> {
        let normalized = normalize(text);
        let embedding = self.embed(&normalized).await?;
        let id = self.chroma.owned_collection().await?;
        let memory = format!(
            "{}{}",
            self.memory_prefix,
            self.next_memory.fetch_add(1, Ordering::Relaxed)
        );
        let writing = Writing::start(&self.writes);
        self.chroma
            .client()
            .add(
                &id,
                std::slice::from_ref(&memory),
                &[embedding.to_vec()],
                &[text.to_owned()],
            )
            .await?;
        self.cache.similarity.invalidate_all();
        self.check_visibility(&id, &memory, &embedding);
        let deleting: Vec<String> = {
            let mut memories = self.lock_memories();
            memories.kept.push_back((memory, embedding));
            let batch = (self.memory_cap / 10).max(1);
            if memories.kept.len() > self.memory_cap + batch {
                let trimmed: Vec<String> = memories.kept.drain(..batch).map(|(id, _)| id).collect();
                memories.delete_pending.extend(trimmed);
                // With those whose delete failed before: retried now.
                memories.delete_pending.iter().cloned().collect()
            } else {
                Vec::new()
            }
        };
        if !deleting.is_empty() {
            self.delete_trimmed(&id, &deleting).await;
        }
        drop(writing);
        Ok(())
    }

    /// Deletes trimmed memories; they stay "delete pending" until it
    /// succeeds, and a failure is retried at the next trim.
    async fn delete_trimmed(&self, collection: &str, ids: &[String]) {
        match self.chroma.client().delete(collection, ids).await {
            Ok(()) => {
                let mut memories = self.lock_memories();
                for id in ids {
                    memories.delete_pending.remove(id);
                }
            }
            Err(err) => tracing::warn!(
                pending = ids.len(),
                error = %err,
                "deleting trimmed probe memories failed; they are retried at the next trim, \
                 and recall does not count them"
            ),
        }
    }

    /// Queries by `memory`'s own embedding, among that record only, until
    /// Chroma returns it or `write_visibility_timeout` passes; in the
    /// background, and only if no other check is running.
    fn check_visibility(&self, collection: &str, memory: &str, embedding: &Embedding) {
        if self.visibility_busy.swap(true, Ordering::AcqRel) {
            return;
        }
        let added = Instant::now();
        let (chroma, busy, metrics) = (
            self.chroma.clone(),
            self.visibility_busy.clone(),
            self.metrics.clone(),
        );
        let (collection, memory, embedding) =
            (collection.to_owned(), memory.to_owned(), embedding.clone());
        let timeout = self.visibility_timeout;
        self.spawn_check(async move {
            let among = [memory];
            let mut pause = Duration::from_millis(5);
            loop {
                let hits = chroma
                    .client()
                    .query_among(&collection, &embedding, 1, Some(&among))
                    .await;
                if hits.is_ok_and(|hits| hits.ids.contains(&among[0])) {
                    metrics
                        .write_visibility
                        .observe(added.elapsed().as_secs_f64());
                    break;
                }
                if added.elapsed() + pause > timeout {
                    metrics.write_invisible.inc();
                    break;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            busy.store(false, Ordering::Release);
        });
    }

    async fn embed(&self, normalized: &str) -> Result<Arc<[f32]>, OpError> {
        let load = || async { Ok::<_, OpError>(Arc::from(self.embedder.embed(normalized).await?)) };
        let (embedding, _) = self.cache.embeddings.get_or_load(normalized, load).await?;
        Ok(embedding)
    }
}

/// How long an operation's timeouts allow at most, for shutdown bounds.
pub(crate) fn max_op_duration(config: &Config) -> Duration {
    config.redis.timeout * 2 + config.chroma.timeout * 2 + config.embeddings.timeout
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
