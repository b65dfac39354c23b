//! The bystander of an attack: another connection of the victim process,
//! to a helper process of its own, which is SIGKILLed while the attack goes
//! on. A thread of the victim waits on that connection; it must see
//! `Disconnected` at once, whatever the attacker does to the victim's other
//! connection meanwhile.
//!
//! A test binary that uses it runs [`child_bystander`] for the role
//! [`BYSTANDER_ROLE`].

use super::{EXIT_TIMEOUT, OP_TIMEOUT, Peer, connect_peer, kill_pid, tell};
use ferry_testkit::bounded::{BoundedThread, spawn_bounded};
use ferry_transport::{ConnectionConfig, RecvError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The role of the bystander's peer.
pub const BYSTANDER_ROLE: &str = "bystander";

/// A live connection to a helper process that waits to be killed, and a
/// thread of the victim blocked receiving on it.
pub struct Bystander {
    peer: Peer,
    waiting: BoundedThread<Result<Instant, String>>,
    killed: Arc<OnceLock<Instant>>,
}

impl Bystander {
    /// Connects to a new helper process and starts waiting on the
    /// connection in a thread of this process.
    pub fn start() -> Bystander {
        let (mut connection, peer) =
            connect_peer(BYSTANDER_ROLE, &ConnectionConfig::default(), &[]);
        peer.expect_word(b"ready");
        let waiting = spawn_bounded("bystander", move || {
            match connection.recv_frame(Some(OP_TIMEOUT)) {
                Err(RecvError::Disconnected) => Ok(Instant::now()),
                Err(other) => Err(format!("{other}")),
                Ok(frame) => Err(format!("an unexpected frame: {:?}", frame.envelope())),
            }
        });
        Bystander {
            peer,
            waiting,
            killed: Arc::default(),
        }
    }

    /// A function that SIGKILLs the bystander's peer (the first call only)
    /// and notes when: for a handler of the victim to call mid-attack.
    pub fn kill_switch(&self) -> impl Fn() + Send + Sync + 'static {
        let pid = self.peer.pid();
        let killed = Arc::clone(&self.killed);
        move || {
            if killed.set(Instant::now()).is_ok() {
                kill_pid(pid);
            }
        }
    }

    /// Whether the kill switch was pulled.
    pub fn was_killed(&self) -> bool {
        self.killed.get().is_some()
    }

    /// Checks the bystander's wait ended with `Disconnected` (the kill
    /// switch must have been pulled), reports how long after the kill it
    /// did, and returns that.
    pub fn expect_disconnected(self) -> Duration {
        let killed = *self
            .killed
            .get()
            .expect("the bystander's peer was never killed");
        let seen = self
            .waiting
            .join_within(OP_TIMEOUT + Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("the bystander connection did not see its peer die: {e}"));
        let after = seen.saturating_duration_since(killed);
        eprintln!("bystander: Disconnected {after:?} after its peer was SIGKILLed");
        let status = self.peer.kill_and_reap();
        assert!(!status.success(), "the bystander's peer was killed");
        after
    }
}

/// The bystander's peer: opens the connection and waits to be killed.
pub fn child_bystander() {
    let (_connection, control) = super::child_connect();
    tell(&control, b"ready");
    // Killed by the parent; the bound only ends an orphan.
    std::thread::sleep(EXIT_TIMEOUT);
}
