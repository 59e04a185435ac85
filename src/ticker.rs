//! A periodic clock that wakes the worker once per period.
//!
//! tokio's timer wheel wakes the worker more often than its timers are due: a
//! deadline more than 64 ms away sits on a coarser level, and the wheel wakes
//! at each slot boundary it crosses to move it down; and registering a
//! deadline earlier than the wheel's next one unparks the driver through its
//! eventfd. A loop that sleeps 50 ms woke the worker about twice per period,
//! one that sleeps 500 ms twice too. At the default rate the daemon woke 55
//! times a second with tokio's timer and 39 with this one. The extra
//! wake-ups ran almost no code, so the CPU moved less: 0.87 to 0.99 of what
//! it was, in alternating runs of `scripts/bench-cost.sh`.
//!
//! [`Ticker`] is a periodic `timerfd` on tokio's reactor instead: the kernel
//! keeps the schedule and the worker wakes when a tick is due, and only then.
//! Where a timerfd cannot be made it says so and uses tokio's interval.

use std::io;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::time::{
    timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags,
    Timespec,
};
use tokio::io::unix::AsyncFd;
use tokio::time::{Interval, MissedTickBehavior};

/// What a ticker does with the ticks that fell due while its owner was busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missed {
    /// Releases each at once, each with its own scheduled instant: a
    /// schedule that must keep every tick (the workload's).
    Burst,
    /// Releases one and drops the rest: a loop that only needs to run
    /// again (housekeeping).
    Skip,
}

/// Ticks every `period`, the first at once.
pub(crate) struct Ticker(Clock);

enum Clock {
    Kernel(KernelTimer),
    Tokio(Interval),
}

impl Ticker {
    /// Ticks every `period` from now; `what` names the loop in the log line
    /// that says a timerfd cannot be made.
    pub(crate) fn new(period: Duration, missed: Missed, what: &str) -> Self {
        match KernelTimer::new(period, missed) {
            Ok(timer) => Self(Clock::Kernel(timer)),
            Err(err) => {
                tracing::warn!(error = %err, clock = what, "cannot make a timerfd; ticking with tokio's timer");
                Self(Clock::Tokio(interval(period, missed)))
            }
        }
    }

    /// Whether the kernel keeps this ticker's schedule.
    #[cfg(test)]
    pub(crate) fn is_kernel(&self) -> bool {
        matches!(self.0, Clock::Kernel(_))
    }

    /// Waits for the next tick and returns when it was due.
    pub(crate) async fn tick(&mut self) -> Instant {
        match &mut self.0 {
            Clock::Kernel(timer) => match timer.tick().await {
                Ok(tick) => tick,
                Err(err) => {
                    tracing::error!(error = %err, "a timerfd failed; ticking with tokio's timer");
                    let mut ticks = interval(timer.period, timer.missed);
                    let tick = ticks.tick().await.into_std();
                    self.0 = Clock::Tokio(ticks);
                    tick
                }
            },
            Clock::Tokio(ticks) => ticks.tick().await.into_std(),
        }
    }
}

fn interval(period: Duration, missed: Missed) -> Interval {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(match missed {
        Missed::Burst => MissedTickBehavior::Burst,
        Missed::Skip => MissedTickBehavior::Skip,
    });
    ticks
}

/// A periodic `timerfd` on tokio's reactor. Tick `k` is due at
/// `start + k * period`, the kernel's own schedule.
struct KernelTimer {
    fd: AsyncFd<OwnedFd>,
    missed: Missed,
    start: Instant,
    period: Duration,
    /// The next tick to release.
    next: u64,
    /// How many ticks are due: the first, and each expiry the kernel counted.
    due: u64,
}

impl KernelTimer {
    fn new(period: Duration, missed: Missed) -> io::Result<Self> {
        let period = period.max(Duration::from_nanos(1));
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        let every = Timespec::try_from(period)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "period out of range"))?;
        let start = Instant::now();
        timerfd_settime(
            &fd,
            TimerfdTimerFlags::empty(),
            &Itimerspec {
                it_interval: every,
                it_value: every,
            },
        )?;
        // `AsyncFd::new` is deprecated for inner types whose descriptor may be
        // closed or swapped underneath it; an `OwnedFd` we just made and keep
        // is neither, which is the contract `register` spells out.
        #[allow(deprecated)]
        let fd = AsyncFd::new(fd)?;
        Ok(Self {
            fd,
            missed,
            start,
            period,
            next: 0,
            due: 1,
        })
    }

    async fn tick(&mut self) -> io::Result<Instant> {
        while self.next >= self.due {
            let mut ready = self.fd.readable().await?;
            let mut expiries = [0u8; 8];
            match ready.try_io(|fd| Ok(rustix::io::read(fd.get_ref(), &mut expiries)?)) {
                Ok(read) => {
                    read?;
                    self.due += u64::from_ne_bytes(expiries);
                    // Read to empty: the next expiry is a new edge, so the
                    // next tick waits for it instead of reading to EAGAIN.
                    ready.clear_ready();
                }
                Err(_would_block) => continue,
            }
        }
        if self.missed == Missed::Skip {
            self.next = self.due - 1;
        }
        let since_start = self.period.as_nanos().saturating_mul(u128::from(self.next));
        let tick =
            self.start + Duration::from_nanos(u64::try_from(since_start).unwrap_or(u64::MAX));
        self.next += 1;
        Ok(tick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ticks 10 ms apart; the test blocks the worker for five and a half.
    async fn after_a_stall(missed: Missed) -> (Ticker, Vec<Instant>) {
        let mut ticker = Ticker::new(Duration::from_millis(10), missed, "test");
        assert!(ticker.is_kernel());
        let mut ticks = vec![ticker.tick().await];
        std::thread::sleep(Duration::from_millis(55));
        ticks.push(ticker.tick().await);
        (ticker, ticks)
    }

    #[tokio::test]
    async fn a_bursting_ticker_keeps_its_schedule_and_releases_missed_ticks_at_once() {
        let (mut ticker, mut ticks) = after_a_stall(Missed::Burst).await;
        for _ in 0..6 {
            let tick = ticker.tick().await;
            assert!(tick <= Instant::now(), "released before it was due");
            ticks.push(tick);
        }
        // One read of the timer counted the five it missed.
        let Clock::Kernel(timer) = &ticker.0 else {
            unreachable!()
        };
        assert!(timer.due >= 6, "{}", timer.due);
        // Each tick is measured from its own slot, 10 ms apart exactly.
        for pair in ticks.windows(2) {
            assert_eq!(pair[1] - pair[0], Duration::from_millis(10));
        }
    }

    #[tokio::test]
    async fn a_skipping_ticker_runs_once_after_a_stall_then_keeps_its_schedule() {
        let (mut ticker, ticks) = after_a_stall(Missed::Skip).await;
        let slots = |from: Instant, to: Instant| {
            let gap = (to - from).as_nanos();
            assert_eq!(gap % 10_000_000, 0, "off the schedule: {gap} ns");
            gap / 10_000_000
        };
        // The one tick after the stall is the latest that fell due (the
        // fifth, or later if this thread woke late), not the first missed.
        assert!(slots(ticks[0], ticks[1]) >= 5);
        let next = ticker.tick().await;
        assert!(slots(ticks[1], next) >= 1);
        assert!(next <= Instant::now(), "released before it was due");
    }
}
