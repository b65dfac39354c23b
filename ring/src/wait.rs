//! How an endpoint waits for its peer: spin, sleep on a futex, or both.
//!
//! The protocol (DESIGN.md, "Waking"), seen from the side that waits:
//! read the peer's sequence word, check the ring; if there is nothing to do,
//! announce the sleep in our "parked" word, `fence(SeqCst)`, check the ring
//! and the sequence word again, and only then sleep on the sequence word with
//! the value first read. The peer publishes, bumps the sequence word,
//! `fence(SeqCst)`, and wakes us only when our parked word announces a sleep.
//! The two fences guarantee that either the peer sees our announcement or we
//! see its publish, so no wake-up is lost and a busy side costs its peer no
//! syscall. The loom tests check this.
//!
//! Every announcement carries a fresh sleep epoch and the sequence value the
//! side sleeps on, and the peer wakes each announcement at most once (it
//! remembers the parked word it last woke), and only with a publish that
//! changed the sequence word from the announced value: a peer that leaves
//! its parked word set without sleeping costs us one wake, not one per
//! publish. That is enough for an honest side, because a side that was woken
//! and sleeps again announces anew first (see docs/decisions.md, "Sleep
//! epochs").

use crate::futex;
use crate::notifier::Notifier;
use crate::stats::Stats;
use crate::sync::{AtomicU32, AtomicU64, Ordering, fence, spin_hint};
use std::time::{Duration, Instant};

/// How an endpoint waits when the ring is empty (consumer) or full (producer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStrategy {
    /// Busy-poll until ready: the lowest latency, one core fully used.
    Spin,
    /// Sleep on the futex at once: no CPU while idle, a syscall per wake-up.
    Park,
    /// Busy-poll for up to `spin`, then sleep.
    SpinThenPark {
        /// How long to poll before sleeping. A spin too long to be
        /// represented from now on (`Duration::MAX`) never ends: the side
        /// then only polls, like [`WaitStrategy::Spin`].
        spin: Duration,
    },
}

/// How long [`WaitStrategy::SpinThenPark`] polls by default before it
/// sleeps. Long enough for a peer that answers at once (a round trip through
/// the ring is well under a microsecond), short enough that a spinning side
/// does not hold the core its peer needs: on a machine with fewer free cores
/// than busy processes, longer spins made round trips slower, not faster
/// (measured on 2 vCPUs: a 100 µs spin turned a 10 µs synchronous call into
/// hundreds of µs).
pub const DEFAULT_SPIN: Duration = Duration::from_micros(5);

impl Default for WaitStrategy {
    fn default() -> Self {
        WaitStrategy::SpinThenPark { spin: DEFAULT_SPIN }
    }
}

/// The longest single sleep. The peer can scribble on the wake words, so a
/// wake-up is only a hint; every sleep is bounded and followed by a re-check.
const MAX_SLEEP: Duration = Duration::from_millis(50);

/// How often a spinning side reads the clock (for its spin budget and its
/// timeout).
const SPINS_PER_CLOCK_READ: u32 = 16;

/// A side that can wait for its peer.
pub(crate) trait Waiter {
    type Ready;
    type Error;
    /// Checks, without waiting, whether the side can go on.
    fn poll_ready(&mut self) -> Result<Option<Self::Ready>, Self::Error>;
    /// The word the peer bumps (and wakes) after making progress.
    fn wake_seq(&self) -> &AtomicU32;
    /// Our parked word in shared memory, and what we announce in it.
    fn parking(&mut self) -> (&AtomicU64, &mut Announcer);
    fn strategy(&self) -> WaitStrategy;
    fn stats_mut(&mut self) -> &mut Stats;
}

/// Why [`block_on`] returned without the side being ready.
pub(crate) enum Blocked<E> {
    TimedOut,
    Failed(E),
}

