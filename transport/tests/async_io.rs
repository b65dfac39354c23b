//! The async API (the `tokio` feature) against a real second process, under
//! tokio's multi-threaded runtime: raw frames both ways through a ring that
//! fills up (sends wait for room through write readiness), typed sends,
//! calls and dispatch, a peer that never reads (the send times out without
//! spinning: the process's CPU time stays small across the wait), and the
//! peer's death during an async wait.
#![cfg(feature = "tokio")]

mod support;

use ferry_transport::{
    AsyncConnection, CallError, Connection, ConnectionConfig, RecvError, Remote, SendError, Trust,
};
use std::time::{Duration, Instant};
use support::proto::*;
use support::*;

/// A small ring, so that a few frames fill it and sends wait for room.
const RING: usize = 4096;
/// Frames in the echo test.
const FRAMES: u64 = 2000;

/// The child test: runs the role the parent asked for, or nothing.
#[test]
fn child() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        "echo" => {
            let (mut conn, _control) = child_connect();
            let mut buf = Vec::new();
            loop {
                match conn.recv_frame(Some(OP_TIMEOUT)) {
                    Ok(frame) => {
                        buf.clear();
                        buf.extend_from_slice(frame.bytes());
                    }
                    Err(RecvError::Disconnected) => return,
                    Err(e) => panic!("echo: {e}"),
                }
                match conn.send_frame(&buf, Some(OP_TIMEOUT)) {
                    Ok(()) => {}
                    Err(SendError::Disconnected) => return,
                    Err(e) => panic!("echo send: {e}"),
                }
            }
        }
        "serve" => {
            let (mut conn, _control) = child_connect();
            serve(&mut conn, ServiceImpl::default());
        }
        "call-parent" => {
            let (mut conn, control) = child_connect();
            for a in 0..20u64 {
                let sum = conn
                    .send_sync(
                        Remote::<Service>::new(SERVICE_DESTINATION),
                        &Add { a, b: 1 },
                        OP_TIMEOUT,
                    )
                    .expect("a call to the async parent");
                assert_eq!(sum.value, a + 1);
            }
            tell(&control, b"done");
            // Stay until the parent has seen it all.
            let _ = conn.recv_frame(Some(OP_TIMEOUT));
        }
        "never-read" => {
            let (_conn, control) = child_connect();
            tell(&control, b"ready");
            std::thread::sleep(Duration::from_secs(120));
            panic!("not killed");
        }
        "async-sender-to-sleeper" => async_sender_to_sleeper(),
        "sleep" => {
            let (_conn, control) = child_connect();
            tell(&control, b"ready");
            std::thread::sleep(Duration::from_secs(120));
            panic!("not killed");
        }
        other => panic!("unknown role {other}"),
    }
}

fn raw_config() -> ConnectionConfig {
    ConnectionConfig::default()
        .ring_capacity(RING)
        .send_timeout(Some(OP_TIMEOUT))
}

/// Raw frames both ways through a 4 KiB ring: the async sender fills the
/// ring (so it waits for room again and again, woken by the peer's
/// releases through write readiness), the async receiver waits for the
/// echoes; some frames are larger than the ring and go out of line. Every
/// frame comes back intact, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_frames_echo_through_a_full_ring() {
    let (conn, peer) = connect_peer("echo", &raw_config(), &[]);
    let mut conn = AsyncConnection::new(conn).unwrap();
    let (conn, stats) = within("echo", OP_TIMEOUT * 4, async move {
        let mut sent = 0u64;
        let mut received = 0u64;
        let len_of = |seq: u64| match seq % 97 {
            0 => 3 * RING,
            n => 1200 + (n as usize * 13) % 700,
        };
        while received < FRAMES {
            // Three frames in flight: more than the 4 KiB ring holds of the
            // larger ones (so a send waits for room), fewer than would fill
            // both rings at once (the echo would then wait for us, and we
            // for it).
            while sent < FRAMES && sent - received < 3 {
                conn.send_frame(&make_frame(sent, len_of(sent)))
                    .await
                    .expect("async send");
                sent += 1;
            }
            let frame = conn.recv_frame().await.expect("async receive");
            check_frame(received, frame.bytes()).expect("an intact echo");
            assert_eq!(frame.bytes().len(), len_of(received));
            drop(frame);
            received += 1;
        }
        let stats = conn.get_ref().stats();
        (conn, stats)
    })
    .await;
    assert_eq!(stats.frames_received, FRAMES);
    assert!(stats.out_of_line_sent > 0, "{stats:?}");
    drop(conn);
    peer.expect_success();
}

