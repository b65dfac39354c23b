//! The adapters' cross-process harness: the test listens at a fresh
//! abstract name (ferry's `named`), re-executes its own binary as the peer
//! in some role (ferry-testkit's `ReExec`), and accepts the peer's
//! connection. Each test binary's `child` test runs the role.

#![allow(dead_code)] // each test binary uses its own part

use ferry_testkit::process::{ChildGuard, OP_TIMEOUT, ReExec};
use ferry_transport::named::{self, Name};
use ferry_transport::{Connection, ConnectionConfig};
use std::sync::atomic::{AtomicU64, Ordering};

pub use ferry_testkit::process::EXIT_TIMEOUT;

/// How test binaries re-execute themselves.
pub const HELPERS: ReExec = ReExec::new("FERRY_ADAPTERS_TEST_ROLE", "FERRY_ADAPTERS_TEST_P_");
/// The name of each test binary's child test.
pub const CHILD_TEST: &str = "child";

/// Listens, starts this binary as the peer in `role`, and accepts its
/// connection.
pub fn start(role: &str) -> (Connection, ChildGuard) {
    start_with(role, ConnectionConfig::default())
}

/// [`start`], our end of the connection configured with `config`.
pub fn start_with(role: &str, config: ConnectionConfig) -> (Connection, ChildGuard) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "ferry-adapters-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let mut listener =
        named::listen(&Name::abstract_name(name.as_str()), config).expect("listening");
    let child = HELPERS
        .command(CHILD_TEST, role, &[("NAME", name)])
        .spawn()
        .expect("spawning the peer");
    let guard = ChildGuard::new(child, role);
    let (connection, _peer) = listener
        .accept(Some(OP_TIMEOUT))
        .expect("the peer connects");
    (connection, guard)
}

/// In the peer: its connection to the test.
pub fn connect() -> Connection {
    let name: String = HELPERS.param("NAME");
    named::connect(
        &Name::abstract_name(name.as_str()),
        ConnectionConfig::default(),
        OP_TIMEOUT,
    )
    .expect("connecting to the test")
}

/// A multi-threaded runtime, as the adapters are used.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Runs `future` on a fresh runtime, failing the test if it takes longer
/// than `OP_TIMEOUT`.
pub fn run_bounded<F: std::future::Future>(future: F) -> F::Output {
    runtime().block_on(async {
        tokio::time::timeout(OP_TIMEOUT, future)
            .await
            .expect("the test hung")
    })
}

/// Kills this process with SIGKILL: a peer that dies mid-conversation.
pub fn die() -> ! {
    rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL)
        .expect("kill(self)");
    unreachable!("SIGKILL returned")
}

/// Bytes derived from `seed`, `len` long.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(31)) as u8)
        .collect()
}
