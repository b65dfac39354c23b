//! A hostile peer against dispatch and synchronous calls (issue 10, holes 2,
//! 3, 4, 8 and 9). In each test a real attacker process does the attack —
//! through the public API where it can, with frames it crafts and publishes
//! by hand ([`RawPeer`]) where it cannot — and the victim, this process,
//! shows the right outcome: a clear error, or a violation that cuts the
//! attacker off; resident memory and descriptors measured before and after
//! (printed; run with `--nocapture`); every wait bounded. In the nesting
//! and the descriptor-flood tests a bystander connection of the victim,
//! whose peer is SIGKILLed in the middle of the attack, still sees
//! `Disconnected` at once.

mod support;

use ferry_testkit::bounded::spawn_bounded;
use ferry_transport::wire::{Envelope, Flags};
use ferry_transport::{
    CallError, Connection, ConnectionConfig, Context, DispatchError, Message, Receiver, Remote,
    SendError, Trust, Violation,
};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::bystander::{BYSTANDER_ROLE, Bystander, child_bystander};
use support::footprint::{Footprint, serial};
use support::raw_peer::RawPeer;
use support::*;

/// The child test: runs the role the parent asked for, or nothing.
#[test]
fn child() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        BYSTANDER_ROLE => child_bystander(),
        "callback-flooder" => child_callback_flooder(),
        "liar" => child_liar(),
        "empty-flooder" => child_empty_flooder(),
        "fd-flooder" => child_fd_flooder(),
        "idle" => child_idle(),
        "request-flooder" => child_request_flooder(),
        "streamer" => child_streamer(),
        other => panic!("unknown role {other}"),
    }
}

ferry_transport::protocol! {
    /// What the victim and its attackers speak.
    pub receiver Target handled_by TargetHandler {
        /// A request the attacker never answers.
        fn stall => Stall {} -> StallReply {};
        /// The documented "A calls B, B calls A" message: dispatched while
        /// its receiver waits in a synchronous call; the victim's handler
        /// calls the attacker back synchronously.
        @allowed_while_waiting
        fn callback => Callback { seq: u64 } -> CallbackReply { seq: u64 };
        /// Not allowed while waiting: set aside during a call.
        fn note => Note { seq: u64 };
        /// A request whose reply the attacker never takes.
        fn ask => Ask { seq: u64 } -> Answer { seq: u64 };
        /// A message without fields: nothing but an envelope on the wire.
        fn poke => Poke {};
    }
}

const SCHEMA: u64 = ferry_transport::schema_of(&[<Target as Receiver>::SCHEMA]);

/// Where both sides register `Target`.
fn target() -> Remote<Target> {
    Remote::new(1)
}

fn victim_config() -> ConnectionConfig {
    ConnectionConfig::default()
        .trust(Trust::Untrusted)
        .schema(SCHEMA)
        .peer_name("attacker")
}

/// The envelope of a `Target` message `M` (a request when `request_id` is
/// not 0), with the flags the declaration gives it.
fn envelope_of<M: Message<Receiver = Target>>(request_id: u64) -> Envelope {
    let flags = if M::ALLOWED_WHILE_WAITING {
        Flags::ALLOWED_WHILE_WAITING
    } else {
        0
    };
    Envelope {
        destination: 1,
        request_id,
        receiver: <Target as Receiver>::ID,
        schema: <Target as Receiver>::SCHEMA,
        message: M::ID,
        flags: Flags(flags),
        fd_count: 0,
    }
}

fn archive<T>(value: &T) -> ferry_transport::rkyv::util::AlignedVec
where
    T: for<'a> ferry_transport::rkyv::Serialize<
            ferry_transport::rkyv::api::high::HighSerializer<
                ferry_transport::rkyv::util::AlignedVec,
                ferry_transport::rkyv::ser::allocator::ArenaHandle<'a>,
                ferry_transport::rkyv::rancor::Error,
            >,
        >,
{
    ferry_transport::rkyv::to_bytes::<ferry_transport::rkyv::rancor::Error>(value)
        .expect("serialize")
}

// ---------------------------------------------------------------------------
// The victim's handler.

