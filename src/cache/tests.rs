//! Behaviour of the caches and the pool, with real moka caches and real
//! concurrency; the "backend" is an in-process store with random delays so
//! loads and writes interleave.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

use super::metrics::EvictionCause;
use super::*;
use crate::config::Config;

fn families() -> CacheFamilies {
    CacheFamilies::register(&mut Registry::default())
}

fn cache<V: Weigh + Clone + Send + Sync + 'static>(
    ttl: Duration,
    capacity: u64,
    freshness: Freshness,
) -> InstrumentedCache<V> {
    InstrumentedCache::new(
        CacheName::Embeddings,
        ttl,
        capacity,
        freshness,
        families().for_cache(CacheName::Embeddings),
    )
}

fn vector(len: usize) -> Embedding {
    vec![0.5; len].into()
}

const HOUR: Duration = Duration::from_secs(3600);

type Fail = Arc<str>;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hit_and_miss_counts_are_exact_under_16_concurrent_tasks() {
    let cache = Arc::new(cache::<Embedding>(HOUR, 1 << 20, Freshness::Immutable));
    for k in 0..20 {
        let (_, lookup) = cache
            .get_or_load(&format!("k{k}"), || async { Ok::<_, Fail>(vector(8)) })
            .await
            .unwrap();
        assert_eq!(lookup, Lookup::Miss);
    }
    let mut tasks = Vec::new();
    for t in 0..16 {
        let cache = cache.clone();
        tasks.push(tokio::spawn(async move {
            let mut hits = 0;
            for i in 0..100 {
                let key = format!("k{}", (t * 7 + i) % 20);
                let (_, lookup) = cache
                    .get_or_load(&key, || async { Ok::<_, Fail>(vector(8)) })
                    .await
                    .unwrap();
                hits += usize::from(lookup == Lookup::Hit);
            }
            // And one key of its own that nobody has loaded.
            let (_, lookup) = cache
                .get_or_load(&format!("own{t}"), || async { Ok::<_, Fail>(vector(8)) })
                .await
                .unwrap();
            assert_eq!(lookup, Lookup::Miss);
            hits
        }));
    }
    let mut hits = 0;
    for task in tasks {
        hits += task.await.unwrap();
    }
    assert_eq!(hits, 1600, "every lookup of a loaded key is a hit");
    assert_eq!(cache.metrics().requests.get(), 20 + 16 * 101);
    assert_eq!(cache.metrics().hits.get(), 1600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_misses_on_one_key_share_one_load() {
    let cache = Arc::new(cache::<Embedding>(HOUR, 1 << 20, Freshness::Immutable));
    let loads = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(16));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (cache, loads, barrier) = (cache.clone(), loads.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            cache
                .get_or_load("hot", || async {
                    loads.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Ok::<_, Fail>(vector(4))
                })
                .await
                .unwrap()
        }));
    }
    for task in tasks {
        let (value, lookup) = task.await.unwrap();
        assert_eq!(value.len(), 4);
        assert_eq!(lookup, Lookup::Miss, "all 16 arrived before the value did");
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(cache.metrics().requests.get(), 16);
    assert_eq!(cache.metrics().hits.get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_load_caches_nothing_and_reaches_every_waiter() {
    let cache = Arc::new(cache::<Embedding>(HOUR, 1 << 20, Freshness::Immutable));
    let loads = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (cache, loads) = (cache.clone(), loads.clone());
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_load("k", || async {
                    loads.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Err::<Embedding, Fail>("backend down".into())
                })
                .await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap_err().as_ref(), "backend down");
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    let (_, lookup) = cache
        .get_or_load("k", || async { Ok::<_, Fail>(vector(2)) })
        .await
        .unwrap();
    assert_eq!(lookup, Lookup::Miss, "the failure was not cached");
    assert_eq!(cache.metrics().requests.get(), 9);
    assert_eq!(cache.metrics().hits.get(), 0);
}

/// Polls `maintain` until `done`, or fails after `timeout`.
async fn maintain_until<V: Weigh + Clone + Send + Sync + 'static>(
    cache: &InstrumentedCache<V>,
    timeout: Duration,
    what: &str,
    done: impl Fn(&InstrumentedCache<V>) -> bool,
) {
    let deadline = Instant::now() + timeout;
    loop {
        cache.maintain().await;
        if done(cache) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn expired_entries_are_counted_with_cause_expired() {
    let cache = cache::<Embedding>(Duration::from_millis(100), 1 << 20, Freshness::Immutable);
    for k in ["a", "b", "c"] {
        cache
            .get_or_load(k, || async { Ok::<_, Fail>(vector(4)) })
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (_, lookup) = cache
        .get_or_load("a", || async { Ok::<_, Fail>(vector(4)) })
        .await
        .unwrap();
    assert_eq!(lookup, Lookup::Miss, "an expired entry is never served");
    maintain_until(&cache, Duration::from_secs(5), "three expiries", |c| {
        c.metrics().evictions(EvictionCause::Expired) >= 3
    })
    .await;
    assert_eq!(cache.metrics().evictions(EvictionCause::Size), 0);
}

#[tokio::test]
async fn size_evictions_keep_the_cache_within_capacity() {
    let capacity = 16 * 1024;
    let cache = cache::<Embedding>(HOUR, capacity, Freshness::Immutable);
    for k in 0..200 {
        cache
            .get_or_load(&format!("k{k}"), || async { Ok::<_, Fail>(vector(256)) })
            .await
            .unwrap();
    }
    let held = cache.maintain().await;
    assert!(held <= capacity, "{held} bytes held, capacity {capacity}");
    assert!(
        held > capacity / 2,
        "the cache is used, not emptied: {held}"
    );
    assert!(cache.metrics().evictions(EvictionCause::Size) > 100);
    assert_eq!(cache.metrics().size.get() as u64, held);
}

#[tokio::test]
async fn values_larger_than_the_capacity_are_returned_but_not_cached() {
    let cache = cache::<Embedding>(HOUR, 1024, Freshness::Immutable);
    for expected in [Lookup::Miss, Lookup::Miss] {
        let (value, lookup) = cache
            .get_or_load("big", || async { Ok::<_, Fail>(vector(4096)) })
            .await
            .unwrap();
        assert_eq!(value.len(), 4096);
        assert_eq!(lookup, expected);
    }
    cache.maintain().await;
    assert_eq!(cache.metrics().uncacheable.get(), 2);
    assert_eq!(cache.metrics().entries.get(), 0);
}

#[tokio::test]
async fn a_zero_budget_disables_caching_cleanly() {
    let mut config = Config::from_args(["x"]).unwrap().config;
    config.cache.memory_budget = 0;
    let manager = CacheManager::<Embedding>::new(
        &config.cache,
        CacheFamilies::register(&mut Registry::default()),
    );
    for _ in 0..3 {
        let (value, lookup) = manager
            .embeddings
            .get_or_load("text", || async { Ok::<_, Fail>(vector(3)) })
            .await
            .unwrap();
        assert_eq!((value.len(), lookup), (3, Lookup::Miss));
    }
    assert_eq!(manager.maintain().await, 0);
    let stats = manager.stats();
    assert_eq!(
        (stats.total_hits, stats.total_misses, stats.cache_size),
        (0, 3, 0)
    );
}

/// A store whose reads take a random while, so they overlap writes.
#[derive(Default)]
struct Store {
    lists: Mutex<HashMap<String, Vec<u64>>>,
}

impl Store {
    async fn read(&self, key: &str) -> Result<Arc<[String]>, Fail> {
        let snapshot: Vec<String> = self
            .lists
            .lock()
            .unwrap()
            .get(key)
            .map(|l| l.iter().map(u64::to_string).collect())
            .unwrap_or_default();
        // The answer travels back slowly, as from a server.
        tokio::time::sleep(Duration::from_micros(fastrand::u64(0..800))).await;
        Ok(snapshot.into())
    }

    fn append(&self, key: &str, value: u64) {
        self.lists
            .lock()
            .unwrap()
            .entry(key.to_owned())
            .or_default()
            .push(value);
    }
}

/// Writers append then invalidate; readers check that every write finished
/// before they started is in what they get.
async fn run_freshness(seed: u64, global: bool) {
    let freshness = if global {
        Freshness::global()
    } else {
        Freshness::per_key()
    };
    let cache = Arc::new(cache::<ChatHistory>(HOUR, 1 << 20, freshness));
    let store = Arc::new(Store::default());
    let finished: Arc<Mutex<HashMap<String, Vec<u64>>>> = Arc::default();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let mut tasks = Vec::new();
    for task in 0..16u64 {
        let (cache, store, finished, next) =
            (cache.clone(), store.clone(), finished.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(seed * 100 + task);
            for _ in 0..150 {
                let key = format!("s{}", rng.u8(0..4));
                if rng.u8(0..4) == 0 {
                    let value = next.fetch_add(1, Ordering::SeqCst);
                    store.append(&key, value);
                    tokio::time::sleep(Duration::from_micros(rng.u64(0..200))).await;
                    if global {
                        cache.invalidate_all();
                    } else {
                        cache.invalidate(&key).await;
                    }
                    finished.lock().unwrap().entry(key).or_default().push(value);
                } else {
                    let must_see = finished
                        .lock()
                        .unwrap()
                        .get(&key)
                        .cloned()
                        .unwrap_or_default();
                    let store = store.clone();
                    let (history, _) = cache.get_or_load(&key, || store.read(&key)).await.unwrap();
                    for value in must_see {
                        assert!(
                            history.contains(&value.to_string()),
                            "seed {seed}: read of {key} misses finished write {value}"
                        );
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert!(
        cache.metrics().hits.get() > 0,
        "the cache was exercised, not bypassed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_finished_write_is_never_hidden_by_a_per_key_cache() {
    for seed in 0..8 {
        run_freshness(seed, false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_finished_write_is_never_hidden_by_a_globally_invalidated_cache() {
    for seed in 0..8 {
        run_freshness(seed, true).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shrinking_and_growing_the_pool_takes_effect() {
    let mut config = Config::from_args(["x"]).unwrap().config;
    config.cache.memory_budget = 1 << 20;
    let manager = CacheManager::<Embedding>::new(
        &config.cache,
        CacheFamilies::register(&mut Registry::default()),
    );
    let fill = |prefix: &'static str| {
        let manager = &manager;
        async move {
            for k in 0..2000 {
                manager
                    .embeddings
                    .get_or_load(&format!("{prefix}{k}"), || async {
                        Ok::<_, Fail>(vector(64))
                    })
                    .await
                    .unwrap();
            }
        }
    };
    fill("t").await;
    let before = manager.maintain().await;
    assert!(
        before > 256 * 1024,
        "the embeddings cache is well filled: {before}"
    );

    manager.resize(128 * 1024).await;
    let used = manager.maintain().await;
    assert!(used <= 128 * 1024, "after a shrink, used {used} > budget");
    assert_eq!(manager.budget(), 128 * 1024);
    assert_eq!(manager.embeddings.capacity(), 64 * 1024);
    assert!(manager.embeddings.metrics().evictions(EvictionCause::Size) > 0);
    assert!(used > 0, "a shrink keeps what fits");

    manager.resize(manager.configured_budget()).await;
    fill("u").await;
    let regrown = manager.maintain().await;
    assert!(
        regrown > 128 * 1024,
        "after a grow the caches use the room: {regrown}"
    );
    assert!(regrown <= 1 << 20);
}

#[tokio::test]
async fn a_resize_keeps_entry_deadlines() {
    let cache = cache::<Embedding>(Duration::from_millis(300), 1 << 20, Freshness::Immutable);
    cache
        .get_or_load("k", || async { Ok::<_, Fail>(vector(4)) })
        .await
        .unwrap();
    cache.set_capacity(1 << 19).await;
    assert_eq!(
        cache
            .get_or_load("k", || async { Ok::<_, Fail>(vector(4)) })
            .await
            .unwrap()
            .1,
        Lookup::Hit
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        cache
            .get_or_load("k", || async { Ok::<_, Fail>(vector(4)) })
            .await
            .unwrap()
            .1,
        Lookup::Miss,
        "the migrated entry kept its original deadline"
    );
}

#[tokio::test]
async fn health_stats_agree_with_the_exported_metrics() {
    let config = Config::from_args(["x"]).unwrap().config;
    let mut registry = Registry::default();
    let manager =
        CacheManager::<Embedding>::new(&config.cache, CacheFamilies::register(&mut registry));
    for k in ["a", "b", "a", "a", "c"] {
        manager
            .chat_history
            .get_or_load(k, || async {
                Ok::<_, Fail>(Arc::from(vec!["x".to_owned()]))
            })
            .await
            .unwrap();
        manager
            .embeddings
            .get_or_load(k, || async { Ok::<_, Fail>(vector(2)) })
            .await
            .unwrap();
    }
    manager.maintain().await;
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{series} missing in {text}"))
    };
    let sum = |name: &str| -> f64 {
        CacheName::ALL
            .iter()
            .map(|c| value(&format!("{name}{{cache=\"{}\"}} ", c.as_str())))
            .sum()
    };
    let stats = manager.stats();
    assert_eq!(stats.total_hits as f64, sum("cache_hits_total"));
    assert_eq!(
        (stats.total_hits + stats.total_misses) as f64,
        sum("cache_requests_total")
    );
    assert_eq!(stats.cache_size as f64, sum("cache_entries"));
    assert_eq!((stats.total_hits, stats.total_misses), (4, 6));
    assert_eq!(stats.hit_rate, "40.0%");
    let used = value("memory_pool_used_bytes ");
    assert!((stats.memory_usage_mb - used / (1024.0 * 1024.0)).abs() < 1e-9);
    let _ = Counter::<u64>::default();
}

// ---------------------------------------------------------------- semantic

#[derive(Debug, Clone, PartialEq)]
enum SemanticFail {
    Mismatch(DimensionMismatch),
}

impl From<DimensionMismatch> for SemanticFail {
    fn from(err: DimensionMismatch) -> Self {
        Self::Mismatch(err)
    }
}

fn semantic_cache(threshold: f32) -> InstrumentedCache<Embedding> {
    let families = families();
    InstrumentedCache::new(
        CacheName::Similarity,
        HOUR,
        1 << 20,
        Freshness::global(),
        families.for_cache(CacheName::Similarity),
    )
    .with_semantic(Semantic {
        index: SemanticIndex::new(100),
        threshold,
        metrics: families.semantic(CacheName::Similarity),
    })
}

async fn near(
    cache: &InstrumentedCache<Embedding>,
    key: &str,
    embedding: &[f32],
) -> Result<(Embedding, Lookup), SemanticFail> {
    let value: Embedding = Arc::from(
        key.as_bytes()
            .iter()
            .map(|b| f32::from(*b))
            .collect::<Vec<_>>(),
    );
    cache
        .get_or_load_near(key, embedding, || {
            let value = value.clone();
            async move { Ok(value) }
        })
        .await
}

#[tokio::test]
async fn a_near_query_within_the_threshold_is_a_semantic_hit_counted_as_a_hit() {
    let cache = semantic_cache(0.1);
    let (first, lookup) = near(&cache, "how do I reset my password", &[1.0, 0.0])
        .await
        .unwrap();
    assert_eq!(lookup, Lookup::Miss);
    // cos = 0.995: distance 0.005.
    let (answer, lookup) = near(&cache, "how to reset my password", &[1.0, 0.1])
        .await
        .unwrap();
    assert_eq!(lookup, Lookup::SemanticHit);
    assert_eq!(answer, first, "the neighbour's value answers");
    let (_, lookup) = near(&cache, "how do I reset my password", &[1.0, 0.0])
        .await
        .unwrap();
    assert_eq!(lookup, Lookup::Hit, "the exact key comes first");
    // Orthogonal: distance 1, a miss, loaded and indexed.
    let (_, lookup) = near(&cache, "what is the weather", &[0.0, 1.0])
        .await
        .unwrap();
    assert_eq!(lookup, Lookup::Miss);
    let metrics = cache.metrics();
    assert_eq!((metrics.requests.get(), metrics.hits.get()), (4, 2));
    let semantic = cache.semantic().unwrap();
    assert_eq!(semantic.metrics.hits.get(), 1);
    // Distances observed for the two lookups the exact key did not answer
    // and that had a neighbour: 0.005 and 1.
    let mut text = String::new();
    let mut registry = Registry::default();
    registry.register("d", "d", semantic.metrics.distance.clone());
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("d_count 2"), "{text}");
}

#[tokio::test]
async fn a_threshold_of_zero_matches_identical_directions_only() {
    let cache = semantic_cache(0.0);
    near(&cache, "a", &[1.0, 0.0]).await.unwrap();
    assert_eq!(
        near(&cache, "b", &[1.0, 0.01]).await.unwrap().1,
        Lookup::Miss
    );
    assert_eq!(
        near(&cache, "c", &[2.0, 0.0]).await.unwrap().1,
        Lookup::SemanticHit
    );
}

#[tokio::test]
async fn a_write_empties_the_semantic_side_too() {
    let cache = semantic_cache(0.5);
    near(&cache, "a", &[1.0, 0.0]).await.unwrap();
    cache.invalidate_all();
    assert_eq!(
        near(&cache, "b", &[1.0, 0.0]).await.unwrap().1,
        Lookup::Miss
    );
    assert_eq!(cache.semantic().unwrap().metrics.hits.get(), 0);
}

#[tokio::test]
async fn an_evicted_neighbour_is_forgotten_not_served() {
    let cache = semantic_cache(0.5);
    near(&cache, "a", &[1.0, 0.0]).await.unwrap();
    // Gone from moka behind the index's back (as an eviction would be).
    cache.invalidate("a").await;
    assert_eq!(
        near(&cache, "b", &[1.0, 0.0]).await.unwrap().1,
        Lookup::Miss
    );
    assert_eq!(
        near(&cache, "c", &[1.0, 0.0]).await.unwrap().1,
        Lookup::SemanticHit,
        "b was indexed"
    );
}

#[tokio::test]
async fn a_query_of_another_dimension_fails_that_lookup_only() {
    let cache = semantic_cache(0.5);
    near(&cache, "a", &[1.0, 0.0]).await.unwrap();
    let err = near(&cache, "b", &[1.0, 0.0, 0.0]).await.unwrap_err();
    assert_eq!(
        err,
        SemanticFail::Mismatch(DimensionMismatch { got: 3, cached: 2 })
    );
    assert_eq!(
        near(&cache, "c", &[1.0, 0.0, 0.0]).await.unwrap().1,
        Lookup::Miss
    );
    assert_eq!(
        near(&cache, "d", &[1.0, 0.0, 0.0]).await.unwrap().1,
        Lookup::SemanticHit
    );
}

#[tokio::test]
async fn without_semantic_mode_a_near_lookup_is_an_exact_one() {
    let cache = cache::<Embedding>(HOUR, 1 << 20, Freshness::global());
    let load = || async { Ok::<_, SemanticFail>(vector(2)) };
    assert_eq!(
        cache
            .get_or_load_near("a", &[1.0, 0.0], load)
            .await
            .unwrap()
            .1,
        Lookup::Miss
    );
    assert_eq!(
        cache
            .get_or_load_near("b", &[1.0, 0.0], load)
            .await
            .unwrap()
            .1,
        Lookup::Miss
    );
}

#[test]
fn a_verification_is_same_only_for_the_same_id_set() {
    let metrics = families().semantic(CacheName::Similarity);
    let ids = |s: &[&str]| s.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    metrics.verified(&ids(&["a", "b", "c"]), &ids(&["c", "a", "b"]), 3);
    metrics.verified(&ids(&["a", "b", "c"]), &ids(&["a", "b", "d"]), 3);
    metrics.verified(&ids(&["a", "b"]), &ids(&["a", "b", "c"]), 3);
    assert_eq!(metrics.verifications(), (1, 2));
}

#[test]
fn overlap_is_out_of_k_or_the_longer_answer_and_empty_answers_agree() {
    let families = families();
    let metrics = families.semantic(CacheName::Similarity);
    let ids = |s: &[&str]| s.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    metrics.verified(&[], &[], 5);
    metrics.verified(&ids(&["a", "b"]), &ids(&["a", "c"]), 5);
    let mut registry = Registry::default();
    registry.register("o", "o", metrics.overlap.clone());
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    // 1.0 (both empty) + 0.5 (one of two in common).
    assert!(text.contains("o_sum 1.5"), "{text}");
    assert_eq!(metrics.verifications(), (1, 1));
}

#[tokio::test]
async fn with_caching_off_the_semantic_index_stays_empty() {
    let families = families();
    let cache: InstrumentedCache<Embedding> = InstrumentedCache::new(
        CacheName::Similarity,
        HOUR,
        0,
        Freshness::global(),
        families.for_cache(CacheName::Similarity),
    )
    .with_semantic(Semantic {
        index: SemanticIndex::new(100),
        threshold: 0.5,
        metrics: families.semantic(CacheName::Similarity),
    });
    for key in ["a", "b", "c"] {
        assert_eq!(
            near(&cache, key, &[1.0, 0.0]).await.unwrap().1,
            Lookup::Miss
        );
    }
    assert_eq!(cache.semantic().unwrap().index.len(), 0);
}
