//! Shared by the cross-process tests of ferry-transport: a helper-process
//! harness built on ferry-handoff's bootstrap, self-checking traffic, the
//! test protocols, and a raw second view of a region for hostile peers.
//!
//! # Helper processes
//!
//! A test re-executes its own binary as the peer:
//! `current_exe() --exact child --nocapture --test-threads=1`, with
//! [`ROLE_ENV`] naming what the child does. The child is started with
//! [`ferry_handoff::bootstrap::spawn_with_channel`], so the two processes
//! share a control channel. The parent creates a connection with
//! [`Connection::create`] and sends the endpoint's metadata and descriptors
//! over that channel; the child receives them and calls
//! [`Connection::open`]. The `child` test function of each test binary
//! returns at once when [`ROLE_ENV`] is absent, so in a normal run it is a
//! no-op that passes.
//!
//! A child reports failure through its exit status (a panic makes libtest
//! exit 101) and its stderr, which it shares with the parent. [`Peer`] kills
//! and reaps the child when dropped, and every wait for a child is bounded.

#![allow(dead_code)] // each test binary uses its own part of this module

pub mod proto;

use ferry_handoff::Channel;
use ferry_transport::{Connection, ConnectionConfig, Endpoint, Trust, WaitStrategy};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Names the role a re-executed test binary plays; absent in a normal run.
pub const ROLE_ENV: &str = "FERRY_TRANSPORT_TEST_ROLE";
/// Prefix of the environment variables that carry a role's parameters.
const PARAM_PREFIX: &str = "FERRY_TRANSPORT_TEST_P_";
/// The name of the child test function in every test binary.
pub const CHILD_TEST: &str = "child";

/// How long any single blocking operation may take before the test calls it
/// a hang. Generous: the machine is shared, and this only bounds bugs.
pub const OP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a test waits for a child to exit once it should.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Tag of the control message carrying an endpoint.
const ENDPOINT_TAG: &[u8] = b"EP";

// ---------------------------------------------------------------------------
// Parent side.

/// The command that re-executes this test binary as a child in `role`. It
/// dies with SIGKILL if the thread that spawned it ends first.
pub fn child_command(role: &str, params: &[(&str, String)]) -> Command {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, role)
        .stdin(Stdio::null())
        // libtest's own chatter; the child's panics go to the shared stderr.
        .stdout(Stdio::null());
    for (key, value) in params {
        cmd.env(format!("{PARAM_PREFIX}{key}"), value);
    }
    let die_with_parent = || -> std::io::Result<()> {
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
        Ok(())
    };
    // SAFETY: runs between fork and exec, where only async-signal-safe work
    // is allowed: one prctl(PR_SET_PDEATHSIG) system call through rustix's
    // raw-syscall backend, no allocation, no lock.
    unsafe { cmd.pre_exec(die_with_parent) };
    cmd
}

/// A helper process running this test binary in some role, with the parent's
/// end of its control channel. Dropping it kills (SIGKILL) and reaps the
/// process if it still runs.
pub struct Peer {
    child: Option<Child>,
    pid: u32,
    control: Channel,
    label: String,
}

/// Spawns a child in `role` with a control channel.
pub fn spawn_peer(role: &str, params: &[(&str, String)]) -> Peer {
    let (child, control) =
        ferry_handoff::bootstrap::spawn_with_channel(child_command(role, params))
            .expect("spawning the helper process");
    Peer {
        pid: child.id(),
        label: format!("helper process {} ({role})", child.id()),
        child: Some(child),
        control,
    }
}

/// Creates a connection with `config`, spawns a child in `role` (given the
/// configuration's parameters plus `params`) and sends it the other end.
pub fn connect_peer(
    role: &str,
    config: &ConnectionConfig,
    params: &[(&str, String)],
) -> (Connection, Peer) {
    let (connection, endpoint) = Connection::create(config.clone()).expect("Connection::create");
    let mut all = config_params(config);
    all.extend(params.iter().map(|(k, v)| (*k, v.clone())));
    let peer = spawn_peer(role, &all);
    peer.send_endpoint(endpoint);
    (connection, peer)
}

impl Peer {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends an endpoint over the control channel; our copies of its
    /// descriptors are closed afterwards, so the child holds the only ones.
    pub fn send_endpoint(&self, endpoint: Endpoint) {
        send_endpoint(&self.control, endpoint);
    }

    /// Sends a control message to the child.
    pub fn tell(&self, message: &[u8]) {
        tell(&self.control, message);
    }