/// Waits until `side` is ready, per its strategy, for at most `timeout`.
///
/// An event-loop arming ([`Announcer::arm`]) survives the wait: every
/// announcement made while armed keeps the "signal me" bit, so the peer
/// signals the notification descriptor for what it publishes during the wait
/// too, and the arming is still in place afterwards.
pub(crate) fn block_on<W: Waiter>(
    side: &mut W,
    timeout: Option<Duration>,
) -> Result<W::Ready, Blocked<W::Error>> {
    // Ready already: the common case of a busy peer costs no clock read.
    if let Some(ready) = side.poll_ready().map_err(Blocked::Failed)? {
        return Ok(ready);
    }
    // Pure spinning without a deadline never needs the time.
    let strategy = side.strategy();
    let clocked = timeout.is_some() || strategy != WaitStrategy::Spin;
    // The clock is first read at the first check below, and the deadline
    // and the end of the spin are counted from then. A spin with a
    // deadline makes that check after a first round of polls (a deadline
    // of zero at once): a wait the peer ends within it, as a round trip's
    // usually is, reads no clock. A sleeping strategy checks at once.
    let mut started = false;
    let mut deadline = None;
    let mut spin_until = None;
    let mut spins: u32 = match (strategy, timeout) {
        (WaitStrategy::Spin, Some(timeout)) if !timeout.is_zero() => 1,
        _ => 0,
    };
    let mut parking = false;
    loop {
        let seq = side.wake_seq().load(Ordering::Acquire);
        if let Some(ready) = side.poll_ready().map_err(Blocked::Failed)? {
            return Ok(ready);
        }
        // The clock is read every few polls while spinning (a read costs as
        // much as several polls) and before every sleep.
        let mut remaining = None;
        if clocked && (parking || spins % SPINS_PER_CLOCK_READ == 0) {
            let now = Instant::now();
            if !started {
                started = true;
                deadline = timeout.and_then(|t| now.checked_add(t));
                // When to stop polling and sleep: never for Spin (nor for a
                // spin too long to represent), at once for Park.
                spin_until = match strategy {
                    WaitStrategy::Spin => None,
                    WaitStrategy::Park => Some(now),
                    WaitStrategy::SpinThenPark { spin } => now.checked_add(spin),
                };
            }
            if let Some(deadline) = deadline {
                if now >= deadline {
                    return Err(Blocked::TimedOut);
                }
                remaining = Some(deadline - now);
            }
            parking = spin_until.is_some_and(|until| now >= until);
        }
        if !parking {
            spins = spins.wrapping_add(1);
            spin_hint();
            continue;
        }
        let (word, announcer) = side.parking();
        announcer.announce_sleep(word, seq);
        fence(Ordering::SeqCst);
        // Re-check after announcing: either the peer sees our announcement,
        // or we see its publish here.
        let rechecked = side.poll_ready();
        if let Ok(None) = rechecked {
            if side.wake_seq().load(Ordering::Relaxed) == seq {
                side.stats_mut().parks += 1;
                let sleep = remaining.map_or(MAX_SLEEP, |r| r.min(MAX_SLEEP));
                futex::wait(side.wake_seq(), seq, sleep);
            }
        }
        let (word, announcer) = side.parking();
        announcer.withdraw(word, seq);
        match rechecked {
            Ok(Some(ready)) => return Ok(ready),
            Err(e) => return Err(Blocked::Failed(e)),
            Ok(None) => {}
        }
    }
}

/// Bit of a parked word: its side sleeps (or is about to) on the futex.
pub(crate) const PARKED_ON_FUTEX: u64 = 1;
/// Bit of a parked word: its side waits in an event loop for its
/// notification descriptor (see `Consumer::arm_notification`).
pub(crate) const PARKED_ON_EVENT: u64 = 2;
/// The sleep epoch sits above the two bits, below the sequence value.
const EPOCH_SHIFT: u32 = 2;
/// The epoch's width: 30 bits.
const EPOCH_MASK: u64 = (1 << 30) - 1;
/// The sequence value the side sleeps on fills the upper half.
const SEQ_SHIFT: u32 = 32;

/// What a waiting side announces in its parked word: the two bits above, a
/// sleep epoch, fresh for every announcement, so the peer can tell a new
/// sleep from one it already woke, and the value of the peer's sequence word
/// the side last saw (it sleeps on that value), so the peer can tell whether
/// a publish of its own is news to the sleeper. A word repeats only if both
/// the 30-bit epoch and the 32-bit sequence value come round together.
#[derive(Debug)]
pub(crate) struct Announcer {
    epoch: u64,
    /// Armed for an event loop: every announcement keeps `PARKED_ON_EVENT`
    /// until disarmed.
    armed: bool,
}

