//! Target `dispatch`: arbitrary frames and attachments dispatched into a
//! victim `Connection` with declared receivers.
//!
//! The victim is a real connection made with `Connection::create`. The
//! harness plays its peer without opening a `Connection`: it takes the
//! endpoint's [`ENDPOINT_FDS`] descriptors (in the order
//! `ferry_transport::Endpoint` documents: the region first, the control
//! socket second; it holds the others until the end), opens the region
//! itself, attaches a `ferry_ring::Producer` to the ring the victim reads
//! and writes the input's frames there (envelope and body, any bytes), sends the input's
//! attachments (descriptor messages) on the endpoint's control socket, and
//! may scribble on the ring through a second mapping. Then it closes its
//! ring end (so the victim never waits for more) and lets the victim
//! dispatch, or receive raw frames, until it stops.
//!
//! Input: a mode byte, then [`Op`]s.
//! - mode bit 0: `Trust::Trusted` (frames read in place), else `Untrusted`;
//! - bit 1: the raw API (`try_recv_frame`) instead of `dispatch`;
//! - bit 2: the victim first makes a synchronous call (request id
//!   `handlers + 1`), which dispatches or sets aside what arrives meanwhile;
//! - bits 3-4: the victim first sends that many requests with reply
//!   handlers (request ids `1..=handlers`);
//! - bit 5: a small `max_deferred_bytes` (256), so set-aside overflows;
//! - bit 6: one descriptor per message at most (else four);
//! - bit 7: [`Limits`] follow (8 bytes), else the defaults.
//!
//! Handlers that call back: `SetCookie { cookie: "sync" }` and a `Lookup`
//! naming `"sync"` (allowed while waiting: it runs inside a waiting call,
//! and its call nests in that one) make a synchronous call of their own.
//!
//! Checked, beyond no panic, no hang and no out-of-bounds read of a
//! validated archive (the handlers read every field):
//! - a protocol violation closes the connection for good: nothing is
//!   handled after it;
//! - synchronous calls never nest deeper than `max_sync_nesting` (the
//!   harness counts its calls in progress), and a message handler runs
//!   inside a waiting call only while that call is less deep than the bound;
//! - the set-aside queue exceeds its descriptor budget by one message at
//!   most: after every call into the victim, the descriptors of the kinds
//!   the peer attaches that this process holds (memfds, sealed blobs, pipes;
//!   eventfds cannot be told from the connection's own and are not counted)
//!   are at most `max_deferred_fds` plus one message's worth;
//! - a frame whose allowed-while-waiting flag contradicts the victim's
//!   declaration of its message ends the connection with a violation
//!   (`AllowedWhileWaitingMismatch`, or one found earlier);
//! - `dispatch` handles at most `max_dispatch_batch` messages a call; raw
//!   frames are at most `max_message_size`; `send_with_reply` refuses with
//!   `TooManyPending` exactly beyond `max_pending_replies`;
//! - no descriptor leaks: the process holds as many after an input as
//!   before.

use crate::input::{Cursor, Writer};
use crate::proto::*;
use ferry_handoff::Channel;
use ferry_ring::{BlobWriter, Producer, Region, ring_size};
use ferry_transport::fuzzing::fds::open_fds;
use ferry_transport::rkyv::vec::ArchivedVec;
use ferry_transport::wire::{ENVELOPE_SIZE, Flags};
use ferry_transport::{
    CallError, Connection, ConnectionConfig, Context, DispatchError, ENDPOINT_FDS, EndpointInfo,
    Message, RecvError, Remote, Reply, SendError, Trust, Violation,
};
use std::cell::Cell;
use std::hint::black_box;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Bytes in each direction's ring: enough that the victim's replies and
/// nested calls for any input never fill its (unread) sending ring (a
/// `Lookup` of 51 input bytes at least brings a reply and a call of about
/// 350 bytes in all).
pub const RING_CAPACITY: usize = 256 * 1024;
/// Input bytes used, at most.
const MAX_INPUT: usize = 16 * 1024;
/// How long a synchronous call of the victim waits. Its peer has closed its
/// ring before, so a call normally ends as soon as it has read everything.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the victim's replies wait for room (its ring is never read):
/// only a bound, [`RING_CAPACITY`] is large enough.
const REPLY_TIMEOUT: Duration = Duration::from_millis(200);
/// The name of the unsealed memfds the peer attaches (counted with the
/// sealed blobs and pipes it attaches, see [`attached_fds_held`]).
const MEMFD_NAME: &str = "ferry-fuzz-attached";

