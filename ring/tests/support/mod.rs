//! Shared by the multi-process tests: a helper-process harness, a second raw
//! view of a region for playing the hostile peer, and self-checking traffic.
//! What is not specific to the ring (the child guard, bounded waits, the
//! checksummed frames, the raw mapping, descriptor counts) comes from
//! `ferry-testkit`; this module adds the ring's own parts.
//!
//! # Helper processes
//!
//! A test re-executes its own binary as the peer, the way ipc-channel tests
//! do: `current_exe() --exact <child test> --nocapture --test-threads=1`, with
//! [`ROLE_ENV`] naming what the child should do and [`FD_ENV`] the number of
//! the region's memfd, whose `FD_CLOEXEC` flag is cleared between `fork` and
//! `exec`. The child test function returns at once when [`ROLE_ENV`] is
//! absent, so in a normal run it is a no-op that passes. A child reports
//! failure through its exit status (a panic makes libtest exit 101) and its
//! stderr, which it shares with the parent. [`ChildProcess`] kills and reaps
//! the child when dropped, so a failing test leaves no process behind, and
//! every wait for a child is bounded.

#![allow(dead_code)] // each test file uses its own part of this module
#![allow(unused_imports)] // likewise for the re-exports

use ferry_ring::{
    Consumer, Producer, RecvError, Region, SendError, Stats, WaitStrategy, frame::FRAME_ALIGN,
};
use ferry_testkit::process::ReExec;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use ferry_testkit::bounded::{BoundedThread, bounded, spawn_bounded, wait_until};
pub use ferry_testkit::fds::open_descriptors_of;
pub use ferry_testkit::payload::{Sizes, check_frame, write_frame};
/// A helper process; dropping it kills and reaps it.
pub use ferry_testkit::process::ChildGuard as ChildProcess;
pub use ferry_testkit::process::{EXIT_TIMEOUT, OP_TIMEOUT};
pub use ferry_testkit::shm::RawMap;

/// Names the role a re-executed test binary plays; absent in a normal run.
pub const ROLE_ENV: &str = "FERRY_TEST_CHILD_ROLE";
/// The number of the inherited memfd in the child.
pub const FD_ENV: &str = "FERRY_TEST_CHILD_FD";
/// The numbers of further inherited descriptors, comma-separated.
pub const EXTRA_FDS_ENV: &str = "FERRY_TEST_CHILD_EXTRA_FDS";
/// Prefix of the environment variables that carry a role's parameters.
const PARAM_PREFIX: &str = "FERRY_TEST_CHILD_P_";
/// How this test binary re-executes itself.
const HELPERS: ReExec = ReExec::new(ROLE_ENV, PARAM_PREFIX);

/// Byte offsets in the shared ring header (ring/src/layout.rs). Written out
/// here on purpose: a peer in another process knows the layout only by these
/// numbers, and the table tests fail if the crate moves a field.
pub mod offsets {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 8;
    pub const CAPACITY: usize = 16;
    pub const TAIL: usize = 128;
    pub const DATA_SEQ: usize = 136;
    pub const PRODUCER_CLOSED: usize = 140;
    pub const HEAD: usize = 256;
    pub const SPACE_SEQ: usize = 264;
    pub const CONSUMER_CLOSED: usize = 268;
    pub const PRODUCER_PARKED: usize = 384;
    pub const CONSUMER_PARKED: usize = 512;
    pub const DATA: usize = 640;
}

/// The parked words (64-bit, at `offsets::*_PARKED`), as a peer in another
/// process knows them: two bits, a 30-bit sleep epoch above them, and in the
/// upper half the value of the peer's sequence word the side sleeps on.
pub mod parked {
    /// The side sleeps (or is about to) on the futex.
    pub const ON_FUTEX: u64 = 1;
    /// The side waits in an event loop for its notification socket.
    pub const ON_EVENT: u64 = 2;
    /// The epoch starts at this bit.
    pub const EPOCH_SHIFT: u32 = 2;
    /// The sequence value starts at this bit.
    pub const SEQ_SHIFT: u32 = 32;
}