impl Announcer {
    /// Starts after whatever epoch `word` holds (left by an earlier endpoint
    /// or a peer), so our first announcement is new to the peer too.
    pub(crate) fn new(word: &AtomicU64) -> Announcer {
        Announcer {
            epoch: (word.load(Ordering::Relaxed) >> EPOCH_SHIFT) & EPOCH_MASK,
            armed: false,
        }
    }

    /// Announces a sleep on the futex while the peer's sequence word reads
    /// `seen` (the caller fences, re-checks, then sleeps on `seen`).
    pub(crate) fn announce_sleep(&mut self, word: &AtomicU64, seen: u32) {
        self.announce(word, PARKED_ON_FUTEX, seen);
    }

    /// Ends a futex sleep begun when the sequence word read `seen`. While
    /// armed for an event loop the arming stays announced (anew, which the
    /// peer signals once more at most).
    pub(crate) fn withdraw(&mut self, word: &AtomicU64, seen: u32) {
        if self.armed {
            self.announce(word, 0, seen);
        } else {
            word.store(0, Ordering::Relaxed);
        }
    }

    /// Arms for an event loop while the peer's sequence word reads `seen`
    /// (the caller fences, then re-checks).
    pub(crate) fn arm(&mut self, word: &AtomicU64, seen: u32) {
        self.armed = true;
        self.announce(word, 0, seen);
    }

    pub(crate) fn is_armed(&self) -> bool {
        self.armed
    }

    /// Ends an event-loop arming.
    pub(crate) fn disarm(&mut self, word: &AtomicU64) {
        self.armed = false;
        word.store(0, Ordering::Relaxed);
    }

    fn announce(&mut self, word: &AtomicU64, bits: u64, seen: u32) {
        self.epoch = (self.epoch + 1) & EPOCH_MASK;
        let event = if self.armed { PARKED_ON_EVENT } else { 0 };
        let announced = (u64::from(seen) << SEQ_SHIFT) | (self.epoch << EPOCH_SHIFT) | bits | event;
        word.store(announced, Ordering::Relaxed);
    }
}

/// The publishing half of the protocol: bump our sequence word, fence, and
/// wake the peer only if it announced a sleep we have not woken yet
/// (`last_woken` is the parked word we last acted on) and that began before
/// this publish (the sequence value it sleeps on is not the one we just
/// stored: if it is, the sleeper saw this publish and waits for the next
/// one, which will wake it). A peer armed for an event loop is signalled
/// through the notification socket, when we hold one.
#[inline]
pub(crate) fn notify_peer(
    seq: &AtomicU32,
    next_seq: &mut u32,
    peer_parked: &AtomicU64,
    last_woken: &mut u64,
    notifier: Option<&Notifier>,
    stats: &mut Stats,
) {
    *next_seq = next_seq.wrapping_add(1);
    seq.store(*next_seq, Ordering::Release);
    fence(Ordering::SeqCst);
    let parked = peer_parked.load(Ordering::Relaxed);
    if parked & (PARKED_ON_FUTEX | PARKED_ON_EVENT) == 0
        || parked == *last_woken
        || (parked >> SEQ_SHIFT) as u32 == *next_seq
    {
        return;
    }
    *last_woken = parked;
    stats.wakes += 1;
    if parked & PARKED_ON_FUTEX != 0 {
        futex::wake(seq);
    }
    if parked & PARKED_ON_EVENT != 0 {
        if let Some(notifier) = notifier {
            notifier.signal();
        }
    }
}

/// Why a text is not a [`WaitStrategy`] (see its [`FromStr`](std::str::FromStr)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseWaitStrategyError {
    text: String,
}

impl std::fmt::Display for ParseWaitStrategyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unknown wait strategy {:?} (spin, park, spin-then-park or spin-then-park:DURATION, e.g. 5us)",
            self.text
        )
    }
}

impl std::error::Error for ParseWaitStrategyError {}

