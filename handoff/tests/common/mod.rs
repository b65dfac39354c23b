//! Multi-process test harness: each test binary re-executes itself as a
//! child (testkit's [`ReExec`] running the `child_role` test), with
//! `FERRY_TEST_ROLE` selecting what the child does (`name:arg:arg`). Every
//! wait here is bounded.
#![allow(dead_code)]

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ferry_handoff::{
    Broker, BrokerClient, BrokerEvent, Channel, ClientBuilder, ClientEvent, ConnectError,
    ConnectionRequest, ControlMessage, Endpoint, InstanceId,
};
use ferry_testkit::process::{EXIT_TIMEOUT, OP_TIMEOUT, ReExec};
use ferry_testkit::shm::RawMap;

/// How children of these tests are started, and what they are told.
pub const REEXEC: ReExec = ReExec::new("FERRY_TEST_ROLE", "FERRY_TEST_PARAM_");
/// How long a child role waits for anything before giving up.
pub const CHILD_PATIENCE: Duration = EXIT_TIMEOUT;
/// How long the test waits for an outcome.
pub const TEST_PATIENCE: Duration = OP_TIMEOUT;
pub const MEMFD_LEN: usize = 64 * 1024;

/// The command that re-runs this test binary as the child `role`. `-q`:
/// libtest's progress line would otherwise prefix what the child prints
/// (tests read the lines of a child that shares their stdout).
pub fn role_command(role: &str) -> Command {
    let mut command = REEXEC.command("child_role", role, &[]);
    command.arg("-q");
    command
}

/// The body of each binary's `child_role` test: nothing in the parent run,
/// the role (then exit) in a child.
pub fn child_main() {
    let Some(role) = REEXEC.role() else {
        return;
    };
    let code = run_role(&role);
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

fn run_role(role: &str) -> i32 {
    let mut parts = role.split(':');
    let name = parts.next().unwrap_or_default();
    let args: Vec<&str> = parts.collect();
    match (name, args.as_slice()) {
        ("network-memfd", []) => serve(memfd_handler),
        ("network-plain", []) => serve(plain_handler),
        ("network-fail", []) => serve(|_| Err("no capacity".to_owned())),
        ("network-slow", []) => serve(|_| {
            std::thread::sleep(CHILD_PATIENCE);
            Err("too late".to_owned())
        }),
        ("network-suicide", []) => serve(|_| {
            let _endpoint = plain_handler(ConnectionRequest {
                requester: ferry_handoff::PeerId {
                    service: "x".into(),
                    instance: InstanceId(0),
                },
                metadata: vec![],
            });
            // Killed while answering: the endpoint exists, the answer is
            // never sent.
            let _ = rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::KILL,
            );
            std::thread::sleep(CHILD_PATIENCE);
            Err("unreachable".to_owned())
        }),
        ("network-leak", []) => serve(leak_handler),
        ("network-paced", [millis]) => {
            let pause = Duration::from_millis(millis.parse().unwrap_or(20));
            serve(move |req| {
                std::thread::sleep(pause);
                plain_handler(req)
            })
        }
        ("network-limited", [per_requester]) => {
            serve(limited_handler(per_requester.parse().unwrap_or(1)))
        }
        ("burst", [service]) => burst(service),
        ("connect-retry", [service, tries]) => connect_retry(service, tries.parse().unwrap_or(1)),
        ("hoarder", [service, limit]) => hoarder(service, limit.parse().unwrap_or(1)),
        ("web-memfd", []) => web_memfd("network"),
        ("web-memfd-to", [service]) => web_memfd(service),
        ("reconnect", [service]) => reconnect(service),
        ("network-accuser", [count]) => network_accuser(count.parse().unwrap_or(1)),
        ("false-accuser", [service, instance]) => {
            false_accuser(service, instance.parse().unwrap_or(1))
        }
        ("connect", [service, expect]) => connect_expect(service, expect),
        ("web-peer-gone", []) => web_peer_gone(),
        ("web-leak", [count]) => web_leak(count.parse().unwrap_or(0)),
        ("garbage", [kind]) => garbage(kind),
        ("no-bootstrap", []) => match BrokerClient::from_env() {
            Err(ferry_handoff::ClientError::Bootstrap(ferry_handoff::BootstrapError::Missing)) => 0,
            other => {
                eprintln!("no-bootstrap: expected Missing, got {other:?}");
                1
            }
        },
        ("mini-broker", []) => mini_broker(),
        ("notice-broker-gone", []) => notice_broker_gone(),
        _ => {
            eprintln!("unknown role {role:?}");
            100
        }
    }
}

