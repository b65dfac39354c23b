//! Introduction latency across real processes: from `connect` to the
//! target's descriptors in the requester's hand.
//!
//! ```text
//! cargo run --release -p ferry-handoff --example introduce_latency -- [--count 10000]
//! ```
//!
//! This process is the broker. It spawns itself twice: a "network" target
//! whose handler creates what a real connection needs (a memfd and a
//! socketpair, keeping one end), and a "web" requester that times
//! `BrokerClient::connect` and prints percentiles. Each introduction is four
//! control messages across three processes (requester → broker → target →
//! broker → requester), with two descriptors forwarded.
//!
//! For scale, the requester then measures the floor on the same machine in
//! the same run: a direct round trip with the target over an introduced
//! socket, the reply carrying two descriptors (two messages, two processes).

use std::os::fd::{AsFd, BorrowedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_handoff::{
    AllowAll, Broker, BrokerClient, BrokerEvent, Channel, ConnectionRequest, Endpoint,
};
use hdrhistogram::Histogram;

const WARMUP: usize = 200;
const TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let count: usize = value("--count")
        .and_then(|c| c.parse().ok())
        .unwrap_or(10_000);
    let code = match value("--role").as_deref() {
        Some("network") => network(),
        Some("web") => web(count),
        _ => broker(count),
    };
    std::process::exit(code);
}

fn broker(count: usize) -> i32 {
    let exe = std::env::current_exe().expect("current_exe");
    let role = |role: &str| {
        let mut command = Command::new(&exe);
        command
            .args(["--role", role, "--count", &count.to_string()])
            .stdin(Stdio::null());
        command
    };
    let mut broker = Broker::new(AllowAll).expect("broker");
    broker
        .spawn("network", role("network"))
        .expect("spawn network");
    let web = broker.spawn("web", role("web")).expect("spawn web");
    // Generous: the requester bounds each introduction by TIMEOUT itself.
    let deadline = Instant::now() + TIMEOUT * 30;
    let mut status = None;
    while status.is_none() && Instant::now() < deadline {
        broker
            .turn(Duration::from_secs(1), |event| match event {
                BrokerEvent::ChildExited { child, status: s } if child.instance == web => {
                    status = Some(s);
                }
                BrokerEvent::Misbehaved { child, reason } => {
                    eprintln!("{child} misbehaved: {reason}");
                }
                _ => {}
            })
            .expect("broker turn");
    }
    match status.flatten() {
        Some(s) if s.success() => 0,
        other => {
            eprintln!("the requester did not finish: {other:?}");
            1
        }
    }
}

/// The target: a memfd and a socketpair per connection. A connection asked
/// for with metadata "echo" answers every message with two descriptors.
fn network() -> i32 {
    let handler = |req: ConnectionRequest| -> Result<Endpoint, String> {
        let memfd = rustix::fs::memfd_create("ferry-latency", rustix::fs::MemfdFlags::CLOEXEC)
            .map_err(|e| e.to_string())?;
        let (ours, theirs) = Channel::pair().map_err(|e| e.to_string())?;
        if req.metadata == b"echo" {
            let spare = memfd.try_clone().map_err(|e| e.to_string())?;
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while let Ok(got) = ours.recv(&mut buf, Some(TIMEOUT)) {
                    let fds = [spare.as_fd(), ours.as_fd()];
                    if ours.send(&buf[..got.len], &fds).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Endpoint {
            fds: vec![memfd, theirs.into()],
            metadata: Vec::new(),
        })
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let _client = BrokerClient::builder()
        .handler(handler)
        .on_event(move |e| {
            let _ = tx.send(e);
        })
        .from_env()
        .expect("bootstrap");
    // Serve until the broker goes away (it kills us when done anyway).
    while let Ok(event) = rx.recv_timeout(TIMEOUT * 60) {
        if matches!(event, ferry_handoff::ClientEvent::BrokerGone { .. }) {
            break;
        }
    }
    0
}

fn web(count: usize) -> i32 {
    let client = BrokerClient::from_env().expect("bootstrap");
    let mut introductions =
        Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("histogram");
    for i in 0..WARMUP + count {
        let started = Instant::now();
        let intro = match client.connect("network", b"", TIMEOUT) {
            Ok(intro) => intro,
            Err(e) => {
                eprintln!("introduction {i} failed: {e}");
                return 1;
            }
        };
        let elapsed = started.elapsed();
        assert_eq!(intro.fds.len(), 2);
        drop(intro);
        if i >= WARMUP {
            introductions.saturating_record(elapsed.as_nanos() as u64);
        }
    }

    // The floor: direct round trips with the target, two descriptors back.
    let echo = client
        .connect("network", b"echo", TIMEOUT)
        .expect("echo connection");
    let socket =
        Channel::from_checked(echo.fds.into_iter().nth(1).expect("socket")).expect("socket");
    let mut round_trips =
        Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("histogram");
    let mut buf = [0u8; 64];
    let none: [BorrowedFd<'_>; 0] = [];
    for i in 0..WARMUP + count {
        let started = Instant::now();
        socket.send(b"ping", &none).expect("ping");
        let got = socket.recv(&mut buf, Some(TIMEOUT)).expect("pong");
        let elapsed = started.elapsed();
        assert_eq!(got.fds.len(), 2);
        drop(got);
        if i >= WARMUP {
            round_trips.saturating_record(elapsed.as_nanos() as u64);
        }
    }

    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let line = |name: &str, h: &Histogram<u64>| {
        println!(
            "{name:<44} p50 {:>7.1} µs   p90 {:>7.1} µs   p99 {:>7.1} µs   p99.9 {:>7.1} µs   max {:>8.1} µs",
            us(h, 0.5),
            us(h, 0.9),
            us(h, 0.99),
            us(h, 0.999),
            h.max() as f64 / 1000.0
        );
    };
    println!(
        "{count} samples each after {WARMUP} warm-up, {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    line("introduction (connect -> 2 fds in hand)", &introductions);
    line("baseline: direct round trip, 2 fds back", &round_trips);
    0
}
