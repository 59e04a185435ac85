//! The four operations, exactly as the spec describes them, through the
//! instrumented caches against real Redis and Chroma. What they wrote is in
//! the [`ledger`](super::ledger); the checks that ride on them, in
//! [`checks`](super::checks).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::checks::Checks;
use super::ledger::{Memories, Writes, Writing, Written};
use super::metrics::WorkloadMetrics;
use super::model::{normalize, Op};
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
    /// The checks that ride on operations, off their clock.
    checks: Checks,
    /// This run's adds to and trims of the collection: in flight now, and
    /// finished so far. A recall check whose query overlapped one is not
    /// counted.
    writes: Writes,
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
        metrics: WorkloadMetrics,
    ) -> Self {
        Self {
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
            checks: Checks::new(config, chroma.clone(), metrics),
            writes: Writes::default(),
            written: Written::new(config.workload.key_ttl),
            redis,
            chroma,
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
            Lookup::SemanticHit => {
                if let Some(semantic) = self.cache.similarity.semantic() {
                    self.checks
                        .verify(&semantic.metrics, &embedding, k, &hits.ids);
                }
            }
            Lookup::Miss if self.writes.quiet_since(quiet) => self.check_recall(&embedding, &hits),
            Lookup::Miss | Lookup::Hit => {}
        }
        Ok((hits, lookup))
    }

    /// Hands a share of Chroma's answers to the recall check, with this
    /// run's memories; ids whose delete is pending are left out of the
    /// answer, as Chroma rightly still holds them.
    fn check_recall(&self, embedding: &Embedding, answer: &QueryHits) {
        if !self.checks.sample_recall() {
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
        self.checks
            .recall(embedding, answer, known, &self.memory_prefix);
    }

    /// Ends the background checks with this generation.
    pub(crate) async fn stop_checks(&self) {
        self.checks.stop().await;
    }

    fn lock_memories(&self) -> std::sync::MutexGuard<'_, Memories> {
        self.memories
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
        self.checks.visibility(&id, &memory, &embedding);
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
