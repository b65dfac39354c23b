//! Open-loop round trips: requests leave at a fixed rate whatever the
//! replies do, and each latency is counted from the request's *intended*
//! send time.
//!
//! A closed loop (send, wait for the reply, send the next) hides queueing:
//! when the transport stalls, the next request simply goes out later, and
//! the stall shows up in one sample instead of in every request that should
//! have gone out meanwhile (coordinated omission). Here request `i` is due
//! at `start + i / rate`. The measuring process keeps up to
//! [`in_flight_limit`] requests outstanding: between sends it polls for
//! replies ([`Endpoint::try_recv`]) and timestamps each as it arrives; when
//! the limit is reached it waits for the oldest reply before sending. A
//! request sent late (the sender was behind) is still measured from when it
//! was due, so a rate the transport cannot sustain shows as latencies that
//! grow through the run, not as a lower rate with flat latencies. The peer
//! is the same as for closed-loop round trips: it answers each request as
//! it reads it (replies come back in order, which the checks verify).
//!
//! The limit keeps the requests and the replies in flight within what every
//! transport buffers (64 KiB per direction: a pipe), so neither side's send
//! ever waits for the other to read — the one-thread measuring loop cannot
//! deadlock. An endpoint that cannot poll ([`Endpoint::can_poll`] is false:
//! `ferry-sync`'s synchronous call) runs with one request in flight; its
//! late requests are still measured from their intended time.