/// Bits of the mode byte.
pub mod mode {
    /// Read frames in place.
    pub const TRUSTED: u8 = 1;
    /// Receive with the raw API.
    pub const RAW_API: u8 = 2;
    /// Make a synchronous call first.
    pub const SYNC_CALL: u8 = 4;
    /// Send this many requests with reply handlers first (times 8, max 3).
    pub const HANDLERS_SHIFT: u8 = 3;
    /// A small `max_deferred_bytes`.
    pub const SMALL_DEFERRED: u8 = 32;
    /// One descriptor per message.
    pub const ONE_FD: u8 = 64;
    /// [`Limits`](super::Limits) follow the mode byte.
    pub const LIMITS: u8 = 128;
}

/// The transport limits an input sets (mode bit 7), as raw fields; see
/// [`Limits::apply`] for how each maps to a `ConnectionConfig` knob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// `max_sync_nesting`: this modulo 5 (0 to 4).
    pub max_sync_nesting: u8,
    /// `max_deferred_bytes`, as is (overrides mode bit 5).
    pub max_deferred_bytes: u16,
    /// `max_deferred_fds`: this modulo 8.
    pub max_deferred_fds: u8,
    /// `max_dispatch_batch` (0 becomes 1, as the builder does).
    pub max_dispatch_batch: u8,
    /// `max_pending_replies`: this modulo 4.
    pub max_pending_replies: u8,
    /// `max_message_size`, as is.
    pub max_message_size: u16,
}

impl Limits {
    fn decode(c: &mut Cursor<'_>) -> Limits {
        Limits {
            max_sync_nesting: c.u8(),
            max_deferred_bytes: c.u16(),
            max_deferred_fds: c.u8(),
            max_dispatch_batch: c.u8(),
            max_pending_replies: c.u8(),
            max_message_size: c.u16(),
        }
    }

    fn encode(&self, w: &mut Writer) {
        w.u8(self.max_sync_nesting)
            .u16(self.max_deferred_bytes)
            .u8(self.max_deferred_fds)
            .u8(self.max_dispatch_batch)
            .u8(self.max_pending_replies)
            .u16(self.max_message_size);
    }

    /// Sets the knobs in `config`.
    pub fn apply(&self, config: ConnectionConfig) -> ConnectionConfig {
        config
            .max_sync_nesting(u32::from(self.max_sync_nesting % 5))
            .max_deferred_bytes(usize::from(self.max_deferred_bytes))
            .max_deferred_fds(usize::from(self.max_deferred_fds % 8))
            .max_dispatch_batch(usize::from(self.max_dispatch_batch))
            .max_pending_replies(usize::from(self.max_pending_replies % 4))
            .max_message_size(usize::from(self.max_message_size))
    }
}

/// A descriptor to attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fd {
    /// A sealed blob with these bytes (at least one).
    Blob(Vec<u8>),
    /// A memfd of this size, not sealed.
    Unsealed(u16),
    /// An eventfd.
    Event,
    /// The read end of a pipe.
    Pipe,
}

/// What the hostile peer does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Publishes one frame with these bytes (envelope, then body).
    Frame(Vec<u8>),
    /// Sends an attachment: the next sequence number's header (`header:
    /// None`) or these 16 bytes, with descriptors.
    Attachment {
        /// A raw header instead of the right one.
        header: Option<[u8; 16]>,
        /// The descriptors.
        fds: Vec<Fd>,
    },
    /// Stores a word at this offset of the victim's receiving ring (header or
    /// data, made 8-aligned, modulo the ring's size).
    Scribble {
        /// Offset in the ring.
        at: u32,
        /// The word.
        value: u64,
    },
}

