//! Destinations that go away, cancellation, and replies given later from
//! another thread (issue 15, items 2, 3 and 4), across real processes:
//!
//! - a message for a destination no longer registered is dropped and
//!   counted, not a violation; a request to one gets an error reply;
//! - a requester cancels a request (with a reply handler, or a synchronous
//!   call that gives up); the handling side learns it and stops streaming;
//!   the late reply is dropped quietly, counted;
//! - a flood of cancels from a hostile peer costs nothing and grows nothing;
//! - a handler keeps its reply handle and answers from another thread
//!   while its connection's thread is blocked in `dispatch`; a handle
//!   dropped unanswered sends an error reply; a handle outliving its
//!   connection does nothing, holds nothing; at `max_reply_handles` a
//!   request is refused with an error reply.

mod support;

use ferry_transport::wire::{Envelope, Flags};
use ferry_transport::{
    CallError, Connection, ConnectionConfig, Context, DispatchError, NoReply, Receiver, Remote,
    ReplyHandle, Trust,
};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::footprint::{Footprint, serial};
use support::raw_peer::RawPeer;
use support::*;

/// The child test: runs the role the parent asked for, or nothing.
#[test]
fn child() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        "server" => child_server(),
        "cancel-flood" => child_cancel_flood(),
        other => panic!("unknown role {other}"),
    }
}

ferry_transport::protocol! {
    /// The service the child runs.
    pub receiver Loads handled_by LoadsHandler {
        /// Sends `chunks` chunks to the parent's `Sink` at `sink`, one per
        /// turn of the child's loop, until done or cancelled; replies with
        /// how many went out.
        @reply_later fn stream => Stream { sink: u64, chunks: u64 } -> Streamed { sent: u64 };
        /// Sends `chunks` chunks to `sink` at once, then replies.
        fn burst => Burst { sink: u64, chunks: u64 } -> BurstSent { sent: u64 };
        /// Answered on another thread, per `mode` (see `Mode`).
        @reply_later fn later => Later { value: u64, mode: u8 } -> LaterReply { value: u64 };
        /// Answers the held requests (mode `HOLD`) from another thread.
        fn release => Release {} -> Released { count: u64 };
        /// Replies after sleeping (an ordinary handler).
        fn slow => Slow { millis: u64 } -> SlowReply {};
        /// Unregisters the `Loads` at destination `destination`.
        fn forget => Forget { destination: u64 };
        /// What the child saw (waits for `cancelled` work to notice first).
        fn tally => Tally { cancelled: u64 } -> TallyReply {
            dropped_for_gone_destinations: u64,
            cancels_received: u64,
            cancels_ignored: u64,
            refused_busy: u64,
            work_cancelled: u64,
            streams_cancelled: u64
        };
    }
}

ferry_transport::protocol! {
    /// Where the parent receives a stream.
    pub receiver Sink handled_by SinkHandler {
        /// One piece of a stream.
        fn chunk => Chunk { seq: u64, data: Vec<u8> };
    }
}

const SCHEMA: u64 =
    ferry_transport::schema_of(&[<Loads as Receiver>::SCHEMA, <Sink as Receiver>::SCHEMA]);

/// What `Later` asks of the handle.
mod mode {
    /// Reply from another thread after a moment.
    pub const THREAD: u8 = 0;
    /// Drop the handle unanswered on another thread.
    pub const DROP: u8 = 1;
    /// Keep it until `Release`.
    pub const HOLD: u8 = 2;
    /// Work on another thread until the requester cancels, then stop.
    pub const UNTIL_CANCELLED: u8 = 3;
    /// Keep it past the connection's end (see `child_server`).
    pub const OUTLIVE: u8 = 4;
}

const LOADS: Remote<Loads> = Remote::new(1);
const CALL: Duration = Duration::from_secs(10);

fn config() -> ConnectionConfig {
    ConnectionConfig::default()
        .trust(Trust::Untrusted)
        .schema(SCHEMA)
        .peer_name("child")
}

