//! Two processes that call each other synchronously at the same moment
//! (issue 15, item 1). The request is not marked allowed-while-waiting, as
//! WebKit's synchronous messages are not either: a synchronous call
//! dispatches incoming synchronous requests while it waits, so both calls
//! complete instead of both waiting for nothing until they time out.

mod support;

use ferry_transport::{Connection, Context, DispatchError, Receiver, Remote, Trust};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::*;

/// The child test: runs the role the parent asked for, or nothing.
#[test]
fn child() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        "crossing-caller" => child_crossing_caller(),
        other => panic!("unknown role {other}"),
    }
}

ferry_transport::protocol! {
    /// Both processes register it and call each other with it.
    pub receiver Crossing handled_by CrossingHandler {
        /// A synchronous request, not allowed while waiting.
        fn ask => Ask { seq: u64 } -> Answer { seq: u64 };
        /// The sender made all its calls.
        fn done => Done { calls: u64 };
    }
}

const SCHEMA: u64 = ferry_transport::schema_of(&[<Crossing as Receiver>::SCHEMA]);

/// How many calls each side makes.
const CALLS: u64 = 1000;
/// How long each call may wait: generous, only a hang reaches it.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

fn crossing() -> Remote<Crossing> {
    Remote::new(1)
}

fn config() -> ferry_transport::ConnectionConfig {
    ferry_transport::ConnectionConfig::default()
        .trust(Trust::Untrusted)
        .schema(SCHEMA)
}

/// What one side's handler saw.
#[derive(Default)]
struct Seen {
    /// Set while this side's own call waits.
    calling: AtomicBool,
    /// The peer's requests answered.
    asks: AtomicU64,
    /// ...of which while this side's own call waited.
    asks_while_calling: AtomicU64,
    /// The peer made all its calls.
    done: AtomicBool,
}

struct CrossingImpl(Arc<Seen>);

impl CrossingHandler for CrossingImpl {
    fn ask(&self, _: &mut Context, message: &ArchivedAsk) -> Answer {
        self.0.asks.fetch_add(1, Ordering::SeqCst);
        if self.0.calling.load(Ordering::SeqCst) {
            self.0.asks_while_calling.fetch_add(1, Ordering::SeqCst);
        }
        Answer {
            seq: message.seq.to_native(),
        }
    }

    fn done(&self, _: &mut Context, message: &ArchivedDone) {
        assert_eq!(message.calls.to_native(), CALLS);
        self.0.done.store(true, Ordering::SeqCst);
    }
}

/// One side: makes its calls one after another (dispatching nothing in
/// between: the peer's requests are answered only while our own call
/// waits), then answers the peer's remaining calls until it is done too.
/// Returns (answered, answered while our call waited).
fn cross(conn: &mut Connection, side: &str) -> (u64, u64) {
    let seen = Arc::new(Seen::default());
    conn.register(1, Crossing::handler(CrossingImpl(Arc::clone(&seen))));
    for seq in 0..CALLS {
        seen.calling.store(true, Ordering::SeqCst);
        let reply = conn
            .send_sync(crossing(), &Ask { seq }, CALL_TIMEOUT)
            .unwrap_or_else(|e| panic!("{side}: call {seq} failed: {e}"));
        seen.calling.store(false, Ordering::SeqCst);
        assert_eq!(
            reply.seq.to_native(),
            seq,
            "{side}: the reply to call {seq}"
        );
    }
    conn.send(crossing(), &Done { calls: CALLS })
        .expect("send Done");
    let deadline = Instant::now() + OP_TIMEOUT;
    while !seen.done.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "{side}: the peer never finished");
        match conn.dispatch(Some(Duration::from_millis(100))) {
            Ok(_) => {}
            Err(DispatchError::Disconnected) => break,
            Err(e) => panic!("{side}: dispatch: {e}"),
        }
    }
    assert!(seen.done.load(Ordering::SeqCst), "{side}: the peer's Done");
    (
        seen.asks.load(Ordering::SeqCst),
        seen.asks_while_calling.load(Ordering::SeqCst),
    )
}

fn child_crossing_caller() {
    let (mut conn, control) = child_connect();
    assert_eq!(hear(&control), b"go");
    let (asks, while_calling) = cross(&mut conn, "child");
    tell(&control, format!("{asks}:{while_calling}").as_bytes());
}

/// Two processes call each other synchronously, with a request that is not
/// allowed while waiting, 1000 times each at the same moment: every call
/// completes. Neither side dispatches while it still has calls to make, so
/// whichever finished first had every call answered by the other while the
/// other's own call waited.
#[test]
fn crossing_sync_calls_all_complete() {
    let (mut conn, peer) = connect_peer("crossing-caller", &config(), &[]);
    peer.tell(b"go");
    let started = Instant::now();
    let (asks, while_calling) = cross(&mut conn, "parent");
    let elapsed = started.elapsed();
    let heard = String::from_utf8(peer.hear()).expect("utf-8");
    let (child_asks, child_while_calling): (u64, u64) = heard
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .unwrap_or_else(|| panic!("unexpected report {heard:?}"));
    eprintln!(
        "{CALLS} crossing calls each way in {elapsed:?}: the parent answered {asks} \
         ({while_calling} while its own call waited), the child {child_asks} \
         ({child_while_calling} while its own call waited)"
    );
    assert_eq!((asks, child_asks), (CALLS, CALLS));
    assert_eq!(
        while_calling.max(child_while_calling),
        CALLS,
        "the side that finished second answered every call of the other while its own waited"
    );
    drop(conn);
    peer.expect_success();
}