impl Op {
    fn decode(c: &mut Cursor<'_>) -> Op {
        match c.u8() % 3 {
            0 => {
                let len = usize::from(c.u16());
                Op::Frame(c.bytes(len).to_vec())
            }
            1 => {
                let header = (c.u8() != 0).then(|| {
                    let mut h = [0u8; 16];
                    let bytes = c.bytes(16);
                    h[..bytes.len()].copy_from_slice(bytes);
                    h
                });
                let count = c.u8() % 4;
                let fds = (0..count)
                    .map(|_| match c.u8() % 4 {
                        0 => {
                            let len = usize::from(c.u16());
                            Fd::Blob(c.bytes(len).to_vec())
                        }
                        1 => Fd::Unsealed(c.u16()),
                        2 => Fd::Event,
                        _ => Fd::Pipe,
                    })
                    .collect();
                Op::Attachment { header, fds }
            }
            _ => Op::Scribble {
                at: c.u32(),
                value: c.u64(),
            },
        }
    }

    /// Appends the encoding [`run`] reads.
    pub fn encode(&self, w: &mut Writer) {
        match self {
            Op::Frame(bytes) => {
                w.u8(0).u16(bytes.len() as u16).bytes(bytes);
            }
            Op::Attachment { header, fds } => {
                w.u8(1);
                match header {
                    None => w.u8(0),
                    Some(h) => w.u8(1).bytes(h),
                };
                w.u8(fds.len() as u8);
                for fd in fds {
                    match fd {
                        Fd::Blob(bytes) => w.u8(0).u16(bytes.len() as u16).bytes(bytes),
                        Fd::Unsealed(len) => w.u8(1).u16(*len),
                        Fd::Event => w.u8(2),
                        Fd::Pipe => w.u8(3),
                    };
                }
            }
            Op::Scribble { at, value } => {
                w.u8(2).u32(*at).u64(*value);
            }
        }
    }
}

/// An input for [`run`] with the default limits (`mode` without
/// [`mode::LIMITS`]).
pub fn encode(mode: u8, ops: &[Op]) -> Vec<u8> {
    encode_with_limits(mode & !mode::LIMITS, None, ops)
}

/// An input for [`run`]; `limits` sets [`mode::LIMITS`] when given.
pub fn encode_with_limits(mode: u8, limits: Option<Limits>, ops: &[Op]) -> Vec<u8> {
    let mut w = Writer::new();
    match limits {
        Some(limits) => {
            w.u8(mode | mode::LIMITS);
            limits.encode(&mut w);
        }
        None => {
            w.u8(mode & !mode::LIMITS);
        }
    }
    for op in ops {
        op.encode(&mut w);
    }
    w.finish()
}

/// Reads every field of an archived entry.
fn walk_entry(entry: &ArchivedEntry) -> u64 {
    let mut sum = entry.name.as_str().len() as u64;
    sum += entry.note.as_ref().map_or(0, |n| n.as_str().len() as u64);
    sum += entry
        .counts
        .iter()
        .map(|c| u64::from(c.to_native()))
        .sum::<u64>();
    for child in entry.children.iter() {
        sum = sum.wrapping_add(child.id.to_native());
        sum += u64::from(child.initial.to_native());
        sum += u64::from(child.enabled);
        for tag in child.tags.iter() {
            sum += tag.as_ref().map_or(1, |t| t.as_str().len() as u64);
        }
        for row in child.grid.iter() {
            sum += row.iter().map(|v| u64::from(v.to_native())).sum::<u64>();
        }
    }
    sum += match &entry.value {
        ArchivedValue::Empty => 0,
        ArchivedValue::Flag(b) => u64::from(*b),
        ArchivedValue::Text(t) => t.as_str().len() as u64,
        ArchivedValue::Numbers(n) => n.iter().map(|v| u64::from(v.to_native())).sum(),
        ArchivedValue::Pair { key, value } => {
            key.as_str().len() as u64 + value.as_ref().map_or(0, |v| v.to_native())
        }
    };
    sum
}

