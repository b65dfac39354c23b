//! The instructions of one frame, counted rather than timed: the same 8-byte
//! frame sent and received on one thread through ferry-transport's raw API
//! and through the ring alone (as `transport/one_thread_raw` and
//! `ring/one_thread` in `benches/ring.rs`), each in a function of its own,
//! so that callgrind splits them. Instruction counts do not depend on the
//! load of the machine, which makes them the profile to compare changes of
//! the hot path on a shared machine (docs/decisions.md, "Where a frame's
//! instructions go").
//!
//! ```sh
//! cargo build --release -p ferry-bench --example frame_instructions
//! valgrind --tool=callgrind --callgrind-out-file=frames.cg \
//!     target/release/examples/frame_instructions
//! callgrind_annotate --inclusive=yes frames.cg | grep -E 'transport_frames|ring_frames'
//! ```
//!
//! Each function runs `FRAMES` frames: its inclusive count divided by
//! `FRAMES` is the instructions per frame.

use ferry_ring::WaitStrategy;
use ferry_transport::{Connection, ConnectionConfig};
use std::hint::black_box;
use std::time::Duration;

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
    let (tx, rx) = ferry_ring::channel(1 << 20);
    let mut tx = tx.with_wait_strategy(WaitStrategy::Spin);
    let mut rx = rx.with_wait_strategy(WaitStrategy::Spin);
    ring_frames(&mut tx, &mut rx);
    println!("{FRAMES} frames of {SIZE} bytes through ferry-transport, then through ferry-ring");
}