/// Whether the parked word at `flag_offset` announces a futex sleep.
pub fn parked_on_futex(map: &RawMap, flag_offset: usize) -> bool {
    map.load_u64(flag_offset) & parked::ON_FUTEX != 0
}

// ---------------------------------------------------------------------------
// Parent side: spawning helper processes.

/// Re-executes this test binary to run `child_test` (the name of a test
/// function, matched exactly) in `role`, inheriting `region`'s memfd.
pub fn spawn_child(
    child_test: &str,
    role: &str,
    region: &Region,
    params: &[(&str, String)],
) -> ChildProcess {
    spawn_child_with_fds(child_test, role, region, params, &[])
}

/// [`spawn_child`], and the child also inherits `extra` (taken there with
/// [`inherited_extra_fds`], in the same order).
pub fn spawn_child_with_fds(
    child_test: &str,
    role: &str,
    region: &Region,
    params: &[(&str, String)],
    extra: &[BorrowedFd<'_>],
) -> ChildProcess {
    let fd = region
        .fd()
        .expect("a cross-process test needs a memfd region");
    let mut keep: Vec<i32> = vec![fd.as_raw_fd()];
    keep.extend(extra.iter().map(|fd| fd.as_raw_fd()));
    // The command dies with the parent (testkit's pre_exec hook); ours
    // below keeps the memfd (and the extra descriptors) open across exec.
    let mut cmd = HELPERS.command(child_test, role, params);
    cmd.env(FD_ENV, keep[0].to_string());
    let extra_list: Vec<String> = keep[1..].iter().map(i32::to_string).collect();
    cmd.env(EXTRA_FDS_ENV, extra_list.join(","));
    // Runs in the forked child, before exec.
    let keep_open = move || -> std::io::Result<()> {
        for &raw in &keep {
            // SAFETY: `raw` names a descriptor the parent keeps open across
            // this spawn (the region's memfd or one the caller lent us);
            // the forked child has a copy of the same table.
            let fd = unsafe { BorrowedFd::borrow_raw(raw) };
            // Keep it across exec; every other descriptor stays
            // close-on-exec.
            rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
        }
        Ok(())
    };
    // SAFETY: between fork and exec only async-signal-safe calls are
    // allowed. `keep_open` iterates over a vector built before the fork (no
    // allocation) and makes one system call per descriptor through rustix's
    // raw-syscall backend, fcntl(F_SETFD), with no lock and no access to
    // state another thread of the parent could have left inconsistent.
    unsafe { cmd.pre_exec(keep_open) };
    let child = cmd.spawn().expect("spawning the helper process");
    ChildProcess::new(child, role)
}

/// Whether thread `tid` of this process is asleep in the kernel (state `S`,
/// which for a Park endpoint means blocked in futex_wait).
pub fn thread_is_sleeping(tid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")) else {
        return false;
    };
    // "tid (comm) S ...": the state follows the last ')'.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        == Some("S")
}

/// The (device, inode) of a region's memfd.
pub fn memfd_identity(region: &Region) -> (u64, u64) {
    ferry_testkit::fds::identity(region.fd().expect("memfd region"))
}

/// The parameter naming the socket a socket peer inherits.
const SOCKET_PARAM: &str = "SOCKET";

