//! A compromised WebContent process (`--evil`): the broker spawned it as a
//! WebContent process, so its policy lets it reach the Network process;
//! once connected it sends frames that are no message of the connection's
//! schema. The Network process cuts it off and reports it to the broker,
//! whose report policy has it killed. If nobody stops it, it gives up after
//! the run's time limit and exits with an error (the UI process expects it
//! killed).

use crate::Args;
use crate::protocol::network_client;
use ferry_handoff::BrokerClient;
use ferry_transport::{SendError, connect};
use std::time::{Duration, Instant};

/// How long to wait for the broker to introduce us.
const INTRODUCTION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a frame waits for room.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// How many malformed frames it sends.
const FRAMES: usize = 3;

pub fn run(args: &Args) -> Result<(), String> {
    let client = BrokerClient::from_env().map_err(|e| format!("no broker: {e}"))?;
    let me = client.identity().to_string();
    let mut network = connect(
        &client,
        "network",
        network_client(args.wait),
        INTRODUCTION_TIMEOUT,
    )
    .map_err(|e| format!("no connection to the Network process: {e}"))?;
    println!(
        "[{me}] pid {} (evil): connected to {}; sending it {FRAMES} frames that are no message",
        std::process::id(),
        network.config().peer_name
    );
    for n in 0..FRAMES {
        // Raw bytes where the Network process expects typed messages.
        let garbage = format!("\u{fffd}GET /etc/passwd #{n} \u{fffd}").into_bytes();
        match network.send_frame(&garbage, Some(SEND_TIMEOUT)) {
            Ok(()) => {}
            Err(SendError::Disconnected) => break, // cut off already
            Err(e) => return Err(format!("sending garbage failed: {e}")),
        }
    }
    // Wait to be killed.
    let deadline = Instant::now() + Duration::from_secs(args.timeout) + Duration::from_secs(30);
    while Instant::now() < deadline && client.is_broker_alive() {
        std::thread::sleep(Duration::from_millis(50));
    }
    Err("sent garbage and nobody stopped it".into())
}