/// A client built from `builder`, with its events on a receiver.
fn client_with(builder: ClientBuilder) -> (BrokerClient, mpsc::Receiver<ClientEvent>) {
    let (tx, rx) = mpsc::channel();
    let client = builder
        .on_event(move |e| {
            let _ = tx.send(e);
        })
        .from_env()
        .expect("bootstrap from the environment");
    (client, rx)
}

/// Serves connections until the broker goes away.
fn serve(
    handler: impl FnMut(ConnectionRequest) -> Result<Endpoint, String> + Send + 'static,
) -> i32 {
    let (_client, events) = client_with(BrokerClient::builder().handler(handler));
    let deadline = Instant::now() + CHILD_PATIENCE;
    while Instant::now() < deadline {
        match events.recv_timeout(Duration::from_millis(500)) {
            Ok(ClientEvent::BrokerGone { .. }) => return 0,
            Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return 0,
        }
    }
    3
}

/// A memfd and one end of a socketpair; the target keeps the other end and
/// a thread that checks what the requester writes into the memfd.
pub fn memfd_handler(req: ConnectionRequest) -> Result<Endpoint, String> {
    let memfd = rustix::fs::memfd_create("ferry-test", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| e.to_string())?;
    rustix::fs::ftruncate(&memfd, MEMFD_LEN as u64).map_err(|e| e.to_string())?;
    let (ours, theirs) = Channel::pair().map_err(|e| e.to_string())?;
    let for_requester = memfd.try_clone().map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let Ok(got) = ours.recv(&mut buf, Some(CHILD_PATIENCE)) else {
            return;
        };
        let seed = buf[..got.len].first().copied().unwrap_or(0);
        let mut seen = vec![0u8; MEMFD_LEN];
        RawMap::new(memfd.as_fd()).read_bytes(0, &mut seen);
        let verdict: &[u8] = if seen == pattern(seed) {
            b"verified"
        } else {
            b"mismatch"
        };
        let _ = ours.send(verdict, &[]);
    });
    Ok(Endpoint {
        fds: vec![for_requester, theirs.into()],
        metadata: format!("memfd for {}", req.requester).into_bytes(),
    })
}

fn plain_handler(_req: ConnectionRequest) -> Result<Endpoint, String> {
    let (_ours, theirs) = Channel::pair().map_err(|e| e.to_string())?;
    Ok(Endpoint {
        fds: vec![theirs.into()],
        metadata: vec![],
    })
}

/// Answers "count" with its own descriptor count; otherwise a memfd and a
/// socket end, keeping nothing.
fn leak_handler(req: ConnectionRequest) -> Result<Endpoint, String> {
    if req.metadata == b"count" {
        return Ok(Endpoint {
            fds: vec![],
            metadata: open_fds().to_string().into_bytes(),
        });
    }
    let memfd = rustix::fs::memfd_create("ferry-leak", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| e.to_string())?;
    let (_ours, theirs) = Channel::pair().map_err(|e| e.to_string())?;
    Ok(Endpoint {
        fds: vec![memfd, theirs.into()],
        metadata: vec![],
    })
}

/// Admits at most `per_requester` live connections per requester
/// ([`RequesterLimits`](ferry_handoff::RequesterLimits)); a connection stays
/// live until the requester closes its end.
fn limited_handler(
    per_requester: usize,
) -> impl FnMut(ConnectionRequest) -> Result<Endpoint, String> + Send + 'static {
    let limits = ferry_handoff::RequesterLimits::new(per_requester, 1024);
    move |req| {
        let admission = limits.admit(&req.requester).map_err(|e| e.to_string())?;
        let (ours, theirs) = Channel::pair().map_err(|e| e.to_string())?;
        std::thread::spawn(move || {
            // Live until the requester hangs up (bounded like every wait).
            let _ = ours.wait_hangup(Some(CHILD_PATIENCE));
            drop(admission);
        });
        Ok(Endpoint {
            fds: vec![theirs.into()],
            metadata: vec![],
        })
    }
}

