//! Driving a ferry connection from an epoll loop, without an async runtime.
//!
//! ```text
//! cargo run -p ferry-transport --example event_loop
//! ```
//!
//! A connection's [`readiness_fd`](Connection::readiness_fd) is a socket
//! that any event loop can watch beside its sockets and timers. The protocol:
//!
//! 1. [`arm`](Connection::arm): `Ok(true)` means something is already there
//!    (do not wait); `Ok(false)` means the peer's next send (or its death)
//!    makes the descriptor readable.
//! 2. Wait in `epoll_wait` (here with a timeout, so a broken peer cannot hang
//!    the loop).
//! 3. [`disarm`](Connection::disarm), then dispatch everything there with
//!    [`try_dispatch`](Connection::try_dispatch); go to 1.
//!
//! A peer thread sends ticks in bursts with pauses between them, then a
//! final message, then drops its end; the loop prints what it receives and
//! how often it actually had to sleep, and ends when the peer is gone.

use ferry_transport::Context;
use ferry_transport::{
    Connection, ConnectionConfig, DispatchError, Receiver, RecvError, Remote, WaitStrategy,
};
use rustix::event::epoll;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

ferry_transport::protocol! {
    /// What the peer sends.
    pub receiver Ticker handled_by TickerHandler {
        /// One tick of a burst.
        fn tick => Tick { seq: u64, text: String };
        /// The last message: how many ticks were sent.
        fn done => Done { total: u64 };
    }
}

/// What the loop received.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    ticks: u64,
    announced: Option<u64>,
}

/// Prints what arrives and counts it.
struct Printer {
    started: Instant,
    counts: Arc<Mutex<Counts>>,
}

impl TickerHandler for Printer {
    fn tick(&self, _: &mut Context, message: &ArchivedTick) {
        self.counts.lock().unwrap().ticks += 1;
        println!(
            "{:>7.1} ms  tick {:>2}: {}",
            self.started.elapsed().as_secs_f64() * 1e3,
            message.seq.to_native(),
            message.text
        );
    }

    fn done(&self, _: &mut Context, message: &ArchivedDone) {
        let total = message.total.to_native();
        self.counts.lock().unwrap().announced = Some(total);
        println!("peer says it sent {total} ticks");
    }
}

/// The peer: bursts of ticks with pauses, then `Done`, then it hangs up.
fn peer(mut connection: Connection) {
    let ticker = Remote::<Ticker>::new(1);
    let mut seq = 0;
    for burst in 1..=8u64 {
        for _ in 0..burst % 4 + 1 {
            let text = format!("burst {burst}, {} bytes of greeting", 20 + seq);
            connection
                .send(ticker, &Tick { seq, text })
                .expect("send a tick");
            seq += 1;
        }
        std::thread::sleep(Duration::from_millis(60));
    }
    connection
        .send(ticker, &Done { total: seq })
        .expect("send done");
    // Dropping the connection hangs up: the loop sees it as readable too.
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = ConnectionConfig::default()
        .schema(ferry_transport::schema_of(&[<Ticker as Receiver>::SCHEMA]))
        .wait(WaitStrategy::Park);
    let (mut connection, theirs) = Connection::pair(config)?;
    let sender = std::thread::spawn(move || peer(theirs));

    let started = Instant::now();
    let counts = Arc::new(Mutex::new(Counts::default()));
    connection.register(
        1,
        Ticker::handler(Printer {
            started,
            counts: Arc::clone(&counts),
        }),
    );

    let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    const CONNECTION: u64 = 1;
    epoll::add(
        &epoll,
        connection.readiness_fd(),
        epoll::EventData::new_u64(CONNECTION),
        epoll::EventFlags::IN,
    )?;
    let timeout = rustix::time::Timespec::try_from(Duration::from_secs(5))?;
    let mut events = Vec::with_capacity(8);
    let (mut sleeps, mut wakeups_with_nothing) = (0u64, 0u64);
    loop {
        match connection.arm() {
            Ok(true) => {}
            Ok(false) => {
                events.clear();
                let n = loop {
                    match epoll::wait(
                        &epoll,
                        rustix::buffer::spare_capacity(&mut events),
                        Some(&timeout),
                    ) {
                        Err(rustix::io::Errno::INTR) => continue,
                        other => break other?,
                    }
                };
                if n == 0 {
                    return Err("no event for 5 s: the peer is stuck".into());
                }
                debug_assert!(events.iter().all(|e| e.data.u64() == CONNECTION));
                sleeps += 1;
            }
            Err(RecvError::Disconnected) => break,
            Err(e) => return Err(e.into()),
        }
        connection.disarm();
        match connection.try_dispatch() {
            Ok(0) => wakeups_with_nothing += 1,
            Ok(_) => {}
            Err(DispatchError::Disconnected) => break,
            Err(e) => return Err(e.into()),
        }
    }
    sender.join().map_err(|_| "the peer thread panicked")?;
    let Counts { ticks, announced } = *counts.lock().unwrap();
    println!(
        "peer gone after {:.1} ms: {ticks} ticks received, {sleeps} sleeps in epoll_wait, \
         {wakeups_with_nothing} wake-ups with nothing to dispatch",
        started.elapsed().as_secs_f64() * 1e3
    );
    if announced != Some(ticks) {
        return Err(format!("received {ticks} ticks, the peer announced {announced:?}").into());
    }
    Ok(())
}
