//! Cross-process round trips through criterion's `iter_custom`: this bench
//! binary re-executes itself as the peer (like `ferry-bench`), and each
//! sample times a batch of checked round trips over one transport kept open
//! for the whole benchmark. The two processes are pinned to the first two
//! allowed CPUs.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use ferry_bench::catalog::Transport;
use ferry_bench::driver;
use ferry_bench::job::Job;
use ferry_bench::mode::Mode;
use ferry_bench::payload::{Pattern, QUIT};
use ferry_bench::session::Peer;
use ferry_bench::{cpu, peer, with_end};
use ferry_transport::{Trust, WaitStrategy};

const SIZES: [usize; 2] = [64, 1024];
const TRANSPORTS: [Transport; 3] = [Transport::FerryRaw, Transport::Ferry, Transport::FloorSpin];

fn roundtrip(c: &mut Criterion) {
    let cpus = cpu::allowed();
    let peer_cpu = match cpus.as_slice() {
        [a, b, ..] => {
            cpu::pin(*a).expect("pinning the measuring process");
            Some(*b)
        }
        _ => None,
    };
    let mut peer = Peer::spawn().expect("starting the peer process");
    let mut group = c.benchmark_group("roundtrip");
    for size in SIZES {
        group.throughput(Throughput::Elements(1));
        for transport in TRANSPORTS {
            let mut job = Job {
                mode: Mode::Latency,
                transport,
                size,
                wait: WaitStrategy::Spin,
                trust: Trust::Trusted,
                ring: 1 << 20,
                batch: 1,
                cpu: peer_cpu,
                name: String::new(),
                meta: Vec::new(),
                sizes: None,
            };
            let mut end = peer.start(&mut job).expect("starting the job");
            let pattern = Pattern::new(size);
            let mut seq = 1u64;
            group.bench_function(BenchmarkId::new(transport.name(), size), |b| {
                b.iter_custom(|iters| {
                    with_end!(&mut end, end => driver::round_trips(end, &pattern, &mut seq, iters))
                        .expect("round trips")
                });
            });
            with_end!(&mut end, end => ferry_bench::endpoint::Endpoint::round_trip(end, QUIT))
                .expect("ending the job");
            drop(end);
            peer.finish().expect("the peer's report");
        }
    }
    group.finish();
}

criterion_group!(benches, roundtrip);

fn main() {
    // Re-executed as the peer: serve, do not benchmark.
    if peer::is_peer() {
        std::process::exit(match peer::main() {
            code if code == std::process::ExitCode::SUCCESS => 0,
            _ => 1,
        });
    }
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
