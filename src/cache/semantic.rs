//! The semantic side of the similarity cache: the embeddings of the cached
//! queries, and a linear scan for the one nearest a new query.
//!
//! A scan is exact and needs no index maintenance, which matters here: every
//! memory write empties the similarity cache, so an ANN index would be
//! rebuilt constantly. Rows are stored unit length, contiguously, so the scan
//! is one dot product per row over one slice; `cargo bench --bench semantic`
//! measures it at 10,000 cached queries of 256 dimensions.

use std::collections::HashMap;
use std::sync::RwLock;

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

#[derive(Debug, Default)]
struct Rows {
    /// 0 until the first row.
    dims: usize,
    keys: Vec<String>,
    /// `keys.len() × dims` values, each row of unit length.
    vectors: Vec<f32>,
    position: HashMap<String, usize>,
}

impl Rows {
    fn remove_at(&mut self, row: usize) {
        let last = self.keys.len() - 1;
        let key = self.keys.swap_remove(row);
        self.position.remove(&key);
        if row != last {
            let (dims, moved) = (self.dims, &self.keys[row]);
            self.vectors
                .copy_within(last * dims..(last + 1) * dims, row * dims);
            self.position.insert(moved.clone(), row);
        }
        self.vectors.truncate(last * self.dims);
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
        let rows = self.read();
        if rows.keys.is_empty() {
            return Ok(None);
        }
        if query.len() != rows.dims {
            let err = DimensionMismatch {
                got: query.len(),
                cached: rows.dims,
            };
            drop(rows);
            self.clear();
            return Err(err);
        }
        let Some(query) = unit(query) else {
            return Ok(None);
        };
        let mut best = (0, f32::NEG_INFINITY);
        for (row, vector) in rows.vectors.chunks_exact(rows.dims).enumerate() {
            let similarity = dot(&query, vector);
            if similarity > best.1 {
                best = (row, similarity);
            }
        }
        let distance = (1.0 - best.1).clamp(0.0, 2.0);
        Ok(Some((rows.keys[best.0].clone(), distance)))
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
            let dims = rows.dims;
            rows.vectors[row * dims..(row + 1) * dims].copy_from_slice(&vector);
            return;
        }
        if rows.keys.len() >= self.cap {
            // Row 0 is the oldest but for the rows moved into it by removals.
            rows.remove_at(0);
        }
        let row = rows.keys.len();
        rows.keys.push(key.to_owned());
        rows.vectors.extend_from_slice(&vector);
        rows.position.insert(key.to_owned(), row);
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
        self.read().keys.len()
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
    fn the_dot_product_handles_a_ragged_tail() {
        let a: Vec<f32> = (0..19).map(|i| i as f32).collect();
        let expected: f32 = a.iter().map(|x| x * x).sum();
        assert_eq!(dot(&a, &a), expected);
    }
}