fn walk_strings(strings: &ArchivedVec<ferry_transport::rkyv::string::ArchivedString>) -> u64 {
    strings.iter().map(|s| s.as_str().len() as u64).sum()
}

thread_local! {
    /// Set once the victim has reported a protocol violation to the harness.
    static VIOLATED: Cell<bool> = const { Cell::new(false) };
    /// The victim's `max_sync_nesting` for this input.
    static MAX_NESTING: Cell<u32> = const { Cell::new(0) };
    /// Synchronous calls of the victim in progress (the harness's own and
    /// its handlers'), and the most seen at once.
    static SYNC_DEPTH: Cell<u32> = const { Cell::new(0) };
    static DEEPEST: Cell<u32> = const { Cell::new(0) };
}

/// Every handler and reply handler starts here: nothing the peer sent may
/// be handled once the connection failed with a protocol violation (the
/// peer is known hostile; WebKit and Mojo drop everything after an invalid
/// message).
fn entering_handler(connection: &Connection, what: &str) {
    assert!(
        !VIOLATED.get(),
        "{what} handled after the victim reported a protocol violation"
    );
    // Not open: closed by the peer (messages set aside before that may
    // still be handled) or failed (nothing may).
    if let Some(violation) = connection.violation() {
        panic!("{what} handled after the connection failed: {violation}");
    }
}

/// A message handler (not a reply handler) starts here: besides
/// [`entering_handler`], it runs from a plain `dispatch` (no call waits) or
/// inside waiting calls that nest less deep than the bound, since the
/// innermost call at the bound sets every message aside.
fn entering_message_handler(connection: &Connection, what: &str) {
    entering_handler(connection, what);
    let depth = SYNC_DEPTH.get();
    let bound = MAX_NESTING.get();
    assert!(
        depth == 0 || depth < bound,
        "{what} handled inside {depth} waiting calls, the bound is {bound}"
    );
}

/// Makes a synchronous call through `call`, counting how deep calls nest:
/// never deeper than `max_sync_nesting` (one call at least: a handler run by
/// a plain `dispatch` may always call).
fn call_sync(call: impl FnOnce() -> Result<Reply<Cookies>, CallError>) -> Result<u64, CallError> {
    let depth = SYNC_DEPTH.get() + 1;
    let bound = MAX_NESTING.get().max(1);
    assert!(
        depth <= bound,
        "synchronous calls nest {depth} deep, the bound is {bound}"
    );
    SYNC_DEPTH.set(depth);
    DEEPEST.set(DEEPEST.get().max(depth));
    let result = call();
    SYNC_DEPTH.set(depth - 1);
    result.map(|reply| walk_strings(&reply.cookies))
}

/// The victim's Network-like receiver.
struct Network;

impl NetworkConnectionHandler for Network {
    fn load_resource(&self, connection: &mut Context, message: &ArchivedLoadResource) {
        entering_message_handler(connection, "LoadResource");
        black_box(message.request_id.to_native());
        // A handler that dispatches again: the next messages, its own
        // receiver's included, run re-entrantly.
        if black_box(message.url.as_str()) == "reenter" {
            let _ = connection.try_dispatch();
        }
    }

    fn get_cookies(&self, connection: &mut Context, message: &ArchivedGetCookies) -> Cookies {
        entering_message_handler(connection, "GetCookies");
        Cookies {
            cookies: vec![message.host.as_str().chars().take(16).collect()],
        }
    }

    fn set_cookie(&self, connection: &mut Context, message: &ArchivedSetCookie) {
        entering_message_handler(connection, "SetCookie");
        black_box(message.host.as_str());
        // A handler that makes a synchronous call of its own.
        if black_box(message.cookie.as_str()) == "sync" {
            let _ = call_sync(|| nested_call(connection));
        }
    }
}

