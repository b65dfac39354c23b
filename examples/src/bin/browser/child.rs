//! What every child process shares: its connection to the UI process, and
//! (for the Network and GPU processes) serving the connections the broker
//! asks them to create.
//!
//! # How a child gets its connection to the UI process
//!
//! The UI process is the broker, and a broker introduces its *children* to
//! each other: `ferry_handoff` has no way for the broker process itself to
//! offer a service or to hand a child an endpoint of its own (every
//! `ControlMessage` it sends is broker business). So the UI process makes
//! the connection itself, WebKit-style, at spawn time: it creates a
//! `Channel` pair, gives the child one end as its standard input (the way
//! inetd hands a service its socket; `std` does the `dup2`: no `unsafe`,
//! no file name), spawns it through `Broker::spawn`, creates a
//! [`Connection`] and sends the child's end of it ([`Endpoint`]: the memfd,
//! the control socket and the notification socket) over that channel. The child takes
//! its standard input, checks it is a `SOCK_SEQPACKET` socket, receives the
//! endpoint and opens it. The UI process closes its end of the handover
//! channel and its copies of the endpoint's descriptors right after sending,
//! so the connection's control socket lives only in the two processes and
//! either one's death is seen by the other at once. (The child's standard
//! input stays a hung-up socket nobody reads.)

use ferry_handoff::Channel;
use ferry_transport::{
    Accepted, Connection, ConnectionConfig, DispatchError, ENDPOINT_FDS, Endpoint, SendError,
};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a child waits for the UI process's endpoint.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens the connection to the UI process that arrives on standard input.
pub fn open_ui_connection(config: ConnectionConfig) -> Result<Connection, String> {
    let stdin = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("cannot take standard input: {e}"))?;
    let mut handover = Channel::from_checked(stdin).map_err(|e| {
        format!("standard input is not the UI process's handover socket ({e}); run `browser` without --role")
    })?;
    handover.set_max_fds(ENDPOINT_FDS);
    let mut metadata = vec![0u8; 4096];
    let received = handover
        .recv(&mut metadata, Some(HANDOVER_TIMEOUT))
        .map_err(|e| format!("no connection from the UI process: {e}"))?;
    metadata.truncate(received.len);
    let endpoint = Endpoint {
        fds: received.fds,
        metadata,
    };
    Connection::open(endpoint, config)
        .map_err(|e| format!("cannot open the UI process's connection: {e}"))
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
