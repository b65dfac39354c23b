//! ferry-transport, through its typed API (`ferry`, `ferry-sync`) and its
//! raw frame API (`ferry-raw`).
//!
//! Typed: the sender's message owns a `Vec<u8>` holding the pattern; rkyv
//! serializes it straight into the ring (one copy); the receiver's handler
//! copies the archived bytes, in place (trusted) or in the transport's
//! private copy (untrusted), into its own buffer and checks them there. `ferry` sends one message each way (`send`, and the reply
//! from the peer's handler with `send`, received by `dispatch`); `ferry-sync`
//! makes a synchronous call (`send_sync`, whose handler returns the reply).
//!
//! Raw: `reserve_frame` hands out the frame in the ring, the sender copies
//! the pattern into it and commits; `recv_frame` hands the frame in place,
//! and the receiver copies it out.

use crate::endpoint::{Counters, Endpoint, OP_TIMEOUT};
use crate::job::Job;
use crate::mode::Mode;
use crate::payload::{
    ACK_LEN, MIN_SIZED, Msg, Pattern, QUIT, SYNC, Sink, stamp, stamp_sized, write_ack,
};
use crate::{BoxError, Result};
use ferry_transport::Context;
use ferry_transport::{
    Connection, ConnectionConfig, Endpoint as FerryEndpoint, Receiver, Remote, TransportStats,
};
use std::cell::{Cell, RefCell};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

ferry_transport::protocol! {
    /// What the measuring process sends.
    pub receiver BenchServer handled_by BenchServerHandler {
        /// A request or a stream message; the first 8 bytes are the tag.
        fn data => Data { bytes: Vec<u8> };
        /// A synchronous request; the reply has the same size.
        fn call => Call { bytes: Vec<u8> } -> CallReply { bytes: Vec<u8> };
    }
}

ferry_transport::protocol! {
    /// What the peer process sends back.
    pub receiver BenchClient handled_by BenchClientHandler {
        /// The reply to a `Data` request.
        fn echo => Echo { bytes: Vec<u8> };
        /// The acknowledgement of a stream.
        fn ack => Ack { count: u64, sum: u64 };
    }
}

/// The schema both ends of a typed benchmark connection share.
pub const SCHEMA: u64 = ferry_transport::schema_of(&[
    <BenchServer as Receiver>::SCHEMA,
    <BenchClient as Receiver>::SCHEMA,
]);
const SERVER: Remote<BenchServer> = Remote::new(1);
const CLIENT: Remote<BenchClient> = Remote::new(1);

/// The connection settings of a job (both ends use the same).
pub fn config(job: &Job) -> ConnectionConfig {
    ConnectionConfig::default()
        .ring_capacity(job.ring)
        .wait(job.wait)
        .trust(job.trust)
        .schema(SCHEMA)
        .peer_name("ferry-bench peer")
}

fn create(job: &mut Job) -> Result<(Connection, Vec<OwnedFd>)> {
    let (connection, endpoint) = Connection::create(config(job))?;
    job.meta = endpoint.metadata;
    Ok((connection, endpoint.fds))
}

fn open(job: &Job, fds: Vec<OwnedFd>) -> Result<Connection> {
    let endpoint = FerryEndpoint {
        fds,
        metadata: job.meta.clone(),
    };
    Ok(Connection::open(endpoint, config(job))?)
}

fn counters(stats: TransportStats) -> Counters {
    Counters {
        sent: stats.frames_sent,
        received: stats.frames_received,
        wakes: stats.tx_ring.wakes + stats.rx_ring.wakes,
        parks: stats.tx_ring.parks + stats.rx_ring.parks,
    }
}

/// Where a handler leaves what it read, for the loop that called
/// `dispatch`. (Handlers must be `Send`; these atomics are only ever touched
/// by one thread, so they cost plain loads and stores.) One message waits
/// in the atomics; the open loop, whose `dispatch` can run the handler for
/// several replies at once, queues the later ones in `later` (a lock only
/// ever taken by one thread, and never in a closed loop).
#[derive(Default)]
struct Inbox {
    full: AtomicBool,
    tag: AtomicU64,
    word1: AtomicU64,
    check: AtomicU64,
    len: AtomicU64,
    queued: AtomicBool,
    later: std::sync::Mutex<std::collections::VecDeque<Msg>>,
}