/// What the victim's handler saw.
#[derive(Default)]
struct Counters {
    /// `callback` handlers entered.
    callbacks: AtomicU64,
    /// `callback` handlers running right now, one inside another.
    depth: AtomicU64,
    /// The most that ever ran one inside another.
    max_depth: AtomicU64,
    /// How the nested calls of `callback` handlers ended.
    nested_timed_out: AtomicU64,
    nested_queue_full: AtomicU64,
    nested_other: AtomicU64,
    /// Stack addresses of the outermost and the innermost `callback`
    /// handler (the stack grows down).
    stack_outermost: AtomicU64,
    stack_innermost: AtomicU64,
    notes: AtomicU64,
    pokes: AtomicU64,
    asks: AtomicU64,
}

impl Counters {
    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::SeqCst)
    }
}

type OnCallback = Box<dyn Fn(u64) + Send + Sync>;

struct VictimImpl {
    counters: Arc<Counters>,
    /// How long a `callback` handler's call back waits.
    nested_timeout: Duration,
    /// Runs on entry of each `callback` handler, with its number.
    on_callback: Option<OnCallback>,
}

impl TargetHandler for VictimImpl {
    fn stall(&self, _: &mut Context, _: &ArchivedStall) -> StallReply {
        panic!("the victim is never asked to stall")
    }

    fn callback(&self, conn: &mut Context, message: &ArchivedCallback) -> CallbackReply {
        let counters = &self.counters;
        let entry = counters.callbacks.fetch_add(1, Ordering::SeqCst) + 1;
        let depth = counters.depth.fetch_add(1, Ordering::SeqCst) + 1;
        counters.max_depth.fetch_max(depth, Ordering::SeqCst);
        let here = std::ptr::addr_of!(entry) as u64;
        counters.stack_outermost.fetch_max(here, Ordering::SeqCst);
        counters.stack_innermost.fetch_min(here, Ordering::SeqCst);
        if let Some(on_callback) = &self.on_callback {
            on_callback(entry);
        }
        // The documented pattern: call the peer back while it waits for us.
        match conn.send_sync(target(), &Stall {}, self.nested_timeout) {
            Ok(_) => panic!("the attacker never answers"),
            Err(CallError::TimedOut) => &counters.nested_timed_out,
            Err(CallError::QueueFull) => &counters.nested_queue_full,
            Err(_) => &counters.nested_other,
        }
        .fetch_add(1, Ordering::SeqCst);
        counters.depth.fetch_sub(1, Ordering::SeqCst);
        CallbackReply {
            seq: message.seq.to_native(),
        }
    }

    fn note(&self, _: &mut Context, _: &ArchivedNote) {
        self.counters.notes.fetch_add(1, Ordering::SeqCst);
    }

    fn ask(&self, _: &mut Context, message: &ArchivedAsk) -> Answer {
        self.counters.asks.fetch_add(1, Ordering::SeqCst);
        Answer {
            seq: message.seq.to_native(),
        }
    }

    fn poke(&self, _: &mut Context, _: &ArchivedPoke) {
        self.counters.pokes.fetch_add(1, Ordering::SeqCst);
    }
}

fn register_victim(conn: &mut Connection, on_callback: Option<OnCallback>) -> Arc<Counters> {
    let counters = Arc::new(Counters {
        stack_innermost: AtomicU64::new(u64::MAX),
        ..Counters::default()
    });
    conn.register(
        1,
        Target::handler(VictimImpl {
            counters: Arc::clone(&counters),
            nested_timeout: NESTED_TIMEOUT,
            on_callback,
        }),
    );
    counters
}

/// Runs `attack` and prints the victim's footprint before and after it.
fn measured<T>(what: &str, attack: impl FnOnce() -> T) -> (T, Footprint, Footprint) {
    // What the first connection of the process sets up once (the hang-up
    // watcher and its descriptors) is not the attack's doing.
    drop(Connection::pair(ConnectionConfig::default()).expect("a first connection"));
    let before = Footprint::now();
    let result = attack();
    let after = Footprint::now();
    eprintln!("{what}:\n  before: {before}\n  after:  {after}");
    (result, before, after)
}

