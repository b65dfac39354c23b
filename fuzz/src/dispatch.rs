//! Target `dispatch`: arbitrary frames and attachments dispatched into a
//! victim `Connection` with declared receivers.
//!
//! The victim is a real connection made with `Connection::create`. The
//! harness plays its peer without opening a `Connection`: it opens the
//! region (the endpoint's first descriptor) itself, attaches a
//! `ferry_ring::Producer` to the ring the victim reads and writes the
//! input's frames there (envelope and body, any bytes), sends the input's
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
//! - bit 6: one descriptor per message at most (else four).
//!
//! Checked: no panic, no hang, no out-of-bounds read of a validated archive
//! (the handlers read every field), and a protocol violation closes the
//! connection for good.

use crate::input::{Cursor, Writer};
use crate::proto::*;
use ferry_handoff::Channel;
use ferry_ring::{BlobWriter, Producer, Region, ring_size};
use ferry_transport::Context;
use ferry_transport::rkyv::vec::ArchivedVec;
use ferry_transport::{
    CallError, Connection, ConnectionConfig, DispatchError, EndpointInfo, RecvError, Remote, Trust,
};
use std::hint::black_box;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bytes in each direction's ring: enough that the victim's replies to any
/// input never fill its (unread) sending ring.
pub const RING_CAPACITY: usize = 64 * 1024;
/// Input bytes used, at most.
const MAX_INPUT: usize = 16 * 1024;
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

/// An input for [`run`].
pub fn encode(mode: u8, ops: &[Op]) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(mode);
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
    static VIOLATED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
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

/// The victim's Network-like receiver.
struct Network;

impl NetworkConnectionHandler for Network {
    fn load_resource(&self, connection: &mut Context, message: &ArchivedLoadResource) {
        entering_handler(connection, "LoadResource");
        black_box(message.request_id.to_native());
        // A handler that dispatches again: the next messages, its own
        // receiver's included, run re-entrantly.
        if black_box(message.url.as_str()) == "reenter" {
            let _ = connection.try_dispatch();
        }
    }

    fn get_cookies(&self, connection: &mut Context, message: &ArchivedGetCookies) -> Cookies {
        entering_handler(connection, "GetCookies");
        Cookies {
            cookies: vec![message.host.as_str().chars().take(16).collect()],
        }
    }

    fn set_cookie(&self, connection: &mut Context, message: &ArchivedSetCookie) {
        entering_handler(connection, "SetCookie");
        black_box(message.host.as_str());
        // A handler that makes a synchronous call of its own.
        if black_box(message.cookie.as_str()) == "sync" {
            let _ = connection.send_sync(
                Remote::<NetworkConnection>::new(0),
                &GetCookies {
                    host: "nested".into(),
                },
                Duration::from_secs(2),
            );
        }
    }
}

/// The victim's receiver with nested types.
struct Catalogue;

impl CatalogHandler for Catalogue {
    fn publish(&self, connection: &mut Context, message: &ArchivedPublish) {
        entering_handler(connection, "Publish");
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
        entering_handler(connection, "Lookup");
        black_box(message.limit.as_ref().map(|l| l.to_native()));
        black_box(walk_strings(&message.names));
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
}

/// Runs one input.
pub fn run(data: &[u8]) {
    run_report(data);
}

/// Runs one input and says what the victim did.
pub fn run_report(data: &[u8]) -> Report {
    let mut report = Report::default();
    VIOLATED.set(false);
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
        .peer_name("fuzz");
    config.max_fds_per_message = if mode & mode::ONE_FD != 0 { 1 } else { 4 };
    if mode & mode::SMALL_DEFERRED != 0 {
        config.max_deferred_bytes = 256;
    }
    let (mut victim, endpoint) = Connection::create(config).expect("create a connection");
    victim.register(0, NetworkConnection::handler(Network));
    victim.register(9, NetworkConnection::handler(Network));
    victim.register(1, Catalog::handler(Catalogue));

    // The peer's side: the region, the ring the victim reads, the socket.
    let info = EndpointInfo::decode(&endpoint.metadata, endpoint.fds.len()).expect("metadata");
    let mut fds = endpoint.fds.into_iter();
    let region_fd = fds.next().expect("region");
    let control = Channel::from_checked(fds.next().expect("control")).expect("socket");
    drop(fds);
    let map_fd = region_fd.try_clone().expect("dup");
    let region = Arc::new(Region::open(region_fd).expect("open the region"));
    let ring_at = info.tx_offset as usize;
    let mut producer = Producer::attach(region, ring_at).expect("attach");
    let mut map: Option<memmap2::MmapRaw> = None;

    // Requests in flight, whose replies the peer may forge (ids 1, 2, ...).
    let replies = Arc::new(AtomicU64::new(0));
    for _ in 0..(mode >> mode::HANDLERS_SHIFT) & 3 {
        let replies = Arc::clone(&replies);
        victim
            .send_with_reply(
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
            )
            .expect("send a request");
    }

    let mut attachments = 0u64;
    while !c.is_empty() {
        match Op::decode(&mut c) {
            Op::Frame(bytes) => {
                let len = bytes.len().min(producer.max_payload());
                if let Ok(mut grant) = producer.try_reserve(len) {
                    grant.copy_from_slice(&bytes[..len]);
                    grant.commit();
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

    if mode & mode::SYNC_CALL != 0 {
        let reply = victim.send_sync(
            Remote::<NetworkConnection>::new(0),
            &GetCookies {
                host: "sync.example".into(),
            },
            Duration::from_secs(2),
        );
        match reply {
            Ok(reply) => {
                black_box(walk_strings(&reply.cookies));
                report.sync_call = Some("reply".into());
            }
            Err(e) => {
                VIOLATED.set(matches!(e, CallError::ProtocolViolation { .. }));
                report.sync_call = Some(format!("{e}"));
            }
        }
    }
    if mode & mode::RAW_API != 0 {
        for _ in 0..MAX_INPUT {
            match victim.try_recv_frame() {
                Ok(mut frame) => {
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
            match victim.dispatch(Some(Duration::ZERO)) {
                Ok(0) => {
                    report.end = "idle".into();
                    break;
                }
                Ok(n) => report.handled += n,
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
                Err(e) => {
                    report.end = e.to_string();
                    break;
                }
            }
        }
    }
    black_box(replies.load(Ordering::Relaxed));
    drop(victim);
    drop(control);
    report
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
            let fd = memfd_create("fuzz", MemfdFlags::CLOEXEC).ok()?;
            rustix::fs::ftruncate(&fd, u64::from(*len)).ok()?;
            Some(fd)
        }
        Fd::Event => rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).ok(),
        Fd::Pipe => rustix::pipe::pipe().ok().map(|(read, _write)| read),
    }
}
