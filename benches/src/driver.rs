//! The measuring loops, run by the measuring process over any transport's
//! [`Endpoint`]. Each is compiled once per transport (generic, no dynamic
//! dispatch in the loop).

use crate::endpoint::{Counters, Endpoint};
use crate::payload::{self, Msg, Pattern, QUIT, SYNC};
use crate::sizes::Sizes;
use crate::{BoxError, Result};
use hdrhistogram::Histogram;
use std::time::{Duration, Instant};

/// How much of something to do: a count or a duration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    /// This many round trips or messages.
    Iters(u64),
    /// For this long.
    Time(Duration),
}

impl Amount {
    /// Parses `1000` (a count) or `0.5s` / `200ms` (a duration).
    pub fn parse(text: &str) -> Result<Amount> {
        let bad = || BoxError::from(format!("bad amount {text:?} (a count, or e.g. 50ms, 0.5s)"));
        if let Some(ms) = text.strip_suffix("ms") {
            let ms: f64 = ms.parse().map_err(|_| bad())?;
            return Ok(Amount::Time(Duration::from_secs_f64(ms / 1e3)));
        }
        if let Some(s) = text.strip_suffix('s') {
            let s: f64 = s.parse().map_err(|_| bad())?;
            return Ok(Amount::Time(Duration::from_secs_f64(s)));
        }
        Ok(Amount::Iters(text.parse().map_err(|_| bad())?))
    }

    /// Whether `done` iterations started at `start` are enough.
    #[inline]
    pub fn reached(self, done: u64, start: Instant, now: Instant) -> bool {
        match self {
            Amount::Iters(n) => done >= n,
            Amount::Time(limit) => now.duration_since(start) >= limit,
        }
    }
}

/// What one latency run measured.
pub struct LatencyRun {
    /// Round-trip times in nanoseconds.
    pub histogram: Histogram<u64>,
    /// The measuring end's counters.
    pub counters: Counters,
}

/// A histogram for round trips of 1 ns to 60 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Checks the reply to round trip `seq` of `len` bytes (`sized`: of a drawn
/// size, announcing its length): the peer tags it with the check of the
/// request.
#[inline]
pub fn check_reply(reply: &Msg, seq: u64, len: usize, sized: bool) -> Result<()> {
    let expected = payload::expected(len, payload::expected(len, seq));
    if reply.check != expected || reply.len != len || (sized && reply.word1 != len as u64) {
        return Err(format!(
            "round trip {seq}: reply of {} B with check {:#x}, expected {len} B with {expected:#x}",
            reply.len, reply.check
        )
        .into());
    }
    Ok(())
}

/// Sends round trip `seq` (of the size `sizes` draws for it, or `size`)
/// and receives its reply; returns the reply and the size sent.
#[inline]
pub fn round_trip<E: Endpoint>(
    end: &mut E,
    seq: u64,
    size: usize,
    sizes: Option<&Sizes>,
) -> Result<(Msg, usize)> {
    match sizes {
        Some(sizes) => {
            let len = sizes.draw(seq);
            Ok((end.round_trip_sized(seq, len)?, len))
        }
        None => Ok((end.round_trip(seq)?, size)),
    }
}

/// Round trips of `size`-byte messages (or of sizes drawn from `sizes`):
/// `warmup` unrecorded, then `measure` recorded, each timed alone; then
/// `QUIT`.
pub fn latency<E: Endpoint>(
    end: &mut E,
    size: usize,
    sizes: Option<&Sizes>,
    warmup: Amount,
    measure: Amount,
) -> Result<LatencyRun> {
    let mut histogram = new_histogram();
    let mut seq = 1u64;
    for (phase, amount) in [(false, warmup), (true, measure)] {
        let start = Instant::now();
        let mut done = 0u64;
        loop {
            let sent = Instant::now();
            let (reply, len) = round_trip(end, seq, size, sizes)?;
            let now = Instant::now();
            check_reply(&reply, seq, len, sizes.is_some())?;
            if phase {
                histogram.saturating_record(now.duration_since(sent).as_nanos() as u64);
            }
            seq += 1;
            done += 1;
            if amount.reached(done, start, now) {
                break;
            }
        }
    }
    round_trip(end, QUIT, size, sizes)?;
    Ok(LatencyRun {
        histogram,
        counters: end.counters(),
    })
}

/// `count` checked round trips with tags from `*seq` on, timed as a whole
/// (for criterion's `iter_custom`).
pub fn round_trips<E: Endpoint>(
    end: &mut E,
    pattern: &Pattern,
    seq: &mut u64,
    count: u64,
) -> Result<Duration> {
    let start = Instant::now();
    for _ in 0..count {
        let reply = end.round_trip(*seq)?;
        if reply.check != pattern.expected(pattern.expected(*seq)) {
            return Err(format!("round trip {}: wrong reply check", *seq).into());
        }
        *seq += 1;
    }
    Ok(start.elapsed())
}

/// What one throughput run measured.
pub struct ThroughputRun {
    /// Messages in the timed stream.
    pub messages: u64,
    /// From the first send to the acknowledgement of the last message.
    pub elapsed: Duration,
    /// The measuring end's counters.
    pub counters: Counters,
}

/// Streams `amount` messages, then a `SYNC`, and checks the peer's
/// acknowledgement (count and check total of everything it received).
fn stream<E: Endpoint>(
    end: &mut E,
    pattern: &Pattern,
    seq: &mut u64,
    amount: Amount,
) -> Result<u64> {
    let start = Instant::now();
    let (mut count, mut expected) = (0u64, 0u64);
    loop {
        end.send(*seq)?;
        expected = expected.wrapping_add(pattern.expected(*seq));
        *seq += 1;
        count += 1;
        let check = match amount {
            Amount::Iters(_) => true,
            Amount::Time(_) => count % 256 == 0,
        };
        if check && amount.reached(count, start, Instant::now()) {
            break;
        }
    }
    end.send(SYNC)?;
    end.flush()?;
    let ack = end.recv()?;
    if ack.tag != count || ack.word1 != expected {
        return Err(format!(
            "the peer acknowledged {} messages with check total {:#x}; sent {count} with {expected:#x}",
            ack.tag, ack.word1
        )
        .into());
    }
    Ok(count)
}

/// A one-way stream of `size`-byte messages: a `warmup` stream, then the
/// timed one, each acknowledged; then `QUIT`.
pub fn throughput<E: Endpoint>(
    end: &mut E,
    size: usize,
    warmup: Amount,
    measure: Amount,
) -> Result<ThroughputRun> {
    let pattern = Pattern::new(size);
    let mut seq = 1u64;
    stream(end, &pattern, &mut seq, warmup)?;
    let start = Instant::now();
    let messages = stream(end, &pattern, &mut seq, measure)?;
    let elapsed = start.elapsed();
    end.send(QUIT)?;
    end.flush()?;
    end.recv()?;
    Ok(ThroughputRun {
        messages,
        elapsed,
        counters: end.counters(),
    })
}

/// The median cost of reading the clock (`Instant::now`), in nanoseconds:
/// every round trip includes one such read.
pub fn clock_overhead_ns() -> f64 {
    let mut samples: Vec<f64> = (0..101)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..1000 {
                std::hint::black_box(Instant::now());
            }
            start.elapsed().as_nanos() as f64 / 1000.0
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}
