//! Shared by the multi-process tests: a helper-process harness, a second raw
//! view of a region for playing the hostile peer, and self-checking traffic.
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

use ferry_ring::{
    Consumer, Producer, RecvError, Region, SendError, Stats, WaitStrategy, frame::FRAME_ALIGN,
};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Names the role a re-executed test binary plays; absent in a normal run.
pub const ROLE_ENV: &str = "FERRY_TEST_CHILD_ROLE";
/// The number of the inherited memfd in the child.
pub const FD_ENV: &str = "FERRY_TEST_CHILD_FD";
/// Prefix of the environment variables that carry a role's parameters.
const PARAM_PREFIX: &str = "FERRY_TEST_CHILD_P_";

/// How long any single blocking operation may take before the test calls it
/// a hang. Generous: the machine is shared, and this only bounds bugs.
pub const OP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a test waits for a child to exit once it should.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

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

// ---------------------------------------------------------------------------
// Parent side: spawning and reaping helper processes.

/// A helper process running this test binary in some role. Dropping it kills
/// (SIGKILL) and reaps the process if it still runs.
pub struct ChildProcess {
    child: Option<Child>,
    label: String,
}

/// Re-executes this test binary to run `child_test` (the name of a test
/// function, matched exactly) in `role`, inheriting `region`'s memfd.
pub fn spawn_child(
    child_test: &str,
    role: &str,
    region: &Region,
    params: &[(&str, String)],
) -> ChildProcess {
    let fd = region
        .fd()
        .expect("a cross-process test needs a memfd region");
    let raw = fd.as_raw_fd();
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", child_test, "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, role)
        .env(FD_ENV, raw.to_string())
        .stdin(Stdio::null())
        // libtest's own chatter; the child's panics go to the shared stderr.
        .stdout(Stdio::null());
    for (key, value) in params {
        cmd.env(format!("{PARAM_PREFIX}{key}"), value);
    }
    // Runs in the forked child, before exec.
    let keep_memfd = move || -> std::io::Result<()> {
        // SAFETY: `raw` is the region's memfd, which the parent keeps open
        // across this spawn; the forked child has a copy of the same table.
        let fd = unsafe { BorrowedFd::borrow_raw(raw) };
        // Keep the memfd across exec; every other descriptor stays
        // close-on-exec.
        rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
        // If the test process dies without reaping us, die too.
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
        Ok(())
    };
    // SAFETY: between fork and exec only async-signal-safe calls are
    // allowed. `keep_memfd` makes exactly two system calls through rustix's
    // raw-syscall backend, fcntl(F_SETFD) and prctl(PR_SET_PDEATHSIG), with
    // no allocation, no lock and no access to state another thread of the
    // parent could have left inconsistent.
    unsafe { cmd.pre_exec(keep_memfd) };
    let child = cmd.spawn().expect("spawning the helper process");
    ChildProcess {
        label: format!("helper process {} ({role})", child.id()),
        child: Some(child),
    }
}

impl ChildProcess {
    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends SIGKILL (if the child has not been reaped yet).
    pub fn kill(&mut self) {
        if let Some(child) = &mut self.child {
            child.kill().expect("kill(SIGKILL)");
        }
    }

    /// The exit status if the child has exited (reaping it), else `None`.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = child.try_wait().expect("waitpid")?;
        self.child = None;
        Some(status)
    }

    /// Waits (waitpid) for the child to exit, for at most `limit`; on
    /// timeout kills it and panics.
    pub fn wait_timeout(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_wait() {
                return status;
            }
            assert!(self.child.is_some(), "{} was already reaped", self.label);
            if Instant::now() >= deadline {
                self.kill();
                panic!("{} still running after {limit:?}: killed", self.label);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits for the child to exit and requires success.
    pub fn expect_success(mut self) {
        let status = self.wait_timeout(EXIT_TIMEOUT);
        assert!(
            status.success(),
            "{} failed ({status}); its stderr is above",
            self.label
        );
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A thread whose result the test waits for with a time limit.
pub struct BoundedThread<T> {
    what: String,
    rx: std::sync::mpsc::Receiver<T>,
    handle: std::thread::JoinHandle<()>,
}

/// Runs `f` on a new thread; collect its result with
/// [`BoundedThread::join_within`].
pub fn spawn_bounded<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> BoundedThread<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::Builder::new()
        .name(what.to_owned())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawning a thread");
    BoundedThread {
        what: what.to_owned(),
        rx,
        handle,
    }
}

impl<T> BoundedThread<T> {
    /// The thread's result, waiting at most `limit`: a hang becomes a test
    /// failure instead of a stuck run (the thread is then abandoned). A
    /// panic on the thread is re-raised here.
    pub fn join_within(self, limit: Duration) -> T {
        match self.rx.recv_timeout(limit) {
            Ok(value) => {
                self.handle.join().expect("thread finished");
                value
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match self.handle.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(()) => unreachable!("the thread sends before it ends"),
            },
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!("{}: no result after {limit:?} (hang)", self.what)
            }
        }
    }
}

/// Runs `f` on a thread and waits at most `limit` for it.
pub fn bounded<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    spawn_bounded(what, f).join_within(limit)
}

