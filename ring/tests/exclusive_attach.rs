#![cfg(not(loom))]
//! One producer and one consumer per ring, no two rings sharing bytes, in
//! one process: `attach` refuses the rest. Before, safe code could attach a
//! second producer and hold two `Grant`s over the same bytes (two aliasing
//! `&mut [u8]`: undefined behaviour, reported by miri and visible below as
//! one grant's write showing through the other), or attach a second
//! consumer and release bytes the first still lent out as `&[u8]`. These run
//! under miri.

use ferry_ring::{
    AttachError, Consumer, HEADER_SIZE, Producer, RING_ALIGN, Region, channel, init, ring_size,
};
use std::sync::Arc;

#[test]
fn a_second_producer_on_a_ring_is_refused() {
    let (mut tx, _rx) = channel(4096);
    match Producer::attach(Arc::clone(tx.region()), 0) {
        Err(AttachError::AlreadyAttached { offset: 0 }) => {}
        Err(other) => panic!("unexpected error {other:?}"),
        Ok(mut second) => {
            // What the old code allowed: both grants are the same bytes.
            let mut first_grant = tx.try_reserve(16).unwrap();
            let mut second_grant = second.try_reserve(16).unwrap();
            first_grant[0] = 1;
            second_grant[0] = 2;
            panic!(
                "a second producer attached; the first grant now reads {}",
                first_grant[0]
            );
        }
    }
}

#[test]
fn a_second_consumer_cannot_release_what_the_first_lends_out() {
    let (mut tx, mut rx) = channel(4096);
    tx.try_send(b"kept").unwrap();
    let frame = rx.try_peek().unwrap();
    match Consumer::attach(Arc::clone(tx.region()), 0) {
        Err(AttachError::AlreadyAttached { offset: 0 }) => {}
        Err(other) => panic!("unexpected error {other:?}"),
        Ok(mut second) => {
            // What the old code allowed: the second consumer frees the room
            // the first one's frame borrows, and the producer rewrites it.
            second.try_peek().unwrap().release();
            let mut grant = tx.try_reserve(2000).unwrap();
            grant.fill(0xAA);
            grant.commit();
            tx.try_reserve(1024).unwrap().fill(0xBB);
            panic!(
                "a second consumer attached; the first frame now reads {:?}",
                &frame.payload()[..4]
            );
        }
    }
    assert_eq!(frame.payload(), b"kept");
}

#[test]
fn the_other_end_of_the_same_ring_attaches_and_a_dropped_end_can_come_back() {
    let region = Arc::new(Region::heap(ring_size(1024)));
    init(&region, 0, 1024).unwrap();
    let tx = Producer::attach(Arc::clone(&region), 0).unwrap();
    let rx = Consumer::attach(Arc::clone(&region), 0).unwrap();
    drop(tx);
    drop(rx);
    Producer::attach(Arc::clone(&region), 0).unwrap();
    Consumer::attach(region, 0).unwrap();
}

#[test]
fn a_ring_overlapping_an_attached_one_is_refused() {
    let cap = 1024;
    let region = Arc::new(Region::heap(4 * ring_size(cap)));
    // A second ring laid out (by a creator, before anything attached)
    // inside the first one's data area: its header and frames would be the
    // first ring's payload bytes.
    let inside = HEADER_SIZE.next_multiple_of(RING_ALIGN) + RING_ALIGN;
    init(&region, 0, 2 * cap).unwrap();
    init(&region, inside, cap).unwrap();
    let _tx = Producer::attach(Arc::clone(&region), 0).unwrap();
    assert_eq!(
        Consumer::attach(Arc::clone(&region), inside).unwrap_err(),
        AttachError::Overlap {
            first: 0,
            second: inside
        }
    );
}

#[test]
fn a_kept_frame_keeps_its_consumer_side_claimed_after_the_consumer_is_gone() {
    let (mut tx, mut rx) = channel(4096);
    tx.try_send(b"kept").unwrap();
    let kept = rx.try_peek().unwrap().keep_in_place();
    let region = Arc::clone(rx.region());
    drop(rx);
    // A new consumer would start from the published head (before `kept`),
    // release it, and let the producer rewrite the bytes `kept` lends out.
    assert_eq!(
        Consumer::attach(Arc::clone(&region), 0).unwrap_err(),
        AttachError::AlreadyAttached { offset: 0 }
    );
    assert_eq!(kept.bytes(), b"kept");
    drop(kept);
    Consumer::attach(region, 0).unwrap();
}

#[test]
fn laying_a_ring_over_bytes_an_attached_ring_lends_out_is_refused() {
    let (mut tx, mut rx) = channel(4096);
    tx.try_send(&[7u8; 1024]).unwrap();
    let region = Arc::clone(rx.region());
    let frame = rx.try_peek().unwrap();
    // A ring header laid out inside the frame being read: its stores would
    // land in bytes borrowed as `&[u8]` right now.
    let inside = RING_ALIGN * 2;
    match init(&region, inside, 256) {
        Err(AttachError::Overlap { first: 0, second }) => assert_eq!(second, inside),
        Err(other) => panic!("unexpected error {other:?}"),
        Ok(()) => panic!(
            "a ring was laid out over a borrowed frame, which now reads {:?}",
            &frame.payload()[..32]
        ),
    }
    assert!(frame.payload().iter().all(|&b| b == 7));
}
