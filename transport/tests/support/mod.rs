//! Shared by the cross-process tests of ferry-transport: a helper-process
//! harness built on ferry-handoff's bootstrap, self-checking traffic, the
//! test protocols, and a raw second view of a region for hostile peers.
//! What is not specific to the transport (the child guard, bounded waits,
//! the checksummed frames, the raw mapping, descriptor counts) comes from
//! `ferry-testkit`; this module adds the transport's own parts.
//!
//! # Helper processes
//!
//! A test re-executes its own binary as the peer:
//! `current_exe() --exact child --nocapture --test-threads=1`, with
//! [`ROLE_ENV`] naming what the child does. The child is started with
//! [`ferry_handoff::bootstrap::spawn_with_channel`], so the two processes
//! share a control channel. The parent creates a connection with
//! [`Connection::create`] and sends the endpoint's metadata and descriptors
//! over that channel; the child receives them and calls
//! [`Connection::open`]. The `child` test function of each test binary
//! returns at once when [`ROLE_ENV`] is absent, so in a normal run it is a
//! no-op that passes.
//!
//! A child reports failure through its exit status (a panic makes libtest
//! exit 101) and its stderr, which it shares with the parent. [`Peer`] kills
//! and reaps the child when dropped, and every wait for a child is bounded.

#![allow(dead_code)] // each test binary uses its own part of this module
#![allow(unused_imports)] // likewise for the re-exports

pub mod bystander;
pub mod footprint;
pub mod proto;
pub mod raw_peer;

use ferry_handoff::Channel;
use ferry_testkit::process::{ChildGuard, ReExec};
use ferry_transport::{Connection, ConnectionConfig, Endpoint, Trust};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::{Command, ExitStatus};
use std::time::Duration;

pub use ferry_testkit::bounded::bounded;
pub use ferry_testkit::fds::{open_fd_count, settled_fd_count};
pub use ferry_testkit::payload::{Sizes, check_frame, make_frame, write_frame};
pub use ferry_testkit::process::{EXIT_TIMEOUT, OP_TIMEOUT};
pub use ferry_testkit::shm::RawMap;

/// Names the role a re-executed test binary plays; absent in a normal run.
pub const ROLE_ENV: &str = "FERRY_TRANSPORT_TEST_ROLE";
/// Prefix of the environment variables that carry a role's parameters.
const PARAM_PREFIX: &str = "FERRY_TRANSPORT_TEST_P_";
/// The name of the child test function in every test binary.
pub const CHILD_TEST: &str = "child";
/// How this test binary re-executes itself.
const HELPERS: ReExec = ReExec::new(ROLE_ENV, PARAM_PREFIX);

/// Tag of the control message carrying an endpoint.
const ENDPOINT_TAG: &[u8] = b"EP";

// ---------------------------------------------------------------------------
// Parent side.

/// The command that re-executes this test binary as a child in `role`. It
/// dies with SIGKILL if the thread that spawned it ends first.
pub fn child_command(role: &str, params: &[(&str, String)]) -> Command {
    HELPERS.command(CHILD_TEST, role, params)
}

/// A helper process running this test binary in some role, with the parent's
/// end of its control channel. Dropping it kills (SIGKILL) and reaps the
/// process if it still runs (then closes the channel).
pub struct Peer {
    guard: ChildGuard,
    control: Channel,
}

/// Spawns a child in `role` with a control channel.
pub fn spawn_peer(role: &str, params: &[(&str, String)]) -> Peer {
    let (child, control) =
        ferry_handoff::bootstrap::spawn_with_channel(child_command(role, params))
            .expect("spawning the helper process");
    Peer {
        guard: ChildGuard::new(child, role),
        control,
    }
}

/// Creates a connection with `config`, spawns a child in `role` (given the
/// configuration's parameters plus `params`) and sends it the other end.
pub fn connect_peer(
    role: &str,
    config: &ConnectionConfig,
    params: &[(&str, String)],
) -> (Connection, Peer) {
    let (connection, endpoint) = Connection::create(config.clone()).expect("Connection::create");
    let mut all = config_params(config);
    all.extend(params.iter().map(|(k, v)| (*k, v.clone())));
    let peer = spawn_peer(role, &all);
    peer.send_endpoint(endpoint);
    (connection, peer)
}

impl Peer {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.guard.id()
    }

    /// Sends an endpoint over the control channel; our copies of its
    /// descriptors are closed afterwards, so the child holds the only ones.
    pub fn send_endpoint(&self, endpoint: Endpoint) {
        send_endpoint(&self.control, endpoint);
    }

    /// Sends a control message to the child.
    pub fn tell(&self, message: &[u8]) {
        tell(&self.control, message);
    }

    /// Receives a control message from the child (bounded wait).
    pub fn hear(&self) -> Vec<u8> {
        hear(&self.control)
    }

    /// Receives a control message and checks it is `expected`.
    pub fn expect_word(&self, expected: &[u8]) {
        self.expect_word_within(expected, OP_TIMEOUT);
    }

    /// [`expect_word`](Self::expect_word), waiting at most `timeout`.
    pub fn expect_word_within(&self, expected: &[u8], timeout: Duration) {
        let got = hear_within(&self.control, timeout);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(expected),
            "{}: unexpected control message",
            self.guard.label()
        );
    }

    /// A second handle on the control channel, for another thread.
    pub fn control_clone(&self) -> Channel {
        Channel::from(self.control.as_fd().try_clone_to_owned().expect("dup"))
    }

    /// A function that SIGKILLs the child, for another thread.
    pub fn killer(&self) -> impl Fn() + Send + 'static {
        let pid = self.pid();
        move || kill_pid(pid)
    }

    /// Sends SIGKILL (if the child has not been reaped yet).
    pub fn kill(&mut self) {
        self.guard.kill();
    }

    /// The exit status if the child has exited (reaping it), else `None`.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.guard.try_wait()
    }

    /// Waits for the child to exit, for at most `limit`; on timeout kills it
    /// and panics.
    pub fn wait_timeout(&mut self, limit: Duration) -> ExitStatus {
        self.guard.wait_timeout(limit)
    }

    /// Waits for the child to exit and requires success.
    pub fn expect_success(self) {
        self.guard.expect_success();
    }

    /// Kills the child and reaps it.
    pub fn kill_and_reap(self) -> ExitStatus {
        self.guard.kill_and_reap()
    }
}