/// The units a spin budget is written in, largest first: name, nanoseconds.
const SPIN_UNITS: [(&str, u128); 4] = [
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

/// The text form, for command lines and environment variables: `spin`,
/// `park`, `spin-then-park:DURATION` (an integer and a unit, `ns`, `us`,
/// `ms` or `s`; [`Display`](std::fmt::Display) picks the largest unit that
/// keeps the value exact). `spin-then-park` alone is the default budget,
/// [`DEFAULT_SPIN`]. What `Display` writes, `FromStr` reads back to the
/// same value.
///
/// ```
/// use ferry_ring::WaitStrategy;
/// use std::time::Duration;
///
/// let strategy: WaitStrategy = "spin-then-park:20us".parse()?;
/// assert_eq!(strategy, WaitStrategy::SpinThenPark { spin: Duration::from_micros(20) });
/// assert_eq!(strategy.to_string(), "spin-then-park:20us");
/// assert_eq!("park".parse::<WaitStrategy>()?, WaitStrategy::Park);
/// assert_eq!("spin-then-park".parse::<WaitStrategy>()?, WaitStrategy::default());
/// assert!("sleep".parse::<WaitStrategy>().is_err());
/// # Ok::<(), ferry_ring::ParseWaitStrategyError>(())
/// ```
impl std::str::FromStr for WaitStrategy {
    type Err = ParseWaitStrategyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || ParseWaitStrategyError { text: text.into() };
        match text {
            "spin" => return Ok(WaitStrategy::Spin),
            "park" => return Ok(WaitStrategy::Park),
            "spin-then-park" => return Ok(WaitStrategy::default()),
            _ => {}
        }
        let budget = text.strip_prefix("spin-then-park:").ok_or_else(error)?;
        let digits = budget
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(error)?;
        let (number, unit) = budget.split_at(digits);
        let &(_, unit_nanos) = SPIN_UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .ok_or_else(error)?;
        let nanos = number
            .parse::<u128>()
            .ok()
            .and_then(|n| n.checked_mul(unit_nanos))
            .ok_or_else(error)?;
        let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| error())?;
        let spin = Duration::new(secs, (nanos % 1_000_000_000) as u32);
        Ok(WaitStrategy::SpinThenPark { spin })
    }
}

impl std::fmt::Display for WaitStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WaitStrategy::Spin => f.write_str("spin"),
            WaitStrategy::Park => f.write_str("park"),
            WaitStrategy::SpinThenPark { spin } => {
                let nanos = spin.as_nanos();
                let (name, unit_nanos) = SPIN_UNITS
                    .into_iter()
                    .find(|&(_, unit)| nanos % unit == 0)
                    .unwrap_or(("ns", 1));
                write!(f, "spin-then-park:{}{name}", nanos / unit_nanos)
            }
        }
    }
}

#[cfg(test)]
mod text_tests {
    use super::*;

    #[test]
    fn every_strategy_reads_back_what_it_writes() {
        let spins = [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_nanos(1_500),
            DEFAULT_SPIN,
            Duration::from_millis(3),
            Duration::from_secs(2),
            Duration::new(7, 1),
            Duration::MAX,
        ];
        let strategies = [WaitStrategy::Spin, WaitStrategy::Park]
            .into_iter()
            .chain(spins.map(|spin| WaitStrategy::SpinThenPark { spin }));
        for strategy in strategies {
            let text = strategy.to_string();
            assert_eq!(text.parse::<WaitStrategy>(), Ok(strategy), "{text}");
        }
        assert_eq!(WaitStrategy::default().to_string(), "spin-then-park:5us");
        assert_eq!(
            WaitStrategy::SpinThenPark {
                spin: Duration::from_nanos(1_500)
            }
            .to_string(),
            "spin-then-park:1500ns"
        );
    }

    #[test]
    fn other_texts_are_refused() {
        for text in [
            "",
            "Spin",
            " spin",
            "hybrid",
            "spin-then-park:",
            "spin-then-park:5",
            "spin-then-park:us",
            "spin-then-park:-5us",
            "spin-then-park:5 us",
            "spin-then-park:5min",
            "spin-then-park:99999999999999999999999999999999999999999s",
        ] {
            let error = text.parse::<WaitStrategy>().unwrap_err();
            assert!(
                error.to_string().contains("unknown wait strategy"),
                "{text}"
            );
        }
    }
}