/// The attacker reports how many frames it sent: `<word>:<count>`.
fn hear_count(peer: &Peer, word: &str) -> u64 {
    let heard = String::from_utf8(peer.hear()).expect("utf-8");
    heard
        .strip_prefix(&format!("{word}:"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("expected {word}:<count>, heard {heard:?}"))
}

// ---------------------------------------------------------------------------
// Hole 2: unbounded nesting while waiting.

/// How long the victim's first call waits.
const OUTER_TIMEOUT: Duration = Duration::from_secs(3);
/// How long each nested call back waits.
const NESTED_TIMEOUT: Duration = Duration::from_millis(300);

/// Never answers; keeps sending `callback` (allowed while waiting) and
/// throws away what the victim sends, so that the victim's calls back never
/// wait for room.
fn child_callback_flooder() {
    let (mut conn, control) = child_connect();
    // A ring's worth first, so that the victim's descent never waits.
    let mut sent = 0u64;
    while conn.try_send(target(), &Callback { seq: sent }).is_ok() {
        sent += 1;
    }
    tell(&control, b"ring full");
    let limit = Instant::now() + 2 * OP_TIMEOUT;
    'flood: while Instant::now() < limit {
        match conn.try_send(target(), &Callback { seq: sent }) {
            Ok(()) => sent += 1,
            Err(SendError::Full) => loop {
                match conn.try_recv_frame() {
                    Ok(frame) => drop(frame),
                    Err(ferry_transport::RecvError::Empty) => {
                        std::thread::yield_now();
                        break;
                    }
                    Err(_) => break 'flood,
                }
            },
            Err(_) => break,
        }
    }
    tell(&control, format!("sent:{sent}").as_bytes());
}

/// A peer that never answers a synchronous call and keeps sending a message
/// allowed while waiting, whose handler calls it back synchronously (before
/// the nesting bound, the victim died of a stack overflow within tens of
/// milliseconds). The victim does not crash: calls nest at most
/// `max_sync_nesting` deep (the handlers run at most one fewer inside one
/// another), the first call ends with `TimedOut` or `QueueFull`, memory and
/// descriptors stay bounded, and a bystander connection whose peer is
/// SIGKILLed mid-attack sees `Disconnected`.
#[test]
fn nesting_is_bounded_by_max_sync_nesting() {
    let _serial = serial();
    const BUDGET: usize = 4 << 20;
    let config = victim_config().max_deferred_bytes(BUDGET);
    let max_nesting = config.max_sync_nesting;
    assert_eq!(max_nesting, ConnectionConfig::default().max_sync_nesting);
    let bystander = Bystander::start();
    let (mut conn, peer) = connect_peer("callback-flooder", &config, &[]);
    peer.expect_word(b"ring full");
    let kill_switch = bystander.kill_switch();
    let counters = register_victim(
        &mut conn,
        // Half-way down the first descent: the bystander's peer dies
        // while the attack is at its deepest.
        Some(Box::new(move |entry| {
            if entry == u64::from(max_nesting / 2) {
                kill_switch();
            }
        })),
    );
    let started = Instant::now();
    let ((outcome, conn), before, after) = measured("hole 2, nesting", || {
        bounded("the victim's call", OUTER_TIMEOUT + OP_TIMEOUT, move || {
            let outcome = conn.send_sync(target(), &Stall {}, OUTER_TIMEOUT);
            (outcome.map(drop), conn)
        })
    });
    let elapsed = started.elapsed();
    let depth = Counters::get(&counters.max_depth);
    let stack = Counters::get(&counters.stack_outermost)
        .saturating_sub(Counters::get(&counters.stack_innermost));
    eprintln!(
        "  the call ended after {elapsed:?} with {outcome:?}; {} callback handlers entered, \
         at most {depth} inside one another (calls nested {} deep, max_sync_nesting {max_nesting}); \
         their calls back: {} timed out, {} queue full, {} other",
        Counters::get(&counters.callbacks),
        depth + 1,
        Counters::get(&counters.nested_timed_out),
        Counters::get(&counters.nested_queue_full),
        Counters::get(&counters.nested_other),
    );
    eprintln!(
        "  stack from the outermost to the innermost handler: {} KiB, {} bytes a level",
        stack / 1024,
        stack / depth.saturating_sub(1).max(1)
    );
    assert!(
        matches!(outcome, Err(CallError::TimedOut | CallError::QueueFull)),
        "the first call: {outcome:?}"
    );
    assert_eq!(
        depth + 1,
        u64::from(max_nesting),
        "calls nest exactly as deep as max_sync_nesting allows"
    );
    assert_eq!(Counters::get(&counters.depth), 0, "every handler returned");
    assert_eq!(Counters::get(&counters.nested_other), 0);
    assert!(
        conn.is_open(),
        "a call that ends does not end the connection"
    );
    assert!(
        after.rss_growth_kib(&before) < (BUDGET / 1024) as u64 + 4 * 1024,
        "the victim's resident memory grew by {} KiB",
        after.rss_growth_kib(&before)
    );
    bystander.expect_disconnected();
    // The victim goes on: a dispatch takes the callbacks set aside (each
    // handler's call back nests again, as far as the bound allows), and
    // returns after a bounded batch.
    let mut conn = conn;
    let dispatched = conn
        .dispatch(Some(Duration::from_millis(100)))
        .expect("dispatch after the call");
    let depth = Counters::get(&counters.max_depth);
    eprintln!(
        "  a dispatch after the call handled {dispatched} messages; {} callback handlers \
         entered in all, at most {depth} inside one another",
        Counters::get(&counters.callbacks)
    );
    assert!(dispatched > 0 && dispatched <= conn.config().max_dispatch_batch);
    assert!(depth <= u64::from(max_nesting));
    assert_eq!(Counters::get(&counters.depth), 0, "every handler returned");
    drop(conn);
    let sent = hear_count(&peer, "sent");
    eprintln!("  the attacker sent {sent} callbacks");
    peer.expect_success();
    let end = Footprint::now();
    eprintln!("  after hanging up: {end}");
    assert!(
        end.fds <= before.fds,
        "descriptors leaked: {end} vs {before}"
    );
}