/// The attacker of issue 10 hole 7: speaks the protocol raw, keeps as many
/// `Connect` requests with the largest metadata in flight as the broker
/// lets it (reading its answers, so it is not cut off for its own doing),
/// and resends one for every answer, until the broker goes away.
fn burst(service: &str) -> i32 {
    use ferry_handoff::message::{MAX_ENCODED_LEN, MAX_METADATA_LEN};
    let channel = ferry_handoff::bootstrap::channel_from_env().expect("bootstrap");
    let mut buf = vec![0u8; MAX_ENCODED_LEN];
    let _hello = channel.recv(&mut buf, Some(TEST_PATIENCE));
    let mut request = 0u64;
    let mut bytes = Vec::new();
    let deadline = Instant::now() + CHILD_PATIENCE;
    while Instant::now() < deadline {
        // Burst until the socket (or the broker's patience) says stop.
        loop {
            request += 1;
            ControlMessage::Connect {
                request,
                service: service.to_owned(),
                metadata: vec![0xa5; MAX_METADATA_LEN],
            }
            .encode(0, &mut bytes)
            .expect("encode");
            match channel.try_send(&bytes, &[]) {
                Ok(()) => {}
                Err(ferry_handoff::SendError::WouldBlock) => break,
                Err(_) => return 0, // the broker is gone
            }
            if request % 64 == 0 {
                break;
            }
        }
        // Take the answers (dropping any descriptors at once).
        loop {
            match channel.recv(&mut buf, Some(Duration::from_millis(1))) {
                Ok(_) => {}
                Err(ferry_handoff::RecvError::TimedOut) => break,
                Err(_) => return 0,
            }
        }
    }
    6
}

/// An honest requester: connects, retrying (after a short pause) while the
/// target is busy, at most `tries` times.
fn connect_retry(service: &str, tries: usize) -> i32 {
    let (client, _events) = client_with(BrokerClient::builder());
    for attempt in 1..=tries {
        match client.connect(service, b"honest", TEST_PATIENCE) {
            Ok(_) => {
                eprintln!("connect-retry: connected at attempt {attempt}");
                return 0;
            }
            Err(ConnectError::TargetBusy) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                eprintln!("connect-retry: attempt {attempt}: {e:?}");
                return 1;
            }
        }
    }
    eprintln!("connect-retry: still busy after {tries} attempts");
    2
}