/// Re-executes this test binary to run `child_test` in `role`, connected to
/// this process by a SEQPACKET socketpair (no region): for an attacker that
/// sends descriptors of its own making. Returns the child and our end; the
/// child takes its end with [`inherited_socket`].
pub fn spawn_socket_peer(
    child_test: &str,
    role: &str,
    params: &[(&str, String)],
) -> (ChildProcess, OwnedFd) {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let (ours, theirs) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .expect("socketpair");
    let raw = theirs.as_raw_fd();
    let mut params = params.to_vec();
    params.push((SOCKET_PARAM, raw.to_string()));
    let mut cmd = HELPERS.command(child_test, role, &params);
    let keep_socket = move || -> std::io::Result<()> {
        // SAFETY: `theirs` stays open in the parent across this spawn, so
        // the forked child's copy of the table holds it.
        let fd = unsafe { BorrowedFd::borrow_raw(raw) };
        rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
        Ok(())
    };
    // SAFETY: between fork and exec only async-signal-safe work is allowed:
    // one raw fcntl(F_SETFD) system call through rustix, no allocation.
    unsafe { cmd.pre_exec(keep_socket) };
    let child = cmd.spawn().expect("spawning the helper process");
    drop(theirs);
    (ChildProcess::new(child, role), ours)
}

/// Waits at most `limit` for `fd` to become readable; true if it did.
pub fn readable_within(fd: BorrowedFd<'_>, limit: Duration) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let timeout = Timespec::try_from(limit).expect("a finite limit");
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    loop {
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(n) => return n > 0,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => panic!("poll: {e}"),
        }
    }
}

/// Sends `bytes` and `fd` as one message on a SEQPACKET socket.
pub fn send_with_fd(socket: &OwnedFd, bytes: &[u8], fd: BorrowedFd<'_>) {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [fd];
    assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
    rustix::net::sendmsg(
        socket,
        &[std::io::IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )
    .expect("sendmsg");
}

/// Receives one message of at most 64 bytes with at most one descriptor,
/// waiting at most [`OP_TIMEOUT`].
pub fn recv_with_fd(socket: &OwnedFd) -> (Vec<u8>, Option<OwnedFd>) {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    assert!(
        readable_within(socket.as_fd(), OP_TIMEOUT),
        "nothing received from the helper process"
    );
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut buf = [0u8; 64];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = rustix::net::recvmsg(
        socket,
        &mut iov,
        &mut control,
        RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
    )
    .expect("recvmsg");
    let mut fd = None;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = message {
            fd = fds.next();
        }
    }
    (buf[..msg.bytes].to_vec(), fd)
}

/// This process's resident memory in KiB: (VmRSS, RssShmem).
pub fn resident_kib() -> (u64, u64) {
    (status_kib("VmRSS:"), status_kib("RssShmem:"))
}

/// A `kB` field of /proc/self/status.
pub fn status_kib(name: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /proc/self/status"))
}

// ---------------------------------------------------------------------------
// Child side.

