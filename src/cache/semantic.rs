//! The semantic side of the similarity cache: the embeddings of the cached
//! queries, and a linear scan for the one nearest a new query.
//!
//! A scan is exact and needs no index maintenance, which matters here: every
//! memory write empties the similarity cache, so an ANN index would be
//! rebuilt constantly. Rows are stored unit length, contiguously, so the scan
//! is one dot product per row over one slice; `cargo bench --bench semantic`
//! measures it at 10,000 cached queries of 256 dimensions.
//!
//! A scan of a full index takes a few milliseconds. It must not hold a lock
//! that long: a writer (a miss filling the cache, an invalidation) would wait
//! on the worker thread for it. So the rows live in chunks behind `Arc`s; a
//! scan holds the lock only to clone the chunk list, and scans outside it. A
//! writer that changes a chunk a scan still reads copies that chunk alone
//! (`Arc::make_mut`, 256 rows).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// A query embedding whose dimension differs from the cached ones': the
/// embedder changed under the cache.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("query embedding has {got} dimensions, the cached ones {cached}")]
pub(crate) struct DimensionMismatch {
    pub(crate) got: usize,
    pub(crate) cached: usize,
}

/// The cached queries' embeddings, at most `cap` of them.
#[derive(Debug)]
pub(crate) struct SemanticIndex {
    cap: usize,
    rows: RwLock<Rows>,
}

/// Rows per chunk: what a writer copies when a scan holds its chunk.
const CHUNK_ROWS: usize = 256;

/// A run of rows: their keys, and their vectors end to end.
#[derive(Debug, Clone, Default)]
struct Chunk {
    keys: Vec<String>,
    vectors: Vec<f32>,
}

#[derive(Debug, Default)]
struct Rows {
    /// 0 until the first row.
    dims: usize,
    len: usize,
    /// Row `r` is row `r % CHUNK_ROWS` of chunk `r / CHUNK_ROWS`; every
    /// chunk but the last is full.
    chunks: Vec<Arc<Chunk>>,
    position: HashMap<String, usize>,
}

impl Rows {
    fn key(&self, row: usize) -> &str {
        &self.chunks[row / CHUNK_ROWS].keys[row % CHUNK_ROWS]
    }

    fn vector(&self, row: usize) -> &[f32] {
        let at = (row % CHUNK_ROWS) * self.dims;
        &self.chunks[row / CHUNK_ROWS].vectors[at..at + self.dims]
    }

    /// Overwrites row `row` (copying its chunk if a scan holds it).
    fn set(&mut self, row: usize, key: Option<String>, vector: &[f32]) {
        let (at, dims) = ((row % CHUNK_ROWS) * self.dims, self.dims);
        let chunk = Arc::make_mut(&mut self.chunks[row / CHUNK_ROWS]);
        chunk.vectors[at..at + dims].copy_from_slice(vector);
        if let Some(key) = key {
            chunk.keys[row % CHUNK_ROWS] = key;
        }
    }

    fn push(&mut self, key: &str, vector: &[f32]) {
        if self.len % CHUNK_ROWS == 0 {
            self.chunks.push(Arc::new(Chunk {
                keys: Vec::with_capacity(CHUNK_ROWS),
                vectors: Vec::with_capacity(CHUNK_ROWS * self.dims),
            }));
        }
        let chunk = Arc::make_mut(self.chunks.last_mut().expect("a chunk was just ensured"));
        chunk.keys.push(key.to_owned());
        chunk.vectors.extend_from_slice(vector);
        self.position.insert(key.to_owned(), self.len);
        self.len += 1;
    }