/// Keeps its introductions open: `limit` succeed, the next is refused by
/// the service; closing one lets one more in; then it holds `limit` until
/// the broker goes away.
fn hoarder(service: &str, limit: usize) -> i32 {
    let (client, events) = client_with(BrokerClient::builder());
    let refused = |client: &BrokerClient| {
        matches!(
            client.connect(service, b"", TEST_PATIENCE),
            Err(ConnectError::TargetFailed(reason)) if reason.contains("live connections")
        )
    };
    let mut held = Vec::new();
    for i in 0..limit {
        match client.connect(service, b"", TEST_PATIENCE) {
            Ok(intro) => held.push(intro),
            Err(e) => {
                eprintln!("hoarder: introduction {i}: {e:?}");
                return 1;
            }
        }
    }
    if !refused(&client) {
        eprintln!("hoarder: introduction {limit} was not refused");
        return 2;
    }
    // Closing one frees its slot once the service sees the hang-up.
    held.pop();
    let deadline = Instant::now() + TEST_PATIENCE;
    loop {
        match client.connect(service, b"", TEST_PATIENCE) {
            Ok(intro) => {
                held.push(intro);
                break;
            }
            Err(ConnectError::TargetFailed(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                eprintln!("hoarder: no slot after closing one: {e:?}");
                return 3;
            }
        }
    }
    if !refused(&client) {
        eprintln!("hoarder: over the limit again, yet not refused");
        return 4;
    }
    // Hold them while others connect, until the broker goes away.
    let deadline = Instant::now() + CHILD_PATIENCE;
    while Instant::now() < deadline {
        if let Ok(ClientEvent::BrokerGone { .. }) = events.recv_timeout(Duration::from_millis(500))
        {
            drop(held);
            return 0;
        }
    }
    5
}

pub fn pattern(seed: u8) -> Vec<u8> {
    (0..MEMFD_LEN)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// The requester of the memfd test: writes through its mapping, the target
/// reads the same bytes through its own.
fn web_memfd(service: &str) -> i32 {
    let (client, _events) = client_with(BrokerClient::builder());
    let intro = match client.connect(service, b"memfd please", TEST_PATIENCE) {
        Ok(intro) => intro,
        Err(e) => {
            eprintln!("web-memfd: connect failed: {e}");
            return 1;
        }
    };
    if intro.peer.service != service || intro.fds.len() != 2 {
        eprintln!("web-memfd: unexpected introduction {intro:?}");
        return 1;
    }
    for fd in &intro.fds {
        let flags = rustix::io::fcntl_getfd(fd).expect("fcntl");
        if !flags.contains(rustix::io::FdFlags::CLOEXEC) {
            eprintln!("web-memfd: received descriptor is not CLOEXEC");
            return 1;
        }
    }
    let mut fds = intro.fds.into_iter();
    let memfd: OwnedFd = fds.next().expect("memfd");
    let sock = Channel::from_checked(fds.next().expect("socket")).expect("a seqpacket socket");
    let seed = 0x5a;
    RawMap::new(memfd.as_fd()).write_bytes(0, &pattern(seed));
    sock.send(&[seed], &[]).expect("notify the target");
    let mut buf = [0u8; 16];
    match sock.recv(&mut buf, Some(TEST_PATIENCE)) {
        Ok(got) if &buf[..got.len] == b"verified" => 0,
        other => {
            eprintln!("web-memfd: target says {other:?} {:?}", &buf);
            1
        }
    }
}

/// Connects and checks the outcome against `expect` ("ok" or the error
/// variant's name).
fn connect_expect(service: &str, expect: &str) -> i32 {
    let (client, _events) = client_with(BrokerClient::builder());
    let started = Instant::now();
    let result = client.connect(service, b"", TEST_PATIENCE);
    let got = match &result {
        Ok(_) => "ok".to_owned(),
        Err(ConnectError::TargetFailed(_)) => "TargetFailed".to_owned(),
        Err(e) => format!("{e:?}"),
    };
    if got == expect {
        if let Err(ConnectError::TargetFailed(reason)) = &result {
            println!("reason: {reason}");
        }
        0
    } else {
        eprintln!(
            "connect {service}: expected {expect}, got {result:?} after {:?}",
            started.elapsed()
        );
        1
    }
}

/// Connects to `service`, waits to be told that peer is gone (the test
/// kills it), then asks for `service` again until the relaunched instance
/// answers; prints both peers.
fn reconnect(service: &str) -> i32 {
    let (client, events) = client_with(BrokerClient::builder());
    let first = match client.connect(service, b"", TEST_PATIENCE) {
        Ok(intro) => intro.peer,
        Err(e) => {
            eprintln!("reconnect: {e}");
            return 1;
        }
    };
    let deadline = Instant::now() + CHILD_PATIENCE;
    loop {
        match events.recv_timeout(Duration::from_millis(200)) {
            Ok(ClientEvent::PeerGone(gone)) if gone == first => break,
            Ok(other) => {
                eprintln!("reconnect: unexpected {other:?}");
                return 1;
            }
            Err(_) if Instant::now() < deadline => {}
            Err(_) => return 2,
        }
    }
    // Until the broker has reaped the old instance and spawned the new one,
    // the service is unknown or gone: ask again.
    loop {
        match client.connect(service, b"", TEST_PATIENCE) {
            Ok(intro) if intro.peer != first && intro.peer.service == service => {
                println!("reconnected: {first} -> {}", intro.peer);
                return 0;
            }
            Ok(intro) => {
                eprintln!("reconnect: introduced to {} again", intro.peer);
                return 1;
            }
            Err(ConnectError::UnknownService | ConnectError::TargetGone)
                if Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                eprintln!("reconnect: {e}");
                return 1;
            }
        }
    }
}

/// Serves connections; reports the first requester to the broker `count`
/// times (as if it had sent garbage), then serves until the broker goes.
fn network_accuser(count: usize) -> i32 {
    let (requesters, requester) = mpsc::channel();
    let handler = move |req: ConnectionRequest| {
        let _ = requesters.send(req.requester.clone());
        plain_handler(req)
    };
    let (client, events) = client_with(BrokerClient::builder().handler(handler));
    let Ok(accused) = requester.recv_timeout(CHILD_PATIENCE) else {
        return 2;
    };
    for n in 0..count {
        let reason = format!("frame {n} is no message of the schema");
        if let Err(e) = client.report(&accused, &reason, TEST_PATIENCE) {
            eprintln!("network-accuser: {e}");
            return 1;
        }
    }
    let deadline = Instant::now() + CHILD_PATIENCE;
    while Instant::now() < deadline {
        match events.recv_timeout(Duration::from_millis(500)) {
            Ok(ClientEvent::BrokerGone { .. }) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                return 0;
            }
            Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    3
}

/// Reports a child it was never introduced to, then waits (the broker
/// should cut it off).
fn false_accuser(service: &str, instance: u64) -> i32 {
    let (client, _events) = client_with(BrokerClient::builder());
    let stranger = ferry_handoff::PeerId {
        service: service.to_owned(),
        instance: InstanceId(instance),
    };
    if let Err(e) = client.report(&stranger, "made up", TEST_PATIENCE) {
        eprintln!("false-accuser: {e}");
        return 1;
    }
    std::thread::sleep(CHILD_PATIENCE);
    0
}

/// Connects, then waits to be told the peer is gone.
fn web_peer_gone() -> i32 {
    let (client, events) = client_with(BrokerClient::builder());
    let peer = match client.connect("network", b"", TEST_PATIENCE) {
        Ok(intro) => intro.peer,
        Err(e) => {
            eprintln!("web-peer-gone: {e}");
            return 1;
        }
    };
    let deadline = Instant::now() + CHILD_PATIENCE;
    while Instant::now() < deadline {
        match events.recv_timeout(Duration::from_millis(500)) {
            Ok(ClientEvent::PeerGone(gone)) if gone == peer => return 0,
            Ok(other) => {
                eprintln!("web-peer-gone: unexpected {other:?}");
                return 1;
            }
            Err(_) => {}
        }
    }
    2
}

/// `count` introductions; this process's and the target's descriptor counts
/// must be the same before and after.
fn web_leak(count: usize) -> i32 {
    let (client, _events) = client_with(BrokerClient::builder());
    let target_count = |client: &BrokerClient| -> Option<String> {
        let intro = client.connect("network", b"count", TEST_PATIENCE).ok()?;
        String::from_utf8(intro.metadata).ok()
    };
    // Warm up (thread-locals, allocator, lazily opened files).
    for _ in 0..10 {
        drop(client.connect("network", b"", TEST_PATIENCE));
    }
    let target_before = target_count(&client);
    let before = open_fds();
    for i in 0..count {
        match client.connect("network", b"", TEST_PATIENCE) {
            Ok(intro) if intro.fds.len() == 2 => {}
            other => {
                eprintln!("web-leak: introduction {i}: {other:?}");
                return 1;
            }
        }
    }
    let after = open_fds();
    let target_after = target_count(&client);
    println!("requester fds {before} -> {after}; target fds {target_before:?} -> {target_after:?}");
    if before != after || target_before.is_none() || target_before != target_after {
        eprintln!(
            "web-leak: requester fds {before} -> {after}; target fds {target_before:?} -> {target_after:?}"
        );
        return 1;
    }
    0
}

/// Sends something the broker must refuse, then lingers (it should be
/// killed).
fn garbage(kind: &str) -> i32 {
    let channel = ferry_handoff::bootstrap::channel_from_env().expect("bootstrap");
    let mut buf = vec![0u8; ferry_handoff::message::MAX_ENCODED_LEN];
    // The broker's Hello.
    let _ = channel.recv(&mut buf, Some(TEST_PATIENCE));
    let encode = |msg: ControlMessage, fds: usize| {
        let mut out = Vec::new();
        msg.encode(fds, &mut out).expect("encode");
        out
    };
    let memfds: Vec<OwnedFd> = (0..20)
        .map(|_| rustix::fs::memfd_create("junk", rustix::fs::MemfdFlags::CLOEXEC).expect("memfd"))
        .collect();
    let fds: Vec<BorrowedFd<'_>> = memfds.iter().map(AsFd::as_fd).collect();
    let sent = match kind {
        "bytes" => channel.send(b"\x01\xffthis is not a control message", &[]),
        "version" => channel.send(b"\x09\x08\x00\x00\x00\x00\x00\x00\x00\x00", &[]),
        "wrong-kind" => channel.send(&encode(ControlMessage::Denied { request: 1 }, 0), &[]),
        "unexpected-fds" => channel.send(
            &encode(
                ControlMessage::Connect {
                    request: 1,
                    service: "network".into(),
                    metadata: vec![],
                },
                0,
            ),
            &fds[..3],
        ),
        "too-many-fds" => channel.send(
            &encode(
                ControlMessage::ConnectionCreated {
                    request: 1,
                    metadata: vec![],
                },
                2,
            ),
            &fds,
        ),
        "forged-answer" => channel.send(
            &encode(
                ControlMessage::ConnectionCreated {
                    request: 999,
                    metadata: vec![],
                },
                1,
            ),
            &fds[..1],
        ),
        "oversized" => channel.send(&vec![1u8; 60 * 1024], &[]),
        _ => return 100,
    };
    if let Err(e) = sent {
        eprintln!("garbage {kind}: send failed: {e}");
        return 1;
    }
    drop(memfds);
    // The broker should kill us; if not, end eventually.
    std::thread::sleep(CHILD_PATIENCE);
    4
}

/// A broker in a child process, with one child; prints that child's output
/// (which shares our stdout) and runs until killed.
fn mini_broker() -> i32 {
    let mut broker = Broker::new(ferry_handoff::AllowAll).expect("broker");
    // It must outlive us: it is to notice our death.
    let mut child = REEXEC.command_outliving_parent("child_role", "notice-broker-gone", &[]);
    child.arg("-q");
    child.stdout(Stdio::inherit());
    broker.spawn("survivor", child).expect("spawn");
    let deadline = Instant::now() + CHILD_PATIENCE;
    while Instant::now() < deadline {
        let _ = broker.turn(Duration::from_millis(500), |_| {});
    }
    5
}

/// Says "ready", then waits for the broker to die and says so.
fn notice_broker_gone() -> i32 {
    let (_client, events) = client_with(BrokerClient::builder());
    println!("ready");
    let _ = std::io::stdout().flush();
    let deadline = Instant::now() + CHILD_PATIENCE;
    while Instant::now() < deadline {
        match events.recv_timeout(Duration::from_millis(500)) {
            Ok(ClientEvent::BrokerGone { error: None }) => {
                println!("noticed broker gone");
                return 0;
            }
            Ok(other) => {
                println!("unexpected {other:?}");
                return 1;
            }
            Err(_) => {}
        }
    }
    2
}

pub use ferry_testkit::fds::open_fd_count as open_fds;

/// Turns the broker until `done` says so, collecting events; panics (after
/// `TEST_PATIENCE`) with the events seen so far.
pub fn turn_until(
    broker: &mut Broker,
    events: &mut Vec<BrokerEvent>,
    mut done: impl FnMut(&mut Broker, &[BrokerEvent]) -> bool,
) {
    let deadline = Instant::now() + TEST_PATIENCE;
    loop {
        if done(broker, events) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting; events so far: {events:#?}"
        );
        broker
            .turn(Duration::from_millis(100), |e| events.push(e))
            .expect("broker turn");
    }
}

/// The exit status of `child`, once reported.
pub fn exit_of(events: &[BrokerEvent], child: InstanceId) -> Option<Option<ExitStatus>> {
    events.iter().find_map(|e| match e {
        BrokerEvent::ChildExited { child: who, status } if who.instance == child => Some(*status),
        _ => None,
    })
}

/// Turns until `child` has exited; returns its status.
pub fn wait_exit(
    broker: &mut Broker,
    events: &mut Vec<BrokerEvent>,
    child: InstanceId,
) -> ExitStatus {
    turn_until(broker, events, |_, events| exit_of(events, child).is_some());
    exit_of(events, child)
        .flatten()
        .expect("the broker reaped the child itself")
}

/// Asserts that `child` exited successfully.
pub fn assert_success(broker: &mut Broker, events: &mut Vec<BrokerEvent>, child: InstanceId) {
    let status = wait_exit(broker, events, child);
    assert!(
        status.success(),
        "child {child} failed: {status:?}; events: {events:#?}"
    );
}