/// The synchronous call a handler makes.
fn nested_call(connection: &mut Context) -> Result<Reply<Cookies>, CallError> {
    connection.send_sync(
        Remote::<NetworkConnection>::new(0),
        &GetCookies {
            host: "nested".into(),
        },
        CALL_TIMEOUT,
    )
}

/// The victim's receiver with nested types.
struct Catalogue;

impl CatalogHandler for Catalogue {
    fn publish(&self, connection: &mut Context, message: &ArchivedPublish) {
        entering_message_handler(connection, "Publish");
        let mut sum = u64::from(message.version.to_native());
        sum += message
            .origin
            .as_ref()
            .map_or(0, |o| o.as_str().len() as u64);
        for entry in message.entries.iter() {
            sum = sum.wrapping_add(walk_entry(entry));
        }
        black_box(sum);
    }

    fn lookup(&self, connection: &mut Context, message: &ArchivedLookup) -> Found {
        entering_message_handler(connection, "Lookup");
        black_box(message.limit.as_ref().map(|l| l.to_native()));
        black_box(walk_strings(&message.names));
        // Allowed while waiting, and calls back (the documented "A calls B,
        // B calls A"): a peer that keeps sending it while the victim waits
        // makes calls nest, as deep as the victim allows.
        if message.names.iter().any(|name| name.as_str() == "sync") {
            let _ = call_sync(|| nested_call(connection));
        }
        Found {
            entries: message
                .names
                .iter()
                .take(2)
                .map(|name| Entry {
                    name: name.as_str().chars().take(16).collect(),
                    ..sample_entry(1)
                })
                .collect(),
        }
    }
}

/// What the victim did with one input (for the seed generator and tests).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Messages dispatched (or raw frames received).
    pub handled: usize,
    /// How the synchronous call ended, if one was made.
    pub sync_call: Option<String>,
    /// How the victim stopped.
    pub end: String,
    /// The most synchronous calls that waited inside one another.
    pub deepest_nesting: u32,
    /// The most attached descriptors held after a call into the victim.
    pub most_fds_held: usize,
    /// Whether a frame lied about being allowed while waiting.
    pub lied: bool,
}

/// Runs one input.
pub fn run(data: &[u8]) {
    run_report(data);
}

/// Runs one input and says what the victim did.
pub fn run_report(data: &[u8]) -> Report {
    // Inputs run one at a time (tests run them from several threads), so
    // that the descriptors counted are this input's.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    warm_up();
    let before = open_fds();
    let report = victim_run(data);
    // The victim and everything the peer made are gone: so are their
    // descriptors. (The hang-up watcher drops a closed connection's
    // registration from its own thread, a moment later: bounded wait.)
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut after = open_fds();
    while after.len() > before.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
        after = open_fds();
    }
    assert!(
        after.len() <= before.len(),
        "descriptors leaked: {after:?}, before the input: {before:?}"
    );
    report
}