// ---------------------------------------------------------------------------
// Hole 3: the allowed-while-waiting flag is the receiver's to decide.

/// The lies, one connection each: a `note` (declared without the flag)
/// carrying it while the victim waits in a call and while it dispatches,
/// and a `callback` (declared with it) sent without it.
const LIES: [&str; 3] = ["flag-while-waiting", "flag-while-dispatching", "no-flag"];

fn child_liar() {
    let control = child_control();
    for lie in LIES {
        let mut peer = RawPeer::open(recv_endpoint(&control));
        let envelope = match lie {
            "flag-while-waiting" | "flag-while-dispatching" => Envelope {
                flags: Flags(Flags::ALLOWED_WHILE_WAITING),
                ..envelope_of::<Note>(0)
            },
            "no-flag" => Envelope {
                flags: Flags(0),
                ..envelope_of::<Callback>(0)
            },
            other => panic!("unknown lie {other}"),
        };
        // An honest note first: the victim handles it (or, waiting, sets it
        // aside), then meets the lie.
        peer.publish_message(&envelope_of::<Note>(0), &archive(&Note { seq: 0 }))
            .expect("publish");
        peer.publish_message(&envelope, &archive(&Note { seq: 1 }))
            .expect("publish");
        peer.wait_closed();
        tell(&control, format!("closed:{lie}").as_bytes());
    }
}

/// A frame whose allowed-while-waiting flag contradicts the victim's
/// declaration of its message is `Violation::AllowedWhileWaitingMismatch`,
/// whether the victim waits in a synchronous call or dispatches; the
/// connection is closed and the attacker sees the hang-up.
#[test]
fn a_lying_allowed_while_waiting_flag_is_a_violation() {
    let _serial = serial();
    let peer = spawn_peer("liar", &[]);
    let ((), before, after) = measured("hole 3, lying flags", || {
        for lie in LIES {
            let (mut conn, endpoint) = Connection::create(victim_config()).expect("create");
            let counters = register_victim(&mut conn, None);
            peer.send_endpoint(endpoint);
            let violation = if lie == "flag-while-waiting" {
                match conn.send_sync(target(), &Stall {}, OP_TIMEOUT) {
                    Err(CallError::ProtocolViolation { violation, .. }) => violation,
                    other => panic!("{lie}: expected a violation, got {:?}", other.map(drop)),
                }
            } else {
                let deadline = Instant::now() + OP_TIMEOUT;
                loop {
                    assert!(Instant::now() < deadline, "{lie}: no violation (hang)");
                    match conn.dispatch(Some(OP_TIMEOUT)) {
                        Ok(_) => {}
                        Err(DispatchError::ProtocolViolation { violation, .. }) => break violation,
                        Err(e) => panic!("{lie}: expected a violation, got {e}"),
                    }
                }
            };
            let message = if lie == "no-flag" {
                <Callback as Message>::ID
            } else {
                <Note as Message>::ID
            };
            assert_eq!(
                violation,
                Violation::AllowedWhileWaitingMismatch {
                    receiver: "Target",
                    message
                },
                "{lie}"
            );
            let handled = if lie == "flag-while-waiting" { 0 } else { 1 };
            assert_eq!(
                Counters::get(&counters.notes),
                handled,
                "{lie}: the honest note"
            );
            assert_eq!(Counters::get(&counters.callbacks), 0, "{lie}");
            assert!(!conn.is_open(), "{lie}: the connection is closed");
            peer.expect_word(format!("closed:{lie}").as_bytes());
            eprintln!("  {lie}: {violation}");
        }
    });
    assert!(after.fds <= before.fds, "descriptors leaked");
    assert!(after.rss_growth_kib(&before) < 16 * 1024);
    peer.expect_success();
}

