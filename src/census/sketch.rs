//! A group's distribution of lengths or TTLs, in memory bounded by the
//! sketch, not by the keys: a DDSketch (the `sketches-ddsketch` crate) at
//! [`RELATIVE_ERROR`], so a pass over 100M keys keeps at most 32 KiB per
//! distribution where it kept every value. The count and the maximum are
//! exact; a quantile is the nearest-rank value within the relative error,
//! and a whole-number one ([`Distribution::whole_quantiles`], for lengths)
//! is rounded, which makes it exact below 100 and within 1 % above.

use sketches_ddsketch::{Config, DDSketch};

/// A reported quantile lies within this fraction of the exact nearest-rank
/// value.
pub(crate) const RELATIVE_ERROR: f64 = 0.005;

/// Bins at most (8 bytes each): at 0.5 % a bin per 1 % of value, 4,096
/// cover a range of 10^17, far past any length or TTL.
const MAX_BINS: u32 = 4096;

/// The quantiles the census reports, with their label spellings.
pub(crate) const QUANTILES: [(f64, &str); 3] = [(0.5, "0.5"), (0.99, "0.99"), (1.0, "1")];

/// Values seen in a pass.
#[derive(Clone)]
pub(crate) struct Distribution(DDSketch);

impl Default for Distribution {
    fn default() -> Self {
        Self(DDSketch::new(Config::new(RELATIVE_ERROR, MAX_BINS, 1e-9)))
    }
}

impl std::fmt::Debug for Distribution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Distribution({} values)", self.0.count())
    }
}

impl Distribution {
    pub(crate) fn add(&mut self, value: f64) {
        self.0.add(value);
    }

    pub(crate) fn count(&self) -> u64 {
        self.0.count() as u64
    }

    /// The `q` quantile by nearest rank (the value at rank `ceil(q n)`),
    /// within [`RELATIVE_ERROR`]; the maximum exactly. `None` when empty.
    pub(crate) fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        if q >= 1.0 {
            return self.0.max();
        }
        // The sketch ranks at `q' (n - 1)` (from 0): ask for the q' whose
        // rank is the nearest rank's.
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n) - 1;
        let asked = if n == 1 {
            0.0
        } else {
            (rank as f64 + 0.5) / (n - 1) as f64
        };
        self.0.quantile(asked.min(1.0)).ok().flatten()
    }

    /// `(label, value)` of each reported quantile; empty when no value was
    /// seen.
    pub(crate) fn quantiles(&self) -> Vec<(&'static str, f64)> {
        QUANTILES
            .iter()
            .filter_map(|(q, label)| Some((*label, self.quantile(*q)?)))
            .collect()
    }

    /// [`Self::quantiles`] of whole numbers, rounded: an error of at most
    /// 0.5 % and half a unit, so exact below 100 and within 1 % above.
    pub(crate) fn whole_quantiles(&self) -> Vec<(&'static str, f64)> {
        let mut quantiles = self.quantiles();
        quantiles.iter_mut().for_each(|(_, v)| *v = v.round());
        quantiles
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact nearest-rank quantile.
    fn exact(values: &mut [f64], q: f64) -> f64 {
        values.sort_by(f64::total_cmp);
        let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
        values[rank - 1]
    }

    #[test]
    fn quantiles_are_within_the_error_of_the_nearest_rank_and_the_max_is_exact() {
        let mut rng = fastrand::Rng::with_seed(7);
        for n in [1usize, 2, 3, 10, 99, 100, 101, 1000, 100_000] {
            let mut values: Vec<f64> = (0..n)
                .map(|_| match rng.u8(..4) {
                    0 => 0.0,
                    1 => rng.u64(1..100) as f64,
                    2 => rng.u64(1..1_000_000) as f64,
                    _ => rng.f64() * 86_400.0,
                })
                .collect();
            let mut sketch = Distribution::default();
            values.iter().for_each(|v| sketch.add(*v));
            assert_eq!(sketch.count(), n as u64);
            for (q, _) in QUANTILES {
                let want = exact(&mut values, q);
                let got = sketch.quantile(q).unwrap();
                if q == 1.0 {
                    assert_eq!(got, want, "the maximum of {n}");
                } else {
                    let error = (got - want).abs();
                    assert!(
                        error <= want * RELATIVE_ERROR + 1e-9,
                        "q{q} of {n}: {got} against {want}"
                    );
                }
            }
        }
        assert!(Distribution::default().quantiles().is_empty());
    }

    #[test]
    fn whole_numbers_are_exact_below_100_and_within_one_percent_above() {
        let mut rng = fastrand::Rng::with_seed(11);
        for n in [1usize, 7, 100, 10_000] {
            let mut values: Vec<f64> = (0..n).map(|_| rng.u64(0..100_000) as f64).collect();
            let mut small: Vec<f64> = (0..n).map(|_| rng.u64(0..100) as f64).collect();
            let (mut big_sketch, mut small_sketch) =
                (Distribution::default(), Distribution::default());
            values.iter().for_each(|v| big_sketch.add(*v));
            small.iter().for_each(|v| small_sketch.add(*v));
            for ((q, _), ((_, big), (_, little))) in QUANTILES.iter().zip(
                big_sketch
                    .whole_quantiles()
                    .into_iter()
                    .zip(small_sketch.whole_quantiles()),
            ) {
                assert_eq!(little, exact(&mut small, *q), "q{q} of {n} small values");
                let want = exact(&mut values, *q);
                assert!(
                    (big - want).abs() <= want * 0.01,
                    "q{q} of {n}: {big} against {want}"
                );
            }
        }
    }

    #[test]
    fn memory_stays_bounded_however_many_values() {
        let mut sketch = Distribution::default();
        for i in 0..2_000_000u64 {
            sketch.add((i % 5_000_000) as f64);
        }
        // The sketch's own size: its bins, not its values.
        assert!(
            sketch.0.length() <= MAX_BINS as usize,
            "{} bins",
            sketch.0.length()
        );
    }
}