/// Polls `cond` every millisecond for at most `limit`; panics on timeout.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
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
    let stat = rustix::fs::fstat(region.fd().expect("memfd region")).expect("fstat");
    (stat.st_dev, stat.st_ino)
}

/// How many descriptors of this process refer to the memfd `(dev, ino)`.
pub fn open_descriptors_of(identity: (u64, u64)) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|entry| std::fs::metadata(entry.path()).ok())
        .filter(|meta| (meta.dev(), meta.ino()) == identity)
        .count()
}

// ---------------------------------------------------------------------------
// Child side.

/// The role this process was started in, or `None` in a normal test run.
pub fn child_role() -> Option<String> {
    std::env::var(ROLE_ENV).ok()
}

/// A parameter the parent passed to this child.
pub fn param<T: FromStr>(name: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    let raw = std::env::var(format!("{PARAM_PREFIX}{name}"))
        .unwrap_or_else(|_| panic!("parameter {name} missing"));
    raw.parse()
        .unwrap_or_else(|e| panic!("parameter {name}={raw}: {e:?}"))
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

// ---------------------------------------------------------------------------
// A raw second view of a region: the hostile peer's hands.

/// A second `MAP_SHARED` mapping of a region's memfd, through which a test
/// writes whatever it likes into the ring. All access is atomic, so the
/// scribbling itself is free of data races.
pub struct RawMap {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: a RawMap is a mapping it owns; every access goes through atomics.
unsafe impl Send for RawMap {}
// SAFETY: as above.
unsafe impl Sync for RawMap {}

impl RawMap {
    /// Maps the whole memfd read-write and shared.
    pub fn new(fd: BorrowedFd<'_>) -> RawMap {
        let len = rustix::fs::fstat(fd).expect("fstat").st_size as usize;
        assert!(len > 0);
        // SAFETY: a fresh mapping chosen by the kernel (null hint), of a
        // memfd sealed against shrinking, so every mapped page stays backed.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                fd.as_fd(),
                0,
            )
        }
        .expect("mmap");
        RawMap {
            ptr: ptr.cast(),
            len,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn u64_at(&self, offset: usize) -> &AtomicU64 {
        assert!(offset % 8 == 0 && offset + 8 <= self.len, "u64 at {offset}");
        // SAFETY: in bounds and 8-aligned (the mapping is page-aligned); the
        // mapping lives as long as `self`; AtomicU64 is valid for any bits.
        unsafe { AtomicU64::from_ptr(self.ptr.add(offset).cast()) }
    }

    pub fn u32_at(&self, offset: usize) -> &AtomicU32 {
        assert!(offset % 4 == 0 && offset + 4 <= self.len, "u32 at {offset}");
        // SAFETY: as in `u64_at`, for a 4-aligned u32.
        unsafe { AtomicU32::from_ptr(self.ptr.add(offset).cast()) }
    }

    pub fn u8_at(&self, offset: usize) -> &AtomicU8 {
        assert!(offset < self.len, "u8 at {offset}");
        // SAFETY: in bounds; a byte is always aligned.
        unsafe { AtomicU8::from_ptr(self.ptr.add(offset)) }
    }

    pub fn store_u64(&self, offset: usize, value: u64) {
        self.u64_at(offset).store(value, Ordering::SeqCst);
    }

    pub fn store_u32(&self, offset: usize, value: u32) {
        self.u32_at(offset).store(value, Ordering::SeqCst);
    }

    pub fn load_u64(&self, offset: usize) -> u64 {
        self.u64_at(offset).load(Ordering::SeqCst)
    }

    pub fn load_u32(&self, offset: usize) -> u32 {
        self.u32_at(offset).load(Ordering::SeqCst)
    }
}

impl Drop for RawMap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping `new` made; no reference
        // into it outlives `self` (they all borrow `self`).
        let _ = unsafe { rustix::mm::munmap(self.ptr.cast(), self.len) };
    }
}

// ---------------------------------------------------------------------------
// Self-checking traffic.

/// Payload lengths from 0 to `max` inclusive, reproducible from a seed, so
/// the consumer knows the length of every frame it should get. Mostly small
/// frames (the soak stays fast in debug builds), with every size up to the
/// maximum, and the maximum itself, mixed in.
pub struct Sizes {
    rng: fastrand::Rng,
    max: usize,
}

impl Sizes {
    pub fn new(seed: u64, max: usize) -> Sizes {
        Sizes {
            rng: fastrand::Rng::with_seed(seed),
            max,
        }
    }

