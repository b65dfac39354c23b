//! In-process throughput of ferry-ring by frame size: the ring's own cost,
//! without a second process. Each frame is written in full (the pattern
//! copied in) and read in full (a checksum), like in `ferry-bench`.
//!
//! - `ring/one_thread`: reserve, write, commit, peek, read, release on one
//!   thread: the instructions of a frame, no cache-line transfers.
//! - `ring/two_threads`: a producer thread and a consumer thread, both
//!   spinning, frames published one by one.
//! - `ring/two_threads_batched`: the same, publishing and releasing every 64
//!   frames (`commit_deferred`, `release_deferred`, `flush`).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ferry_bench::payload::{Pattern, scan};
use ferry_ring::{Consumer, Producer, WaitStrategy};
use std::hint::black_box;
use std::time::{Duration, Instant};

const SIZES: [usize; 5] = [8, 64, 1024, 4096, 65536];
const CAPACITY: usize = 1 << 20;
const TIMEOUT: Option<Duration> = Some(Duration::from_secs(30));

fn spinning_channel() -> (Producer, Consumer) {
    let (tx, rx) = ferry_ring::channel(CAPACITY);
    (
        tx.with_wait_strategy(WaitStrategy::Spin),
        rx.with_wait_strategy(WaitStrategy::Spin),
    )
}

fn one_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring/one_thread");
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, &size| {
            let (mut tx, mut rx) = spinning_channel();
            let pattern = Pattern::new(size);
            let mut seq = 0u64;
            b.iter(|| {
                seq += 1;
                let mut grant = tx.try_reserve(size).expect("room");
                pattern.write(&mut grant, seq);
                grant.commit();
                let frame = rx.try_peek().expect("a frame");
                black_box(scan(frame.payload()));
                frame.release();
            });
        });
    }
    group.finish();
}

/// Sends `count` frames from this thread to a consumer thread; returns the
/// time until the consumer has read the last one.
fn stream(size: usize, count: u64, batch: u64) -> Duration {
    let (mut tx, mut rx) = spinning_channel();
    let consumer = std::thread::spawn(move || {
        let mut sum = 0u64;
        for i in 0..count {
            let frame = rx.peek(TIMEOUT).expect("a frame");
            sum = sum.wrapping_add(scan(frame.payload()).sum);
            if batch > 1 && (i + 1) % batch != 0 {
                frame.release_deferred();
            } else {
                frame.release();
            }
        }
        rx.flush();
        sum
    });
    let pattern = Pattern::new(size);
    let start = Instant::now();
    let mut expected = 0u64;
    for seq in 0..count {
        let mut grant = tx.reserve(size, TIMEOUT).expect("room");
        pattern.write(&mut grant, seq);
        expected = expected.wrapping_add(pattern.expected(seq));
        if batch > 1 && (seq + 1) % batch != 0 {
            grant.commit_deferred();
        } else {
            grant.commit();
        }
    }
    tx.flush();
    let sum = consumer.join().expect("the consumer thread");
    let elapsed = start.elapsed();
    assert_eq!(sum, expected, "the consumer read something else");
    elapsed
}

fn two_threads(c: &mut Criterion) {
    for (name, batch) in [("ring/two_threads", 1), ("ring/two_threads_batched", 64)] {
        let mut group = c.benchmark_group(name);
        for size in SIZES {
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, &size| {
                b.iter_custom(|iters| stream(size, iters, batch));
            });
        }
        group.finish();
    }
}

criterion_group!(benches, one_thread, two_threads);
criterion_main!(benches);