/// The socket a socket peer ([`spawn_socket_peer`]) inherited. Call once.
pub fn inherited_socket() -> OwnedFd {
    static TAKEN: AtomicBool = AtomicBool::new(false);
    assert!(
        !TAKEN.swap(true, Ordering::SeqCst),
        "the inherited socket can be taken only once"
    );
    let raw: i32 = param(SOCKET_PARAM);
    // SAFETY: borrowed only for this fcntl, which checks `raw` is open.
    rustix::io::fcntl_getfd(unsafe { BorrowedFd::borrow_raw(raw) })
        .expect("the inherited socket is open");
    // SAFETY: the parent cleared FD_CLOEXEC on this socket for us and named
    // it in the parameter; nothing else in this process owns it, and TAKEN
    // makes this the only OwnedFd for it.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

/// The role this process was started in, or `None` in a normal test run.
pub fn child_role() -> Option<String> {
    HELPERS.role()
}

/// A parameter the parent passed to this child.
pub fn param<T: std::str::FromStr>(name: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    HELPERS.param(name)
}

/// Opens the region whose memfd the parent passed down. Call once.
pub fn inherited_region() -> Arc<Region> {
    static TAKEN: AtomicBool = AtomicBool::new(false);
    assert!(
        !TAKEN.swap(true, Ordering::SeqCst),
        "the inherited memfd can be taken only once"
    );
    let raw: i32 = std::env::var(FD_ENV)
        .expect("FERRY_TEST_CHILD_FD is set in a helper process")
        .parse()
        .expect("a descriptor number");
    // Make sure the number names an open descriptor before owning it.
    // SAFETY: borrowed only for this fcntl; `raw` is checked to be open.
    rustix::io::fcntl_getfd(unsafe { BorrowedFd::borrow_raw(raw) })
        .expect("the inherited memfd is open");
    // SAFETY: the parent cleared FD_CLOEXEC on this memfd for us and named
    // it in FD_ENV; nothing else in this process owns it, and TAKEN makes
    // this the only OwnedFd for it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    Arc::new(Region::open(fd).expect("the inherited memfd opens as a region"))
}

/// Takes the further descriptors the parent passed down with
/// [`spawn_child_with_fds`]. Call once.
pub fn inherited_extra_fds() -> Vec<OwnedFd> {
    static TAKEN: AtomicBool = AtomicBool::new(false);
    assert!(
        !TAKEN.swap(true, Ordering::SeqCst),
        "the inherited descriptors can be taken only once"
    );
    let list = std::env::var(EXTRA_FDS_ENV).expect("FERRY_TEST_CHILD_EXTRA_FDS is set");
    list.split(',')
        .filter(|n| !n.is_empty())
        .map(|n| {
            let raw: i32 = n.parse().expect("a descriptor number");
            // SAFETY: borrowed only for this fcntl, which checks it is open.
            rustix::io::fcntl_getfd(unsafe { BorrowedFd::borrow_raw(raw) })
                .expect("the inherited descriptor is open");
            // SAFETY: the parent cleared FD_CLOEXEC on this descriptor for
            // us and named it in EXTRA_FDS_ENV; nothing else in this
            // process owns it, and TAKEN makes this the only OwnedFd for it.
            unsafe { OwnedFd::from_raw_fd(raw) }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Self-checking traffic.

/// Frame lengths from 0 to `max` inclusive, reproducible from `seed`:
/// mostly small frames (the soak stays fast in debug builds), with every
/// size up to the maximum, and lengths up to two frame alignments below the
/// maximum, mixed in.
pub fn frame_sizes(seed: u64, max: usize) -> Sizes {
    Sizes::frames(seed, max, FRAME_ALIGN * 2)
}

/// What one side of a traffic run does; passed to helper processes through
/// the environment.
#[derive(Debug, Clone, Copy)]
pub struct Traffic {
    /// Seeds the frame lengths (both sides must agree).
    pub seed: u64,
    /// Frames to send; `u64::MAX` streams until told to stop.
    pub frames: u64,
    pub strategy: WaitStrategy,
    /// 0: commit/release each frame; n: batches of 1..=n deferred frames.
    pub batch: u32,
    /// Every `stall_every` frames, wait until the peer is parked (its parked
    /// word announces a futex sleep), then pause: forces the peer to sleep.
    pub stall_every: u64,
    /// Consumer: copy frames out (`recv_into`) instead of reading in place.
    pub copy_out: bool,
    /// Producer: commit the last `defer_last` frames deferred and never
    /// flush them: dropping the producer must publish them.
    pub defer_last: u64,
    /// Give up (and fail) after this long: a helper must never outlive its
    /// test by much, even if the parent forgets it.
    pub limit: Duration,
}

impl Traffic {
    pub fn new(seed: u64, frames: u64, strategy: WaitStrategy) -> Traffic {
        Traffic {
            seed,
            frames,
            strategy,
            batch: 0,
            stall_every: 0,
            copy_out: false,
            defer_last: 0,
            limit: Duration::from_secs(300),
        }
    }

    pub fn to_params(self) -> Vec<(&'static str, String)> {
        vec![
            ("SEED", self.seed.to_string()),
            ("FRAMES", self.frames.to_string()),
            ("STRATEGY", self.strategy.to_string()),
            ("BATCH", self.batch.to_string()),
            ("STALL_EVERY", self.stall_every.to_string()),
            ("COPY_OUT", self.copy_out.to_string()),
            ("DEFER_LAST", self.defer_last.to_string()),
            ("LIMIT_MS", self.limit.as_millis().to_string()),
        ]
    }

    pub fn from_params() -> Traffic {
        Traffic {
            seed: param("SEED"),
            frames: param("FRAMES"),
            strategy: param::<String>("STRATEGY")
                .parse()
                .expect("a wait strategy"),
            batch: param("BATCH"),
            stall_every: param("STALL_EVERY"),
            copy_out: param("COPY_OUT"),
            defer_last: param("DEFER_LAST"),
            limit: Duration::from_millis(param("LIMIT_MS")),
        }
    }
}

/// Waits, for at most 10 s, until the parked word at `flag_offset`
/// announces a futex sleep, then pauses a little so the parked side is
/// really asleep.
fn stall_until_parked(map: &RawMap, flag_offset: usize) {
    wait_until("the peer to park", Duration::from_secs(10), || {
        parked_on_futex(map, flag_offset)
    });
    std::thread::sleep(Duration::from_millis(10));
}

/// How a producer run ended.
#[derive(Debug)]
pub struct Produced {
    pub sent: u64,
    pub stats: Stats,
    /// `Some` when sending stopped on an error (streaming runs end so).
    pub error: Option<SendError>,
}

/// Sends `traffic.frames` self-checking frames, then drops the producer
/// (closing the ring). Panics on any error but those a streaming run
/// (`frames == u64::MAX`) ends with, which it returns. `progress` counts the
/// frames sent so far.
pub fn produce(mut tx: Producer, traffic: Traffic, progress: Option<&AtomicU64>) -> Produced {
    let map =
        (traffic.stall_every > 0).then(|| RawMap::new(tx.region().fd().expect("memfd region")));
    let mut sizes = frame_sizes(traffic.seed, tx.max_payload());
    let mut batch = fastrand::Rng::with_seed(traffic.seed ^ 0xBA7C);
    let mut pending = 0u32;
    let mut batch_target = 0u32;
    let started = Instant::now();
    let streaming = traffic.frames == u64::MAX;
    let mut error = None;
    let mut seq = 0u64;
    while seq < traffic.frames {
        if seq % 1024 == 0 {
            assert!(
                started.elapsed() < traffic.limit,
                "producer still running after {:?} at frame {seq}",
                traffic.limit
            );
        }
        let len = sizes.next_len();
        let defer = traffic.frames - seq <= traffic.defer_last;
        let result = if traffic.batch == 0 {
            // Now and then reserve more than needed and shrink before the
            // commit, as a serializer does (the padding, if any, was decided
            // for the larger frame).
            let reserve = if batch.u32(0..8) == 0 {
                (len + batch.usize(0..=256)).min(tx.max_payload())
            } else {
                len
            };
            tx.reserve(reserve, Some(OP_TIMEOUT)).map(|mut grant| {
                grant.shrink_to(len);
                write_frame(seq, &mut grant);
                if defer {
                    grant.commit_deferred();
                } else {
                    grant.commit();
                }
            })
        } else {
            if pending == 0 {
                batch_target = batch.u32(1..=traffic.batch);
            }
            // No flush before waiting: a producer that finds the ring full
            // publishes its deferred frames itself (batches larger than the
            // ring would deadlock otherwise).
            tx.reserve(len, Some(OP_TIMEOUT)).map(|mut grant| {
                write_frame(seq, &mut grant);
                pending += 1;
                if pending >= batch_target && !defer {
                    grant.commit();
                    pending = 0;
                } else {
                    grant.commit_deferred();
                }
            })
        };
        match result {
            Ok(()) => {}
            Err(e @ (SendError::Disconnected | SendError::Closed)) if streaming => {
                error = Some(e);
                break;
            }
            Err(e) => panic!("sending frame {seq} ({len} B): {e}"),
        }
        seq += 1;
        if let Some(progress) = progress {
            progress.store(seq, Ordering::Release);
        }
        if let Some(map) = &map {
            if seq % traffic.stall_every == 0 && traffic.frames - seq > 1000 {
                stall_until_parked(map, offsets::CONSUMER_PARKED);
            }
        }
    }
    let stats = tx.stats();
    if error.is_none() {
        assert_eq!(stats.frames, traffic.frames, "frames committed");
    }
    drop(tx);
    Produced {
        sent: seq,
        stats,
        error,
    }
}

/// How a consumer run ended.
#[derive(Debug)]
pub struct Consumed {
    pub received: u64,
    pub stats: Stats,
    /// What ended the run: `Closed` after an orderly close.
    pub end: RecvError,
}

/// Receives and checks frames until the ring reports an error (`Closed`
/// after an orderly close), requiring exactly `traffic.frames` of them when
/// that is finite. Every byte of every frame is checked, in order, with no
/// loss and no duplicate. `progress` counts the frames received so far.
pub fn consume(mut rx: Consumer, traffic: Traffic, progress: Option<&AtomicU64>) -> Consumed {
    let map =
        (traffic.stall_every > 0).then(|| RawMap::new(rx.region().fd().expect("memfd region")));
    let mut sizes = frame_sizes(traffic.seed, rx.max_payload());
    let mut batch = fastrand::Rng::with_seed(traffic.seed ^ 0x5E1E);
    let mut batch_target = 0u32;
    let mut pending = 0u32;
    let mut buf = Vec::new();
    let started = Instant::now();
    let mut seq = 0u64;
    let end = loop {
        if seq % 1024 == 0 {
            assert!(
                started.elapsed() < traffic.limit,
                "consumer still running after {:?} at frame {seq}",
                traffic.limit
            );
        }
        if traffic.batch > 0 && pending == 0 {
            batch_target = batch.u32(1..=traffic.batch);
        }
        // No flush before waiting either: a consumer that finds the ring
        // empty gives back the room of its deferred releases itself.
        let len = if traffic.copy_out {
            match rx.recv_into(&mut buf, Some(OP_TIMEOUT)) {
                Ok(len) => {
                    check_frame(seq, &buf).unwrap_or_else(|e| panic!("{e}"));
                    len
                }
                Err(e) => break e,
            }
        } else {
            match rx.peek(Some(OP_TIMEOUT)) {
                Ok(frame) => {
                    let len = frame.len();
                    check_frame(seq, frame.payload()).unwrap_or_else(|e| panic!("{e}"));
                    pending += 1;
                    if traffic.batch == 0 || pending >= batch_target {
                        frame.release();
                        pending = 0;
                    } else {
                        frame.release_deferred();
                    }
                    len
                }
                Err(e) => break e,
            }
        };
        let want = sizes.next_len();
        assert_eq!(len, want, "length of frame {seq}");
        seq += 1;
        if let Some(progress) = progress {
            progress.store(seq, Ordering::Release);
        }
        if let Some(map) = &map {
            if seq % traffic.stall_every == 0 && traffic.frames - seq > 1000 {
                stall_until_parked(map, offsets::PRODUCER_PARKED);
            }
        }
    };
    assert!(
        !matches!(end, RecvError::TimedOut | RecvError::Corrupt(_)),
        "receiving frame {seq}: {end}"
    );
    if traffic.frames != u64::MAX {
        assert_eq!(end, RecvError::Closed, "after frame {seq}");
        assert_eq!(seq, traffic.frames, "frames received before the close");
        // Closed stays closed.
        assert_eq!(rx.try_peek().unwrap_err(), RecvError::Closed);
    }
    let stats = rx.stats();
    assert_eq!(stats.frames, seq, "frames released");
    Consumed {
        received: seq,
        stats,
        end,
    }
}
