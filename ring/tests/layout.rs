//! What a region's creator may impose on the process that opens it: an
//! attacker process lays out rings that overlap or alias, or sends a region
//! of 1 TiB; the victim refuses both with the ring crate's own checks
//! (`ferry_ring::check_layout`, `Region::open_with_limit`), before it uses a
//! ring or maps the region.

#![cfg(not(miri))] // memfd, sockets, processes

mod support;

use ferry_ring::{
    AttachError, Consumer, Producer, RING_ALIGN, Region, RegionError, RingSpan, check_layout,
    ring_size,
};
use rustix::fs::{MemfdFlags, SealFlags};
use std::os::fd::AsFd;
use std::sync::Arc;
use support::{
    OP_TIMEOUT, child_role, inherited_socket, readable_within, recv_with_fd, send_with_fd,
    spawn_socket_peer, status_kib,
};

const CAPACITY: usize = 4096;
/// What the victim accepts: a region of at most 4 MiB, rings of at most
/// 64 KiB.
const MAX_REGION: usize = 4 << 20;
const MAX_CAPACITY: usize = 64 * 1024;
/// The region the attacker announces in `huge`: 1 TiB.
const HUGE_REGION: u64 = 1 << 40;

/// The two ring offsets a creator announces (what a connection's endpoint
/// metadata carries), encoded for the socket.
fn encode_offsets(tx: usize, rx: usize) -> Vec<u8> {
    [tx as u64, rx as u64]
        .iter()
        .flat_map(|o| o.to_le_bytes())
        .collect()
}

fn decode_offsets(bytes: &[u8]) -> (usize, usize) {
    let word = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap()) as usize;
    (word(0), word(1))
}

/// The attacker: lays out each hostile layout with the ring crate's own
/// `init` (so every single ring is valid) and sends the region with its
/// offsets, then waits for the victim to finish.
#[test]
fn attacker_lays_out_hostile_rings() {
    let Some(role) = child_role() else {
        return;
    };
    let socket = inherited_socket();
    match role.as_str() {
        "overlap" => {
            // The second ring's header lies in the first ring's data area.
            let second = ring_size(CAPACITY) - 4 * RING_ALIGN;
            let region = Region::create(second + ring_size(CAPACITY)).unwrap();
            ferry_ring::init(&region, 0, CAPACITY).unwrap();
            ferry_ring::init(&region, second, CAPACITY).unwrap();
            send_with_fd(&socket, &encode_offsets(0, second), region.fd().unwrap());
            // Both ends on one ring.
            let region = Region::create(ring_size(CAPACITY)).unwrap();
            ferry_ring::init(&region, 0, CAPACITY).unwrap();
            send_with_fd(&socket, &encode_offsets(0, 0), region.fd().unwrap());
            // A ring larger than the victim accepts, next to a small one.
            let big = 1 << 20;
            let second = ring_size(big).next_multiple_of(RING_ALIGN);
            let region = Region::create(second + ring_size(CAPACITY)).unwrap();
            ferry_ring::init(&region, 0, big).unwrap();
            ferry_ring::init(&region, second, CAPACITY).unwrap();
            send_with_fd(&socket, &encode_offsets(0, second), region.fd().unwrap());
        }
        "huge" => {
            // A sealed memfd of 1 TiB: nothing allocated, but mapping it
            // takes 1 TiB of the victim's address space.
            let memfd =
                rustix::fs::memfd_create(c"huge", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
                    .unwrap();
            rustix::fs::ftruncate(&memfd, HUGE_REGION).unwrap();
            let seals = SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL;
            rustix::fs::fcntl_add_seals(&memfd, seals).unwrap();
            send_with_fd(&socket, &encode_offsets(0, 1 << 20), memfd.as_fd());
        }
        other => panic!("unknown role {other}"),
    }
    assert!(
        readable_within(socket.as_fd(), OP_TIMEOUT),
        "the victim never answered"
    );
}

/// Opens a region the attacker sent and attaches both ends at the announced
/// offsets, the way a connection's opener does, then checks the layout.
fn open_and_check(socket: &std::os::fd::OwnedFd) -> Result<(Producer, Consumer), AttachError> {
    let (bytes, fd) = recv_with_fd(socket);
    let (tx_offset, rx_offset) = decode_offsets(&bytes);
    let region = Arc::new(Region::open_with_limit(fd.expect("a region"), MAX_REGION).unwrap());
    // Each ring on its own is valid: attach accepts both.
    let tx = Producer::attach(Arc::clone(&region), tx_offset)?;
    let rx = Consumer::attach(region, rx_offset)?;
    check_layout(
        &[
            RingSpan {
                offset: tx_offset,
                capacity: tx.capacity(),
            },
            RingSpan {
                offset: rx_offset,
                capacity: rx.capacity(),
            },
        ],
        MAX_CAPACITY,
    )?;
    Ok((tx, rx))
}

#[test]
fn overlapping_aliasing_or_oversized_rings_from_an_attacker_are_refused() {
    let (child, victim) = spawn_socket_peer("attacker_lays_out_hostile_rings", "overlap", &[]);
    let second = ring_size(CAPACITY) - 4 * RING_ALIGN;
    assert_eq!(
        open_and_check(&victim).err(),
        Some(AttachError::Overlap { first: 0, second })
    );
    assert_eq!(
        open_and_check(&victim).err(),
        Some(AttachError::Overlap {
            first: 0,
            second: 0
        })
    );
    assert_eq!(
        open_and_check(&victim).err(),
        Some(AttachError::CapacityTooLarge {
            capacity: 1 << 20,
            max: MAX_CAPACITY as u64
        })
    );
    rustix::io::write(&victim, b"done").expect("answering the attacker");
    child.expect_success();
}

#[test]
fn oversized_region_from_an_attacker_is_refused_before_mapping() {
    let (child, victim) = spawn_socket_peer("attacker_lays_out_hostile_rings", "huge", &[]);
    let (_, fd) = recv_with_fd(&victim);
    let address_space_before = status_kib("VmSize:");
    let opened = Region::open_with_limit(fd.expect("a region"), MAX_REGION);
    let address_space_after = status_kib("VmSize:");
    match opened {
        Err(RegionError::TooLarge { size, max }) => {
            assert_eq!(size, HUGE_REGION);
            assert_eq!(max, MAX_REGION as u64);
        }
        Err(other) => panic!("refused for the wrong reason: {other}"),
        Ok(region) => panic!("a region of {} bytes was mapped", region.len()),
    }
    // Other tests of this binary may map a little meanwhile; 1 TiB would
    // show.
    let grown_kib = address_space_after.saturating_sub(address_space_before);
    assert!(
        grown_kib < 1 << 20,
        "the address space grew by {grown_kib} KiB"
    );
    rustix::io::write(&victim, b"done").expect("answering the attacker");
    child.expect_success();
}