// ---------------------------------------------------------------------------
// Hole 4: what a waiting call sets aside is bounded, empty messages and
// descriptors included.

/// Publishes messages with an empty body (nothing but an envelope; not
/// allowed while waiting) as fast as the victim takes them, until it hangs
/// up.
fn child_empty_flooder() {
    let control = child_control();
    let mut peer = RawPeer::open(recv_endpoint(&control));
    let envelope = envelope_of::<Poke>(0);
    let mut sent = 0u64;
    while peer.publish_message(&envelope, &[]).is_some() {
        sent += 1;
    }
    tell(&control, format!("sent:{sent}").as_bytes());
}

/// Descriptors each message of the descriptor flood carries (the default
/// `max_fds_per_message`).
const FDS_PER_MESSAGE: usize = 16;

/// The name of the memfd whose descriptors flood the victim.
const FLOOD_MEMFD: &str = "attack-fd-flood";

/// How many descriptors of the flood's memfd this process holds.
fn flood_descriptors_held() -> usize {
    let target = format!("/memfd:{FLOOD_MEMFD}");
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .filter(|link| link.to_string_lossy().starts_with(&target))
        .count()
}

/// Publishes messages carrying descriptors until the victim stops taking
/// them or hangs up.
fn child_fd_flooder() {
    let control = child_control();
    let mut peer = RawPeer::open(recv_endpoint(&control));
    let memfd =
        rustix::fs::memfd_create(FLOOD_MEMFD, rustix::fs::MemfdFlags::CLOEXEC).expect("memfd");
    let fds = [memfd.as_fd(); FDS_PER_MESSAGE];
    let envelope = Envelope {
        fd_count: FDS_PER_MESSAGE as u16,
        ..envelope_of::<Poke>(0)
    };
    let mut sent = 0u64;
    // The victim stops reading once its budget is spent: then the control
    // socket or the ring fills, and the flood waits for the hang-up.
    while peer.try_attach_next(&fds, Duration::from_millis(200)) {
        if peer.publish_message(&envelope, &[]).is_none() {
            break;
        }
        sent += 1;
        if sent == 4 {
            tell(&control, b"flooding");
        }
    }
    peer.wait_closed();
    tell(&control, format!("sent:{sent}").as_bytes());
}

/// Lowers this process's soft descriptor limit to `limit` until dropped, so
/// that a flood that got past the set-aside bound would meet `EMFILE`.
struct FdLimit {
    saved: rustix::process::Rlimit,
}

impl FdLimit {
    fn lower_to(limit: u64) -> FdLimit {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let saved = getrlimit(Resource::Nofile);
        let lowered = Rlimit {
            current: Some(limit),
            maximum: saved.maximum,
        };
        setrlimit(Resource::Nofile, lowered).expect("setrlimit");
        FdLimit { saved }
    }
}

impl Drop for FdLimit {
    fn drop(&mut self) {
        let saved = rustix::process::Rlimit {
            current: self.saved.current,
            maximum: self.saved.maximum,
        };
        rustix::process::setrlimit(rustix::process::Resource::Nofile, saved)
            .expect("restoring the descriptor limit");
    }
}

