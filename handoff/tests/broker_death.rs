//! A broker killed with SIGKILL: its children notice.
//!
//! This test process starts a broker process ("mini-broker"), which spawns a
//! child ("notice-broker-gone") sharing its stdout pipe. The child says
//! "ready"; we SIGKILL the broker; the child must report that it noticed,
//! then exit (the pipe reaches end-of-file when its last writer is gone).

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{TEST_PATIENCE, role_command};

#[test]
fn child_role() {
    common::child_main();
}

#[test]
fn children_notice_when_the_broker_is_killed() {
    let mut command = role_command("mini-broker");
    command.stdout(Stdio::piped());
    let mut broker = command.spawn().unwrap();
    let stdout = broker.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
        // End of file: every writer (broker and child) is gone.
    });
    let wait_for = |what: &str| {
        let deadline = Instant::now() + TEST_PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.trim() == what => return,
                Ok(_) => {}
                Err(e) => panic!("waiting for {what:?}: {e}"),
            }
        }
    };
    wait_for("ready");
    let killed_at = Instant::now();
    broker.kill().unwrap();
    broker.wait().unwrap();
    wait_for("noticed broker gone");
    let noticed_after = killed_at.elapsed();
    // The child exits after noticing: the pipe closes and the reader ends.
    let deadline = Instant::now() + TEST_PATIENCE;
    loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("the child did not exit"),
        }
    }
    reader.join().unwrap();
    assert!(noticed_after < Duration::from_secs(10), "{noticed_after:?}");
    eprintln!("child noticed the broker's death {noticed_after:?} after SIGKILL");
}