/// Typed messages from an async task to a blocking service in another
/// process: a call answered, many sends, and a call that sees them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_send_and_call_to_a_service() {
    let config = service_config(Trust::Untrusted).ring_capacity(RING);
    let (conn, peer) = connect_peer("serve", &config, &[]);
    let mut conn = AsyncConnection::new(conn).unwrap();
    let to = Remote::<Service>::new(SERVICE_DESTINATION);
    within("typed", OP_TIMEOUT * 4, async move {
        let sum = conn
            .call(to, &Add { a: 40, b: 2 }, OP_TIMEOUT)
            .await
            .unwrap();
        assert_eq!(sum.value, 42);
        for seq in 0..500 {
            conn.send(to, &note(seq)).await.expect("async typed send");
        }
        let tally = conn.call(to, &Tally {}, OP_TIMEOUT).await.unwrap();
        assert_eq!(
            (
                tally.notes.to_native(),
                tally.bad.to_native(),
                tally.next_seq.to_native()
            ),
            (500, 0, 500)
        );
        drop(conn);
    })
    .await;
    peer.expect_success();
}

/// Async dispatch: a process calls us synchronously 20 times; the async
/// task's `dispatch` runs our handler and the replies go back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_dispatch_answers_a_peer_calling_us() {
    let config = service_config(Trust::Trusted).ring_capacity(RING);
    let (mut conn, peer) = connect_peer("call-parent", &config, &[]);
    conn.register(
        SERVICE_DESTINATION,
        Service::handler(ServiceImpl::default()),
    );
    let mut conn = AsyncConnection::new(conn).unwrap();
    let control = peer.control_clone();
    let handled = within("dispatch", OP_TIMEOUT * 2, async move {
        let mut handled = 0;
        while handled < 20 {
            handled += conn.dispatch().await.expect("async dispatch");
        }
        handled
    })
    .await;
    assert_eq!(handled, 20);
    assert_eq!(hear(&control), b"done");
    peer.expect_success();
}