fn victim_run(data: &[u8]) -> Report {
    let mut report = Report::default();
    VIOLATED.set(false);
    SYNC_DEPTH.set(0);
    DEEPEST.set(0);
    let data = &data[..data.len().min(MAX_INPUT)];
    let mut c = Cursor::new(data);
    let mode = c.u8();
    let mut config = ConnectionConfig::default()
        .trust(if mode & mode::TRUSTED != 0 {
            Trust::Trusted
        } else {
            Trust::Untrusted
        })
        .schema(SCHEMA)
        .ring_capacity(RING_CAPACITY)
        .reply_timeout(REPLY_TIMEOUT)
        .peer_name("fuzz");
    config.max_fds_per_message = if mode & mode::ONE_FD != 0 { 1 } else { 4 };
    if mode & mode::SMALL_DEFERRED != 0 {
        config.max_deferred_bytes = 256;
    }
    if mode & mode::LIMITS != 0 {
        config = Limits::decode(&mut c).apply(config);
    }
    let config = config;
    MAX_NESTING.set(config.max_sync_nesting);
    // What the set-aside queue may hold, plus the message that overflows it
    // (its descriptors and, out of line, its blob).
    let most_fds_allowed = config.max_deferred_fds + config.max_fds_per_message + 1;
    // Pipes the process had before (its standard output, say) are not the
    // peer's.
    let before = attached_fds_held();
    let attached = || attached_fds_held().saturating_sub(before);
    let held_after = |what: &str, report: &mut Report| {
        let held = attached();
        report.most_fds_held = report.most_fds_held.max(held);
        assert!(
            held <= most_fds_allowed,
            "{held} attached descriptors held after {what}: max_deferred_fds {} and one \
             message of {} at most",
            config.max_deferred_fds,
            config.max_fds_per_message + 1,
        );
    };

    let (mut victim, endpoint) = Connection::create(config.clone()).expect("create a connection");
    victim.register(0, NetworkConnection::handler(Network));
    victim.register(9, NetworkConnection::handler(Network));
    victim.register(1, Catalog::handler(Catalogue));

    // The peer's side: the region, the ring the victim reads, the socket.
    let info = EndpointInfo::decode(&endpoint.metadata, endpoint.fds.len()).expect("metadata");
    assert_eq!(endpoint.fds.len(), ENDPOINT_FDS);
    let mut fds = endpoint.fds.into_iter();
    let region_fd = fds.next().expect("region");
    let control = Channel::from_checked(fds.next().expect("control")).expect("socket");
    // The rest (the notification descriptors) the peer holds, as a live
    // peer does, until the victim is gone: closing them could look like a
    // hang-up.
    let notification: Vec<OwnedFd> = fds.collect();
    let map_fd = region_fd.try_clone().expect("dup");
    let region = Arc::new(Region::open(region_fd).expect("open the region"));
    let ring_at = info.tx_offset as usize;
    let mut producer = Producer::attach(region, ring_at).expect("attach");
    let mut map: Option<memmap2::MmapRaw> = None;

    // Requests in flight, whose replies the peer may forge (ids 1, 2, ...).
    let replies = Arc::new(AtomicU64::new(0));
    let mut waiting = 0;
    for _ in 0..(mode >> mode::HANDLERS_SHIFT) & 3 {
        let replies = Arc::clone(&replies);
        let sent = victim.send_with_reply(
            Remote::<NetworkConnection>::new(0),
            &GetCookies {
                host: "example.org".into(),
            },
            move |connection, reply| {
                if let Ok(reply) = reply {
                    entering_handler(connection, "a reply");
                    replies.fetch_add(walk_strings(&reply.cookies), Ordering::Relaxed);
                }
            },
        );
        let full = waiting >= config.max_pending_replies;
        match sent {
            Ok(()) => {
                assert!(
                    !full,
                    "request {} sent beyond max_pending_replies",
                    waiting + 1
                );
                waiting += 1;
            }
            Err(SendError::TooManyPending { max }) => {
                assert!(full, "TooManyPending (max {max}) with {waiting} waiting");
            }
            // Too large for a small `max_message_size`: nothing waits.
            Err(e) => assert!(!full, "{e} instead of TooManyPending"),
        }
    }

    let mut attachments = 0u64;
    let mut scribbled = false;
    while !c.is_empty() {
        match Op::decode(&mut c) {
            Op::Frame(bytes) => {
                let len = bytes.len().min(producer.max_payload());
                if let Ok(mut grant) = producer.try_reserve(len) {
                    grant.copy_from_slice(&bytes[..len]);
                    grant.commit();
                    report.lied |= lies(&bytes[..len]);
                }
            }
            Op::Attachment { header, fds } => {
                let owned: Vec<OwnedFd> = fds.iter().filter_map(make_fd).collect();
                let borrowed: Vec<_> = owned.iter().map(|fd| fd.as_fd()).collect();
                let header = header.unwrap_or_else(|| {
                    let mut h = [0u8; 16];
                    h[..8].copy_from_slice(b"FERRYFDS");
                    h[8..].copy_from_slice(&(attachments + 1).to_le_bytes());
                    h
                });
                if control.try_send(&header, &borrowed).is_ok() {
                    attachments += 1;
                }
            }
            Op::Scribble { at, value } => {
                scribbled = true;
                let map = map.get_or_insert_with(|| {
                    memmap2::MmapOptions::new()
                        .len(info.region_len as usize)
                        .map_raw(&std::fs::File::from(map_fd.try_clone().expect("dup")))
                        .expect("map the region")
                });
                let at = (at as usize % ring_size(RING_CAPACITY)) & !7;
                // SAFETY: `at + 8` lies inside the ring, inside the mapping;
                // 8-aligned; the victim accesses shared words atomically and
                // does not run concurrently (it runs after the peer is done).
                unsafe { AtomicU64::from_ptr(map.as_mut_ptr().add(ring_at + at).cast()) }
                    .store(value, Ordering::Release);
            }
        }
    }
    // A malformed attachment last: a frame that announces descriptors the
    // peer never sent fails at once instead of waiting for them.
    let _ = control.try_send(b"no more fds here", &[]);
    // Close our end: once it has read everything, the victim sees `Closed`.
    drop(producer);
    // The peer keeps no descriptor it attached: what this process holds of
    // them from now on, the victim holds.
    assert_eq!(attached(), 0, "the peer kept attached descriptors");

    if mode & mode::SYNC_CALL != 0 {
        let reply = call_sync(|| {
            victim.send_sync(
                Remote::<NetworkConnection>::new(0),
                &GetCookies {
                    host: "sync.example".into(),
                },
                CALL_TIMEOUT,
            )
        });
        match reply {
            Ok(cookies) => {
                black_box(cookies);
                report.sync_call = Some("reply".into());
            }
            Err(e) => {
                VIOLATED.set(matches!(e, CallError::ProtocolViolation { .. }));
                report.sync_call = Some(format!("{e}"));
            }
        }
        held_after("the synchronous call", &mut report);
    }
    let raw = mode & mode::RAW_API != 0;
    if raw {
        for _ in 0..MAX_INPUT {
            match victim.try_recv_frame() {
                Ok(mut frame) => {
                    let len = frame.bytes().len();
                    assert!(
                        len <= config.max_message_size,
                        "a frame of {len} bytes received, max_message_size {}",
                        config.max_message_size
                    );
                    black_box(frame.bytes().iter().map(|&b| u64::from(b)).sum::<u64>());
                    black_box(frame.envelope());
                    drop(frame.take_fds());
                    report.handled += 1;
                }
                Err(e) => {
                    VIOLATED.set(matches!(e, RecvError::ProtocolViolation { .. }));
                    report.end = e.to_string();
                    break;
                }
            }
        }
    } else {
        for _ in 0..MAX_INPUT {
            let dispatched = victim.dispatch(Some(Duration::ZERO));
            held_after("dispatch", &mut report);
            match dispatched {
                Ok(0) => {
                    report.end = "idle".into();
                    break;
                }
                Ok(n) => {
                    assert!(
                        n <= config.max_dispatch_batch,
                        "dispatch handled {n} messages, max_dispatch_batch {}",
                        config.max_dispatch_batch
                    );
                    report.handled += n;
                }
                Err(e @ DispatchError::ProtocolViolation { .. }) => {
                    report.end = e.to_string();
                    VIOLATED.set(true);
                    assert!(!victim.is_open(), "a violation left the connection open");
                    // Whatever is left, set aside or in the ring, is never
                    // handled (the handlers check) and the connection stays
                    // closed.
                    let again = victim.dispatch(Some(Duration::ZERO));
                    assert!(again.is_err(), "dispatch after a violation: {again:?}");
                    break;
                }
                // A reply that could not be sent (larger than
                // `max_message_size`): the message was handled; go on.
                Err(DispatchError::Reply(e)) => report.end = format!("reply failed: {e}"),
                Err(e) => {
                    report.end = e.to_string();
                    break;
                }
            }
        }
    }
    // A lie is found when the frame is routed: every frame is, unless an
    // earlier violation ended the connection (the raw API routes nothing;
    // a scribble may have changed the frame).
    if report.lied && !raw && !scribbled {
        let violation = victim.violation();
        assert!(
            violation.is_some(),
            "a frame lied about being allowed while waiting, and the victim ended with {:?}",
            report.end
        );
        if let Some(Violation::AllowedWhileWaitingMismatch { .. }) = violation {
            report.end += " (the lie)";
        }
    }
    report.deepest_nesting = DEEPEST.get();
    black_box(replies.load(Ordering::Relaxed));
    drop(victim);
    drop(control);
    drop(notification);
    report
}