    /// Receives a control message from the child (bounded wait).
    pub fn hear(&self) -> Vec<u8> {
        hear(&self.control)
    }

    /// Receives a control message and checks it is `expected`.
    pub fn expect_word(&self, expected: &[u8]) {
        let got = self.hear();
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(expected),
            "{}: unexpected control message",
            self.label
        );
    }

    /// A second handle on the control channel, for another thread.
    pub fn control_clone(&self) -> Channel {
        Channel::from(self.control.as_fd().try_clone_to_owned().expect("dup"))
    }

    /// A function that SIGKILLs the child, for another thread.
    pub fn killer(&self) -> impl Fn() + Send + 'static {
        let pid = self.pid;
        move || kill_pid(pid)
    }

    /// Sends SIGKILL (if the child has not been reaped yet).
    pub fn kill(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
        }
    }

    /// The exit status if the child has exited (reaping it), else `None`.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = child.try_wait().expect("waitpid")?;
        self.child = None;
        Some(status)
    }

    /// Waits for the child to exit, for at most `limit`; on timeout kills it
    /// and panics.
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

    /// Kills the child and reaps it.
    pub fn kill_and_reap(mut self) -> ExitStatus {
        self.kill();
        self.wait_timeout(EXIT_TIMEOUT)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// SIGKILLs process `pid`.
pub fn kill_pid(pid: u32) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a positive pid");
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("kill(SIGKILL)");
}

/// Sends `endpoint` over `control` and closes our copies of its descriptors.
pub fn send_endpoint(control: &Channel, endpoint: Endpoint) {
    let mut message = ENDPOINT_TAG.to_vec();
    message.extend_from_slice(&endpoint.metadata);
    let fds: Vec<BorrowedFd<'_>> = endpoint.fds.iter().map(|fd| fd.as_fd()).collect();
    control.send(&message, &fds).expect("sending the endpoint");
    drop(fds);
    drop(endpoint);
}

/// Sends a control message.
pub fn tell(control: &Channel, message: &[u8]) {
    control
        .send(message, &[])
        .expect("sending a control message");
}

/// Receives a control message (bounded wait).
pub fn hear(control: &Channel) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let received = control
        .recv(&mut buf, Some(OP_TIMEOUT))
        .expect("receiving a control message");
    buf.truncate(received.len);
    buf
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

/// The control channel this child inherited. Call once.
pub fn child_control() -> Channel {
    ferry_handoff::bootstrap::channel_from_env().expect("the bootstrap channel")
}

/// Receives the next endpoint the parent sends.
pub fn recv_endpoint(control: &Channel) -> Endpoint {
    let mut buf = vec![0u8; 4096];
    let received = control
        .recv(&mut buf, Some(OP_TIMEOUT))
        .expect("receiving the endpoint");
    let message = &buf[..received.len];
    assert!(
        message.starts_with(ENDPOINT_TAG),
        "expected an endpoint message"
    );
    Endpoint {
        fds: received.fds,
        metadata: message[ENDPOINT_TAG.len()..].to_vec(),
    }
}

/// The child's usual start: takes its control channel, receives the endpoint
/// and opens it with the configuration the parent passed down.
pub fn child_connect() -> (Connection, Channel) {
    let control = child_control();
    let endpoint = recv_endpoint(&control);
    let connection = Connection::open(endpoint, config_from_params()).expect("Connection::open");
    (connection, control)
}

// ---------------------------------------------------------------------------
// Configurations as parameters.

pub fn wait_name(wait: WaitStrategy) -> String {
    match wait {
        WaitStrategy::Spin => "spin".into(),
        WaitStrategy::Park => "park".into(),
        WaitStrategy::SpinThenPark { spin } => format!("spin-then-park:{}", spin.as_nanos()),
    }
}

pub fn parse_wait(name: &str) -> WaitStrategy {
    match name {
        "spin" => WaitStrategy::Spin,
        "park" => WaitStrategy::Park,
        other => {
            let nanos = other
                .strip_prefix("spin-then-park:")
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("bad wait strategy {other}"));
            WaitStrategy::SpinThenPark {
                spin: std::time::Duration::from_nanos(nanos),
            }
        }
    }
}

/// The parameters that recreate `config` in a child.
pub fn config_params(config: &ConnectionConfig) -> Vec<(&'static str, String)> {
    vec![
        ("RING", config.ring_capacity.to_string()),
        ("WAIT", wait_name(config.wait)),
        (
            "TRUST",
            match config.trust {
                Trust::Trusted => "trusted".into(),
                Trust::Untrusted => "untrusted".into(),
            },
        ),
        ("SCHEMA", config.schema.to_string()),
        ("MAX_FDS", config.max_fds_per_message.to_string()),
    ]
}