    fn remove_at(&mut self, row: usize) {
        let last = self.len - 1;
        let key = self.key(row).to_owned();
        self.position.remove(&key);
        if row != last {
            let (moved, vector) = (self.key(last).to_owned(), self.vector(last).to_vec());
            self.position.insert(moved.clone(), row);
            self.set(row, Some(moved), &vector);
        }
        let chunk = Arc::make_mut(self.chunks.last_mut().expect("a row is held"));
        chunk.keys.pop();
        chunk.vectors.truncate(chunk.keys.len() * self.dims);
        if chunk.keys.is_empty() {
            self.chunks.pop();
        }
        self.len = last;
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// The unit vector along `v`, or `None` for a zero (or non-finite) vector.
fn unit(v: &[f32]) -> Option<Vec<f32>> {
    let norm = dot(v, v).sqrt();
    (norm.is_finite() && norm > 0.0).then(|| v.iter().map(|x| x / norm).collect())
}

/// Eight accumulators, so the compiler can keep them in one SIMD register.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0_f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

impl SemanticIndex {
    /// An empty index holding at most `cap` rows.
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            rows: RwLock::new(Rows::default()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Rows> {
        self.rows
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Rows> {
        self.rows
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cached key nearest `query` and its cosine distance (0 to 2), or
    /// `None` when nothing is cached (or `query` is a zero vector). A query
    /// of another dimension than the cached rows is an error, and empties
    /// the index: the embedder changed, so none of it can match again.
    pub(crate) fn nearest(
        &self,
        query: &[f32],
    ) -> Result<Option<(String, f32)>, DimensionMismatch> {
        // The lock is held only to take the chunks.
        let (dims, chunks) = {
            let rows = self.read();
            (rows.dims, rows.chunks.clone())
        };
        if chunks.is_empty() {
            return Ok(None);
        }
        if query.len() != dims {
            self.clear();
            return Err(DimensionMismatch {
                got: query.len(),
                cached: dims,
            });
        }
        let Some(query) = unit(query) else {
            return Ok(None);
        };
        let mut best: Option<(&str, f32)> = None;
        for chunk in &chunks {
            for (key, vector) in chunk.keys.iter().zip(chunk.vectors.chunks_exact(dims)) {
                let similarity = dot(&query, vector);
                if best.is_none_or(|(_, b)| similarity > b) {
                    best = Some((key, similarity));
                }
            }
        }
        Ok(best.map(|(key, similarity)| (key.to_owned(), (1.0 - similarity).clamp(0.0, 2.0))))
    }

    /// Remembers `key`'s embedding (replacing an earlier one). A full index
    /// drops its oldest-inserted row still present; an embedding of a new
    /// dimension starts the index over.
    pub(crate) fn insert(&self, key: &str, embedding: &[f32]) {
        let Some(vector) = unit(embedding) else {
            return;
        };
        let mut rows = self.write();
        if rows.dims != vector.len() {
            rows.clear();
            rows.dims = vector.len();
        }
        if let Some(&row) = rows.position.get(key) {
            rows.set(row, None, &vector);
            return;
        }
        if rows.len >= self.cap {
            // Row 0 is the oldest but for the rows moved into it by removals.
            rows.remove_at(0);
        }
        rows.push(key, &vector);
    }

    /// Forgets `key` (its cache entry is gone).
    pub(crate) fn remove(&self, key: &str) {
        let mut rows = self.write();
        if let Some(row) = rows.position.get(key).copied() {
            rows.remove_at(row);
        }
    }

    /// Forgets everything (the cache was emptied).
    pub(crate) fn clear(&self) {
        self.write().clear();
    }

    /// Rows held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.read().len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_index_has_no_nearest() {
        let index = SemanticIndex::new(10);
        assert_eq!(index.nearest(&[1.0, 0.0]), Ok(None));
    }

    #[test]
    fn the_nearest_by_cosine_distance_whatever_the_length() {
        let index = SemanticIndex::new(10);
        index.insert("east", &[10.0, 0.0]);
        index.insert("north", &[0.0, 1.0]);
        index.insert("west", &[-1.0, 0.0]);
        let (key, distance) = index.nearest(&[2.0, 0.2]).unwrap().unwrap();
        assert_eq!(key, "east");
        assert!((distance - (1.0 - 2.0 / 4.04_f32.sqrt())).abs() < 1e-6);
        let (key, distance) = index.nearest(&[-3.0, 0.0]).unwrap().unwrap();
        assert_eq!((key.as_str(), distance), ("west", 0.0));
    }

    #[test]
    fn exact_ties_go_to_the_first_row() {
        let index = SemanticIndex::new(10);
        index.insert("a", &[1.0, 1.0]);
        index.insert("b", &[2.0, 2.0]);
        assert_eq!(index.nearest(&[1.0, 1.0]).unwrap().unwrap().0, "a");
    }

    #[test]
    fn a_zero_query_matches_nothing() {
        let index = SemanticIndex::new(10);
        index.insert("a", &[1.0, 0.0]);
        assert_eq!(index.nearest(&[0.0, 0.0]), Ok(None));
        index.insert("zero", &[0.0, 0.0]);
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn a_dimension_mismatch_is_an_error_and_starts_over() {
        let index = SemanticIndex::new(10);
        index.insert("a", &[1.0, 0.0]);
        assert_eq!(
            index.nearest(&[1.0, 0.0, 0.0]),
            Err(DimensionMismatch { got: 3, cached: 2 })
        );
        assert_eq!(index.len(), 0);
        index.insert("b", &[1.0, 0.0, 0.0]);
        assert_eq!(index.nearest(&[1.0, 0.0, 0.0]).unwrap().unwrap().0, "b");
    }

    #[test]
    fn removal_keeps_the_other_rows_findable() {
        let index = SemanticIndex::new(10);
        for (i, key) in ["a", "b", "c", "d"].iter().enumerate() {
            let mut v = vec![0.0; 4];
            v[i] = 1.0;
            index.insert(key, &v);
        }
        index.remove("a");
        index.remove("zzz");
        assert_eq!(index.len(), 3);
        for (i, key) in ["a", "b", "c", "d"].iter().enumerate().skip(1) {
            let mut v = vec![0.0; 4];
            v[i] = 1.0;
            assert_eq!(index.nearest(&v).unwrap().unwrap(), (key.to_string(), 0.0));
        }
        index.clear();
        assert_eq!(index.nearest(&[1.0, 0.0, 0.0, 0.0]), Ok(None));
    }

    #[test]
    fn a_full_index_drops_a_row_and_reinserting_replaces() {
        let index = SemanticIndex::new(2);
        index.insert("a", &[1.0, 0.0]);
        index.insert("b", &[0.0, 1.0]);
        index.insert("b", &[0.0, -1.0]);
        assert_eq!(index.len(), 2);
        assert_eq!(index.nearest(&[0.0, -1.0]).unwrap().unwrap().0, "b");
        index.insert("c", &[-1.0, 0.0]);
        assert_eq!(index.len(), 2);
        assert_eq!(index.nearest(&[-1.0, 0.0]).unwrap().unwrap().0, "c");
        // "a", the oldest, went: the nearest to it is now "b", at 90 degrees.
        assert_eq!(
            index.nearest(&[1.0, 0.0]).unwrap().unwrap(),
            ("b".to_owned(), 1.0)
        );
    }

    #[test]
    fn rows_across_chunks_stay_findable_through_removals_and_a_held_scan() {
        let index = SemanticIndex::new(1000);
        let one_hot = |i: usize| {
            let mut v = vec![0.0; 700];
            v[i] = 1.0;
            v
        };
        for i in 0..700 {
            index.insert(&i.to_string(), &one_hot(i));
        }
        // A scan's snapshot, held while writers change the chunks.
        let held = index.read().chunks.clone();
        for i in (0..700).step_by(3) {
            index.remove(&i.to_string());
        }
        index.insert("new", &one_hot(0));
        assert_eq!(held.iter().map(|c| c.keys.len()).sum::<usize>(), 700);
        assert_eq!(index.len(), 700 - 234 + 1);
        for i in 0..700 {
            let (key, distance) = index.nearest(&one_hot(i)).unwrap().unwrap();
            if i == 0 {
                assert_eq!((key.as_str(), distance), ("new", 0.0));
            } else if i % 3 == 0 {
                assert!(distance > 0.5, "{i} was removed, found {key}");
            } else {
                assert_eq!((key, distance), (i.to_string(), 0.0));
            }
        }
    }

    #[test]
    fn the_dot_product_handles_a_ragged_tail() {
        let a: Vec<f32> = (0..19).map(|i| i as f32).collect();
        let expected: f32 = a.iter().map(|x| x * x).sum();
        assert_eq!(dot(&a, &a), expected);
    }
}
