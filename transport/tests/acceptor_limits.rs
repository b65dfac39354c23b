//! A service's `Acceptor` bounds the live connections it holds per
//! requester (issue 10, hole 7), and a requester told `TargetBusy` can wait
//! for room with `connect_retrying`. Real processes: this test is the
//! broker; the service, the hoarding requester and the honest requesters
//! are this binary re-executed (see `support`), and talk over real
//! ferry connections.

mod support;

use ferry_handoff::{
    AllowAll, Broker, BrokerClient, BrokerConfig, BrokerEvent, ConnectError, ConnectFailure,
    ConnectionHandler, InstanceId,
};
use ferry_transport::{
    Accepted, Acceptor, Connection, ConnectionConfig, IntroductionError, RecvError,
    RequesterLimits, connect, connect_retrying,
};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};
use support::*;

/// The schema every connection of this test speaks (raw frames only).
const SCHEMA: u64 = 0x11a5_7e57;

/// The child test: runs the role the parent asked for, or nothing.
#[test]
fn child() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        "service" => child_service(),
        "hoarder" => child_hoarder(),
        "echo-once" => child_echo_once(),
        "wait-retrying" => child_wait_retrying(),
        "impatient" => child_impatient(),
        other => panic!("unknown role {other}"),
    }
}

fn config() -> ConnectionConfig {
    ConnectionConfig::default()
        .schema(SCHEMA)
        .ring_capacity(1 << 14)
}

/// Sends a frame and expects it echoed.
fn round_trip(connection: &mut Connection, word: &[u8]) {
    connection
        .send_frame(word, Some(OP_TIMEOUT))
        .expect("send_frame");
    let echoed = connection.recv_frame(Some(OP_TIMEOUT)).expect("the echo");
    assert_eq!(echoed.bytes(), word);
}