// ---------------------------------------------------------------------------
// The child.

/// A stream in progress.
struct Streaming {
    sink: u64,
    left: u64,
    sent: u64,
    reply: ReplyHandle<Streamed>,
}

/// The child's service state (shared by its handler and its loop).
#[derive(Default)]
struct Server {
    streams: Mutex<VecDeque<Streaming>>,
    held: Mutex<Vec<ReplyHandle<LaterReply>>>,
    /// Work on other threads that saw its request cancelled.
    work_cancelled: Arc<AtomicU64>,
    streams_cancelled: AtomicU64,
    /// Where a handle that outlives the connection is kept.
    outliving: Mutex<Option<ReplyHandle<LaterReply>>>,
}

impl Server {
    /// Drops the streams whose requester cancelled them.
    fn sweep_cancelled(&self) {
        let mut streams = self.streams.lock().unwrap();
        let before = streams.len();
        streams.retain(|stream| !stream.reply.is_cancelled());
        let cancelled = (before - streams.len()) as u64;
        self.streams_cancelled
            .fetch_add(cancelled, Ordering::SeqCst);
    }
}

/// The handler registered on the connection (the loop keeps the state).
struct ServerHandler(Arc<Server>);

fn chunk(seq: u64) -> Chunk {
    Chunk {
        seq,
        data: vec![seq as u8; 256],
    }
}

impl LoadsHandler for ServerHandler {
    fn stream(&self, _: &mut Context, m: &ArchivedStream, reply: ReplyHandle<Streamed>) {
        self.0.streams.lock().unwrap().push_back(Streaming {
            sink: m.sink.to_native(),
            left: m.chunks.to_native(),
            sent: 0,
            reply,
        });
    }

    fn burst(&self, context: &mut Context, m: &ArchivedBurst) -> BurstSent {
        let sink = Remote::<Sink>::new(m.sink.to_native());
        for seq in 0..m.chunks.to_native() {
            context.send(sink, &chunk(seq)).expect("send a chunk");
        }
        BurstSent {
            sent: m.chunks.to_native(),
        }
    }

    fn later(&self, _: &mut Context, m: &ArchivedLater, reply: ReplyHandle<LaterReply>) {
        let value = m.value.to_native();
        let server = &self.0;
        match m.mode {
            mode::THREAD => {
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(20));
                    assert!(reply.reply(&LaterReply { value: value * 2 }));
                });
            }
            mode::DROP => {
                std::thread::spawn(move || drop(reply));
            }
            mode::HOLD => server.held.lock().unwrap().push(reply),
            mode::UNTIL_CANCELLED => {
                let cancelled = Arc::clone(&server.work_cancelled);
                std::thread::spawn(move || {
                    let deadline = Instant::now() + OP_TIMEOUT;
                    while !reply.is_cancelled() {
                        assert!(Instant::now() < deadline, "never cancelled");
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    cancelled.fetch_add(1, Ordering::SeqCst);
                    // Answering a cancelled request sends nothing.
                    assert!(!reply.reply(&LaterReply { value }));
                });
            }
            mode::OUTLIVE => *server.outliving.lock().unwrap() = Some(reply),
            other => panic!("unknown mode {other}"),
        }
    }

    fn release(&self, _: &mut Context, _: &ArchivedRelease) -> Released {
        let held = std::mem::take(&mut *self.0.held.lock().unwrap());
        let count = held.len() as u64;
        std::thread::spawn(move || {
            for (i, reply) in held.into_iter().enumerate() {
                reply.reply(&LaterReply { value: i as u64 });
            }
        })
        .join()
        .expect("the releasing thread");
        Released { count }
    }

    fn slow(&self, _: &mut Context, m: &ArchivedSlow) -> SlowReply {
        std::thread::sleep(Duration::from_millis(m.millis.to_native()));
        SlowReply {}
    }

    fn forget(&self, context: &mut Context, m: &ArchivedForget) {
        assert!(context.unregister::<Loads>(m.destination.to_native()));
    }

    fn tally(&self, context: &mut Context, m: &ArchivedTally) -> TallyReply {
        let server = &self.0;
        let deadline = Instant::now() + OP_TIMEOUT;
        while server.work_cancelled.load(Ordering::SeqCst) < m.cancelled.to_native() {
            assert!(Instant::now() < deadline, "cancelled work never noticed");
            std::thread::sleep(Duration::from_millis(1));
        }
        server.sweep_cancelled();
        let stats = context.stats();
        TallyReply {
            dropped_for_gone_destinations: stats.dropped_for_gone_destinations,
            cancels_received: stats.cancels_received,
            cancels_ignored: stats.cancels_ignored,
            refused_busy: stats.refused_busy,
            work_cancelled: server.work_cancelled.load(Ordering::SeqCst),
            streams_cancelled: server.streams_cancelled.load(Ordering::SeqCst),
        }
    }
}

