//! The schedule's clock: when each tick is due.
//!
//! Below [`FINE_RATE`] (the default 20/s, and 1,000/s, among them) the ticks
//! come from tokio's interval, which keeps every tick: a tick missed while
//! the worker was busy is released at once, with its own scheduled instant.
//! (A kernel `timerfd` woke the worker less often, but its CPU gain was 1 to
//! 5 % in alternating runs, and tokio 1.54 deprecates the `AsyncFd::new` it
//! needed as unsound.)
//!
//! At [`FINE_RATE`] and above the ticks come instead from a thread of their
//! own that sleeps with the OS's microsecond timer and releases every tick due
//! at most once per [`QUANTUM`], so operations start spread out as scheduled
//! and waking does not cost more than the operations.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use tokio::time::{Interval, MissedTickBehavior};

/// Rates at or above this many ticks per second use the fine clock.
pub(super) const FINE_RATE: f64 = 1500.0;

/// The fine clock wakes at most this often and releases every tick due by
/// then: spread enough that a burst is a handful of operations, coarse enough
/// that waking the scheduler does not cost more than the operations.
const QUANTUM: Duration = Duration::from_micros(200);

/// Ticks buffered between the fine clock's thread and the scheduler; when the
/// scheduler falls this far behind, the thread waits (and its ticks are late,
/// which the scheduler measures).
const BACKLOG: usize = 1024;

/// The source of ticks.
pub(super) enum Pacer {
    Coarse(Interval),
    Fine(mpsc::Receiver<Instant>),
}

impl Pacer {
    /// Ticks at `rate` per second from now until `cancel`.
    pub(super) fn new(rate: f64, cancel: &CancellationToken) -> Self {
        let coarse = || {
            let mut ticks = tokio::time::interval(period(rate));
            ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
            Self::Coarse(ticks)
        };
        if rate < FINE_RATE {
            return coarse();
        }
        let (sender, receiver) = mpsc::channel(BACKLOG);
        let cancel = cancel.clone();
        let spawned = std::thread::Builder::new()
            .name("llmcache-pacer".into())
            .spawn(move || fine_clock(rate, &sender, &cancel));
        if let Err(err) = spawned {
            tracing::warn!(error = %err, "cannot start the pacer thread; ticking from a timer");
            return coarse();
        }
        Self::Fine(receiver)
    }

    /// The next tick's scheduled instant; `None` once the clock has stopped.
    pub(super) async fn tick(&mut self) -> Option<Instant> {
        match self {
            Self::Coarse(ticks) => Some(ticks.tick().await.into_std()),
            Self::Fine(receiver) => receiver.recv().await,
        }
    }
}

fn period(rate: f64) -> Duration {
    Duration::from_secs_f64(1.0 / rate)
}

/// Sends each tick when it is due, every due tick at once after a late wake.
fn fine_clock(rate: f64, sender: &mpsc::Sender<Instant>, cancel: &CancellationToken) {
    let start = Instant::now();
    let due = |k: u64| start + Duration::from_secs_f64(k as f64 / rate);
    let mut k = 0u64;
    let mut woke = start;
    while !cancel.is_cancelled() {
        let next = due(k).max(woke + QUANTUM);
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        woke = Instant::now();
        while due(k) <= woke {
            if sender.blocking_send(due(k)).is_err() {
                return;
            }
            k += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_fine_clock_spreads_ticks_below_a_millisecond() {
        let cancel = CancellationToken::new();
        let mut pacer = Pacer::new(10_000.0, &cancel);
        assert!(matches!(pacer, Pacer::Fine(_)));
        let mut ticks = Vec::new();
        for _ in 0..2000 {
            ticks.push(pacer.tick().await.unwrap());
        }
        cancel.cancel();
        // Scheduled 100 µs apart, exactly.
        for pair in ticks.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(gap.as_micros().abs_diff(100) <= 1, "{gap:?}");
        }
        // Delivered on time on average: 2000 ticks take about 200 ms.
        let late = ticks[0].elapsed() - (ticks[1999] - ticks[0]);
        assert!(late < Duration::from_millis(100), "{late:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_schedule_releases_missed_ticks_at_once_with_their_own_instants() {
        let cancel = CancellationToken::new();
        let mut pacer = Pacer::new(100.0, &cancel);
        assert!(matches!(pacer, Pacer::Coarse(_)));
        let first = pacer.tick().await.unwrap();
        // A stall of 55 ms: five ticks fell due meanwhile.
        tokio::time::advance(Duration::from_millis(55)).await;
        let mut ticks = vec![first];
        for _ in 0..5 {
            ticks.push(pacer.tick().await.unwrap());
        }
        for (k, tick) in ticks.iter().enumerate() {
            assert_eq!(*tick - first, Duration::from_millis(10) * k as u32);
        }
    }
}
