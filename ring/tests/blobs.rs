//! Out-of-line blobs against real processes: a child forked while a blob is
//! filled, an attacker that sends a sparse sealed memfd, and the mapping the
//! receiver makes (one every kernel since 3.17 allows).
//!
//! Helper processes are this test binary re-executed (see
//! `ferry_testkit::process`); a child test function returns at once in a
//! normal run.

#![cfg(not(miri))] // memfd, fork, sockets

mod support;

use ferry_ring::{BlobWriter, RegionError, SealedBlob};
use ferry_testkit::bounded::spawn_bounded;
use ferry_testkit::fds::{identity, open_descriptors_of};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::{MemfdFlags, SealFlags};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use support::{
    OP_TIMEOUT, child_role, inherited_socket, readable_within, recv_with_fd, resident_kib,
    send_with_fd, spawn_socket_peer,
};

/// The size the attacker announces: 4 GiB, none of it allocated.
const SPARSE_LEN: u64 = 4 << 30;

// ---------------------------------------------------------------------------
// A fork while a blob is filled.

/// A child forked (by `Command` with a `pre_exec` hook, as the project's own
/// spawns do) while a blob is being filled, and still alive when the blob is
/// sealed, must not stop the seal. Without `MADV_DONTFORK` on the writer's
/// mapping the child holds a writable shared copy of it, the kernel answers
/// EBUSY to `F_SEAL_WRITE` for as long as the child lives, and `seal` gives
/// up after its retry budget (about 1 s) with an error.
#[test]
fn sealing_succeeds_while_a_child_forked_during_filling_is_alive() {
    let mut writer = BlobWriter::create(1 << 20).expect("blob");
    writer[..6].copy_from_slice(b"before");

    let (forked_rx, forked_tx) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    let (release_rx, release_tx) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    let (forked_tx_raw, release_rx_raw) = (forked_tx.as_raw_fd(), release_rx.as_raw_fd());
    let spawner = spawn_bounded("spawning a child that waits before exec", move || {
        // Keep both descriptors open in the parent while the child runs.
        let _keep = (&forked_tx, &release_rx);
        let mut cmd = Command::new("true");
        let hold_before_exec = move || -> std::io::Result<()> {
            // SAFETY: both descriptors stay open in the parent until this
            // spawn returns (`_keep`), so the forked copy of the table holds
            // them too.
            let (forked, release) = unsafe {
                (
                    BorrowedFd::borrow_raw(forked_tx_raw),
                    BorrowedFd::borrow_raw(release_rx_raw),
                )
            };
            rustix::io::write(forked, b"f")?;
            // Held here (forked, not yet exec'd) until released, for at
            // most 30 s.
            let limit = Timespec {
                tv_sec: 30,
                tv_nsec: 0,
            };
            let mut fds = [PollFd::new(&release, PollFlags::IN)];
            rustix::event::poll(&mut fds, Some(&limit))?;
            Ok(())
        };
        // SAFETY: between fork and exec only async-signal-safe work is
        // allowed: `hold_before_exec` makes two raw system calls through
        // rustix (write, poll), with no allocation and no lock.
        unsafe { cmd.pre_exec(hold_before_exec) };
        cmd.status()
    });
    assert!(
        readable_within(forked_rx.as_fd(), OP_TIMEOUT),
        "the child never forked"
    );

    // Fill the rest after the fork, then seal with the child still alive
    // (it waits for `release_tx`, which nobody has written yet).
    writer[6..11].copy_from_slice(b"after");
    let started = std::time::Instant::now();
    let sealed = writer.seal();
    // Reported, not asserted: a figure for the record.
    eprintln!(
        "sealed with a forked child alive in {:?}",
        started.elapsed()
    );
    rustix::io::write(&release_tx, b"r").expect("releasing the child");
    let status = spawner.join_within(OP_TIMEOUT).expect("spawning `true`");
    assert!(status.success(), "the held child failed: {status}");

    let blob = sealed.expect("sealing while a forked child lives");
    assert_eq!(&blob.bytes()[..11], b"beforeafter");
}

// ---------------------------------------------------------------------------
// The receiver's mapping.

/// The mapping flags (`r--p`, ...) of the mapping that starts at `addr`.
fn mapping_permissions(addr: usize) -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
    maps.lines()
        .find_map(|line| {
            let (range, rest) = line.split_once(' ')?;
            let start = usize::from_str_radix(range.split_once('-')?.0, 16).ok()?;
            (start == addr).then(|| rest.split_whitespace().next().unwrap_or("").to_owned())
        })
        .unwrap_or_else(|| panic!("no mapping starts at {addr:#x}"))
}