/// Serves `Loads` at destinations 1 and 2 until the parent disconnects;
/// streams one chunk per stream per turn. Then checks that a handle kept
/// past the connection's end does nothing and holds nothing.
fn child_server() {
    let control = child_control();
    let endpoint = recv_endpoint(&control);
    let config = config_from_params().max_reply_handles(param("MAX_HANDLES"));
    let mut connection = Connection::open(endpoint, config).expect("open");
    let server = Arc::new(Server::default());
    connection.register(1, Loads::handler(ServerHandler(Arc::clone(&server))));
    connection.register(2, Loads::handler(ServerHandler(Arc::clone(&server))));
    loop {
        let busy = !server.streams.lock().unwrap().is_empty();
        // Long waits when idle: a reply given on another thread must wake
        // this dispatch, or it would go out only when the wait ends.
        let wait = if busy { Duration::ZERO } else { OP_TIMEOUT };
        match connection.dispatch(Some(wait)) {
            Ok(0) if !busy => panic!("no message for {OP_TIMEOUT:?}"),
            Ok(_) => {}
            Err(DispatchError::Disconnected) => break,
            Err(e) => panic!("dispatch: {e}"),
        }
        server.sweep_cancelled();
        let streams = std::mem::take(&mut *server.streams.lock().unwrap());
        let mut unfinished = VecDeque::new();
        for mut stream in streams {
            if stream.left == 0 {
                stream.reply.reply(&Streamed { sent: stream.sent });
                continue;
            }
            let sink = Remote::<Sink>::new(stream.sink);
            match connection.send(sink, &chunk(stream.sent)) {
                Ok(()) => {}
                Err(ferry_transport::SendError::Disconnected) => break,
                Err(e) => panic!("send a chunk: {e}"),
            }
            stream.sent += 1;
            stream.left -= 1;
            unfinished.push_back(stream);
        }
        server.streams.lock().unwrap().extend(unfinished);
    }
    server.streams.lock().unwrap().clear();
    drop(connection);
    // The handle kept past the connection's end holds none of its
    // descriptors (nor the region's mapping, whose memfd it would keep
    // open), and answering it does nothing.
    let outliving = server.outliving.lock().unwrap().take();
    if let Some(handle) = outliving {
        // Counted once the teardown's other threads are done, so that only
        // the handle's own descriptors could make the difference.
        let with_handle = settled_fd_count();
        let answered = std::thread::spawn(move || handle.reply(&LaterReply { value: 1 }))
            .join()
            .expect("answering after the end does not panic");
        assert!(!answered);
        assert_eq!(
            settled_fd_count(),
            with_handle,
            "the handle held descriptors"
        );
        tell(&control, b"outlived");
    }
}

