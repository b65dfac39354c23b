//! Connections by name between unrelated processes (issue 14, item 1).
//!
//! The test spawns a listening process and connecting processes, each this
//! binary re-executed (see `support`): they are children of the test but
//! not of each other, and share nothing but the name. The test only
//! relays "ready" and collects reports over each child's control channel.

mod support;

use ferry_handoff::Channel;
use ferry_transport::ConnectionConfig;
use ferry_transport::named::{self, AcceptError, ConnectError, Name};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
use support::*;

/// The schema both sides speak (raw frames only).
const SCHEMA: u64 = 0x4e41_4d45;

/// The child test: runs the role the parent asked for, or nothing.
#[test]
fn child() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        "listener" => child_listener(),
        "connector" => child_connector(),
        "silent" => child_silent(),
        other => panic!("unknown role {other}"),
    }
}

fn config() -> ConnectionConfig {
    ConnectionConfig::default()
        .schema(SCHEMA)
        .ring_capacity(1 << 14)
}

/// The name the parent chose (`KIND` path or abstract, `NAME`).
fn name_from_params() -> Name {
    let name: String = param("NAME");
    match param::<String>("KIND").as_str() {
        "path" => Name::path(name),
        "abstract" => Name::abstract_name(name),
        other => panic!("bad name kind {other}"),
    }
}

/// Listens at the name with the rule `RULE` and a handshake timeout of
/// `HANDSHAKE_MS`; reports "listening", then "accepted <pid> <uid>" for
/// each connection (and serves it: one frame echoed in upper case, then it
/// waits for the peer to close); on "stop" reports "count <n>" and exits.
fn child_listener() {
    let control = child_control();
    let listener = named::listen(&name_from_params(), config()).expect("listen");
    let listener = match param::<String>("RULE").as_str() {
        "same-user" => listener,
        "refuse-own-uid" => {
            let me = rustix::process::geteuid().as_raw();
            listener.allow(move |peer| peer.credentials.uid != me)
        }
        other => panic!("bad rule {other}"),
    };
    let mut listener =
        listener.handshake_timeout(Duration::from_millis(param::<u64>("HANDSHAKE_MS")));
    tell(&control, b"listening");
    let mut count = 0;
    let mut servers = Vec::new();
    let deadline = Instant::now() + EXIT_TIMEOUT;
    loop {
        assert!(Instant::now() < deadline, "never told to stop");
        match listener.accept(Some(Duration::from_millis(20))) {
            Ok((mut connection, peer)) => {
                count += 1;
                // The pidfd names the process that connected.
                let pidfd = peer.pidfd().expect("no pidfd for the peer");
                let info =
                    std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd()))
                        .expect("the pidfd's fdinfo");
                let pid = info.lines().find_map(|line| line.strip_prefix("Pid:"));
                assert_eq!(
                    pid.map(str::trim),
                    Some(peer.credentials.pid.to_string().as_str())
                );
                let report = format!("accepted {} {}", peer.credentials.pid, peer.credentials.uid);
                tell(&control, report.as_bytes());
                servers.push(std::thread::spawn(move || {
                    let frame = connection.recv_frame(Some(OP_TIMEOUT)).expect("a frame");
                    let reply = frame.bytes().to_ascii_uppercase();
                    drop(frame);
                    connection
                        .send_frame(&reply, Some(OP_TIMEOUT))
                        .expect("the reply");
                    match connection.recv_frame(Some(OP_TIMEOUT)) {
                        Err(ferry_transport::RecvError::Disconnected) => {}
                        other => panic!("expected the peer to close, got {other:?}"),
                    }
                }));
            }
            Err(AcceptError::TimedOut) => {}
            Err(e) => panic!("accept: {e}"),
        }
        let mut buf = [0u8; 16];
        if let Ok(Some(got)) = control.try_recv(&mut buf) {
            assert_eq!(&buf[..got.len], b"stop");
            break;
        }
    }
    for server in servers {
        server.join().expect("a connection's server failed");
    }
    tell(&control, format!("count {count}").as_bytes());
}

/// Connects by name and expects `EXPECT`: "ok" (then one echoed frame) or
/// "not-allowed".
fn child_connector() {
    let name = name_from_params();
    match param::<String>("EXPECT").as_str() {
        "ok" => {
            let mut connection = named::connect(&name, config(), OP_TIMEOUT).expect("connect");
            assert_eq!(connection.config().peer_name, name.to_string());
            let word = format!("hello from {}", std::process::id());
            connection
                .send_frame(word.as_bytes(), Some(OP_TIMEOUT))
                .expect("send");
            let reply = connection.recv_frame(Some(OP_TIMEOUT)).expect("the reply");
            assert_eq!(reply.bytes(), word.to_ascii_uppercase().as_bytes());
        }
        "not-allowed" => match named::connect(&name, config(), OP_TIMEOUT) {
            Err(ConnectError::NotAllowed) => {}
            Err(e) => panic!("expected NotAllowed, got {e}"),
            Ok(_) => panic!("a refused uid was connected"),
        },
        other => panic!("bad expectation {other}"),
    }
}

