//! The instructions of one frame, counted rather than timed: the same 8-byte
//! frame sent and received on one thread through ferry-transport's raw API
//! and through the ring alone (as `transport/one_thread_raw` and
//! `ring/one_thread` in `benches/ring.rs`), and a typed message with an
//! 8-byte `Vec` sent and dispatched to its handler, each in a function of
//! its own, so that callgrind splits them. Instruction counts do not depend on the
//! load of the machine, which makes them the profile to compare changes of
//! the hot path on a shared machine (docs/decisions.md, "Where a frame's
//! instructions go").
//!
//! ```sh
//! cargo build --release -p ferry-bench --example frame_instructions
//! valgrind --tool=callgrind --callgrind-out-file=frames.cg \
//!     target/release/examples/frame_instructions
//! callgrind_annotate --inclusive=yes frames.cg | grep -E 'transport_frames|ring_frames|typed_messages'
//! ```
//!
//! Each function runs `FRAMES` frames: its inclusive count divided by
//! `FRAMES` is the instructions per frame.

use ferry_ring::WaitStrategy;
use ferry_transport::{Connection, ConnectionConfig, Context, Remote};
use std::cell::Cell;
use std::hint::black_box;
use std::time::Duration;

ferry_transport::protocol! {
    /// The typed message counted.
    pub receiver Counted handled_by CountedHandler {
        /// Eight bytes, as the raw frames carry.
        fn bytes => Bytes { bytes: Vec<u8> };
    }
}

/// Adds up what it is handed, so the handler does some work with it.
struct Sum(Cell<u64>);

impl CountedHandler for Sum {
    fn bytes(&self, _: &mut Context, message: &ArchivedBytes) {
        let sum = message.bytes.iter().map(|&b| u64::from(b)).sum::<u64>();
        self.0.set(self.0.get() + sum);
    }
}

/// Frames per function.
const FRAMES: u64 = 100_000;
/// Payload bytes per frame.
const SIZE: usize = 8;
const TIMEOUT: Option<Duration> = Some(Duration::from_secs(30));

/// Sends and receives `FRAMES` frames through a connection pair.
#[inline(never)]
fn transport_frames(tx: &mut Connection, rx: &mut Connection) {
    let payload = [7u8; SIZE];
    let mut copy = [0u8; SIZE];
    for _ in 0..FRAMES {
        let mut frame = tx.reserve_frame(SIZE, TIMEOUT).expect("room");
        frame.copy_from_slice(&payload);
        frame.commit();
        let frame = rx.recv_frame(TIMEOUT).expect("a frame");
        copy.copy_from_slice(frame.bytes());
        black_box(&copy);
    }
}

/// Sends `FRAMES` typed messages and dispatches each to its handler.
#[inline(never)]
fn typed_messages(tx: &mut Connection, rx: &mut Connection) {
    let message = Bytes {
        bytes: vec![7u8; SIZE],
    };
    for _ in 0..FRAMES {
        tx.send(Remote::<Counted>::new(1), &message).expect("room");
        black_box(rx.dispatch(TIMEOUT).expect("a message"));
    }
}

/// Sends and receives `FRAMES` frames through a ring.
#[inline(never)]
fn ring_frames(tx: &mut ferry_ring::Producer, rx: &mut ferry_ring::Consumer) {
    let payload = [7u8; SIZE];
    let mut copy = [0u8; SIZE];
    for _ in 0..FRAMES {
        let mut grant = tx.try_reserve(SIZE).expect("room");
        grant.copy_from_slice(&payload);
        grant.commit();
        let frame = rx.try_peek().expect("a frame");
        copy.copy_from_slice(frame.payload());
        black_box(&copy);
        frame.release();
    }
}

fn main() {
    let config = ConnectionConfig::default().wait(WaitStrategy::Spin);
    let (mut tx, mut rx) = Connection::pair(config).expect("a connection pair");
    transport_frames(&mut tx, &mut rx);
    rx.register(1, Counted::handler(Sum(Cell::new(0))));
    typed_messages(&mut tx, &mut rx);
    let (tx, rx) = ferry_ring::channel(1 << 20);
    let mut tx = tx.with_wait_strategy(WaitStrategy::Spin);
    let mut rx = rx.with_wait_strategy(WaitStrategy::Spin);
    ring_frames(&mut tx, &mut rx);
    println!(
        "{FRAMES} frames of {SIZE} bytes through ferry-transport, {FRAMES} typed messages, then {FRAMES} frames through ferry-ring"
    );
}