/// A service: an `Acceptor` with `PER_REQUESTER` live connections per
/// requester; echoes every frame, and drops a connection (freeing its slot)
/// once the requester has closed it. If `GATE` names a file, each request
/// waits (bounded) until that file exists before it is answered: the test
/// holds introductions in flight with it. Runs until the broker goes away;
/// then checks that its open descriptors never grew by more than
/// `MAX_LIVE` connections' worth.
fn child_service() {
    let per_requester: usize = param("PER_REQUESTER");
    let gate: String = param("GATE");
    let (acceptor, accepted) = Acceptor::new(config());
    let mut acceptor = acceptor.with_limits(RequesterLimits::new(per_requester, 64));
    let handler = move |request| {
        if !gate.is_empty() {
            let deadline = Instant::now() + OP_TIMEOUT;
            while !std::path::Path::new(&gate).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        acceptor.create_connection(request)
    };
    let client = BrokerClient::builder()
        .handler(handler)
        .from_env()
        .expect("the broker client");
    let mut live: Vec<Accepted> = Vec::new();
    let baseline = open_fd_count();
    let mut peak = baseline;
    let deadline = Instant::now() + EXIT_TIMEOUT;
    while client.is_broker_alive() {
        assert!(Instant::now() < deadline, "the broker never went away");
        peak = peak.max(open_fd_count());
        if let Ok(new) = accepted.recv_timeout(Duration::from_millis(5)) {
            live.push(new);
        }
        live.retain_mut(|accepted| {
            loop {
                let connection = &mut accepted.connection;
                let word = match connection.try_recv_frame() {
                    Ok(frame) => frame.bytes().to_vec(),
                    Err(RecvError::Empty) => return true,
                    Err(RecvError::Disconnected) => return false,
                    Err(e) => panic!("{}: {e}", accepted.peer),
                };
                if connection.send_frame(&word, Some(OP_TIMEOUT)).is_err() {
                    return false;
                }
            }
        });
    }
    // A live connection holds six descriptors here (control socket and its
    // hang-up watch, the notification socket and a copy for the watch, the
    // region),
    // the requester's end four more until it is sent, and the first
    // connection starts the process's hang-up watcher: ten per connection
    // is a bound with room. Without the limit, each of the hoarder's
    // refused attempts would have left six more open here.
    let max_live: usize = param("MAX_LIVE");
    eprintln!(
        "service: {baseline} descriptors before any connection, at most {peak} \
         with {max_live} live connections allowed"
    );
    assert!(
        peak <= baseline + 10 * (max_live + 1),
        "descriptors grew from {baseline} to {peak}"
    );
}

/// Whether `outcome` is the service's refusal of a requester at its limit.
fn at_its_limit(outcome: Result<Connection, IntroductionError>) -> bool {
    match outcome {
        Err(IntroductionError::Broker(ConnectError::TargetFailed(reason))) => {
            assert!(reason.contains("live connections"), "unclear: {reason}");
            true
        }
        Err(e) => panic!("expected the limit's refusal, got {e}"),
        Ok(_) => false,
    }
}

/// Keeps its connections open: `LIMIT` succeed, the next `EXTRA` are
/// refused by the service; closing one lets one more in (once the service
/// has seen it close); then it is refused again, and holds its connections
/// until the broker goes away.
fn child_hoarder() {
    let limit: usize = param("LIMIT");
    let extra: usize = param("EXTRA");
    let client = BrokerClient::from_env().expect("the broker client");
    let mut held: Vec<Connection> = (0..limit)
        .map(|i| {
            let mut connection =
                connect(&client, "service", config(), OP_TIMEOUT).expect("an admitted connection");
            round_trip(&mut connection, format!("hoard {i}").as_bytes());
            connection
        })
        .collect();
    for attempt in 0..extra {
        assert!(
            at_its_limit(connect(&client, "service", config(), OP_TIMEOUT)),
            "connection {} was not refused",
            limit + attempt
        );
    }
    held.pop();
    let deadline = Instant::now() + OP_TIMEOUT;
    let mut again = loop {
        match connect(&client, "service", config(), OP_TIMEOUT) {
            Ok(connection) => break connection,
            Err(IntroductionError::Broker(ConnectError::TargetFailed(_)))
                if Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("no slot after closing a connection: {e}"),
        }
    };
    round_trip(&mut again, b"again");
    held.push(again);
    assert!(
        at_its_limit(connect(&client, "service", config(), OP_TIMEOUT)),
        "over the limit again, yet not refused"
    );
    let deadline = Instant::now() + EXIT_TIMEOUT;
    while client.is_broker_alive() {
        assert!(Instant::now() < deadline, "the broker never went away");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(held);
}

/// An honest requester: one connection, one echo.
fn child_echo_once() {
    let client = BrokerClient::from_env().expect("the broker client");
    let mut connection = connect(&client, "service", config(), OP_TIMEOUT).expect("connect");
    round_trip(&mut connection, b"honest");
}

/// Connects with `connect_retrying` while the target is busy.
fn child_wait_retrying() {
    let client = BrokerClient::from_env().expect("the broker client");
    let mut connection =
        connect_retrying(&client, "service", config(), OP_TIMEOUT).expect("connect_retrying");
    round_trip(&mut connection, b"patient");
}

/// Retries for a short while only: gives up with the busy answer (or, if
/// its last attempt started just before the deadline, a timeout).
fn child_impatient() {
    let client = BrokerClient::from_env().expect("the broker client");
    match connect_retrying(&client, "service", config(), Duration::from_millis(200)) {
        Err(IntroductionError::Broker(ConnectError::TargetBusy | ConnectError::TimedOut)) => {}
        Err(e) => panic!("expected TargetBusy, got {e}"),
        Ok(_) => panic!("connected through a closed gate"),
    }
}

// ---------------------------------------------------------------------------
// The broker's side.

fn spawn(broker: &mut Broker, name: &str, role: &str, params: &[(&str, String)]) -> InstanceId {
    broker
        .spawn(name, child_command(role, params))
        .unwrap_or_else(|e| panic!("spawning {role}: {e}"))
}

/// Turns the broker until `done`, collecting events (bounded).
fn turn_until(
    broker: &mut Broker,
    events: &mut Vec<BrokerEvent>,
    done: impl Fn(&[BrokerEvent]) -> bool,
) {
    let deadline = Instant::now() + OP_TIMEOUT;
    while !done(events) {
        assert!(
            Instant::now() < deadline,
            "gave up waiting; events so far: {events:#?}"
        );
        broker
            .turn(Duration::from_millis(50), |e| events.push(e))
            .expect("broker turn");
    }
}

fn exit_of(events: &[BrokerEvent], who: InstanceId) -> Option<Option<ExitStatus>> {
    events.iter().find_map(|e| match e {
        BrokerEvent::ChildExited { child, status } if child.instance == who => Some(*status),
        _ => None,
    })
}

fn assert_exited_ok(events: &[BrokerEvent], who: InstanceId, role: &str) {
    match exit_of(events, who) {
        Some(Some(status)) => assert!(status.success(), "{role} failed ({status}); see stderr"),
        other => panic!("{role}: no exit status ({other:?})"),
    }
}

fn failures(
    events: &[BrokerEvent],
    who: InstanceId,
    what: impl Fn(&ConnectFailure) -> bool,
) -> usize {
    events
        .iter()
        .filter(|e| {
            matches!(e, BrokerEvent::IntroductionFailed { requester, failure, .. }
                if requester.instance == who && what(failure))
        })
        .count()
}

/// The outcomes of `who`'s introductions in order: made (`true`) or
/// refused by the target at its limit (`false`).
fn introductions_of(events: &[BrokerEvent], who: InstanceId) -> Vec<bool> {
    events
        .iter()
        .filter_map(|e| match e {
            BrokerEvent::IntroductionMade { requester, .. } if requester.instance == who => {
                Some(true)
            }
            BrokerEvent::IntroductionFailed {
                requester,
                failure: ConnectFailure::TargetFailed(reason),
                ..
            } if requester.instance == who && reason.contains("live connections") => Some(false),
            _ => None,
        })
        .collect()
}

/// A requester that keeps its connections open holds at most its share of
/// the service (the `Acceptor`'s per-requester limit, 2 here): its next 50
/// attempts are refused with a reason (the service's descriptors stay
/// within three connections' worth), an honest requester still
/// connects and talks while the hoarder holds its two, and a connection the
/// hoarder closes frees its slot (the `Admission` lives as long as the
/// service's `Accepted`). The service is never cut off.
#[test]
fn a_hoarding_requester_is_held_to_its_share() {
    let mut broker = Broker::new(AllowAll).expect("broker");
    let mut events = Vec::new();
    let service = spawn(
        &mut broker,
        "service",
        "service",
        &[
            ("PER_REQUESTER", "2".into()),
            ("GATE", String::new()),
            // The hoarder's two and the honest requester's one.
            ("MAX_LIVE", "3".into()),
        ],
    );
    let hoarder = spawn(
        &mut broker,
        "client",
        "hoarder",
        &[("LIMIT", "2".into()), ("EXTRA", "50".into())],
    );
    // Two made, refused, (closed one) a third made, refused again: it
    // holds two now, for as long as the broker runs.
    turn_until(&mut broker, &mut events, |events| {
        let outcomes = introductions_of(events, hoarder);
        outcomes.iter().filter(|made| **made).count() >= 3 && outcomes.last() == Some(&false)
            || exit_of(events, hoarder).is_some()
    });
    assert!(
        exit_of(&events, hoarder).is_none(),
        "the hoarder stopped early; see stderr"
    );
    let honest = spawn(&mut broker, "client", "echo-once", &[]);
    turn_until(&mut broker, &mut events, |events| {
        exit_of(events, honest).is_some()
    });
    assert_exited_ok(&events, honest, "the honest requester");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, BrokerEvent::Misbehaved { .. })),
        "someone was cut off: {events:#?}"
    );
    broker.shutdown(EXIT_TIMEOUT, |e| events.push(e));
    assert_exited_ok(&events, hoarder, "the hoarder");
    assert_exited_ok(&events, service, "the service");
}

