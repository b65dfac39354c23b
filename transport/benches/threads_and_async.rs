//! What splitting a connection and going async cost, in one process:
//!
//! - `send/uncontended`: a 64-byte raw frame sent and received on one
//!   thread, through the connection itself (`connection`) and through the
//!   sending half of a split connection (`sender`): the difference is the
//!   senders' lock, taken with nobody else wanting it.
//! - `async/round_trip`: an `AsyncConnection` on a current-thread runtime
//!   sends a frame to a thread that echoes it (blocking, spinning: it
//!   answers within a microsecond or two) and awaits the echo, for several
//!   `async_spin` budgets: how much of a short spin a round trip needs
//!   before the task parks on the readiness descriptor (and pays the
//!   wake-up of its thread).

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ferry_transport::{AsyncConnection, Connection, ConnectionConfig, RecvError, WaitStrategy};
use std::hint::black_box;
use std::time::Duration;

const TIMEOUT: Option<Duration> = Some(Duration::from_secs(30));
const PAYLOAD: [u8; 64] = [7; 64];

fn uncontended_send(c: &mut Criterion) {
    let mut group = c.benchmark_group("send/uncontended");
    let config = ConnectionConfig::default().wait(WaitStrategy::Spin);
    group.bench_function("connection", |b| {
        let (mut tx, mut rx) = Connection::pair(config.clone()).expect("a pair");
        b.iter(|| {
            tx.send_frame(black_box(&PAYLOAD), TIMEOUT).expect("room");
            black_box(rx.try_recv_frame().expect("a frame").bytes().len());
        });
    });
    group.bench_function("sender", |b| {
        let (tx, mut rx) = Connection::pair(config.clone()).expect("a pair");
        let (sender, _receiving) = tx.split().expect("split");
        b.iter(|| {
            sender
                .send_frame(black_box(&PAYLOAD), TIMEOUT)
                .expect("room");
            black_box(rx.try_recv_frame().expect("a frame").bytes().len());
        });
    });
    group.finish();
}

fn async_round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("async/round_trip");
    for spin_us in [0u64, 5, 20, 50] {
        let spin = Duration::from_micros(spin_us);
        group.bench_with_input(BenchmarkId::from_parameter(spin_us), &spin, |b, &spin| {
            let config = ConnectionConfig::default()
                .async_spin(spin)
                .wait(WaitStrategy::Spin);
            let (ours, mut theirs) = Connection::pair(config).expect("a pair");
            let echo = std::thread::spawn(move || {
                let mut buf = Vec::new();
                loop {
                    match theirs.recv_frame(TIMEOUT) {
                        Ok(frame) => {
                            buf.clear();
                            buf.extend_from_slice(frame.bytes());
                        }
                        Err(RecvError::Disconnected) => return,
                        Err(error) => panic!("echo: {error}"),
                    }
                    theirs.send_frame(&buf, TIMEOUT).expect("echo send");
                }
            });
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            let mut ours = runtime
                .block_on(async { AsyncConnection::new(ours) })
                .expect("async");
            b.iter(|| {
                runtime.block_on(async {
                    ours.send_frame(&PAYLOAD).await.expect("send");
                    black_box(ours.recv_frame().await.expect("echo").bytes().len());
                })
            });
            drop(ours);
            echo.join().expect("the echo thread");
        });
    }
    group.finish();
}

criterion_group!(benches, uncontended_send, async_round_trip);
criterion_main!(benches);