/// The peer is SIGKILLed while an async receive waits and while an async
/// send waits for room: both end with `Disconnected`, promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_up_during_async_waits() {
    // A receive waiting for a frame that never comes.
    let (conn, mut peer) = connect_peer("never-read", &raw_config(), &[]);
    peer.expect_word(b"ready");
    let mut conn = AsyncConnection::new(conn).unwrap();
    let kill = peer.killer();
    let waiting = tokio::spawn(async move {
        let result = conn.recv_frame().await.map(|_| ());
        (result, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let killed = Instant::now();
    kill();
    let (result, seen) = within("recv after kill", OP_TIMEOUT, waiting)
        .await
        .unwrap();
    assert_eq!(result, Err(RecvError::Disconnected));
    assert!(seen >= killed);
    peer.kill();

    // A send waiting for room in a ring the peer never drains.
    let (conn, mut peer) = connect_peer("never-read", &raw_config(), &[]);
    peer.expect_word(b"ready");
    let mut conn = AsyncConnection::new(conn).unwrap();
    while conn.get_mut().try_send_frame(&[1; 200]).is_ok() {}
    let kill = peer.killer();
    let waiting = tokio::spawn(async move { conn.send_frame(&[2; 200]).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    kill();
    let result = within("send after kill", OP_TIMEOUT, waiting)
        .await
        .unwrap();
    assert_eq!(result, Err(SendError::Disconnected));
    peer.kill();
}

/// A peer that never reads: the async send gives up after the send timeout
/// with `TimedOut`, and the process waiting spent little CPU meanwhile (no
/// spinning). The sender is a child process of its own, so that the CPU
/// time measured is only its own.
#[test]
fn an_async_send_to_a_peer_that_never_reads_times_out_without_spinning() {
    let config = raw_config();
    let (conn, endpoint) = Connection::create(config.clone()).expect("create");
    let mut params = config_params(&config);
    params.push(("WAIT_MS", "1500".into()));
    let sender = spawn_peer("async-sender-to-sleeper", &params);
    sender.send_endpoint(endpoint);
    // We are the peer that never reads: we only keep the connection open.
    sender.expect_success();
    drop(conn);
}

/// The child side of the test above.
fn async_sender_to_sleeper() {
    let control = child_control();
    let endpoint = recv_endpoint(&control);
    let wait = Duration::from_millis(param("WAIT_MS"));
    let config = config_from_params().send_timeout(Some(wait));
    let conn = Connection::open(endpoint, config).expect("open");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let mut conn = AsyncConnection::new(conn).unwrap();
        while conn.get_mut().try_send_frame(&[1; 200]).is_ok() {}
        let before = cpu_time();
        let started = Instant::now();
        let result = conn.send_frame(&[2; 200]).await;
        let waited = started.elapsed();
        let spent = cpu_time() - before;
        assert_eq!(result, Err(SendError::TimedOut));
        assert!(
            waited >= wait,
            "gave up after {waited:?}, before the timeout"
        );
        // A spinning wait would burn about `wait` of CPU; a parked one a
        // few system calls.
        assert!(
            spent < wait / 10,
            "the wait used {spent:?} of CPU over {waited:?}"
        );
    });
}

/// Awaits `operation` for at most `limit`; a test that hangs fails.
async fn within<T>(
    what: &str,
    limit: Duration,
    operation: impl std::future::Future<Output = T>,
) -> T {
    tokio::time::timeout(limit, operation)
        .await
        .unwrap_or_else(|_| panic!("{what}: no result within {limit:?}"))
}

/// User and system CPU time of this process so far.
fn cpu_time() -> Duration {
    // SAFETY: `getrusage` writes one `rusage` into the zeroed value we own
    // (all-zero bytes are a valid `rusage`: plain integers).
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// A call whose reply never comes (the peer hangs in its handler): the
/// async call ends with `TimedOut` after its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_call_without_reply_times_out() {
    let config = service_config(Trust::Trusted).ring_capacity(RING);
    let (conn, peer) = connect_peer("serve", &config, &[]);
    let mut conn = AsyncConnection::new(conn).unwrap();
    let to = Remote::<Service>::new(SERVICE_DESTINATION);
    let result = within("call", OP_TIMEOUT, async move {
        conn.call(
            to,
            &Slow {
                millis: 1_000,
                token: 7,
            },
            Duration::from_millis(100),
        )
        .await
        .map(|reply| reply.token.to_native())
    })
    .await;
    assert_eq!(result.unwrap_err(), CallError::TimedOut);
    peer.kill_and_reap();
}

/// The async halves: four tasks send through their own `AsyncSender`s
/// (and one calls) while the receiving half's task dispatches (routing the
/// call's reply) — on the multi-threaded runtime, the tasks on any worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_halves_several_sending_tasks_and_a_call() {
    let config = service_config(Trust::Untrusted).ring_capacity(RING);
    let (conn, peer) = connect_peer("serve", &config, &[]);
    let (sender, mut receiving) = AsyncConnection::new(conn).unwrap().split().unwrap();
    let to = Remote::<Service>::new(SERVICE_DESTINATION);
    // The receiving half's task: routes the replies of the senders' calls.
    let driver = tokio::spawn(async move {
        loop {
            match receiving.dispatch().await {
                Ok(_) => {}
                Err(ferry_transport::DispatchError::Disconnected) => return,
                Err(e) => panic!("dispatch: {e}"),
            }
        }
    });
    let tasks: Vec<_> = (0..4u64)
        .map(|task| {
            let mut sender = sender.try_clone().unwrap();
            tokio::spawn(async move {
                for a in 0..100u64 {
                    let sum = sender
                        .call(to, &Add { a, b: task }, OP_TIMEOUT)
                        .await
                        .expect("an async call from a sending half");
                    assert_eq!(sum.value.to_native(), a + task);
                }
            })
        })
        .collect();
    within("sending tasks", OP_TIMEOUT * 4, async {
        for task in tasks {
            task.await.unwrap();
        }
    })
    .await;
    let mut sender = sender;
    within("notes", OP_TIMEOUT * 2, async {
        for seq in 0..300 {
            sender.send(to, &note(seq)).await.expect("async typed send");
        }
        let tally = sender.call(to, &Tally {}, OP_TIMEOUT).await.unwrap();
        assert_eq!(tally.next_seq.to_native(), 300);
        assert_eq!(tally.bad.to_native(), 0);
    })
    .await;
    drop(sender);
    driver.abort();
    let _ = driver.await;
    peer.expect_success();
}

/// A waiting task's spin yields to the other tasks of its thread: on a
/// current-thread runtime, a receive whose spin budget is an hour still
/// lets the task that sends it the frame run. (Both ends in this process on
/// purpose: the frame can only come from a task of the spinning thread.)
/// The runtime runs on a thread of its own, so that a spin holding the
/// thread fails the test instead of hanging it.
#[test]
fn a_spinning_wait_lets_the_other_tasks_of_its_thread_run() {
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let received = runtime.block_on(async {
            let config = ConnectionConfig::default().async_spin(Duration::from_secs(3600));
            let (a, b) = Connection::pair(config).expect("a connection pair");
            let (mut a, mut b) = (
                AsyncConnection::new(a).unwrap(),
                AsyncConnection::new(b).unwrap(),
            );
            let receiver = tokio::spawn(async move {
                let frame = a.recv_frame().await.expect("a frame");
                frame.bytes().to_vec()
            });
            // The receiver starts waiting (and spinning) first.
            tokio::task::yield_now().await;
            b.send_frame(b"from a task of the same thread")
                .await
                .expect("send");
            receiver.await.expect("the receiver")
        });
        let _ = done.send(received);
    });
    let received = outcome
        .recv_timeout(OP_TIMEOUT)
        .expect("the spinning receive held its thread");
    assert_eq!(received, b"from a task of the same thread");
}