/// SIGKILLs process `pid`.
pub fn kill_pid(pid: u32) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a positive pid");
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("kill(SIGKILL)");
}

/// Sends `endpoint` over `control` and closes our copies of its descriptors.
pub fn send_endpoint(control: &Channel, endpoint: Endpoint) {
    let mut message = ENDPOINT_TAG.to_vec();
    message.extend_from_slice(&endpoint.metadata);
    let fds: Vec<BorrowedFd<'_>> = endpoint.fds.iter().map(|fd| fd.as_fd()).collect();
    control.send(&message, &fds).expect("sending the endpoint");
    drop(fds);
    drop(endpoint);
}

/// Sends a control message.
pub fn tell(control: &Channel, message: &[u8]) {
    control
        .send(message, &[])
        .expect("sending a control message");
}

/// Receives a control message (bounded wait).
pub fn hear(control: &Channel) -> Vec<u8> {
    hear_within(control, OP_TIMEOUT)
}

/// [`hear`], waiting at most `timeout`.
pub fn hear_within(control: &Channel, timeout: Duration) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let received = control
        .recv(&mut buf, Some(timeout))
        .expect("receiving a control message");
    buf.truncate(received.len);
    buf
}

// ---------------------------------------------------------------------------
// Child side.

/// The role this process was started in, or `None` in a normal test run.
pub fn child_role() -> Option<String> {
    HELPERS.role()
}

/// A parameter the parent passed to this child.
pub fn param<T: std::str::FromStr>(name: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    HELPERS.param(name)
}

/// The control channel this child inherited. Call once.
pub fn child_control() -> Channel {
    ferry_handoff::bootstrap::channel_from_env().expect("the bootstrap channel")
}

/// Receives the next endpoint the parent sends.
pub fn recv_endpoint(control: &Channel) -> Endpoint {
    let mut buf = vec![0u8; 4096];
    let received = control
        .recv(&mut buf, Some(OP_TIMEOUT))
        .expect("receiving the endpoint");
    let message = &buf[..received.len];
    assert!(
        message.starts_with(ENDPOINT_TAG),
        "expected an endpoint message"
    );
    Endpoint {
        fds: received.fds,
        metadata: message[ENDPOINT_TAG.len()..].to_vec(),
    }
}

/// The child's usual start: takes its control channel, receives the endpoint
/// and opens it with the configuration the parent passed down.
pub fn child_connect() -> (Connection, Channel) {
    let control = child_control();
    let endpoint = recv_endpoint(&control);
    let connection = Connection::open(endpoint, config_from_params()).expect("Connection::open");
    (connection, control)
}

// ---------------------------------------------------------------------------
// Configurations as parameters.

/// The parameters that recreate `config` in a child.
pub fn config_params(config: &ConnectionConfig) -> Vec<(&'static str, String)> {
    vec![
        ("RING", config.ring_capacity.to_string()),
        ("WAIT", config.wait.to_string()),
        (
            "TRUST",
            match config.trust {
                Trust::Trusted => "trusted".into(),
                Trust::Untrusted => "untrusted".into(),
            },
        ),
        ("SCHEMA", config.schema.to_string()),
        ("MAX_FDS", config.max_fds_per_message.to_string()),
    ]
}

/// The configuration the parent described with [`config_params`].
pub fn config_from_params() -> ConnectionConfig {
    let mut config = ConnectionConfig::default()
        .ring_capacity(param("RING"))
        .wait(param::<String>("WAIT").parse().expect("a wait strategy"))
        .schema(param("SCHEMA"))
        .peer_name("parent");
    config.trust = match param::<String>("TRUST").as_str() {
        "trusted" => Trust::Trusted,
        "untrusted" => Trust::Untrusted,
        other => panic!("bad trust {other}"),
    };
    config.max_fds_per_message = param("MAX_FDS");
    config
}

// ---------------------------------------------------------------------------
// Self-checking traffic (the frames themselves come from ferry-testkit).

/// FNV-1a over bytes: the checksum typed test messages carry.
pub fn fnv64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xCBF2_9CE4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01B3);
    }
    hash
}

/// Byte offsets in the shared ring header (ring/src/layout.rs), as a peer in
/// another process knows them.
pub mod offsets {
    pub const TAIL: usize = 128;
    pub const HEAD: usize = 256;
    pub const DATA: usize = 640;
}

/// Duplicates a descriptor (for keeping a second handle).
pub fn dup(fd: &OwnedFd) -> OwnedFd {
    fd.try_clone().expect("dup")
}
