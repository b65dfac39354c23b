//! In-process throughput of ferry-ring by frame size: the ring's own cost,
//! without a second process. Each frame is written in full (the pattern
//! copied in) and copied out in full into a private buffer, under the same
//! copy rule as `ferry-bench` (`ferry_bench::payload`).
//!
//! - `ring/one_thread`: reserve, write, commit, peek, read, release on one
//!   thread: the instructions of a frame, no cache-line transfers.
//! - `ring/two_threads`: a producer thread and a consumer thread, both
//!   spinning, frames published one by one; a sample is timed until the
//!   consumer has read its last frame.
//! - `transport/one_thread_raw`: the same frame through ferry-transport's
//!   raw API (`reserve_frame`, `recv_frame`) on a connection pair in one
//!   thread: what the transport adds to the ring, per frame, without any
//!   cache-line transfer.
//! - `ring/two_threads_batched`: the same, publishing and releasing every 64
//!   frames (`commit_deferred`, `release_deferred`, `flush`).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ferry_bench::payload::{Pattern, QUIT, SYNC, Sink};
use ferry_ring::{Consumer, Producer, WaitStrategy};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
            let mut sink = Sink::new(size);
            let mut seq = 0u64;
            b.iter(|| {
                seq += 1;
                let mut grant = tx.try_reserve(size).expect("room");
                pattern.write(&mut grant, seq);
                grant.commit();
                let frame = rx.try_peek().expect("a frame");
                black_box(sink.receive(frame.payload()).expect("fits"));
                frame.release();
            });
        });
    }
    group.finish();
}

/// A consumer thread that copies out (and checks) every frame until a `QUIT`
/// frame, and tells when it has seen a `SYNC` frame: the producer times a
/// batch of frames up to the consumer's acknowledgement of the `SYNC` after
/// them. The thread lives for a whole benchmark, so spawning it is not
/// timed.
struct Stream {
    tx: Producer,
    pattern: Pattern,
    batch: u64,
    seq: u64,
    syncs: u64,
    acknowledged: Arc<AtomicU64>,
    consumer: Option<std::thread::JoinHandle<()>>,
}

impl Stream {
    fn new(size: usize, batch: u64) -> Stream {
        let (tx, mut rx) = spinning_channel();
        let acknowledged = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&acknowledged);
        let consumer = std::thread::spawn(move || {
            let mut sum = 0u64;
            let mut unreleased = 0u64;
            let mut sink = Sink::new(size);
            loop {
                let frame = rx.peek(TIMEOUT).expect("a frame");
                let msg = sink.receive(frame.payload()).expect("fits");
                if batch > 1 {
                    frame.release_deferred();
                    unreleased += 1;
                    if unreleased == batch {
                        rx.flush();
                        unreleased = 0;
                    }
                } else {
                    frame.release();
                }
                match msg.tag {
                    QUIT => return,
                    SYNC => {
                        rx.flush();
                        seen.fetch_add(1, Ordering::Release);
                    }
                    _ => sum = sum.wrapping_add(msg.check),
                }
                black_box(sum);
            }
        });
        Stream {
            tx,
            pattern: Pattern::new(size),
            batch,
            seq: 0,
            syncs: 0,
            acknowledged,
            consumer: Some(consumer),
        }
    }

    fn send(&mut self, tag: u64) {
        let mut grant = self.tx.reserve(self.pattern.len(), TIMEOUT).expect("room");
        self.pattern.write(&mut grant, tag);
        if self.batch > 1 {
            grant.commit_deferred();
            if tag % self.batch == 0 {
                self.tx.flush();
            }
        } else {
            grant.commit();
        }
    }

    /// Sends `count` frames and waits until the consumer has read them.
    fn run(&mut self, count: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..count {
            self.seq += 1;
            self.send(self.seq);
        }
        self.send(SYNC);
        self.tx.flush();
        self.syncs += 1;
        while self.acknowledged.load(Ordering::Acquire) < self.syncs {
            std::hint::spin_loop();
        }
        start.elapsed()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.send(QUIT);
        self.tx.flush();
        if let Some(consumer) = self.consumer.take() {
            consumer.join().expect("the consumer thread");
        }
    }
}

fn two_threads(c: &mut Criterion) {
    for (name, batch) in [("ring/two_threads", 1), ("ring/two_threads_batched", 64)] {
        let mut group = c.benchmark_group(name);
        for size in SIZES {
            group.throughput(Throughput::Bytes(size as u64));
            let mut stream = Stream::new(size, batch);
            group.bench_function(BenchmarkId::from_parameter(size), |b| {
                b.iter_custom(|iters| stream.run(iters));
            });
        }
        group.finish();
    }
}

fn transport_one_thread(c: &mut Criterion) {
    use ferry_transport::{Connection, ConnectionConfig, WaitStrategy as Wait};
    let mut group = c.benchmark_group("transport/one_thread_raw");
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, &size| {
            let config = ConnectionConfig::default().wait(Wait::Spin);
            let (mut tx, mut rx) = Connection::pair(config).expect("a connection pair");
            let pattern = Pattern::new(size);
            let mut sink = Sink::new(size);
            let mut seq = 0u64;
            b.iter(|| {
                seq += 1;
                let mut frame = tx.reserve_frame(size, TIMEOUT).expect("room");
                pattern.write(&mut frame, seq);
                frame.commit();
                let frame = rx.recv_frame(TIMEOUT).expect("a frame");
                black_box(sink.receive(frame.bytes()).expect("fits"));
            });
        });
    }
    group.finish();
}

criterion_group!(benches, one_thread, transport_one_thread, two_threads);
criterion_main!(benches);
