//! What a cache entry really costs on the heap, against what the cache
//! accounts for it (`llmcache_memory_pool_used_bytes`): a counting allocator
//! measures the heap while a chat-history cache, built as the daemon builds
//! it, fills to its capacity with entries of about 100 B and about 10 KB.
//!
//! cargo bench --features bench --bench memory

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};

use std::sync::Arc;

use llm_cache_exporter::bench::{BenchCache, BenchChatCache};

/// Bytes glibc's malloc takes for a request of `size`: the request plus an
/// 8-byte header, rounded up to 16, at least 32.
fn chunk(size: usize) -> i64 {
    (((size + 8 + 15) & !15).max(32)) as i64
}

/// Counts live heap bytes as glibc's chunks.
struct Counting;

static HEAP: AtomicI64 = AtomicI64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HEAP.fetch_add(chunk(layout.size()), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        HEAP.fetch_add(chunk(layout.size()), Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HEAP.fetch_sub(chunk(layout.size()), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        HEAP.fetch_add(chunk(new_size) - chunk(layout.size()), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const CAPACITY: u64 = 32 << 20;

/// A history of `entries` chat entries of `len` bytes each.
fn history(entries: usize, len: usize, seed: usize) -> Vec<String> {
    (0..entries)
        .map(|i| {
            // As Redis replies arrive: exactly as long as they are.
            let mut entry = format!("{:0>len$}", seed * 1000 + i, len = len);
            entry.shrink_to_fit();
            entry
        })
        .collect()
}

/// Builds the cache to fill.
type MakeCache = fn() -> Cache;

/// A cache as the daemon builds it, and what to fill it with.
enum Cache {
    /// Chat histories of `entries` entries of `len` bytes.
    Chat(BenchChatCache, usize, usize),
    /// 256-dimension embeddings.
    Embeddings(BenchCache),
}

impl Cache {
    async fn insert(&self, n: usize) {
        match self {
            Self::Chat(cache, entries, len) => {
                let key = format!("llmcache:probe:chat:{{{n}}}");
                cache.insert(&key, history(*entries, *len, n)).await;
            }
            Self::Embeddings(cache) => {
                let vector: Arc<[f32]> = (0..256).map(|i| (n + i) as f32).collect();
                let key = format!("what is the capital of country number {n}");
                cache.get_or_load(&key, &vector).await;
            }
        }
    }

    async fn accounted(&self) -> u64 {
        match self {
            Self::Chat(cache, ..) => cache.accounted().await,
            Self::Embeddings(cache) => cache.accounted().await,
        }
    }

    fn entries(&self) -> u64 {
        match self {
            Self::Chat(cache, ..) => cache.entries(),
            Self::Embeddings(cache) => cache.entries(),
        }
    }
}

/// Fills `cache` until it holds its capacity (accounted within 1 %) or
/// starts evicting; returns entries held, bytes accounted, heap growth.
fn fill(cache: impl FnOnce() -> Cache) -> (u64, f64, f64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let cache = cache();
        let before = HEAP.load(Ordering::Relaxed);
        let mut n = 0;
        loop {
            for _ in 0..1000 {
                cache.insert(n).await;
                n += 1;
            }
            let accounted = cache.accounted().await;
            if accounted * 100 >= CAPACITY * 99 || cache.entries() < n as u64 {
                break;
            }
        }
        let accounted = cache.accounted().await as f64;
        let heap = (HEAP.load(Ordering::Relaxed) - before) as f64;
        (cache.entries(), accounted, heap)
    })
}

fn main() {
    println!(
        "A cache filled to {} MiB: heap growth (glibc chunks) vs the bytes it accounts for",
        CAPACITY >> 20
    );
    println!("  entry                        entries   accounted MiB   heap MiB   accounted/heap   heap B/entry");
    let rows: [(&str, MakeCache); 3] = [
        ("chat history ~100 B", || {
            Cache::Chat(BenchChatCache::new(CAPACITY), 1, 100)
        }),
        ("chat history ~10 KB", || {
            Cache::Chat(BenchChatCache::new(CAPACITY), 50, 200)
        }),
        ("embedding 256 x f32", || {
            Cache::Embeddings(BenchCache::new(CAPACITY))
        }),
    ];
    for (name, cache) in rows {
        let (held, accounted, heap) = fill(cache);
        println!(
            "  {name:<26} {held:>9}   {:>13.2}   {:>8.2}   {:>14.2}   {:>12.0}",
            accounted / 1048576.0,
            heap / 1048576.0,
            accounted / heap,
            heap / held as f64,
        );
    }
}
