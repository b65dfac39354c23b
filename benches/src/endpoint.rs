//! What every transport offers the measuring loops, and the peer's side of
//! both measurements written once over it.

use crate::Result;
use crate::payload::{Msg, QUIT, SYNC};
use std::time::Duration;

/// How long one blocking operation may take before it is called a hang: a
/// bound on bugs, never reached by a healthy run.
pub const OP_TIMEOUT: Duration = Duration::from_secs(30);

/// What an endpoint counted: messages, and for the transports that sleep on
/// a futex, how often it slept and how often it woke its peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Messages sent.
    pub sent: u64,
    /// Messages received.
    pub received: u64,
    /// `futex_wake` calls issued because the peer slept.
    pub wakes: u64,
    /// Times this end went to sleep.
    pub parks: u64,
}

impl Counters {
    /// Sum of two ends' counters.
    pub fn plus(self, other: Counters) -> Counters {
        Counters {
            sent: self.sent + other.sent,
            received: self.received + other.received,
            wakes: self.wakes + other.wakes,
            parks: self.parks + other.parks,
        }
    }

    /// Counts as words for the control channel.
    pub fn encode(&self) -> String {
        format!(
            "sent={} received={} wakes={} parks={}",
            self.sent, self.received, self.wakes, self.parks
        )
    }

    /// Parses [`encode`](Self::encode)'s words.
    pub fn decode(text: &str) -> Counters {
        let mut counters = Counters::default();
        for word in text.split_ascii_whitespace() {
            let Some((key, value)) = word.split_once('=') else {
                continue;
            };
            let value = value.parse().unwrap_or(0);
            match key {
                "sent" => counters.sent = value,
                "received" => counters.received = value,
                "wakes" => counters.wakes = value,
                "parks" => counters.parks = value,
                _ => {}
            }
        }
        counters
    }
}

/// One end of a transport, as the measuring loops drive it. Each end sends
/// `size`-byte messages (the pattern with a tag) and acknowledgements, and
/// receives whole messages, copying each into a private buffer (see
/// [`crate::payload`]).
pub trait Endpoint {
    /// Writes the `size`-byte message tagged `tag` into the transport and
    /// sends it (batching transports may hold it until [`flush`](Self::flush)).
    fn send(&mut self, tag: u64) -> Result<()>;
    /// Sends an acknowledgement (count and check total) at once.
    fn send_ack(&mut self, count: u64, sum: u64) -> Result<()>;
    /// Receives the next message, copies it out and checks it.
    fn recv(&mut self) -> Result<Msg>;
    /// Publishes what [`send`](Self::send) held back.
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    /// Writes a message of `len` bytes (a size drawn from `--sizes-from`,
    /// at most the job's size) tagged `tag`, with its length in its second
    /// word ([`crate::payload::stamp_sized`]), and sends it.
    fn send_sized(&mut self, tag: u64, len: usize) -> Result<()> {
        let _ = (tag, len);
        Err("this transport sends one size only (no --sizes-from)".into())
    }
    /// [`send_sized`](Self::send_sized) and receives the reply.
    fn round_trip_sized(&mut self, tag: u64, len: usize) -> Result<Msg> {
        self.send_sized(tag, len)?;
        self.flush()?;
        self.recv()
    }
    /// Whether [`try_recv`](Self::try_recv) works: the open loop
    /// ([`crate::open_loop`]) then keeps several requests in flight and
    /// reads replies between sends. An endpoint that cannot look without
    /// waiting (a synchronous call) is driven with one request in flight.
    fn can_poll(&self) -> bool {
        false
    }
    /// Receives the next message if one is there, without waiting (only
    /// called when [`can_poll`](Self::can_poll) says so).
    fn try_recv(&mut self) -> Result<Option<Msg>> {
        Err("this transport cannot receive without waiting".into())
    }
    /// Sends a request tagged `tag` and receives the reply.
    fn round_trip(&mut self, tag: u64) -> Result<Msg> {
        self.send(tag)?;
        self.flush()?;
        self.recv()
    }
    /// What this end counted.
    fn counters(&self) -> Counters {
        Counters::default()
    }
}

/// The peer's side of a latency job: answers each request with a message of
/// the same size tagged with the check of the request, until [`QUIT`].
/// With `sized` (`--sizes-from`), the reply has the request's size.
pub fn serve_latency<E: Endpoint>(end: &mut E, sized: bool) -> Result<()> {
    loop {
        let request = end.recv()?;
        if sized {
            end.send_sized(request.check, request.len)?;
        } else {
            end.send(request.check)?;
        }
        end.flush()?;
        if request.tag == QUIT {
            return Ok(());
        }
    }
}

/// The peer's side of a throughput job: counts and checks the stream,
/// acknowledges each [`SYNC`], and returns after acknowledging [`QUIT`].
pub fn serve_throughput<E: Endpoint>(end: &mut E) -> Result<()> {
    let (mut count, mut total) = (0u64, 0u64);
    loop {
        let message = end.recv()?;
        match message.tag {
            SYNC | QUIT => {
                end.send_ack(count, total)?;
                if message.tag == QUIT {
                    return Ok(());
                }
                (count, total) = (0, 0);
            }
            _ => {
                count += 1;
                total = total.wrapping_add(message.check);
            }
        }
    }
}