/// A received (and a freshly sealed) blob is mapped private and read-only:
/// before Linux 6.7 the kernel refuses a *shared* mapping of a write-sealed
/// memfd, even a read-only one, so a `MAP_SHARED` blob could not be opened
/// on Ubuntu 22.04, Debian 12 or RHEL 9 kernels.
#[test]
fn sealed_blobs_are_mapped_private_and_read_only() {
    let mut writer = BlobWriter::create(3 * 4096 + 5).expect("blob");
    writer.fill(0x5A);
    let sealed = writer.seal().expect("seal");
    assert_eq!(
        mapping_permissions(sealed.bytes().as_ptr() as usize),
        "r--p"
    );
    let fd = sealed.fd().try_clone_to_owned().unwrap();
    let received = SealedBlob::open(fd, 3 * 4096 + 5).expect("open");
    assert_eq!(
        mapping_permissions(received.bytes().as_ptr() as usize),
        "r--p"
    );
    assert!(received.bytes().iter().all(|&b| b == 0x5A));
}

// ---------------------------------------------------------------------------
// A sparse blob from an attacker.

/// The attacker's side of `sparse_blob_from_an_attacker_is_refused`:
/// creates a memfd of 4 GiB with nothing written, seals it as an honest
/// blob is sealed, sends it with its length, and keeps it open until the
/// victim has answered.
#[test]
fn attacker_sends_a_sparse_sealed_blob() {
    if child_role().as_deref() != Some("sparse-attacker") {
        return;
    }
    let socket = inherited_socket();
    let memfd =
        rustix::fs::memfd_create(c"sparse", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
            .expect("memfd_create");
    rustix::fs::ftruncate(&memfd, SPARSE_LEN).expect("ftruncate");
    let seals = SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL;
    rustix::fs::fcntl_add_seals(&memfd, seals).expect("seals");
    assert_eq!(rustix::fs::fstat(&memfd).unwrap().st_blocks, 0);

    send_with_fd(&socket, &SPARSE_LEN.to_le_bytes(), memfd.as_fd());
    // Hold the memfd (and its would-be pages) until the victim answers.
    assert!(
        readable_within(socket.as_fd(), OP_TIMEOUT),
        "the victim never answered"
    );
}

/// A peer sends a sealed memfd `ftruncate`d to 4 GiB with nothing written.
/// Reading it would allocate 4 GiB of shared memory charged to us; the
/// victim refuses it when opening, before mapping or reading anything, with
/// `RegionError::Sparse`, and its resident memory does not grow.
#[test]
fn sparse_blob_from_an_attacker_is_refused() {
    let (child, victim) = spawn_socket_peer(
        "attacker_sends_a_sparse_sealed_blob",
        "sparse-attacker",
        &[],
    );
    let (len, fd) = recv_with_fd(&victim);
    let len = u64::from_le_bytes(len.try_into().expect("an 8-byte length"));
    assert_eq!(len, SPARSE_LEN);
    let fd = fd.expect("the attacker's memfd");
    let memfd = identity(fd.as_fd());
    assert_eq!(open_descriptors_of(memfd), 1);
    let (rss_before, shmem_before) = resident_kib();

    let opened = SealedBlob::open(fd, len as usize);

    let (rss_after, shmem_after) = resident_kib();
    match opened {
        Err(RegionError::Sparse { size, allocated }) => {
            assert_eq!(size, SPARSE_LEN);
            assert_eq!(allocated, 0);
        }
        Err(other) => panic!("refused for the wrong reason: {other}"),
        // Do not read it: that is the attack.
        Ok(_) => panic!("a 4 GiB blob with nothing allocated was accepted"),
    }
    assert_eq!(open_descriptors_of(memfd), 0, "the refused memfd is closed");
    let grown_kib = rss_after.saturating_sub(rss_before);
    let shmem_grown_kib = shmem_after.saturating_sub(shmem_before);
    eprintln!(
        "victim: VmRSS {rss_before} -> {rss_after} kB, RssShmem {shmem_before} -> {shmem_after} kB"
    );
    assert!(grown_kib < 4096, "VmRSS grew by {grown_kib} KiB");
    assert!(
        shmem_grown_kib < 4096,
        "RssShmem grew by {shmem_grown_kib} KiB"
    );

    rustix::io::write(&victim, b"done").expect("answering the attacker");
    child.expect_success();
}
