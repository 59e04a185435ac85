//! The pressure verdict of one scope: enter at the threshold, leave only once
//! the value is back past it by a margin, and hold each state for a minimum
//! dwell, so a value hovering at the threshold does not flap the cache budget.

use std::time::{Duration, Instant};

/// Which side of the threshold means pressure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Pressure when the value is at or above the threshold (usage ratios, PSI).
    Above,
    /// Pressure when the value is at or below the threshold (available ratio).
    Below,
}

/// When a scope is under pressure.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rule {
    pub(crate) threshold: f64,
    pub(crate) direction: Direction,
    pub(crate) margin: f64,
    pub(crate) min_dwell: Duration,
}

impl Rule {
    fn enters(&self, value: f64) -> bool {
        match self.direction {
            Direction::Above => value >= self.threshold,
            Direction::Below => value <= self.threshold,
        }
    }

    fn leaves(&self, value: f64) -> bool {
        match self.direction {
            Direction::Above => value < self.threshold - self.margin,
            Direction::Below => value > self.threshold + self.margin,
        }
    }
}

/// A scope's current verdict.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Verdict {
    pressured: bool,
    since: Option<Instant>,
}

impl Verdict {
    /// Whether the scope is under pressure.
    pub(crate) fn pressured(&self) -> bool {
        self.pressured
    }

    /// Feeds a sample (`None`: the source is missing, which is never
    /// pressure) and returns the new state if it changed.
    pub(crate) fn update(&mut self, rule: &Rule, value: Option<f64>, now: Instant) -> Option<bool> {
        let next = match (self.pressured, value) {
            (false, Some(v)) => rule.enters(v),
            (true, Some(v)) => !rule.leaves(v),
            (_, None) => false,
        };
        let dwelled = self
            .since
            .is_none_or(|since| now.saturating_duration_since(since) >= rule.min_dwell);
        if next == self.pressured || !dwelled {
            return None;
        }
        self.pressured = next;
        self.since = Some(now);
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABOVE: Rule = Rule {
        threshold: 0.9,
        direction: Direction::Above,
        margin: 0.05,
        min_dwell: Duration::from_secs(10),
    };

    const BELOW: Rule = Rule {
        threshold: 0.1,
        direction: Direction::Below,
        margin: 0.05,
        min_dwell: Duration::ZERO,
    };

    /// (seconds since start, sample, expected state after it)
    fn run(rule: &Rule, steps: &[(u64, Option<f64>, bool)]) {
        let start = Instant::now();
        let mut verdict = Verdict::default();
        for (i, (at, value, expected)) in steps.iter().enumerate() {
            verdict.update(rule, *value, start + Duration::from_secs(*at));
            assert_eq!(
                verdict.pressured(),
                *expected,
                "step {i}: {value:?} at {at}s"
            );
        }
    }

    #[test]
    fn enters_at_the_threshold_and_leaves_only_past_the_margin() {
        run(
            &BELOW,
            &[
                (0, Some(0.5), false),
                (1, Some(0.1), true),   // at the threshold: enter
                (2, Some(0.12), true),  // back above, but within the margin
                (3, Some(0.149), true), // still within
                (4, Some(0.16), false), // past threshold + margin: leave
                (5, Some(0.11), false), // above the threshold: stay out
            ],
        );
    }

    #[test]
    fn the_minimum_dwell_holds_each_state() {
        run(
            &ABOVE,
            &[
                (0, Some(0.95), true),   // first transition is immediate
                (3, Some(0.10), true),   // relaxed, but only 3 s in
                (9, Some(0.10), true),   // 9 s
                (10, Some(0.10), false), // 10 s: leave
                (12, Some(0.99), false), // 2 s after leaving: hold
                (20, Some(0.99), true),
            ],
        );
    }

    #[test]
    fn a_missing_source_is_never_pressure() {
        run(
            &BELOW,
            &[
                (0, None, false),
                (1, Some(0.05), true),
                (2, None, false),
                (3, None, false),
            ],
        );
    }

    #[test]
    fn transitions_are_reported_once() {
        let now = Instant::now();
        let mut verdict = Verdict::default();
        assert_eq!(verdict.update(&BELOW, Some(0.05), now), Some(true));
        assert_eq!(verdict.update(&BELOW, Some(0.04), now), None);
        assert_eq!(verdict.update(&BELOW, Some(0.5), now), Some(false));
    }
}
