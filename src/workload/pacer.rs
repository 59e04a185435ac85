//! The schedule's clock: when each tick is due.
//!
//! Below [`FINE_RATE`] (the default 20/s, and 1,000/s, among them) the ticks
//! come from a kernel interval timer (`timerfd`) on tokio's reactor: the
//! worker wakes once per tick, when it is due. tokio's own interval woke it
//! about twice per tick at 20/s: its timer wheel wakes at each 64 ms slot
//! boundary a deadline crosses to move the timer down a level, and each new
//! deadline earlier than the wheel's next one unparks the driver through its
//! eventfd. In this project's VMs a sleep and a wake-up cost about 45 µs of
//! CPU, so those extra wake-ups were a fifth of the daemon's idle cost.
//!
//! At [`FINE_RATE`] and above the ticks come instead from a thread of their
//! own that sleeps with the OS's microsecond timer and releases every tick due
//! at most once per [`QUANTUM`], so operations start spread out as scheduled
//! and waking does not cost more than the operations.

use std::io;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::time::{
    timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags,
    Timespec,
};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

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
    Timer(KernelTimer),
    /// tokio's interval, where neither a timerfd nor the fine clock's
    /// thread can be made.
    Interval(Interval),
    Fine(mpsc::Receiver<Instant>),
}

impl Pacer {
    /// Ticks at `rate` per second from now until `cancel`.
    pub(super) fn new(rate: f64, cancel: &CancellationToken) -> Self {
        if rate < FINE_RATE {
            return match KernelTimer::new(rate) {
                Ok(timer) => Self::Timer(timer),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot make a timerfd; ticking with tokio's timer");
                    Self::Interval(interval(rate))
                }
            };
        }
        let (sender, receiver) = mpsc::channel(BACKLOG);
        let cancel = cancel.clone();
        let spawned = std::thread::Builder::new()
            .name("llmcache-pacer".into())
            .spawn(move || fine_clock(rate, &sender, &cancel));
        if let Err(err) = spawned {
            tracing::warn!(error = %err, "cannot start the pacer thread; ticking per millisecond");
            return Self::Interval(interval(rate));
        }
        Self::Fine(receiver)
    }

    /// The next tick's scheduled instant; `None` once the clock has stopped.
    pub(super) async fn tick(&mut self) -> Option<Instant> {
        match self {
            Self::Timer(timer) => match timer.tick().await {
                Ok(tick) => Some(tick),
                Err(err) => {
                    tracing::error!(error = %err, "the pacer's timerfd failed; ticking with tokio's timer");
                    let mut ticks = interval(timer.rate);
                    let tick = ticks.tick().await.into_std();
                    *self = Self::Interval(ticks);
                    Some(tick)
                }
            },
            Self::Interval(ticks) => Some(ticks.tick().await.into_std()),
            Self::Fine(receiver) => receiver.recv().await,
        }
    }
}

/// tokio's interval at `rate`; missed ticks fire at once, each measured from
/// its own slot.
fn interval(rate: f64) -> Interval {
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    ticks
}

/// A periodic `timerfd` on tokio's reactor. Tick `k` is due at
/// `start + k * period`, the kernel's own schedule: the first at once, as with
/// tokio's interval, and every tick missed while the worker was busy at once
/// after it, each still measured from its own slot.
pub(super) struct KernelTimer {
    fd: AsyncFd<OwnedFd>,
    rate: f64,
    start: Instant,
    period: Duration,
    /// The next tick to release.
    next: u64,
    /// How many ticks are due: the first, and each expiry the kernel counted.
    due: u64,
}

impl KernelTimer {
    fn new(rate: f64) -> io::Result<Self> {
        let period = Duration::from_secs_f64(1.0 / rate).max(Duration::from_nanos(1));
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
            rate,
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
        let since_start = self.period.as_nanos().saturating_mul(u128::from(self.next));
        let tick =
            self.start + Duration::from_nanos(u64::try_from(since_start).unwrap_or(u64::MAX));
        self.next += 1;
        Ok(tick)
    }
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

    #[tokio::test]
    async fn the_kernel_timer_keeps_its_schedule_and_releases_missed_ticks_at_once() {
        let cancel = CancellationToken::new();
        let Pacer::Timer(mut timer) = Pacer::new(100.0, &cancel) else {
            panic!("100/s should tick from a timerfd");
        };
        let mut ticks = vec![timer.tick().await.unwrap()];
        // The worker is busy for five and a half periods.
        std::thread::sleep(Duration::from_millis(55));
        for _ in 0..7 {
            let tick = timer.tick().await.unwrap();
            assert!(tick <= Instant::now(), "released before it was due");
            ticks.push(tick);
        }
        // One read of the timer counted the five it missed.
        assert!(timer.due >= 6, "{}", timer.due);
        // Each tick is measured from its own slot, 10 ms apart exactly.
        for pair in ticks.windows(2) {
            assert_eq!(pair[1] - pair[0], Duration::from_millis(10));
        }
    }

    #[tokio::test]
    async fn slow_rates_use_a_kernel_timer() {
        let cancel = CancellationToken::new();
        assert!(matches!(Pacer::new(20.0, &cancel), Pacer::Timer(_)));
    }
}