/// Whether `frame` is a message for one of the victim's receivers whose
/// allowed-while-waiting flag contradicts the victim's declaration of it.
fn lies(frame: &[u8]) -> bool {
    let Some(envelope) = frame.get(..ENVELOPE_SIZE) else {
        return false;
    };
    let u64_at = |at: usize| u64::from_le_bytes(envelope[at..at + 8].try_into().unwrap());
    let u32_at = |at: usize| u32::from_le_bytes(envelope[at..at + 4].try_into().unwrap());
    let flags = Flags(u16::from_le_bytes([envelope[28], envelope[29]]));
    if flags.has(Flags::REPLY) || flags.has(Flags::RAW) {
        return false;
    }
    let (destination, receiver, schema, message) = (u64_at(0), u32_at(16), u32_at(20), u32_at(24));
    fn declared<M: Message>() -> (u32, u32, u32, bool) {
        use ferry_transport::Receiver;
        (
            <M::Receiver as Receiver>::ID,
            <M::Receiver as Receiver>::SCHEMA,
            M::ID,
            M::ALLOWED_WHILE_WAITING,
        )
    }
    let network = [
        declared::<LoadResource>(),
        declared::<GetCookies>(),
        declared::<SetCookie>(),
    ];
    let catalog = [declared::<Publish>(), declared::<Lookup>()];
    let messages: &[(u32, u32, u32, bool)] = match destination {
        0 | 9 => &network,
        1 => &catalog,
        _ => &[],
    };
    messages.iter().any(|&(id, hash, m, allowed)| {
        (id, hash, m) == (receiver, schema, message)
            && allowed != flags.has(Flags::ALLOWED_WHILE_WAITING)
    })
}