    pub fn next_len(&mut self) -> usize {
        let max = self.max;
        match self.rng.u32(0..1000) {
            0 => self.rng.usize(0..=max),
            1 => max - self.rng.usize(0..=max.min(FRAME_ALIGN * 2)),
            2..=29 => self.rng.usize(0..=max.min(2048)),
            _ => self.rng.usize(0..=max.min(128)),
        }
    }
}

/// The word stream a frame's bytes are made of, determined by its sequence
/// number (xorshift64 seeded by splitmix64).
struct Words(u64);

impl Words {
    fn new(seq: u64) -> Words {
        let mut z = seq.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Words((z ^ (z >> 31)) | 1)
    }

    #[inline]
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[inline]
fn mix(sum: u64, word: u64) -> u64 {
    (sum ^ word)
        .wrapping_mul(0x0000_0100_0000_01B3)
        .rotate_left(29)
}

/// Fills a whole payload for frame `seq`: when there is room, the sequence
/// number and a checksum of the rest come first; every byte is written.
pub fn write_frame(seq: u64, buf: &mut [u8]) {
    let len = buf.len();
    let (head, body) = if len >= 16 {
        buf.split_at_mut(16)
    } else {
        buf.split_at_mut(0)
    };
    let mut words = Words::new(seq);
    let mut sum = mix(0xCBF2_9CE4_8422_2325, len as u64);
    let mut chunks = body.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let word = words.next();
        chunk.copy_from_slice(&word.to_le_bytes());
        sum = mix(sum, word);
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let bytes = words.next().to_le_bytes();
        rest.copy_from_slice(&bytes[..rest.len()]);
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        sum = mix(sum, u64::from_le_bytes(last));
    }
    if !head.is_empty() {
        head[..8].copy_from_slice(&seq.to_le_bytes());
        head[8..].copy_from_slice(&sum.to_le_bytes());
    }
}

/// Checks every byte of frame `seq` as `write_frame` made it, and its
/// embedded sequence number and checksum.
pub fn check_frame(seq: u64, buf: &[u8]) -> Result<(), String> {
    let len = buf.len();
    let (head, body) = if len >= 16 {
        buf.split_at(16)
    } else {
        buf.split_at(0)
    };
    let mut words = Words::new(seq);
    let mut sum = mix(0xCBF2_9CE4_8422_2325, len as u64);
    let mut chunks = body.chunks_exact(8);
    for (i, chunk) in (&mut chunks).enumerate() {
        let got = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let want = words.next();
        if got != want {
            return Err(format!(
                "frame {seq} ({len} B): word {i} of the body is {got:#x}, expected {want:#x}"
            ));
        }
        sum = mix(sum, got);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let want = words.next().to_le_bytes();
        if rest != &want[..rest.len()] {
            return Err(format!("frame {seq} ({len} B): last bytes differ"));
        }
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        sum = mix(sum, u64::from_le_bytes(last));
    }
    if !head.is_empty() {
        let got_seq = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
        if got_seq != seq {
            return Err(format!("frame {seq} ({len} B) carries sequence {got_seq}"));
        }
        let got_sum = u64::from_le_bytes(head[8..].try_into().expect("8 bytes"));
        if got_sum != sum {
            return Err(format!("frame {seq} ({len} B): checksum mismatch"));
        }
    }
    Ok(())
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
    /// Every `stall_every` frames, wait until the peer is parked (its flag
    /// in the header reads 1), then pause: forces the peer to sleep.
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
            ("STRATEGY", strategy_name(self.strategy)),
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
            strategy: parse_strategy(&param::<String>("STRATEGY")),
            batch: param("BATCH"),
            stall_every: param("STALL_EVERY"),
            copy_out: param("COPY_OUT"),
            defer_last: param("DEFER_LAST"),
            limit: Duration::from_millis(param("LIMIT_MS")),
        }
    }
}

pub fn strategy_name(strategy: WaitStrategy) -> String {
    match strategy {
        WaitStrategy::Spin => "spin".into(),
        WaitStrategy::Park => "park".into(),
        WaitStrategy::SpinThenPark { spin } => format!("spin-then-park:{}", spin.as_nanos()),
    }
}

pub fn parse_strategy(name: &str) -> WaitStrategy {
    match name {
        "spin" => WaitStrategy::Spin,
        "park" => WaitStrategy::Park,
        other => {
            let nanos = other
                .strip_prefix("spin-then-park:")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unknown wait strategy {other}"));
            WaitStrategy::SpinThenPark {
                spin: std::time::Duration::from_nanos(nanos),
            }
        }
    }
}

/// Waits, for at most 10 s, until the parked flag at `flag_offset` reads 1,
/// then pauses a little so the parked side is really asleep.
fn stall_until_parked(map: &RawMap, flag_offset: usize) {
    wait_until("the peer to park", Duration::from_secs(10), || {
        map.load_u32(flag_offset) == 1
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
    let mut sizes = Sizes::new(traffic.seed, tx.max_payload());
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
    let mut sizes = Sizes::new(traffic.seed, rx.max_payload());
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