/// Empty messages (not allowed while waiting) flooding a victim that waits
/// in a synchronous call: each costs `SET_ASIDE_OVERHEAD` of the
/// `max_deferred_bytes` budget, so the call fails with `QueueFull` before
/// the victim's resident memory grows by more than the budget and a little.
#[test]
fn empty_messages_while_waiting_are_bounded() {
    let _serial = serial();
    const BUDGET: usize = 2 << 20;
    let config = victim_config().max_deferred_bytes(BUDGET);
    let (mut conn, peer) = connect_peer("empty-flooder", &config, &[]);
    let counters = register_victim(&mut conn, None);
    let (outcome, before, after) = measured("hole 4, empty messages", || {
        conn.send_sync(target(), &Stall {}, OP_TIMEOUT).map(drop)
    });
    let grown = after.rss_growth_kib(&before);
    let set_aside = conn.stats().frames_received;
    eprintln!(
        "  the call: {outcome:?} after {set_aside} messages were set aside; resident memory \
         grew by {grown} KiB (budget {} KiB), {} bytes a message (charged {})",
        BUDGET / 1024,
        grown * 1024 / set_aside.max(1),
        ferry_transport::SET_ASIDE_OVERHEAD
    );
    assert_eq!(outcome, Err(CallError::QueueFull));
    assert!(
        grown < (BUDGET / 1024) as u64 + 4 * 1024,
        "the victim's resident memory grew by {grown} KiB"
    );
    assert!(conn.is_open());
    assert!(conn.has_deferred());
    assert_eq!(Counters::get(&counters.pokes), 0);
    drop(conn);
    let sent = hear_count(&peer, "sent");
    let floor = (BUDGET / ferry_transport::SET_ASIDE_OVERHEAD) as u64;
    eprintln!("  the attacker published {sent} empty messages");
    assert!(sent > floor, "the flood filled the budget ({sent} sent)");
    peer.expect_success();
    let end = Footprint::now();
    assert!(
        end.fds <= before.fds,
        "descriptors leaked: {end} vs {before}"
    );
}

/// Messages carrying descriptors flooding a victim that waits in a
/// synchronous call: the call fails with `QueueFull` once the messages set
/// aside hold more than `max_deferred_fds`, before the victim holds more
/// than that and one message's worth; with the soft descriptor limit just
/// above that, `memfd_create` still works afterwards; hanging up closes
/// them all.
#[test]
fn descriptors_while_waiting_are_bounded() {
    let _serial = serial();
    let config = victim_config();
    let max_fds = config.max_deferred_fds;
    assert_eq!(config.max_fds_per_message, FDS_PER_MESSAGE);
    let bystander = Bystander::start();
    let (mut conn, peer) = connect_peer("fd-flooder", &config, &[]);
    let counters = register_victim(&mut conn, None);
    // The bystander's peer dies once the flood is under way (its connection
    // must see it with the descriptor table nearly full).
    let flooding = {
        let control = peer.control_clone();
        let kill_switch = bystander.kill_switch();
        spawn_bounded("the bystander's killer", move || {
            assert_eq!(hear(&control), b"flooding");
            kill_switch();
        })
    };
    // Room for the bound, one message beyond it, and a few of our own.
    let slack = 16;
    let limit = (open_fd_count() + max_fds + FDS_PER_MESSAGE + slack) as u64;
    let (outcome, before, after) = measured("hole 4, descriptors", || {
        let _limit = FdLimit::lower_to(limit);
        let outcome = conn.send_sync(target(), &Stall {}, OP_TIMEOUT).map(drop);
        let memfd = rustix::fs::memfd_create("after-the-flood", rustix::fs::MemfdFlags::CLOEXEC);
        (outcome, memfd.map(drop), flood_descriptors_held())
    });
    let (outcome, memfd, held) = outcome;
    eprintln!(
        "  the call: {outcome:?}; the victim holds {held} of the attacker's descriptors, \
         {} more in all (max_deferred_fds {max_fds}, soft limit {limit}); \
         memfd_create after: {memfd:?}",
        after.fd_growth(&before)
    );
    assert_eq!(outcome, Err(CallError::QueueFull));
    assert!(
        held <= max_fds + FDS_PER_MESSAGE,
        "the victim holds {held} of the attacker's descriptors"
    );
    assert!(
        after.fd_growth(&before) <= max_fds + FDS_PER_MESSAGE + 4,
        "the victim holds {} more descriptors",
        after.fd_growth(&before)
    );
    assert_eq!(memfd, Ok(()), "memfd_create after the flood");
    flooding.join_within(OP_TIMEOUT);
    bystander.expect_disconnected();
    assert!(after.rss_growth_kib(&before) < 16 * 1024);
    assert!(conn.is_open());
    assert_eq!(Counters::get(&counters.pokes), 0);
    drop(conn);
    let sent = hear_count(&peer, "sent");
    eprintln!("  the attacker sent {sent} messages of {FDS_PER_MESSAGE} descriptors");
    assert!(sent as usize * FDS_PER_MESSAGE > max_fds);
    peer.expect_success();
    let end = Footprint::now();
    eprintln!("  after hanging up: {end}");
    assert!(
        end.fds <= before.fds,
        "descriptors leaked: {end} vs {before}"
    );
    assert_eq!(flood_descriptors_held(), 0);
}