/// The configuration the parent described with [`config_params`].
pub fn config_from_params() -> ConnectionConfig {
    let mut config = ConnectionConfig::default()
        .ring_capacity(param("RING"))
        .wait(parse_wait(&param::<String>("WAIT")))
        .schema(param("SCHEMA"))
        .peer_name("parent");
    config.trust = match param::<String>("TRUST").as_str() {
        "trusted" => Trust::Trusted,
        "untrusted" => Trust::Untrusted,
        other => panic!("bad trust {other}"),
    };
    config.max_fds_per_message = param("MAX_FDS");
    config
}

// ---------------------------------------------------------------------------
// Bounded waits in the test process.

/// Runs `f` on a thread and waits at most `limit` for its result: a hang
/// becomes a test failure instead of a stuck run (the thread is then
/// abandoned). A panic on the thread is re-raised here.
pub fn bounded<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::Builder::new()
        .name(what.to_owned())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawning a thread");
    match rx.recv_timeout(limit) {
        Ok(value) => {
            handle.join().expect("thread finished");
            value
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the thread sends before it ends"),
        },
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: no result after {limit:?} (hang)")
        }
    }
}

/// Descriptors open in this process.
pub fn open_fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

// ---------------------------------------------------------------------------
// Self-checking traffic.

/// Payload lengths from 0 to `max` inclusive, reproducible from a seed so the
/// receiver knows the length of every frame it should get: mostly small, with
/// every size up to the maximum and the maximum itself mixed in.
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
        match self.rng.u32(0..100) {
            0..=4 => self.rng.usize(0..=max),
            5 => max,
            6 => 0,
            7..=29 => self.rng.usize(0..=max.min(4096)),
            _ => self.rng.usize(0..=max.min(256)),
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

/// A frame for `seq` of `len` bytes, made by [`write_frame`].
pub fn make_frame(seq: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    write_frame(seq, &mut buf);
    buf
}

/// Checks every byte of frame `seq` as [`write_frame`] made it, and its
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
                "frame {seq} ({len} B): word {i} is {got:#x}, expected {want:#x}"
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

/// FNV-1a over bytes: the checksum typed test messages carry.
pub fn fnv64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xCBF2_9CE4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01B3);
    }
    hash
}

// ---------------------------------------------------------------------------
// A raw second view of a region: the hostile peer's hands.

/// A second `MAP_SHARED` mapping of a region's memfd, through which a test
/// writes whatever it likes into the rings. All access is atomic, so the
/// scribbling itself is free of data races in this process.
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
                fd,
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

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn u64_at(&self, offset: usize) -> &AtomicU64 {
        assert!(offset % 8 == 0 && offset + 8 <= self.len, "u64 at {offset}");
        // SAFETY: in bounds and 8-aligned (the mapping is page-aligned); the
        // mapping lives as long as `self`; AtomicU64 is valid for any bits.
        unsafe { AtomicU64::from_ptr(self.ptr.add(offset).cast()) }
    }

    pub fn u8_at(&self, offset: usize) -> &AtomicU8 {
        assert!(offset < self.len, "u8 at {offset}");
        // SAFETY: in bounds; a byte is always aligned.
        unsafe { AtomicU8::from_ptr(self.ptr.add(offset)) }
    }

    pub fn store_u64(&self, offset: usize, value: u64) {
        self.u64_at(offset).store(value, Ordering::SeqCst);
    }

    pub fn load_u64(&self, offset: usize) -> u64 {
        self.u64_at(offset).load(Ordering::SeqCst)
    }

    pub fn store_u8(&self, offset: usize, value: u8) {
        self.u8_at(offset).store(value, Ordering::Relaxed);
    }
}

impl Drop for RawMap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping `new` made; no reference
        // into it outlives `self` (they all borrow `self`).
        let _ = unsafe { rustix::mm::munmap(self.ptr.cast(), self.len) };
    }
}

/// Byte offsets in the shared ring header (ring/src/layout.rs), as a peer in
/// another process knows them.
pub mod offsets {
    pub const TAIL: usize = 128;
    pub const HEAD: usize = 256;
    pub const DATA: usize = 640;
}

/// Duplicates a descriptor (for keeping a second handle).
pub fn dup(fd: &OwnedFd) -> OwnedFd {
    fd.try_clone().expect("dup")
}
