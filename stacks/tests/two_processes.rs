//! tarpc and gRPC (tonic) between two real processes, over ferry and over a
//! Unix socket: concurrent calls from several tasks of a multi-threaded
//! runtime, each reply checked against its request, a clean end (the
//! server process sees the connection close and exits successfully), and a
//! server that dies (calls fail promptly, nothing hangs).
//!
//! The server is this test binary re-executed (`child`), started with a
//! `ServeSpec` in its environment.

use bytes::Bytes;
use ferry_stacks::process::{self, ServeSpec};
use ferry_stacks::{Caller, Link, Stack, StackError};
use ferry_testkit::process::{EXIT_TIMEOUT, OP_TIMEOUT, ReExec};
use ferry_transport::ConnectionConfig;
use std::time::Duration;

const HELPERS: ReExec = ReExec::new("FERRY_STACKS_TEST_ROLE", "FERRY_STACKS_TEST_P_");
/// How long one call may take before the test calls it a hang.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// Tasks calling at once, and calls each.
const TASKS: usize = 8;
const CALLS_PER_TASK: usize = 40;

/// The server process: serves what its `ServeSpec` says, then exits.
#[test]
fn child() {
    if let Some(spec) = ServeSpec::from_env() {
        spec.expect("the serve spec").run().expect("serving");
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A payload unique to (task, call), of a length that varies with both:
/// some frames are tiny, some larger than a ring's in-place maximum.
fn payload(task: usize, call: usize, large_every: usize) -> Bytes {
    let len = if call % large_every == large_every - 1 {
        700 * 1024 + task
    } else {
        1 + (task * 131 + call * 17) % 2000
    };
    (0..len)
        .map(|i| (i as u64 * 31 + task as u64 * 7 + call as u64) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// Runs `TASKS` tasks of `CALLS_PER_TASK` checked calls each on `caller`.
async fn concurrent_calls(caller: &Caller) -> Result<usize, StackError> {
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let mut caller = caller.clone();
        tasks.push(tokio::spawn(async move {
            for call in 0..CALLS_PER_TASK {
                let sent = payload(task, call, 10);
                let reply = caller.echo(sent.clone(), CALL_TIMEOUT).await?;
                if reply != sent {
                    return Err(StackError::WrongReply);
                }
            }
            Ok::<usize, StackError>(CALLS_PER_TASK)
        }));
    }
    let mut done = 0;
    for task in tasks {
        done += task.await.expect("a calling task panicked")?;
    }
    Ok(done)
}

/// Starts `stack`'s server over `link`, makes concurrent calls, closes the
/// connection, and requires the server to exit successfully.
fn calls_then_clean_end(stack: Stack, link: Link) {
    let config = ConnectionConfig::default();
    let command = HELPERS.command("child", "server", &[]);
    let (conn, server) =
        process::start(stack, link, &config, command).expect("starting the server");
    let runtime = runtime();
    let done = runtime.block_on(async {
        let caller = ferry_stacks::stack::client(stack, conn)
            .await
            .expect("the client");
        let done = tokio::time::timeout(OP_TIMEOUT * 4, concurrent_calls(&caller))
            .await
            .expect("the calls hung")
            .expect("the calls");
        drop(caller);
        done
    });
    // The client's tasks (and with them the connection) end with the runtime.
    drop(runtime);
    assert_eq!(done, TASKS * CALLS_PER_TASK);
    server
        .finish(EXIT_TIMEOUT)
        .expect("the server ends when the client closes the connection");
}

/// Starts the server, makes one call, kills the server, and requires the
/// next calls to fail (not hang, not succeed).
fn server_death_fails_calls(stack: Stack, link: Link) {
    let config = ConnectionConfig::default();
    let command = HELPERS.command("child", "server", &[]);
    let (conn, server) =
        process::start(stack, link, &config, command).expect("starting the server");
    let runtime = runtime();
    runtime.block_on(async {
        let mut caller = ferry_stacks::stack::client(stack, conn)
            .await
            .expect("the client");
        let reply = caller
            .echo(Bytes::from_static(b"before"), CALL_TIMEOUT)
            .await;
        assert_eq!(&reply.expect("a call before the kill")[..], b"before");
        drop(server); // SIGKILL and reap
        let after = tokio::time::timeout(
            OP_TIMEOUT,
            caller.echo(Bytes::from_static(b"after"), CALL_TIMEOUT),
        )
        .await
        .expect("a call to a dead server hung");
        assert!(
            after.is_err(),
            "a call to a dead server succeeded: {after:?}"
        );
        assert!(
            !matches!(after, Err(StackError::TimedOut)),
            "a call to a dead server waited for its deadline instead of failing: {after:?}"
        );
    });
}

#[test]
fn tarpc_over_ferry_concurrent_calls_then_clean_end() {
    calls_then_clean_end(Stack::Tarpc, Link::Ferry);
}

#[test]
fn grpc_over_ferry_concurrent_calls_then_clean_end() {
    calls_then_clean_end(Stack::Grpc, Link::Ferry);
}

#[test]
fn tarpc_over_unix_socket_concurrent_calls_then_clean_end() {
    calls_then_clean_end(Stack::Tarpc, Link::Unix);
}

#[test]
fn grpc_over_unix_socket_concurrent_calls_then_clean_end() {
    calls_then_clean_end(Stack::Grpc, Link::Unix);
}

#[test]
fn tarpc_over_ferry_calls_fail_when_the_server_dies() {
    server_death_fails_calls(Stack::Tarpc, Link::Ferry);
}

#[test]
fn grpc_over_ferry_calls_fail_when_the_server_dies() {
    server_death_fails_calls(Stack::Grpc, Link::Ferry);
}
