//! What every child process shares: its connection to the UI process, and
//! (for the Network and GPU processes) serving the connections the broker
//! asks them to create.
//!
//! # How a child gets its connection to the UI process
//!
//! The UI process is the broker, and it provides a service of its own,
//! `ui` ([`ferry_handoff::Broker::serve`]): a child asks the broker for
//! `ui` like for any other service, and the broker's own handler creates the
//! connection and answers with the child's end. So the UI process is a peer
//! like the others, reached through the ordinary introduction path, and the
//! UI process learns who connected from the broker (the requester's
//! identity), not from the child. A relaunched child connects again the
//! same way.

use ferry_handoff::BrokerClient;
use ferry_transport::{Accepted, Connection, ConnectionConfig, DispatchError, SendError, connect};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a child waits for the broker to introduce it to the UI process.
const UI_INTRODUCTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Asks the broker for the UI process's own service, `ui`.
pub fn open_ui_connection(
    client: &BrokerClient,
    config: ConnectionConfig,
) -> Result<Connection, String> {
    connect(client, "ui", config, UI_INTRODUCTION_TIMEOUT)
        .map_err(|e| format!("no connection to the UI process: {e}"))
}

/// Dispatches the UI connection until `done` is set by a handler (the
/// process's `Shutdown`). Losing the UI process is an error: the demo is
/// over. So is outliving the run's time limit (`--timeout`, plus a grace
/// period for the UI process to give up first and say why).
pub fn serve_ui(ui: &mut Connection, done: &AtomicBool, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout + Duration::from_secs(30);
    while !done.load(Ordering::Acquire) {
        if Instant::now() >= deadline {
            return Err("the UI process never asked us to shut down".into());
        }
        ui.dispatch(Some(Duration::from_millis(500)))
            .map_err(|e| format!("lost the UI process: {e}"))?;
    }
    Ok(())
}

/// The connections a service (Network, GPU) is serving, each on its own
/// thread, and the flag that tells them to stop.
#[derive(Default)]
pub struct Service {
    stop: AtomicBool,
    active: Mutex<usize>,
    idle: Condvar,
}

impl Service {
    /// Whether the service is shutting down.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// At shutdown: stops the connections (waiting at most 3 s) and returns
    /// the service's `failures`, plus one if connections are still open.
    pub fn shut_down(&self, failures: &Mutex<Vec<String>>) -> Vec<String> {
        let still_open = self.stop(Duration::from_secs(3));
        let mut failures = lock(failures).clone();
        if still_open > 0 {
            failures.push(format!(
                "{still_open} WebContent connections still open at shutdown"
            ));
        }
        failures
    }

    /// Tells every connection thread to finish, and waits at most `timeout`
    /// for them; returns how many are still running.
    pub fn stop(&self, timeout: Duration) -> usize {
        self.stop.store(true, Ordering::Release);
        let deadline = Instant::now() + timeout;
        let mut active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        while *active > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            active = self
                .idle
                .wait_timeout(active, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        *active
    }

    /// Takes every connection the [`Acceptor`](ferry_transport::Acceptor)
    /// created and runs `serve` on a thread of its own, until the service
    /// stops or the broker client (which owns the acceptor) is gone.
    pub fn accept_loop(
        self: Arc<Self>,
        accepted: Receiver<Accepted>,
        serve: impl Fn(Accepted) + Send + Clone + 'static,
    ) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            loop {
                match accepted.recv_timeout(Duration::from_millis(200)) {
                    Ok(connection) => {
                        *self.active.lock().unwrap_or_else(PoisonError::into_inner) += 1;
                        let service = self.clone();
                        let serve = serve.clone();
                        let name = format!("serve {}", connection.peer);
                        let spawned = std::thread::Builder::new().name(name).spawn(move || {
                            serve(connection);
                            let mut active = service
                                .active
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner);
                            *active -= 1;
                            service.idle.notify_all();
                        });
                        if let Err(e) = spawned {
                            eprintln!("cannot start a connection thread: {e}");
                            *self.active.lock().unwrap_or_else(PoisonError::into_inner) -= 1;
                        }
                    }
                    Err(RecvTimeoutError::Timeout) if !self.stopping() => {}
                    Err(_) => return,
                }
            }
        })
    }
}

/// Whether a dispatch ended because the peer is gone: it closed or died,
/// possibly between sending a request and our reply to it (then the reply
/// is what fails).
pub fn peer_gone(error: &DispatchError) -> bool {
    matches!(
        error,
        DispatchError::Disconnected | DispatchError::Reply(SendError::Disconnected)
    )
}

/// Locks a mutex, ignoring poisoning (a panicking thread already reported
/// itself; the data is plain counters).
pub fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