/// A unique file name for a gate.
fn gate_path() -> PathBuf {
    std::env::temp_dir().join(format!(
        "ferry-acceptor-gate-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ))
}

/// The broker lets one introduction at a time reach the service, and the
/// service holds the first one (a gate the test opens). A requester using
/// `connect_retrying` hears `TargetBusy` (the broker reports it) and keeps
/// trying; one with a short deadline gives up with `TargetBusy`; once the
/// gate opens both the first and the patient requester connect and talk.
#[test]
fn connect_retrying_waits_out_a_busy_target() {
    let gate = gate_path();
    // One introduction in flight per target; the held one must not time
    // out at the broker while the test arranges the rest.
    let config = BrokerConfig {
        max_pending_per_target: 1,
        introduction_timeout: OP_TIMEOUT,
        ..BrokerConfig::default()
    };
    let mut broker = Broker::with_config(AllowAll, config).expect("broker");
    let mut events = Vec::new();
    let service = spawn(
        &mut broker,
        "service",
        "service",
        &[
            ("PER_REQUESTER", "16".into()),
            ("GATE", gate.display().to_string()),
            ("MAX_LIVE", "2".into()),
        ],
    );
    let first = spawn(&mut broker, "client", "echo-once", &[]);
    turn_until(&mut broker, &mut events, |events| {
        events.iter().any(|e| {
            matches!(e, BrokerEvent::IntroductionRequested { requester, .. }
            if requester.instance == first)
        })
    });
    let patient = spawn(&mut broker, "client", "wait-retrying", &[]);
    let impatient = spawn(&mut broker, "client", "impatient", &[]);
    turn_until(&mut broker, &mut events, |events| {
        failures(events, patient, |f| *f == ConnectFailure::TargetBusy) >= 1
            && failures(events, impatient, |f| *f == ConnectFailure::TargetBusy) >= 1
            && exit_of(events, impatient).is_some()
    });
    assert_exited_ok(&events, impatient, "the impatient requester");
    assert!(
        exit_of(&events, patient).is_none(),
        "the patient requester gave up; see stderr"
    );
    std::fs::write(&gate, b"open").expect("opening the gate");
    turn_until(&mut broker, &mut events, |events| {
        exit_of(events, first).is_some() && exit_of(events, patient).is_some()
    });
    let _ = std::fs::remove_file(&gate);
    assert_exited_ok(&events, first, "the first requester");
    assert_exited_ok(&events, patient, "the patient requester");
    broker.shutdown(EXIT_TIMEOUT, |e| events.push(e));
    assert_exited_ok(&events, service, "the service");
}