/// Publishes a flood of cancels for ids nobody uses, then one for the
/// request it made (a valid `Later` in mode `UNTIL_CANCELLED`, id 7).
fn child_cancel_flood() {
    let control = child_control();
    let mut peer = RawPeer::open(recv_endpoint(&control));
    let count: u64 = param("COUNT");
    let later = Envelope {
        destination: 1,
        request_id: 7,
        receiver: <Loads as Receiver>::ID,
        schema: <Loads as Receiver>::SCHEMA,
        message: <Later as ferry_transport::Message>::ID,
        flags: Flags(0),
        fd_count: 0,
    };
    let body = ferry_transport::rkyv::to_bytes::<ferry_transport::rkyv::rancor::Error>(&Later {
        value: 1,
        mode: mode::UNTIL_CANCELLED,
    })
    .expect("archive");
    peer.publish_message(&later, &body).expect("publish Later");
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    for _ in 0..count {
        let cancel = Envelope {
            // Random ids, never 7; receivers and messages anything.
            request_id: rng.u64(8..),
            receiver: rng.u32(1..),
            message: rng.u32(..),
            destination: rng.u64(..),
            schema: rng.u32(..),
            flags: Flags(Flags::CANCEL),
            fd_count: 0,
        };
        peer.publish_message(&cancel, &[])
            .expect("publish a cancel");
    }
    peer.wait_consumed();
    tell(&control, b"flooded");
    assert_eq!(hear(&control), b"cancel yours");
    let cancel = Envelope {
        flags: Flags(Flags::CANCEL),
        ..later
    };
    peer.publish_message(&cancel, &[])
        .expect("publish the cancel");
    peer.wait_consumed();
    tell(&control, b"cancelled");
    assert_eq!(hear(&control), b"bye");
}

// ---------------------------------------------------------------------------
// The parent.

fn start_server(max_handles: usize) -> (Connection, Peer) {
    connect_peer(
        "server",
        &config(),
        &[("MAX_HANDLES", max_handles.to_string())],
    )
}

/// Counts chunks arriving at a sink.
#[derive(Clone, Default)]
struct Received(Arc<AtomicU64>);

impl SinkHandler for Received {
    fn chunk(&self, _: &mut Context, m: &ArchivedChunk) {
        assert_eq!(m.data.len(), 256);
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn tally(conn: &mut Connection, cancelled: u64) -> TallyReply {
    let reply = conn
        .send_sync(LOADS, &Tally { cancelled }, CALL)
        .expect("Tally");
    ferry_transport::rkyv::deserialize::<TallyReply, ferry_transport::rkyv::rancor::Error>(&*reply)
        .expect("deserialize")
}

/// Dispatches until `done` holds (bounded).
fn dispatch_until(conn: &mut Connection, what: &str, mut done: impl FnMut(&Connection) -> bool) {
    let deadline = Instant::now() + OP_TIMEOUT;
    while !done(conn) {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {OP_TIMEOUT:?}"
        );
        conn.dispatch(Some(Duration::from_millis(50)))
            .unwrap_or_else(|e| panic!("{what}: dispatch: {e}"));
    }
}

/// Item 2: the parent unregisters its sink while the chunks the child sent
/// to it are in flight: they are dropped and counted, the connection stays
/// up. A request to a destination the child unregistered gets an error
/// reply, synchronous or not, and the child counts it too.
#[test]
fn messages_for_a_gone_destination_are_dropped_and_counted() {
    let _serial = serial();
    let (mut conn, peer) = start_server(16);
    let received = Received::default();
    conn.register(5, Sink::handler(received.clone()));
    const CHUNKS: u64 = 500;
    let burst = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&burst);
    conn.send_with_reply(
        LOADS,
        &Burst {
            sink: 5,
            chunks: CHUNKS,
        },
        move |_, reply| *slot.lock().unwrap() = Some(reply.map(|r| r.sent.to_native())),
    )
    .expect("Burst");
    // The first chunk, then the sink goes away: the child sent every chunk
    // before its reply, so the other 499 are in flight (in the ring, or
    // waiting for room in it).
    assert_eq!(conn.dispatch_one(Some(OP_TIMEOUT)), Ok(true));
    assert_eq!(received.0.load(Ordering::SeqCst), 1);
    assert!(conn.unregister::<Sink>(5));
    dispatch_until(&mut conn, "the burst's reply", |_| {
        burst.lock().unwrap().is_some()
    });
    assert_eq!(burst.lock().unwrap().take(), Some(Ok(CHUNKS)));
    assert!(conn.is_open(), "dropping them is no violation");
    assert_eq!(received.0.load(Ordering::SeqCst), 1);
    assert_eq!(conn.stats().dropped_for_gone_destinations, CHUNKS - 1);

