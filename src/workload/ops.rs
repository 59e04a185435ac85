//! The four operations, exactly as the spec describes them, through the
//! instrumented caches against real Redis and Chroma.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::model::{normalize, Op};
use crate::backends::chroma::{ChromaBackend, QueryHits};
use crate::backends::redis::RedisBackend;
use crate::backends::{BackendError, ErrorKind};
use crate::cache::{CacheManager, ChatHistory, Lookup, Weigh};
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
            Lookup::Hit => Self::CacheHit,
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
        let ids: usize = self.ids.iter().map(|s| 24 + s.len()).sum();
        let documents: usize = self
            .documents
            .iter()
            .map(|d| 24 + d.as_ref().map_or(0, String::len))
            .sum();
        16 + 72 + ids + documents + self.distances.len() * 8
    }
}

/// A chat entry as stored in Redis.
#[derive(Serialize)]
struct ChatEntry<'a> {
    role: &'a str,
    content: &'a str,
    ts: f64,
}

/// The probe collection keeps at most this many of the daemon's memories;
/// older ones are deleted in batches, so a long-running canary stays small.
const MEMORY_CAP: usize = 1000;
const MEMORY_TRIM_BATCH: usize = 100;

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
    run_id: u64,
    next_memory: AtomicU64,
    memory_ids: Mutex<VecDeque<String>>,
    written: Written,
}

impl Operations {
    /// Binds the operations to the backends and the cache.
    pub(crate) fn new(
        config: &Config,
        redis: Arc<RedisBackend>,
        chroma: Arc<ChromaBackend>,
        cache: Arc<Caches>,
        embedder: Arc<Embedder>,
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
            run_id: fastrand::u64(..),
            next_memory: AtomicU64::new(0),
            memory_ids: Mutex::new(VecDeque::new()),
            written: Written::new(config.workload.key_ttl),
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
    /// `similarity` cache or Chroma's `query`.
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
        self.cache.similarity.get_or_load(&key, load).await
    }

    /// Embeds, adds to the probe collection, then makes every similarity
    /// entry stale.
    pub(crate) async fn store_memory(&self, text: &str) -> Result<(), OpError> {
        let normalized = normalize(text);
        let embedding = self.embed(&normalized).await?;
        let id = self.chroma.owned_collection().await?;
        let memory = format!(
            "mem-{:016x}-{}",
            self.run_id,
            self.next_memory.fetch_add(1, Ordering::Relaxed)
        );
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
        let expired: Vec<String> = {
            let mut ids = self
                .memory_ids
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            ids.push_back(memory);
            if ids.len() > MEMORY_CAP + MEMORY_TRIM_BATCH {
                ids.drain(..MEMORY_TRIM_BATCH).collect()
            } else {
                Vec::new()
            }
        };
        if !expired.is_empty() {
            // Best effort: the collection is dropped at exit anyway.
            if let Err(err) = self.chroma.client().delete(&id, &expired).await {
                tracing::debug!(error = %err, "trimming old probe memories failed");
            }
        }
        Ok(())
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
