//! The fork pattern `Connection::pair` documents: create both ends, fork,
//! and let each process `leave` the end it does not use. Each process then
//! notices the other's death at once, and letting go of the unused end
//! closes nothing for the other.
//!
//! One test in a binary of its own: the children are real `fork`s of this
//! process (not re-execs), so no other test may be running threads that hold
//! locks at the fork.

use ferry_transport::{Connection, ConnectionConfig, RecvError};
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// A pipe: (read end, write end).
fn pipe() -> (OwnedFd, OwnedFd) {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe")
}

/// Reads one byte from `fd` within `WAIT`.
fn read_byte(fd: &OwnedFd) -> Option<u8> {
    let mut fds = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN)];
    let timeout = rustix::event::Timespec {
        tv_sec: WAIT.as_secs() as i64,
        tv_nsec: 0,
    };
    if !matches!(rustix::event::poll(&mut fds, Some(&timeout)), Ok(1)) {
        return None;
    }
    let mut byte = [0u8];
    matches!(rustix::io::read(fd, &mut byte), Ok(1)).then_some(byte[0])
}

fn fork() -> libc::pid_t {
    // SAFETY: the child only uses this process's own objects (its copies of
    // the connection and pipes) and ends with `_exit`; the only other
    // threads are libtest's waiting main thread and the hang-up watcher,
    // which is fork-safe (a child builds its own).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    pid
}

fn exit(code: i32) -> ! {
    // SAFETY: ends a forked child without running the parent's atexit
    // handlers or libtest's teardown.
    unsafe { libc::_exit(code) }
}

fn kill(pid: libc::pid_t) {
    // SAFETY: plain syscalls on a child of ours that has not been reaped.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

/// Serves one ping on `connection`, then idles until its peer goes.
fn serve_one_ping(connection: &mut Connection) -> Result<(), i32> {
    let ping = connection.recv_frame(Some(WAIT)).map_err(|_| 20)?;
    if ping.bytes() != b"ping" {
        return Err(21);
    }
    drop(ping);
    connection.send_frame(b"pong", Some(WAIT)).map_err(|_| 22)?;
    Ok(())
}

fn ping(connection: &mut Connection) {
    connection.send_frame(b"ping", Some(WAIT)).expect("ping");
    let pong = connection.recv_frame(Some(WAIT)).expect("pong");
    assert_eq!(pong.bytes(), b"pong");
}

#[test]
fn each_side_of_a_forked_pair_notices_the_others_death() {
    // 1. The parent keeps one end and notices its child's death.
    let (mut parent_end, child_end) = Connection::pair(ConnectionConfig::default()).expect("pair");
    let pid = fork();
    if pid == 0 {
        let mut mine = child_end;
        parent_end.leave();
        let code = match serve_one_ping(&mut mine) {
            // Idle until killed; the parent's end going away ends it too.
            Ok(()) => match mine.recv_frame(Some(Duration::from_secs(60))) {
                Err(RecvError::Disconnected) => 0,
                _ => 23,
            },
            Err(code) => code,
        };
        exit(code);
    }
    child_end.leave();
    // Letting go of the child's end closed nothing: the child answers.
    ping(&mut parent_end);
    kill(pid);
    assert!(
        matches!(
            parent_end.recv_frame(Some(WAIT)),
            Err(RecvError::Disconnected)
        ),
        "the parent notices its child's death"
    );
    assert!(!parent_end.peer_closed_cleanly(), "killed, not closed");

    // 2. A child notices its parent's death: a middle process makes the
    // pair and forks the grandchild; the test kills the middle process.
    let (ready_read, ready_write) = pipe();
    let (noticed_read, noticed_write) = pipe();
    let middle = fork();
    if middle == 0 {
        let (mut middle_end, grandchild_end) =
            Connection::pair(ConnectionConfig::default()).unwrap_or_else(|_| exit(30));
        let grandchild = fork();
        if grandchild == 0 {
            let mut mine = grandchild_end;
            middle_end.leave();
            if serve_one_ping(&mut mine).is_err() {
                exit(31);
            }
            let byte = match mine.recv_frame(Some(WAIT)) {
                Err(RecvError::Disconnected) => b'd',
                _ => b'x',
            };
            let _ = rustix::io::write(noticed_write.as_fd(), &[byte]);
            exit(0);
        }
        grandchild_end.leave();
        middle_end
            .send_frame(b"ping", Some(WAIT))
            .unwrap_or_else(|_| exit(32));
        match middle_end.recv_frame(Some(WAIT)) {
            Ok(pong) if pong.bytes() == b"pong" => {}
            _ => exit(33),
        }
        let _ = rustix::io::write(ready_write.as_fd(), b"r");
        // Wait to be killed.
        std::thread::sleep(Duration::from_secs(60));
        exit(34);
    }
    drop(ready_write);
    drop(noticed_write);
    assert_eq!(read_byte(&ready_read), Some(b'r'), "the pair talked");
    kill(middle);
    assert_eq!(
        read_byte(&noticed_read),
        Some(b'd'),
        "the grandchild notices its parent's death"
    );
}