/// The first connection of a process starts the hang-up watcher, which
/// keeps a thread and descriptors for good: made once before any input is
/// measured.
fn warm_up() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let pair = Connection::pair(ConnectionConfig::default().ring_capacity(4096));
        drop(pair.expect("a connection pair"));
    });
}

/// Descriptors of the kinds the peer attaches that this process holds:
/// memfds named [`MEMFD_NAME`], sealed blobs (the victim makes none: its
/// replies and calls are small enough for the ring), pipes (the victim has
/// none of its own). Eventfds are not counted: the connection has its own.
fn attached_fds_held() -> usize {
    open_fds()
        .iter()
        .filter(|fd| {
            let target = fd.split(" -> ").nth(1).unwrap_or_default();
            target.starts_with(&format!("/memfd:{MEMFD_NAME}"))
                || target.starts_with("/memfd:ferry-blob")
                || target.starts_with("pipe:")
        })
        .count()
}

/// Makes a descriptor to attach (`None` if the system refuses).
fn make_fd(fd: &Fd) -> Option<OwnedFd> {
    use rustix::fs::{MemfdFlags, memfd_create};
    match fd {
        Fd::Blob(bytes) => {
            let mut blob = BlobWriter::create(bytes.len().max(1)).ok()?;
            blob[..bytes.len()].copy_from_slice(bytes);
            let sealed = blob.seal().ok()?;
            sealed.fd().try_clone_to_owned().ok()
        }
        Fd::Unsealed(len) => {
            let fd = memfd_create(MEMFD_NAME, MemfdFlags::CLOEXEC).ok()?;
            rustix::fs::ftruncate(&fd, u64::from(*len)).ok()?;
            Some(fd)
        }
        Fd::Event => rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).ok(),
        Fd::Pipe => rustix::pipe::pipe().ok().map(|(read, _write)| read),
    }
}