// ---------------------------------------------------------------------------
// Hole 8: a live peer that stops reading.

/// Opens the connection and never reads; waits for the victim to hang up.
fn child_idle() {
    let control = child_control();
    let peer = RawPeer::open(recv_endpoint(&control));
    tell(&control, b"ready");
    peer.wait_closed();
    tell(&control, b"closed");
}

/// `send` to a live peer that stopped reading fails with `TimedOut` after
/// the `send_timeout` (finite by default); the connection stays open.
#[test]
fn send_to_a_peer_that_stopped_reading_times_out() {
    let _serial = serial();
    let default = ConnectionConfig::default().send_timeout;
    assert_eq!(default, Some(ferry_transport::DEFAULT_SEND_TIMEOUT));
    let send_timeout = Duration::from_millis(200);
    let config = victim_config()
        .ring_capacity(16 * 1024)
        .send_timeout(Some(send_timeout));
    let (mut conn, peer) = connect_peer("idle", &config, &[]);
    peer.expect_word(b"ready");
    let (conn, before, after) = measured("hole 8a, send to a peer that stopped reading", || {
        bounded("the victim's sends", OP_TIMEOUT, move || {
            let mut sent = 0u64;
            let outcome = loop {
                let started = Instant::now();
                match conn.send(target(), &Note { seq: sent }) {
                    Ok(()) => sent += 1,
                    Err(error) => break (error, started.elapsed()),
                }
            };
            eprintln!(
                "  {sent} notes sent, then {:?} after {:?} (send_timeout {send_timeout:?}, \
                 default {default:?})",
                outcome.0, outcome.1
            );
            assert_eq!(outcome.0, SendError::TimedOut);
            assert!(sent > 0);
            conn
        })
    });
    assert!(conn.is_open(), "a timeout does not end the connection");
    assert!(after.fds <= before.fds);
    drop(conn);
    peer.expect_word(b"closed");
    peer.expect_success();
}

/// Publishes requests as fast as the victim takes them and never reads the
/// replies.
fn child_request_flooder() {
    let control = child_control();
    let mut peer = RawPeer::open(recv_endpoint(&control));
    let mut sent = 0u64;
    loop {
        let envelope = envelope_of::<Ask>(sent + 1);
        if peer
            .publish_message(&envelope, &archive(&Ask { seq: sent }))
            .is_none()
        {
            break;
        }
        sent += 1;
    }
    tell(&control, format!("sent:{sent}").as_bytes());
}

/// A requester that never takes its replies is cut off with
/// `RepliesNotTaken` the first time a reply waits `reply_timeout` for room:
/// one stall, not one per request.
#[test]
fn a_requester_that_takes_no_replies_is_cut_off() {
    let _serial = serial();
    let reply_timeout = Duration::from_millis(300);
    let config = victim_config()
        .ring_capacity(16 * 1024)
        .reply_timeout(reply_timeout);
    let (mut conn, peer) = connect_peer("request-flooder", &config, &[]);
    let counters = register_victim(&mut conn, None);
    let ((error, calls, stalled), before, after) = measured("hole 8b, replies not taken", || {
        let deadline = Instant::now() + OP_TIMEOUT;
        let mut calls = 0;
        let mut longest = Duration::ZERO;
        loop {
            assert!(Instant::now() < deadline, "no violation (hang)");
            let started = Instant::now();
            let outcome = conn.dispatch(Some(OP_TIMEOUT));
            longest = longest.max(started.elapsed());
            calls += 1;
            match outcome {
                Ok(_) => {}
                Err(error) => break (error, calls, longest),
            }
        }
    });
    let answered = Counters::get(&counters.asks);
    eprintln!(
        "  {error} after {calls} dispatch calls and {answered} requests \
         (longest dispatch {stalled:?}, reply_timeout {reply_timeout:?})"
    );
    assert!(
        matches!(
            error,
            DispatchError::ProtocolViolation {
                violation: Violation::RepliesNotTaken,
                ..
            }
        ),
        "{error}"
    );
    assert!(!conn.is_open());
    // The replies that fit in the ring, then the one that waited in vain.
    let ring_frames = 16 * 1024 / 64;
    assert!(
        answered <= ring_frames as u64 + 1,
        "{answered} requests handled before the cut-off"
    );
    assert!(after.fds <= before.fds);
    drop(conn);
    let sent = hear_count(&peer, "sent");
    eprintln!("  the attacker published {sent} requests");
    peer.expect_success();
}

