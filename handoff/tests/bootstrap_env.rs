//! The child side of the bootstrap in a single-threaded process (this test
//! has no libtest harness, so its re-executed child has one thread): the
//! channel is taken once, close-on-exec, and `FERRY_BOOTSTRAP_FD` is removed
//! from the environment, so the child's own children do not inherit it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_handoff::bootstrap::{self, BOOTSTRAP_ENV};
use ferry_handoff::{AllowAll, BootstrapError, Broker, BrokerEvent, ControlMessage};

const ROLE_ENV: &str = "FERRY_TEST_ROLE";

fn main() {
    if std::env::var_os(ROLE_ENV).is_some() {
        std::process::exit(child());
    }
    parent();
    println!("bootstrap_env: ok");
}

fn parent() {
    let mut broker = Broker::new(AllowAll).expect("broker");
    let mut command = Command::new(std::env::current_exe().expect("current_exe"));
    command.env(ROLE_ENV, "child").stdin(Stdio::null());
    let child = broker.spawn("single", command).expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut status = None;
    while status.is_none() {
        assert!(Instant::now() < deadline, "the child did not exit");
        broker
            .turn(Duration::from_millis(100), |e| {
                if let BrokerEvent::ChildExited {
                    child: who,
                    status: s,
                } = e
                {
                    if who.instance == child {
                        status = Some(s);
                    }
                }
            })
            .expect("turn");
    }
    let status = status.flatten().expect("reaped by the broker");
    assert!(status.success(), "child failed: {status:?}");
}

fn child() -> i32 {
    let check = |ok: bool, what: &str| {
        if !ok {
            eprintln!("bootstrap_env child: {what}");
        }
        ok
    };
    let channel = match bootstrap::channel_from_env() {
        Ok(channel) => channel,
        Err(e) => {
            eprintln!("bootstrap_env child: {e}");
            return 1;
        }
    };
    let mut ok = check(
        std::env::var_os(BOOTSTRAP_ENV).is_none(),
        "the variable is still in the environment",
    );
    let flags = rustix::io::fcntl_getfd(&channel).expect("fcntl");
    ok &= check(
        flags.contains(rustix::io::FdFlags::CLOEXEC),
        "the channel is not close-on-exec",
    );
    ok &= check(
        matches!(
            bootstrap::channel_from_env(),
            Err(BootstrapError::Missing | BootstrapError::AlreadyTaken)
        ),
        "the channel could be taken twice",
    );
    // A grandchild sees no variable.
    let grandchild = Command::new("/bin/sh")
        .args(["-c", &format!("test -z \"${{{BOOTSTRAP_ENV}+set}}\"")])
        .status()
        .expect("sh");
    ok &= check(grandchild.success(), "a grandchild inherited the variable");
    // The channel works: the broker's Hello is there.
    let mut buf = vec![0u8; ferry_handoff::message::MAX_ENCODED_LEN];
    let hello = channel
        .recv(&mut buf, Some(Duration::from_secs(10)))
        .expect("hello");
    ok &= check(
        matches!(
            ControlMessage::decode(&buf[..hello.len], hello.fds.len()),
            Ok(ControlMessage::Hello { you }) if you.service == "single"
        ),
        "no Hello",
    );
    if ok { 0 } else { 1 }
}
