//! Zipf-distributed ranks by inverse-CDF lookup: rank `k` (0-based) is drawn
//! with probability proportional to `1 / (k + 1)^s`. Exact for any exponent,
//! deterministic given the uniform input, O(log n) per draw.

/// A Zipf distribution over `0..n`.
#[derive(Debug, Clone)]
pub(crate) struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// `n` ranks with exponent `s`. `n` must be at least 1 and `s` positive
    /// (the configuration guarantees both).
    pub(crate) fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n.max(1));
        let mut total = 0.0;
        for k in 1..=n.max(1) {
            total += (k as f64).powf(-s);
            cdf.push(total);
        }
        for p in &mut cdf {
            *p /= total;
        }
        Self { cdf }
    }

    /// The rank for a uniform draw `u` in `[0, 1)`.
    pub(crate) fn rank(&self, u: f64) -> usize {
        self.cdf
            .partition_point(|&p| p <= u)
            .min(self.cdf.len() - 1)
    }

    /// The probability of rank `k`.
    #[cfg(test)]
    pub(crate) fn probability(&self, k: usize) -> f64 {
        match k {
            0 => self.cdf[0],
            k if k < self.cdf.len() => self.cdf[k] - self.cdf[k - 1],
            _ => 0.0,
        }
    }

    /// The probability mass of the `k` most popular ranks.
    #[cfg(test)]
    pub(crate) fn head_mass(&self, k: usize) -> f64 {
        match k {
            0 => 0.0,
            k => self.cdf[k.min(self.cdf.len()) - 1],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_follow_the_power_law() {
        let zipf = Zipf::new(1000, 1.1);
        let ratio = zipf.probability(0) / zipf.probability(1);
        assert!((ratio - 2f64.powf(1.1)).abs() < 1e-9);
        assert!((zipf.head_mass(1000) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn ranks_cover_the_range_and_clamp() {
        let zipf = Zipf::new(10, 1.0);
        assert_eq!(zipf.rank(0.0), 0);
        assert_eq!(zipf.rank(0.999_999_999), 9);
        assert_eq!(zipf.rank(1.0), 9);
        assert_eq!(Zipf::new(1, 2.0).rank(0.7), 0);
    }

    #[test]
    fn sampling_matches_the_distribution() {
        let zipf = Zipf::new(100, 1.1);
        let mut rng = fastrand::Rng::with_seed(7);
        let mut counts = [0u32; 100];
        let draws = 200_000;
        for _ in 0..draws {
            counts[zipf.rank(rng.f64())] += 1;
        }
        for k in [0, 1, 5, 50] {
            let expected = zipf.probability(k) * draws as f64;
            let seen = counts[k] as f64;
            assert!(
                (seen - expected).abs() < 5.0 * expected.sqrt() + 5.0,
                "rank {k}: {seen} vs {expected}"
            );
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_ranks() {
        let zipf = Zipf::new(1000, 1.1);
        let draw = |seed| {
            let mut rng = fastrand::Rng::with_seed(seed);
            (0..100).map(|_| zipf.rank(rng.f64())).collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
    }
}