/// `send_with_reply` beyond `max_pending_replies` fails with
/// `TooManyPending`, and the connection stays usable.
#[test]
fn pending_replies_are_bounded() {
    let _serial = serial();
    const MAX: usize = 8;
    let config = victim_config().max_pending_replies(MAX);
    let (mut conn, peer) = connect_peer("idle", &config, &[]);
    peer.expect_word(b"ready");
    let ((), before, after) = measured("hole 8c, pending replies", || {
        for seq in 0..MAX as u64 {
            conn.send_with_reply(target(), &Ask { seq }, |_, _| {})
                .expect("send_with_reply within the bound");
        }
        assert_eq!(
            conn.send_with_reply(target(), &Ask { seq: 99 }, |_, _| {}),
            Err(SendError::TooManyPending { max: MAX })
        );
        conn.send(target(), &Note { seq: 0 })
            .expect("other sends go on");
    });
    eprintln!("  {MAX} requests pending, the next refused with TooManyPending");
    assert_eq!(ConnectionConfig::default().max_pending_replies, 4096);
    assert!(conn.is_open());
    assert!(after.fds <= before.fds);
    drop(conn);
    peer.expect_word(b"closed");
    peer.expect_success();
}

// ---------------------------------------------------------------------------
// Hole 9: one busy peer monopolising a thread.

/// Sends notes without pause until the victim hangs up.
fn child_streamer() {
    let (mut conn, control) = child_connect();
    let mut sent = 0u64;
    let limit = Instant::now() + 2 * OP_TIMEOUT;
    // First a ring's worth, which the victim does not read yet...
    while conn.try_send(target(), &Note { seq: sent }).is_ok() {
        sent += 1;
    }
    tell(&control, b"ring full");
    // ...then without pause, as fast as it takes them.
    while Instant::now() < limit && conn.send(target(), &Note { seq: sent }).is_ok() {
        sent += 1;
    }
    tell(&control, format!("sent:{sent}").as_bytes());
}

/// A peer that streams without pause, with a ring's worth of messages
/// (many batches) waiting: one `dispatch` handles at most
/// `max_dispatch_batch` messages and returns, however long its timeout,
/// so an event loop serving several connections stays fair.
#[test]
fn one_dispatch_does_bounded_work() {
    let _serial = serial();
    const BATCH: usize = 256;
    let config = victim_config()
        .ring_capacity(256 * 1024)
        .max_dispatch_batch(BATCH);
    let (mut conn, peer) = connect_peer("streamer", &config, &[]);
    let counters = register_victim(&mut conn, None);
    peer.expect_word(b"ring full");
    let (counts, before, after) = measured("hole 9, a peer that streams", || {
        bounded("the victim's dispatches", OP_TIMEOUT, move || {
            let mut counts = Vec::new();
            // A timeout far longer than the stream would take to drain: only
            // the batch bounds these calls.
            for _ in 0..20 {
                counts.push(conn.dispatch(Some(OP_TIMEOUT)).expect("dispatch"));
            }
            for _ in 0..20 {
                counts.push(
                    conn.dispatch(Some(Duration::from_millis(100)))
                        .expect("dispatch"),
                );
            }
            (counts, conn)
        })
    });
    let (counts, conn) = counts;
    eprintln!(
        "  max_dispatch_batch {BATCH}; messages per dispatch: {counts:?}; {} notes handled",
        Counters::get(&counters.notes)
    );
    assert!(counts.iter().all(|&count| count <= BATCH), "{counts:?}");
    assert_eq!(
        counts[0], BATCH,
        "a ring's worth waited: the first call took a full batch"
    );
    assert_eq!(
        Counters::get(&counters.notes),
        counts.iter().sum::<usize>() as u64
    );
    assert_eq!(ConnectionConfig::default().max_dispatch_batch, 1024);
    assert!(after.fds <= before.fds);
    drop(conn);
    let sent = hear_count(&peer, "sent");
    eprintln!("  the attacker sent {sent} notes");
    peer.expect_success();
}
