//! The checks that ride on the operations, off their clock: a semantic hit
//! verified against Chroma, Chroma's answer against exact search (recall@k,
//! through [`recall`]), and how long a new memory takes to show up in a
//! query. Each runs in the background on its generation's task tracker, and
//! [`Checks::stop`] ends them with the generation.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::metrics::WorkloadMetrics;
use super::recall::recall;
use crate::backends::chroma::ChromaBackend;
use crate::cache::{Embedding, SemanticMetrics};
use crate::config::Config;

/// The background checks of one generation.
pub(super) struct Checks {
    chroma: Arc<ChromaBackend>,
    metrics: WorkloadMetrics,
    recall_fraction: f64,
    verify_fraction: f64,
    visibility_timeout: Duration,
    /// One write-visibility check at a time.
    visibility_busy: Arc<AtomicBool>,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Checks {
    pub(super) fn new(
        config: &Config,
        chroma: Arc<ChromaBackend>,
        metrics: WorkloadMetrics,
    ) -> Self {
        Self {
            chroma,
            metrics,
            recall_fraction: config.workload.recall_check_fraction,
            verify_fraction: config.cache.similarity.verify_fraction,
            visibility_timeout: config.workload.write_visibility_timeout,
            visibility_busy: Arc::new(AtomicBool::new(false)),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
        }
    }

    /// With `verify_fraction`'s probability, asks Chroma what a semantic hit
    /// answered from the cache (`cached`, its top-k ids), and counts in
    /// `semantic` whether the ids agree.
    pub(super) fn verify(
        &self,
        semantic: &SemanticMetrics,
        embedding: &Embedding,
        k: usize,
        cached: &[String],
    ) {
        if fastrand::f64() >= self.verify_fraction {
            return;
        }
        let (metrics, chroma) = (semantic.clone(), self.chroma.clone());
        let (embedding, cached) = (embedding.clone(), cached.to_vec());
        self.spawn(async move {
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

    /// Whether this answer is to be checked for recall
    /// (`recall_check_fraction`'s probability).
    pub(super) fn sample_recall(&self) -> bool {
        fastrand::f64() < self.recall_fraction
    }

    /// Compares Chroma's `answer` for `embedding` with exact search over
    /// `known` (this run's memories, whose ids start with `prefix`).
    pub(super) fn recall(
        &self,
        embedding: &Embedding,
        answer: Vec<String>,
        known: Vec<(String, Embedding)>,
        prefix: &str,
    ) {
        let (metrics, embedding, prefix) =
            (self.metrics.clone(), embedding.clone(), prefix.to_owned());
        self.spawn(async move {
            if let Some(ratio) = recall(&embedding, &answer, &known, &prefix) {
                metrics.recall.observe(ratio);
                metrics.recall_checks.inc();
            }
        });
    }

    /// Queries by `memory`'s own embedding, among that record only, until
    /// Chroma returns it or `write_visibility_timeout` passes; only if no
    /// other visibility check is running.
    pub(super) fn visibility(&self, collection: &str, memory: &str, embedding: &Embedding) {
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
        self.spawn(async move {
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

    /// Runs a check in the background, as part of this generation.
    fn spawn(&self, check: impl Future<Output = ()> + Send + 'static) {
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = check => {}
            }
        });
    }

    /// Ends the checks and waits for them: a stopped generation leaves none
    /// running.
    pub(super) async fn stop(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}
