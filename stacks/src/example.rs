//! What the two examples (`tarpc_echo`, `grpc_echo`) run, one stack each:
//! this process listens (over ferry, or a Unix socket with the argument
//! `uds`) and starts itself again as the server, which connects; four tasks
//! here call `echo` 1000 times each over one client and check every reply;
//! dropping the client closes the connection and the server exits.

use crate::process::{self, ServeSpec};
use crate::{Link, Stack, StackError};
use ferry_transport::ConnectionConfig;
use std::time::{Duration, Instant};

/// Tasks calling concurrently.
const TASKS: u32 = 4;
/// Calls per task.
const CALLS: u32 = 1000;

/// The example's `main` for `stack` (`label` is its name in what is
/// printed): the server's work when this process is the server, the
/// client's otherwise.
pub fn main(stack: Stack, label: &str) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(spec) = ServeSpec::from_env() {
        return Ok(spec?.run()?);
    }
    let link: Link = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("ferry")
        .parse()?;
    process::quiet_tracing();
    let config = ConnectionConfig::default();
    let (conn, server) = process::start(stack, link, &config, process::self_command()?)?;
    println!(
        "{label} over {link}: server process {:?} connected",
        server.id()
    );

    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let caller = crate::stack::client(stack, conn).await?;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for task in 0..TASKS {
            let mut caller = caller.clone();
            tasks.push(tokio::spawn(async move {
                for call in 0..CALLS {
                    let request = bytes::Bytes::from(format!("task {task}, call {call}"));
                    let reply = caller
                        .echo(request.clone(), Duration::from_secs(10))
                        .await?;
                    assert_eq!(reply, request, "the echo differs");
                    if call % 250 == 0 {
                        println!("  {}", String::from_utf8_lossy(&reply));
                    }
                }
                Ok::<_, StackError>(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        let elapsed = started.elapsed();
        let calls = TASKS * CALLS;
        println!(
            "{calls} calls from {TASKS} tasks in {:.1} ms ({:.0} calls/s)",
            elapsed.as_secs_f64() * 1e3,
            f64::from(calls) / elapsed.as_secs_f64()
        );
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    drop(runtime);
    server.finish(Duration::from_secs(10))?;
    println!("the server saw the connection close and exited");
    Ok(())
}
