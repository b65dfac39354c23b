//! A tarpc service between two processes over ferry.
//!
//! ```text
//! cargo run --release -p ferry-stacks --example tarpc_echo [-- uds]
//! ```
//!
//! This process listens at an abstract name and starts itself again as the
//! server, which connects. The server serves `Echo` (see
//! `ferry_stacks::tarpc_echo`) over the connection's frames: ferry-adapters'
//! `Frames` is a `Stream` + `Sink` of owned buffers, and
//! `tokio_serde::Framed::new(frames, Bincode::default())` is a tarpc
//! transport. Four tasks here then call it concurrently over one client;
//! dropping the client closes the connection and the server exits. With
//! `uds` the same runs over a Unix socket.

use ferry_stacks::process::{self, ServeSpec};
use ferry_stacks::{Link, Stack};
use ferry_transport::ConnectionConfig;
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Some(spec) = ServeSpec::from_env() {
        return Ok(spec?.run()?);
    }
    let link: Link = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("ferry")
        .parse()?;
    let config = ConnectionConfig::default();
    let (conn, server) = process::start(Stack::Tarpc, link, &config, process::self_command()?)?;
    println!(
        "tarpc over {link}: server process {:?} connected",
        server.id()
    );

    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let caller = ferry_stacks::stack::client(Stack::Tarpc, conn).await?;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for task in 0..4u32 {
            let mut caller = caller.clone();
            tasks.push(tokio::spawn(async move {
                for call in 0..1000u32 {
                    let request = bytes::Bytes::from(format!("task {task}, call {call}"));
                    let reply = caller
                        .echo(request.clone(), Duration::from_secs(10))
                        .await?;
                    assert_eq!(reply, request, "the echo differs");
                    if call % 250 == 0 {
                        println!("  {}", String::from_utf8_lossy(&reply));
                    }
                }
                Ok::<_, ferry_stacks::StackError>(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        let elapsed = started.elapsed();
        println!(
            "4000 calls from 4 tasks in {:.1} ms ({:.0} calls/s)",
            elapsed.as_secs_f64() * 1e3,
            4000.0 / elapsed.as_secs_f64()
        );
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    drop(runtime);
    server.finish(Duration::from_secs(10))?;
    println!("the server saw the connection close and exited");
    Ok(())
}
