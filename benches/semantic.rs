//! The semantic cache's nearest-neighbour search at its largest: 10,000
//! cached queries of 256 dimensions. Prints p50/p99/max per lookup, beside a
//! plain one-accumulator scan of the same rows measured in the same run.
//! Then what a writer (a miss filling the cache, an invalidation) waits
//! while scans run on another thread, beside the same writes with no scan.
//!
//! cargo bench --features bench --bench semantic

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use llm_cache_exporter::bench::BenchSemanticIndex;

const ROWS: usize = 10_000;
const DIMS: usize = 256;
const LOOKUPS: usize = 2_000;

fn random_unit(rng: &mut fastrand::Rng) -> Vec<f32> {
    let v: Vec<f32> = (0..DIMS).map(|_| rng.f32() * 2.0 - 1.0).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(name: &str, mut times: Vec<Duration>) -> Duration {
    times.sort_unstable();
    let p99 = percentile(&times, 0.99);
    println!(
        "  {name:<34} p50 {:>7.1} µs   p99 {:>7.1} µs   max {:>7.1} µs",
        percentile(&times, 0.5).as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        times[times.len() - 1].as_secs_f64() * 1e6,
    );
    p99
}

fn main() {
    let mut rng = fastrand::Rng::with_seed(7);
    let rows: Vec<Vec<f32>> = (0..ROWS).map(|_| random_unit(&mut rng)).collect();
    let index = Arc::new(BenchSemanticIndex::new(ROWS));
    for (i, row) in rows.iter().enumerate() {
        index.insert(&format!("query {i}"), row);
    }
    let queries: Vec<Vec<f32>> = (0..LOOKUPS).map(|_| random_unit(&mut rng)).collect();
    let flat: Vec<f32> = rows.concat();

    // Warm up both, then measure one lookup at a time.
    for q in queries.iter().take(100) {
        black_box(index.nearest(q));
    }
    let ours: Vec<Duration> = queries
        .iter()
        .map(|q| {
            let started = Instant::now();
            black_box(index.nearest(black_box(q)));
            started.elapsed()
        })
        .collect();
    let naive: Vec<Duration> = queries
        .iter()
        .map(|q| {
            let started = Instant::now();
            let best = flat
                .chunks_exact(DIMS)
                .map(|row| row.iter().zip(q).map(|(a, b)| a * b).sum::<f32>())
                .fold(f32::NEG_INFINITY, f32::max);
            black_box(best);
            started.elapsed()
        })
        .collect();
    println!("Nearest cached query, {ROWS} rows x {DIMS} dimensions, {LOOKUPS} lookups:");
    let scan = report("SemanticIndex::nearest", ours);
    let baseline = report("one-accumulator scan (baseline)", naive);
    println!(
        "  p99 ratio to the baseline: {:.2}x; p99 {:.3} ms (target <= 1 ms)",
        scan.as_secs_f64() / baseline.as_secs_f64(),
        scan.as_secs_f64() * 1e3
    );

    // Writers against scans: a thread scans without pause while this one
    // replaces rows (remove, then insert), one at a time.
    let writes = |index: &BenchSemanticIndex, rng: &mut fastrand::Rng| -> Vec<Duration> {
        (0..LOOKUPS)
            .map(|_| {
                let key = format!("query {}", rng.usize(..ROWS));
                let row = random_unit(rng);
                let started = Instant::now();
                index.remove(&key);
                index.insert(&key, &row);
                started.elapsed()
            })
            .collect()
    };
    let alone = writes(&index, &mut rng);
    let scanning = Arc::new(AtomicBool::new(true));
    let scanner = {
        let (index, scanning, query) = (index.clone(), scanning.clone(), queries[0].clone());
        std::thread::spawn(move || {
            let mut scans = 0u64;
            while scanning.load(Ordering::Relaxed) {
                black_box(index.nearest(&query));
                scans += 1;
            }
            scans
        })
    };
    let during = writes(&index, &mut rng);
    scanning.store(false, Ordering::Relaxed);
    let scans = scanner.join().unwrap_or(0);
    println!("A writer's wait, {LOOKUPS} row replacements ({scans} scans ran meanwhile):");
    let baseline = report("with no scan (baseline)", alone);
    let p99 = report("while scans run", during);
    println!(
        "  p99 ratio to the baseline: {:.2}x; p99 {:.1} µs, against {:.1} µs for one scan",
        p99.as_secs_f64() / baseline.as_secs_f64(),
        p99.as_secs_f64() * 1e6,
        scan.as_secs_f64() * 1e6
    );
}