impl Inbox {
    fn put(&self, msg: Msg) {
        if self.full.load(Ordering::Relaxed) {
            if let Ok(mut later) = self.later.lock() {
                later.push_back(msg);
                self.queued.store(true, Ordering::Relaxed);
            }
            return;
        }
        self.store(msg);
    }

    fn store(&self, msg: Msg) {
        self.tag.store(msg.tag, Ordering::Relaxed);
        self.word1.store(msg.word1, Ordering::Relaxed);
        self.check.store(msg.check, Ordering::Relaxed);
        self.len.store(msg.len as u64, Ordering::Relaxed);
        self.full.store(true, Ordering::Relaxed);
    }

    fn take(&self) -> Option<Msg> {
        if !self.full.swap(false, Ordering::Relaxed) {
            return None;
        }
        let msg = Msg {
            tag: self.tag.load(Ordering::Relaxed),
            word1: self.word1.load(Ordering::Relaxed),
            check: self.check.load(Ordering::Relaxed),
            len: self.len.load(Ordering::Relaxed) as usize,
        };
        if self.queued.load(Ordering::Relaxed) {
            if let Ok(mut later) = self.later.lock() {
                if let Some(next) = later.pop_front() {
                    self.store(next);
                }
                self.queued.store(!later.is_empty(), Ordering::Relaxed);
            }
        }
        Some(msg)
    }
}

struct ClientHandler {
    inbox: Arc<Inbox>,
    sink: RefCell<Sink>,
}

impl BenchClientHandler for ClientHandler {
    fn echo(&self, _: &mut Context, message: &ArchivedEcho) {
        let received = self.sink.borrow_mut().receive(message.bytes.as_slice());
        // A reply that does not fit reads as empty: the measuring loop
        // reports its length.
        self.inbox.put(received.unwrap_or_default());
    }

    fn ack(&self, _: &mut Context, message: &ArchivedAck) {
        self.inbox.put(Msg {
            tag: message.count.to_native(),
            word1: message.sum.to_native(),
            check: 0,
            len: ACK_LEN,
        });
    }
}

/// The measuring process's end of `ferry` and `ferry-sync`.
pub struct TypedClient {
    connection: Connection,
    data: Data,
    call: Call,
    sync: bool,
    inbox: Arc<Inbox>,
    sink: Sink,
    pattern: Pattern,
}

impl TypedClient {
    /// Creates the connection; returns the descriptors for the peer.
    pub fn create(job: &mut Job) -> Result<(TypedClient, Vec<OwnedFd>)> {
        let (mut connection, fds) = create(job)?;
        let inbox = Arc::new(Inbox::default());
        connection.register(
            CLIENT.destination(),
            BenchClient::handler(ClientHandler {
                inbox: Arc::clone(&inbox),
                sink: RefCell::new(Sink::new(job.size)),
            }),
        );
        let pattern = Pattern::new(job.size);
        let client = TypedClient {
            connection,
            data: Data {
                bytes: pattern.bytes().to_vec(),
            },
            call: Call {
                bytes: pattern.bytes().to_vec(),
            },
            sync: job.transport == crate::catalog::Transport::FerrySync,
            inbox,
            sink: Sink::new(job.size),
            pattern,
        };
        Ok((client, fds))
    }
}

impl Endpoint for TypedClient {
    fn send(&mut self, tag: u64) -> Result<()> {
        stamp(&mut self.data.bytes, tag);
        self.connection.send(SERVER, &self.data)?;
        Ok(())
    }

    fn send_sized(&mut self, tag: u64, len: usize) -> Result<()> {
        self.pattern.resize_sized(&mut self.data.bytes, len, tag);
        self.connection.send(SERVER, &self.data)?;
        Ok(())
    }

    fn round_trip_sized(&mut self, tag: u64, len: usize) -> Result<Msg> {
        if !self.sync {
            self.send_sized(tag, len)?;
            return self.recv();
        }
        self.pattern.resize_sized(&mut self.call.bytes, len, tag);
        let reply = self.connection.send_sync(SERVER, &self.call, OP_TIMEOUT)?;
        self.sink.receive(reply.bytes.as_slice())
    }

    fn send_ack(&mut self, _: u64, _: u64) -> Result<()> {
        Err("the measuring process never acknowledges".into())
    }

    fn recv(&mut self) -> Result<Msg> {
        loop {
            if let Some(msg) = self.inbox.take() {
                return Ok(msg);
            }
            if self.connection.dispatch(Some(OP_TIMEOUT))? == 0 {
                return Err("timed out waiting for the peer".into());
            }
        }
    }

