//! A large typed message sent from the sender's own buffer, on one thread
//! (a connection pair, no second process): `owned` builds the message
//! first (the buffer copied into its `Vec`, then serialized into the ring:
//! two copies), `view` sends a [`ferry_transport::View`] of the buffer
//! (serialized from it straight into the ring: one copy). Each iteration
//! sends one message and dispatches it to a handler that reads its length.
//!
//! ```sh
//! cargo bench -p ferry-bench --bench views
//! ```

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ferry_transport::rkyv::{self, with::AsVec};
use ferry_transport::{Connection, ConnectionConfig, Context, Remote, WaitStrategy};
use std::hint::black_box;
use std::time::Duration;

ferry_transport::protocol! {
    /// A sink for blocks.
    pub receiver Sink handled_by SinkHandler {
        /// A block of bytes.
        fn block => Block { bytes: Vec<u8> };
    }
}

/// `Block`, borrowing the sender's bytes.
#[derive(rkyv::Archive, rkyv::Serialize)]
#[rkyv(crate = ferry_transport::rkyv, as = ArchivedBlock)]
#[rkyv(serialize_bounds(__S: rkyv::ser::Writer + rkyv::ser::Allocator,
                        __S::Error: rkyv::rancor::Source))]
struct BlockView<'a> {
    #[rkyv(with = AsVec, omit_bounds)]
    bytes: &'a [u8],
}

struct Lengths;

impl SinkHandler for Lengths {
    fn block(&self, _: &mut Context, block: &ArchivedBlock) {
        black_box(block.bytes.len());
    }
}

const SIZES: [usize; 3] = [4 << 10, 64 << 10, 256 << 10];
const TIMEOUT: Option<Duration> = Some(Duration::from_secs(30));
const SINK: Remote<Sink> = Remote::new(1);

fn pair() -> (Connection, Connection) {
    let config = ConnectionConfig::default().wait(WaitStrategy::Spin);
    let (tx, mut rx) = Connection::pair(config).expect("a connection pair");
    rx.register(1, Sink::handler(Lengths));
    (tx, rx)
}

fn views(c: &mut Criterion) {
    let mut group = c.benchmark_group("transport/large_typed_send");
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let buffer: Vec<u8> = (0..size).map(|i| i as u8).collect();
        group.bench_with_input(BenchmarkId::new("owned", size), &size, |b, _| {
            let (mut tx, mut rx) = pair();
            b.iter(|| {
                let block = Block {
                    bytes: buffer.clone(),
                };
                tx.send(SINK, &block).expect("send");
                rx.dispatch(TIMEOUT).expect("dispatch");
            });
        });
        group.bench_with_input(BenchmarkId::new("view", size), &size, |b, _| {
            let (mut tx, mut rx) = pair();
            b.iter(|| {
                let view = BlockView { bytes: &buffer };
                tx.send_as::<Block>(SINK, &view).expect("send");
                rx.dispatch(TIMEOUT).expect("dispatch");
            });
        });
    }
    group.finish();
}

criterion_group!(benches, views);
criterion_main!(benches);