    // The child's destination 2 goes away; requests to it are answered
    // with an error reply, so nobody waits for nothing.
    conn.send(LOADS, &Forget { destination: 2 })
        .expect("Forget");
    let gone = Remote::<Loads>::new(2);
    assert_eq!(
        conn.send_sync(gone, &Slow { millis: 0 }, CALL).err(),
        Some(CallError::NoReply(NoReply::DestinationGone))
    );
    let answer = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&answer);
    conn.send_with_reply(gone, &Slow { millis: 0 }, move |_, reply| {
        *slot.lock().unwrap() = Some(reply.map(|_| ()));
    })
    .expect("send_with_reply");
    dispatch_until(&mut conn, "the error reply", |_| {
        answer.lock().unwrap().is_some()
    });
    assert_eq!(
        answer.lock().unwrap().take(),
        Some(Err(CallError::NoReply(NoReply::DestinationGone)))
    );
    // A message (no reply expected) to it is only counted.
    conn.send(gone, &Forget { destination: 2 }).expect("send");
    let seen = tally(&mut conn, 0);
    assert_eq!(seen.dropped_for_gone_destinations, 3);
    assert!(conn.is_open());
    drop(conn);
    peer.expect_success();
}

/// Item 3: the parent cancels a stream mid-way: the child sees it cancelled
/// and stops sending; the chunks already in flight reach a sink that is
/// gone and are dropped; the numbers add up. A request with a reply
/// handler cancelled before its answer never runs its handler; a
/// synchronous call cancelled from another thread, or that times out,
/// cancels its request too, and its late reply (from an ordinary handler)
/// is dropped and counted.
#[test]
fn a_cancelled_request_stops_the_work_and_its_late_reply_is_dropped() {
    let _serial = serial();
    let (mut conn, peer) = start_server(16);
    let received = Received::default();
    conn.register(6, Sink::handler(received.clone()));
    let ran = Arc::new(AtomicBool::new(false));
    let ran_in_handler = Arc::clone(&ran);
    let stream = conn
        .send_cancellable(
            LOADS,
            &Stream {
                sink: 6,
                chunks: u64::MAX,
            },
            move |_, _| ran_in_handler.store(true, Ordering::SeqCst),
        )
        .expect("Stream");
    dispatch_until(&mut conn, "ten chunks", |_| {
        received.0.load(Ordering::SeqCst) >= 10
    });
    // Navigating away: the load is cancelled, its loader unregistered.
    assert_eq!(conn.cancel(stream), Ok(true));
    assert_eq!(conn.cancel(stream), Ok(false), "once");
    assert!(conn.unregister::<Sink>(6));
    let seen = tally(&mut conn, 0);
    assert_eq!(seen.streams_cancelled, 1, "the child stopped the stream");
    assert_eq!(seen.cancels_received, 1);
    // Everything the child sent before it stopped arrived before the Tally
    // reply (set aside while the call waited): handled, or dropped for the
    // gone sink.
    while conn.has_deferred() {
        conn.try_dispatch().expect("dispatch what was set aside");
    }
    let stats = conn.stats();
    let arrived = received.0.load(Ordering::SeqCst) + stats.dropped_for_gone_destinations;
    assert!(arrived >= 10);
    assert_eq!(stats.requests_cancelled, 1);
    eprintln!(
        "stream: {} chunks handled, {} dropped after the cancel",
        received.0.load(Ordering::SeqCst),
        stats.dropped_for_gone_destinations
    );
    // The child stopped: nothing more comes.
    assert_eq!(conn.dispatch(Some(Duration::from_millis(100))), Ok(0));
    assert!(
        !ran.load(Ordering::SeqCst),
        "a cancelled handler never runs"
    );

    // Work on another thread of the child sees the cancel, for a request
    // with a handler and for a synchronous call that gave up.
    let work = conn
        .send_cancellable(
            LOADS,
            &Later {
                value: 1,
                mode: mode::UNTIL_CANCELLED,
            },
            |_, _| panic!("cancelled"),
        )
        .expect("Later");
    assert_eq!(conn.cancel(work), Ok(true));
    let call = conn.send_sync(
        LOADS,
        &Later {
            value: 2,
            mode: mode::UNTIL_CANCELLED,
        },
        Duration::from_millis(100),
    );
    assert_eq!(call.err(), Some(CallError::TimedOut));
    let seen = tally(&mut conn, 2);
    assert_eq!(seen.work_cancelled, 2);
    assert_eq!(seen.cancels_received, 3);

    // A synchronous call cancelled from another thread of the requester
    // (which cancels again and again: a cancel before the call starts does
    // not touch it).
    let canceller = conn.call_canceller();
    let called = Arc::new(AtomicBool::new(false));
    let cancelling = {
        let called = Arc::clone(&called);
        std::thread::spawn(move || {
            while !called.load(Ordering::SeqCst) {
                canceller.cancel();
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let call = conn.send_sync(
        LOADS,
        &Later {
            value: 3,
            mode: mode::UNTIL_CANCELLED,
        },
        CALL,
    );
    called.store(true, Ordering::SeqCst);
    cancelling.join().expect("the cancelling thread");
    assert_eq!(call.err(), Some(CallError::Cancelled));
    let seen = tally(&mut conn, 3);
    assert_eq!(seen.work_cancelled, 3);
    assert_eq!(seen.cancels_received, 4);

    // An ordinary handler answers anyway: its cancel finds nothing in
    // progress there, and the late reply is dropped here.
    let call = conn.send_sync(LOADS, &Slow { millis: 500 }, Duration::from_millis(100));
    assert_eq!(call.err(), Some(CallError::TimedOut));
    let seen = tally(&mut conn, 3);
    assert_eq!(seen.cancels_ignored, 1);
    assert_eq!(conn.stats().late_replies_dropped, 1);
    assert_eq!(conn.stats().requests_cancelled, 5);
    assert!(conn.is_open());
    drop(conn);
    peer.expect_success();
}

/// Item 4: replies given later from another thread reach the requester
/// while the child's connection thread waits in `dispatch` (it waits up to
/// `OP_TIMEOUT`; the calls give up long before, so only the wake makes
/// them pass); a handle dropped unanswered sends an error reply; at
/// `max_reply_handles` a request is refused with an error reply, and the
/// held ones are answered when released; a handle kept past the
/// connection's end does nothing and holds nothing (checked by the child).
#[test]
fn replies_come_later_from_another_thread() {
    let _serial = serial();
    let (mut conn, mut peer) = start_server(2);
    for value in 1..=20 {
        let reply = conn
            .send_sync(
                LOADS,
                &Later {
                    value,
                    mode: mode::THREAD,
                },
                CALL,
            )
            .expect("a reply from another thread");
        assert_eq!(reply.value.to_native(), value * 2);
    }
    assert_eq!(
        conn.send_sync(
            LOADS,
            &Later {
                value: 0,
                mode: mode::DROP
            },
            CALL
        )
        .err(),
        Some(CallError::NoReply(NoReply::Dropped))
    );

    // Two handles held: the third request is refused at the bound.
    let answers = Arc::new(Mutex::new(Vec::new()));
    for value in 0..3 {
        let answers = Arc::clone(&answers);
        conn.send_with_reply(
            LOADS,
            &Later {
                value,
                mode: mode::HOLD,
            },
            move |_, reply| {
                answers
                    .lock()
                    .unwrap()
                    .push((value, reply.map(|r| r.value.to_native())))
            },
        )
        .expect("Later");
    }
    dispatch_until(&mut conn, "the refusal", |_| {
        !answers.lock().unwrap().is_empty()
    });
    assert_eq!(
        answers.lock().unwrap().clone(),
        [(2, Err(CallError::NoReply(NoReply::Busy)))]
    );
    let released = conn.send_sync(LOADS, &Release {}, CALL).expect("Release");
    assert_eq!(released.count.to_native(), 2);
    dispatch_until(&mut conn, "the held replies", |_| {
        answers.lock().unwrap().len() == 3
    });
    assert_eq!(
        answers.lock().unwrap()[1..],
        [(0, Ok(0)), (1, Ok(1))],
        "answered in order"
    );
    assert_eq!(tally(&mut conn, 0).refused_busy, 1);

    // One kept past the end of the connection.
    conn.send_with_reply(
        LOADS,
        &Later {
            value: 0,
            mode: mode::OUTLIVE,
        },
        |_, _| {},
    )
    .expect("Later");
    tally(&mut conn, 0);
    drop(conn);
    peer.expect_word(b"outlived");
    assert!(peer.wait_timeout(EXIT_TIMEOUT).success());
}

/// Item 3, hostile: a peer floods cancels for request ids nobody uses:
/// each is one lookup, dropped and counted; the victim's memory does not
/// grow with them, the connection stays up, and the one cancel for a
/// request in progress still reaches its handle.
#[test]
fn a_flood_of_cancels_costs_nothing() {
    let _serial = serial();
    const COUNT: u64 = 200_000;
    let (mut conn, endpoint) = Connection::create(config()).expect("create");
    let peer = spawn_peer("cancel-flood", &[("COUNT", COUNT.to_string())]);
    peer.send_endpoint(endpoint);
    let work_cancelled = Arc::new(AtomicU64::new(0));
    let server = Arc::new(Server {
        work_cancelled: Arc::clone(&work_cancelled),
        ..Server::default()
    });
    conn.register(1, Loads::handler(ServerHandler(server)));
    // The request, then the first cancels: the ring is warm.
    dispatch_until(&mut conn, "the request and some cancels", |c| {
        c.stats().cancels_ignored > 1000
    });
    let before = Footprint::now();
    let control = peer.control_clone();
    let flooded = std::thread::spawn(move || hear(&control));
    dispatch_until(&mut conn, "the flood", |c| {
        c.stats().cancels_ignored == COUNT
    });
    assert_eq!(flooded.join().expect("the listening thread"), b"flooded");
    let after = Footprint::now();
    eprintln!("{COUNT} cancels: {before} -> {after}");
    assert!(
        after.rss_growth_kib(&before) < 2048,
        "the flood grew memory: {before} -> {after}"
    );
    assert_eq!(after.fd_growth(&before), 0);
    assert_eq!(work_cancelled.load(Ordering::SeqCst), 0);
    assert_eq!(conn.stats().cancels_received, 0);
    assert!(conn.is_open());

    peer.tell(b"cancel yours");
    dispatch_until(&mut conn, "the real cancel", |c| {
        c.stats().cancels_received == 1
    });
    let deadline = Instant::now() + OP_TIMEOUT;
    while work_cancelled.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the handle never saw its cancel");
        std::thread::sleep(Duration::from_millis(1));
    }
    peer.expect_word(b"cancelled");
    assert_eq!(conn.stats().cancels_ignored, COUNT);
    assert!(conn.is_open());
    peer.tell(b"bye");
    peer.expect_success();
}