    fn can_poll(&self) -> bool {
        !self.sync
    }

    fn try_recv(&mut self) -> Result<Option<Msg>> {
        if let Some(msg) = self.inbox.take() {
            return Ok(Some(msg));
        }
        self.connection.try_dispatch()?;
        Ok(self.inbox.take())
    }

    fn round_trip(&mut self, tag: u64) -> Result<Msg> {
        if !self.sync {
            self.send(tag)?;
            return self.recv();
        }
        stamp(&mut self.call.bytes, tag);
        let reply = self.connection.send_sync(SERVER, &self.call, OP_TIMEOUT)?;
        self.sink.receive(reply.bytes.as_slice())
    }

    fn counters(&self) -> Counters {
        counters(self.connection.stats())
    }
}

/// The peer's side of the typed protocol: the handlers do the work.
/// (Handlers take `&self`, so the state they change is in cells.)
struct ServerHandler {
    mode: Mode,
    /// Replies have the request's (drawn) size.
    sized: bool,
    pattern: Pattern,
    echo: RefCell<Echo>,
    sink: RefCell<Sink>,
    count: Cell<u64>,
    total: Cell<u64>,
    done: Arc<AtomicBool>,
    error: Arc<std::sync::Mutex<Option<String>>>,
}

impl ServerHandler {
    fn fail(&self, error: impl std::fmt::Display) {
        if let Ok(mut slot) = self.error.lock() {
            slot.get_or_insert_with(|| error.to_string());
        }
        self.done.store(true, Ordering::Relaxed);
    }
}

impl BenchServerHandler for ServerHandler {
    fn data(&self, connection: &mut Context, message: &ArchivedData) {
        let msg = match self.sink.borrow_mut().receive(message.bytes.as_slice()) {
            Ok(msg) => msg,
            Err(error) => return self.fail(error),
        };
        let sent = match (self.mode, msg.tag) {
            (Mode::Latency, _) if self.sized => {
                let mut echo = self.echo.borrow_mut();
                self.pattern.resize_sized(
                    &mut echo.bytes,
                    msg.len.clamp(MIN_SIZED, self.pattern.len()),
                    msg.check,
                );
                connection.send(CLIENT, &*echo)
            }
            (Mode::Latency, _) => {
                let mut echo = self.echo.borrow_mut();
                stamp(&mut echo.bytes, msg.check);
                connection.send(CLIENT, &*echo)
            }
            (Mode::Throughput, SYNC | QUIT) => {
                let ack = Ack {
                    count: self.count.replace(0),
                    sum: self.total.replace(0),
                };
                connection.send(CLIENT, &ack)
            }
            (Mode::Throughput, _) => {
                self.count.set(self.count.get() + 1);
                self.total.set(self.total.get().wrapping_add(msg.check));
                Ok(())
            }
        };
        if let Err(error) = sent {
            self.fail(error);
        }
        if msg.tag == QUIT {
            self.done.store(true, Ordering::Relaxed);
        }
    }

    fn call(&self, _: &mut Context, message: &ArchivedCall) -> CallReply {
        let msg = match self.sink.borrow_mut().receive(message.bytes.as_slice()) {
            Ok(msg) => msg,
            Err(error) => {
                self.fail(error);
                Msg::default()
            }
        };
        if msg.tag == QUIT {
            self.done.store(true, Ordering::Relaxed);
        }
        // A handler returns its reply by value, so a variable-size reply is
        // a fresh vector each time (allocated and filled here, then
        // serialized into the ring).
        if self.sized {
            let len = msg.len.clamp(MIN_SIZED, self.pattern.len());
            let mut bytes = self.pattern.bytes()[..len].to_vec();
            stamp_sized(&mut bytes, msg.check);
            return CallReply { bytes };
        }
        let mut bytes = self.pattern.bytes().to_vec();
        stamp(&mut bytes, msg.check);
        CallReply { bytes }
    }
}

/// The peer's end of `ferry` and `ferry-sync`.
pub struct TypedServer {
    connection: Connection,
    done: Arc<AtomicBool>,
    error: Arc<std::sync::Mutex<Option<String>>>,
}