use crate::driver::{Amount, check_reply, new_histogram, round_trip};
use crate::endpoint::{Counters, Endpoint};
use crate::payload::QUIT;
use crate::sizes::Sizes;
use crate::{BoxError, Result};
use hdrhistogram::Histogram;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Parts of the run the timeline splits the latencies into (by intended
/// send time).
pub const TIMELINE_PARTS: usize = 10;
/// Most requests in flight at once.
pub const MAX_IN_FLIGHT: usize = 64;
/// The buffering every transport offers per direction (a pipe's).
const BUFFERED: usize = 64 * 1024;
/// Per-message overhead assumed when sizing the window (frame headers).
const OVERHEAD: usize = 256;

/// How many requests the open loop keeps in flight over an endpoint for
/// `size`-byte messages and `ring`-byte rings: as many as fit, twice (a
/// request and its reply), in what every transport buffers, up to
/// [`MAX_IN_FLIGHT`]; one for an endpoint that cannot poll.
pub fn in_flight_limit(can_poll: bool, size: usize, ring: usize) -> usize {
    if !can_poll {
        return 1;
    }
    (BUFFERED.min(ring) / (size + OVERHEAD)).clamp(1, MAX_IN_FLIGHT)
}

/// Parses a rate: `50000`, `50k`, `1.5M` (requests per second).
pub fn parse_rate(text: &str) -> Result<f64> {
    let text = text.trim();
    let bad = || BoxError::from(format!("bad rate {text:?} (e.g. 10k, 250000, 1.5M)"));
    let (number, scale) = match text.chars().last() {
        Some('k' | 'K') => (&text[..text.len() - 1], 1e3),
        Some('m' | 'M') => (&text[..text.len() - 1], 1e6),
        _ => (text, 1.0),
    };
    let rate = number.parse::<f64>().map_err(|_| bad())? * scale;
    if !(rate.is_finite() && (1.0..=1e9).contains(&rate)) {
        return Err(format!("rate {text:?} out of range (1 to 1G requests per second)").into());
    }
    Ok(rate)
}

/// What one open-loop run measured.
pub struct OpenLoopRun {
    /// Latency from each request's intended send time to its reply, ns.
    pub histogram: Histogram<u64>,
    /// Latency from each request's actual send time to its reply, ns: the
    /// transport's share, without the wait in the sender's queue.
    pub from_send: Histogram<u64>,
    /// The median latency (from the intended time) of each tenth of the run,
    /// by intended send time, ns (NaN for a part with no request).
    pub timeline: Vec<f64>,
    /// The rate asked for, requests per second.
    pub intended_rate: f64,
    /// Replies received per second, from the first intended send time to
    /// the last reply.
    pub achieved_rate: f64,
    /// Requests scheduled.
    pub scheduled: u64,
    /// Requests answered (and recorded).
    pub completed: u64,
    /// Requests never sent: a timed run gave up sending (see
    /// [`open_loop`]).
    pub unsent: u64,
    /// Requests kept in flight at most.
    pub in_flight_limit: usize,
    /// The measuring end's counters.
    pub counters: Counters,
}

/// A request in flight.
struct Pending {
    seq: u64,
    len: usize,
    intended: Instant,
    sent: Instant,
}

/// The recording side of a run.
struct Recorder {
    start: Instant,
    planned: Duration,
    histogram: Histogram<u64>,
    from_send: Histogram<u64>,
    parts: Vec<Histogram<u64>>,
    completed: u64,
    last_reply: Instant,
}

impl Recorder {
    fn record(&mut self, request: &Pending, now: Instant) {
        let latency = now.duration_since(request.intended).as_nanos() as u64;
        self.histogram.saturating_record(latency);
        self.from_send
            .saturating_record(now.duration_since(request.sent).as_nanos() as u64);
        let offset = request.intended.duration_since(self.start).as_secs_f64();
        let part = (offset / self.planned.as_secs_f64().max(1e-9) * TIMELINE_PARTS as f64) as usize;
        self.parts[part.min(TIMELINE_PARTS - 1)].saturating_record(latency);
        self.completed += 1;
        self.last_reply = now;
    }
}

/// Checks a reply against the oldest request in flight and records it.
fn complete(
    reply: crate::payload::Msg,
    pending: &mut VecDeque<Pending>,
    sized: bool,
    recorder: &mut Recorder,
) -> Result<()> {
    let now = Instant::now();
    let request = pending
        .pop_front()
        .ok_or("a reply arrived with no request in flight")?;
    check_reply(&reply, request.seq, request.len, sized)?;
    recorder.record(&request, now);
    Ok(())
}

/// Open-loop round trips of `size`-byte messages (or of sizes drawn from
/// `sizes`) at `rate` requests per second: `warmup` closed-loop round trips unrecorded, then `measure`
/// (a count of requests, or a duration: `rate × duration` requests), then
/// `QUIT`. A count is sent whole, however long it takes; a duration's
/// requests stop being sent at twice the planned duration plus a second (a
/// rate far beyond the transport's), and those not sent by then are
/// reported as `unsent`.
pub fn open_loop<E: Endpoint>(
    end: &mut E,
    size: usize,
    sizes: Option<&Sizes>,
    ring: usize,
    rate: f64,
    warmup: Amount,
    measure: Amount,
) -> Result<OpenLoopRun> {
    let sized = sizes.is_some();
    let mut seq = 1u64;
    let warm_start = Instant::now();
    let mut warmed = 0u64;
    while !warmup.reached(warmed, warm_start, Instant::now()) {
        let (reply, len) = round_trip(end, seq, size, sizes)?;
        check_reply(&reply, seq, len, sized)?;
        seq += 1;
        warmed += 1;
    }
    let scheduled = match measure {
        Amount::Iters(n) => n.max(1),
        Amount::Time(t) => ((t.as_secs_f64() * rate).ceil() as u64).max(1),
    };
    let interval = 1e9 / rate;
    let planned = Duration::from_nanos((scheduled as f64 * interval) as u64);
    let window = in_flight_limit(end.can_poll(), size, ring);
    let pipelined = end.can_poll();
    let start = Instant::now();
    let give_up = match measure {
        Amount::Time(_) => Some(start + planned * 2 + Duration::from_secs(1)),
        Amount::Iters(_) => None,
    };
    let mut recorder = Recorder {
        start,
        planned,
        histogram: new_histogram(),
        from_send: new_histogram(),
        parts: (0..TIMELINE_PARTS).map(|_| new_histogram()).collect(),
        completed: 0,
        last_reply: start,
    };
    let mut pending: VecDeque<Pending> = VecDeque::with_capacity(window);
    let mut sent = 0u64;
    while sent < scheduled {
        let intended = start + Duration::from_nanos((sent as f64 * interval) as u64);
        // Until the request is due: read replies as they come (or wait for
        // the oldest when the window is full).
        let now = loop {
            if pending.len() >= window {
                let reply = end.recv()?;
                complete(reply, &mut pending, sized, &mut recorder)?;
                continue;
            }
            let now = Instant::now();
            if now >= intended {
                break now;
            }
            if !pending.is_empty() {
                if let Some(reply) = end.try_recv()? {
                    complete(reply, &mut pending, sized, &mut recorder)?;
                    continue;
                }
            }
            std::hint::spin_loop();
        };
        if give_up.is_some_and(|give_up| now >= give_up) {
            break;
        }
        let len = sizes.map_or(size, |sizes| sizes.draw(seq));
        pending.push_back(Pending {
            seq,
            len,
            intended,
            sent: now,
        });
        if pipelined {
            if sized {
                end.send_sized(seq, len)?;
            } else {
                end.send(seq)?;
            }
            end.flush()?;
        } else {
            let (reply, _) = round_trip(end, seq, size, sizes)?;
            complete(reply, &mut pending, sized, &mut recorder)?;
        }
        seq += 1;
        sent += 1;
    }
    while !pending.is_empty() {
        let reply = end.recv()?;
        complete(reply, &mut pending, sized, &mut recorder)?;
    }
    round_trip(end, QUIT, size, sizes)?;
    let elapsed = recorder.last_reply.duration_since(start).as_secs_f64();
    Ok(OpenLoopRun {
        timeline: recorder
            .parts
            .iter()
            .map(|h| {
                if h.is_empty() {
                    f64::NAN
                } else {
                    h.value_at_quantile(0.5) as f64
                }
            })
            .collect(),
        histogram: recorder.histogram,
        from_send: recorder.from_send,
        intended_rate: rate,
        achieved_rate: if elapsed > 0.0 {
            recorder.completed as f64 / elapsed
        } else {
            f64::NAN
        },
        scheduled,
        completed: recorder.completed,
        unsent: scheduled - sent,
        in_flight_limit: window,
        counters: end.counters(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_suffixes() {
        assert_eq!(parse_rate("50k").unwrap(), 50_000.0);
        assert_eq!(parse_rate("1.5M").unwrap(), 1_500_000.0);
        assert_eq!(parse_rate("250").unwrap(), 250.0);
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("2G").is_err());
    }

    #[test]
    fn the_window_fits_what_every_transport_buffers() {
        assert_eq!(in_flight_limit(false, 64, 1 << 20), 1);
        assert_eq!(in_flight_limit(true, 64, 1 << 20), MAX_IN_FLIGHT);
        assert_eq!(in_flight_limit(true, 1 << 20, 4 << 20), 1);
        let window = in_flight_limit(true, 4096, 1 << 20);
        assert!(window * (4096 + OVERHEAD) <= BUFFERED && window > 1);
    }
}