/// Connects to the listening socket and says nothing; reports "connected".
/// `WAIT` "hangup": waits for the listener to drop it, reports "dropped".
/// `WAIT` "hold": waits for "stop", then reports whether the listener
/// still holds it ("pending") or dropped it ("dropped").
fn child_silent() {
    let control = child_control();
    let name = name_from_params();
    let socket = match &name {
        Name::Path(path) => Channel::connect(path),
        Name::Abstract(name) => Channel::connect_abstract(name),
    }
    .expect("connecting");
    tell(&control, b"connected");
    match param::<String>("WAIT").as_str() {
        "hangup" => {
            assert!(
                socket.wait_hangup(Some(OP_TIMEOUT)).expect("poll"),
                "the listener never dropped a silent peer"
            );
            tell(&control, b"dropped");
        }
        "hold" => {
            assert_eq!(hear(&control), b"stop");
            let word: &[u8] = if socket.is_hung_up().expect("poll") {
                b"dropped"
            } else {
                b"pending"
            };
            tell(&control, word);
        }
        other => panic!("bad wait {other}"),
    }
}

// ---------------------------------------------------------------------------
// The test's side.

/// A fresh name of `kind` for one test.
fn fresh_name(kind: &str) -> Vec<(&'static str, String)> {
    let unique = format!(
        "ferry-named-test-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    );
    let name = match kind {
        "path" => std::env::temp_dir().join(unique).display().to_string(),
        _ => unique,
    };
    vec![("KIND", kind.to_string()), ("NAME", name)]
}

fn with(
    base: &[(&'static str, String)],
    extra: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    let mut all = base.to_vec();
    all.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    all
}

fn start_listener(name: &[(&'static str, String)], rule: &str, handshake_ms: u64) -> Peer {
    let listener = spawn_peer(
        "listener",
        &with(
            name,
            &[("RULE", rule), ("HANDSHAKE_MS", &handshake_ms.to_string())],
        ),
    );
    listener.expect_word(b"listening");
    listener
}

fn our_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Stops the listener and checks how many connections it made.
fn stop_listener(listener: Peer, expected: usize) {
    listener.tell(b"stop");
    listener.expect_word(format!("count {expected}").as_bytes());
    listener.expect_success();
}

/// A listener and a connector that share nothing but `kind` of name: the
/// connector gets a connection, the listener sees the connector's pid and
/// our uid, and a frame goes there and back.
fn connect_by(kind: &str) {
    let name = fresh_name(kind);
    let listener = start_listener(&name, "same-user", 2_000);
    let connector = spawn_peer("connector", &with(&name, &[("EXPECT", "ok")]));
    let connector_pid = connector.pid();
    listener.expect_word(format!("accepted {connector_pid} {}", our_uid()).as_bytes());
    connector.expect_success();
    stop_listener(listener, 1);
}

#[test]
fn unrelated_processes_connect_by_path() {
    connect_by("path");
}

#[test]
fn unrelated_processes_connect_by_abstract_name() {
    connect_by("abstract");
}

/// A rule that refuses our own uid: the connector (same uid) is told it is
/// not allowed, and the listener makes no connection.
#[test]
fn a_refused_uid_is_told_so_and_gets_nothing() {
    let name = fresh_name("abstract");
    let listener = start_listener(&name, "refuse-own-uid", 2_000);
    spawn_peer("connector", &with(&name, &[("EXPECT", "not-allowed")])).expect_success();
    stop_listener(listener, 0);
}

/// A process connects and says nothing; the listener's handshake timeout is
/// far longer than any wait of this test. An honest process that connects
/// after it is still served (a listener that waited for the silent one's
/// hello would make the honest one time out), and the silent one is still
/// pending meanwhile (it was accepted, not dropped to make room).
#[test]
fn a_silent_peer_does_not_stall_an_honest_one() {
    let name = fresh_name("abstract");
    let listener = start_listener(&name, "same-user", 600_000);
    let silent = spawn_peer("silent", &with(&name, &[("WAIT", "hold")]));
    silent.expect_word(b"connected");
    let honest = spawn_peer("connector", &with(&name, &[("EXPECT", "ok")]));
    let honest_pid = honest.pid();
    listener.expect_word(format!("accepted {honest_pid} {}", our_uid()).as_bytes());
    honest.expect_success();
    silent.tell(b"stop");
    silent.expect_word(b"pending");
    silent.expect_success();
    stop_listener(listener, 1);
}

/// A silent process is dropped once its handshake time is up (the listener
/// keeps accepting meanwhile), so silent processes cannot pile up.
#[test]
fn a_silent_peer_is_dropped_after_the_handshake_timeout() {
    let name = fresh_name("path");
    let listener = start_listener(&name, "same-user", 200);
    let silent = spawn_peer("silent", &with(&name, &[("WAIT", "hangup")]));
    silent.expect_word(b"connected");
    silent.expect_word(b"dropped");
    silent.expect_success();
    stop_listener(listener, 0);
}