impl TypedServer {
    /// Opens the connection the parent created and registers the handlers.
    pub fn open(job: &Job, fds: Vec<OwnedFd>) -> Result<TypedServer> {
        let mut connection = open(job, fds)?;
        let pattern = Pattern::new(job.size);
        let done = Arc::new(AtomicBool::new(false));
        let error = Arc::new(std::sync::Mutex::new(None));
        connection.register(
            SERVER.destination(),
            BenchServer::handler(ServerHandler {
                mode: job.mode,
                sized: job.sizes.is_some(),
                echo: RefCell::new(Echo {
                    bytes: pattern.bytes().to_vec(),
                }),
                sink: RefCell::new(Sink::new(job.size)),
                pattern,
                count: Cell::new(0),
                total: Cell::new(0),
                done: Arc::clone(&done),
                error: Arc::clone(&error),
            }),
        );
        Ok(TypedServer {
            connection,
            done,
            error,
        })
    }

    /// Dispatches until the parent's `QUIT`.
    pub fn serve(&mut self) -> Result<()> {
        while !self.done.load(Ordering::Relaxed) {
            if self.connection.dispatch(Some(OP_TIMEOUT))? == 0 {
                return Err("timed out waiting for the measuring process".into());
            }
        }
        match self.error.lock().ok().and_then(|mut slot| slot.take()) {
            Some(error) => Err(BoxError::from(error)),
            None => Ok(()),
        }
    }

    /// What this end counted.
    pub fn counters(&self) -> Counters {
        counters(self.connection.stats())
    }
}

/// Either end of `ferry-raw`.
pub struct RawEnd {
    connection: Connection,
    pattern: Pattern,
    sink: Sink,
    rx_len: usize,
    sized: bool,
}

impl RawEnd {
    /// Creates the connection; returns the descriptors for the peer.
    pub fn create(job: &mut Job, rx_len: usize) -> Result<(RawEnd, Vec<OwnedFd>)> {
        let (connection, fds) = create(job)?;
        Ok((RawEnd::new(connection, job, rx_len)?, fds))
    }

    /// Opens the connection the parent created.
    pub fn open(job: &Job, fds: Vec<OwnedFd>, rx_len: usize) -> Result<RawEnd> {
        RawEnd::new(open(job, fds)?, job, rx_len)
    }

    fn new(connection: Connection, job: &Job, rx_len: usize) -> Result<RawEnd> {
        let max = connection.max_inline_payload();
        if job.size > max {
            return Err(format!(
                "{} B frames do not fit a {} B ring (at most {max} B in line); raise --ring",
                job.size, job.ring
            )
            .into());
        }
        Ok(RawEnd {
            connection,
            pattern: Pattern::new(job.size),
            sink: Sink::new(rx_len),
            rx_len,
            sized: job.sizes.is_some(),
        })
    }
}

impl RawEnd {
    fn check_len(&self, msg: Msg) -> Result<Msg> {
        // Drawn sizes vary; the sink already refused anything longer.
        if msg.len != self.rx_len && !self.sized {
            return Err(format!("frame of {} B, expected {}", msg.len, self.rx_len).into());
        }
        Ok(msg)
    }
}

impl Endpoint for RawEnd {
    #[inline]
    fn send(&mut self, tag: u64) -> Result<()> {
        let mut frame = self
            .connection
            .reserve_frame(self.pattern.len(), Some(OP_TIMEOUT))?;
        self.pattern.write(&mut frame, tag);
        frame.commit();
        Ok(())
    }

    fn send_sized(&mut self, tag: u64, len: usize) -> Result<()> {
        let mut frame = self.connection.reserve_frame(len, Some(OP_TIMEOUT))?;
        self.pattern.write_sized(&mut frame, tag);
        frame.commit();
        Ok(())
    }

    fn send_ack(&mut self, count: u64, sum: u64) -> Result<()> {
        let mut frame = self.connection.reserve_frame(ACK_LEN, Some(OP_TIMEOUT))?;
        write_ack(&mut frame, count, sum);
        frame.commit();
        Ok(())
    }

    #[inline]
    fn recv(&mut self) -> Result<Msg> {
        let frame = self.connection.recv_frame(Some(OP_TIMEOUT))?;
        let msg = self.sink.receive(frame.bytes())?;
        drop(frame);
        self.check_len(msg)
    }

    fn can_poll(&self) -> bool {
        true
    }

    fn try_recv(&mut self) -> Result<Option<Msg>> {
        let frame = match self.connection.try_recv_frame() {
            Ok(frame) => frame,
            Err(ferry_transport::RecvError::Empty) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let msg = self.sink.receive(frame.bytes())?;
        drop(frame);
        self.check_len(msg).map(Some)
    }

    fn counters(&self) -> Counters {
        counters(self.connection.stats())
    }
}
