//! Payloads too large for the ring travel out of line, in a memfd sealed
//! against writes: a 1 GiB raw frame, a typed message (and its reply) whose
//! archive exceeds the ring, and the boundary between the two paths. (A blob
//! that is not sealed is refused: see `malformed_frames_are_violations` in
//! hostile.rs, case `unsealed-blob`.)

mod support;

use ferry_transport::{ConnectionConfig, Remote, Trust};
use std::time::Duration;
use support::proto::*;
use support::*;

/// The child test: runs the role the parent asked for, or nothing.
#[test]
fn child() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        "gib-receiver" => child_gib_receiver(),
        "boundary" => child_boundary(),
        "service" => {
            let (mut conn, _control) = child_connect();
            serve(&mut conn, ServiceImpl::default());
        }
        other => panic!("unknown role {other}"),
    }
}

const GIB: usize = 1 << 30;
/// How long either side of the 1 GiB test waits: filling, copying and
/// checking a gibibyte in a debug build takes seconds, and many times more
/// on a loaded machine (CI runs the suites in parallel on two cores).
const GIB_TIMEOUT: Duration = Duration::from_secs(180);
const PAGE: usize = 4096;

/// The bytes of every page after its 8-byte index.
fn page_block() -> Vec<u8> {
    (0..PAGE - 8).map(|i| (i * 7 + 3) as u8).collect()
}

/// Fills `buf` with the page pattern: each page starts with its index, then
/// the block. Cheap to write and to check even in a debug build (one copy or
/// comparison per page), and a misplaced or missing page shows.
fn fill_pages(buf: &mut [u8]) {
    let block = page_block();
    for (index, page) in buf.chunks_exact_mut(PAGE).enumerate() {
        page[..8].copy_from_slice(&(index as u64).to_le_bytes());
        page[8..].copy_from_slice(&block);
    }
}

fn check_pages(buf: &[u8]) -> Result<(), String> {
    if buf.len() % PAGE != 0 {
        return Err(format!("length {} is not whole pages", buf.len()));
    }
    let block = page_block();
    for (index, page) in buf.chunks_exact(PAGE).enumerate() {
        let got = u64::from_le_bytes(page[..8].try_into().expect("8 bytes"));
        if got != index as u64 {
            return Err(format!("page {index} says it is page {got}"));
        }
        if page[8..] != block[..] {
            return Err(format!("page {index}: contents differ"));
        }
    }
    Ok(())
}

fn child_gib_receiver() {
    let (mut conn, control) = child_connect();
    let frame = conn.recv_frame(Some(GIB_TIMEOUT)).expect("the 1 GiB frame");
    assert_eq!(frame.bytes().len(), GIB);
    check_pages(frame.bytes()).unwrap();
    drop(frame);
    assert_eq!(conn.stats().out_of_line_received, 1);
    tell(&control, b"intact");
}

/// A 1 GiB raw frame goes out of line and arrives intact (every page checked
/// in the receiver, which maps the sender's sealed blob: one 1 GiB buffer
/// per side).
#[test]
fn one_gib_raw_frame() {
    let (mut conn, peer) = connect_peer("gib-receiver", &ConnectionConfig::default(), &[]);
    let mut payload = vec![0u8; GIB];
    fill_pages(&mut payload);
    conn.send_frame(&payload, Some(GIB_TIMEOUT))
        .expect("send 1 GiB");
    drop(payload);
    let stats = conn.stats();
    assert_eq!((stats.frames_sent, stats.out_of_line_sent), (1, 1));
    assert_eq!(stats.fds_sent, 1, "the blob travels as a descriptor");
    peer.expect_word_within(b"intact", GIB_TIMEOUT);
    drop(conn);
    peer.expect_success();
}

fn child_boundary() {
    let (mut conn, control) = child_connect();
    let max = conn.max_inline_payload();
    for (seq, len) in [(0, max), (1, max + 1), (2, 3 * max)] {
        let frame = conn.recv_frame(Some(OP_TIMEOUT)).expect("a frame");
        assert_eq!(frame.bytes().len(), len);
        check_frame(seq, frame.bytes()).unwrap();
    }
    assert_eq!(conn.stats().out_of_line_received, 2);
    tell(&control, b"ok");
}

/// The largest inline payload stays in the ring; one byte more goes out of
/// line; both arrive intact.
#[test]
fn inline_and_out_of_line_boundary() {
    let config = ConnectionConfig::default().ring_capacity(64 * 1024);
    let (mut conn, peer) = connect_peer("boundary", &config, &[]);
    let max = conn.max_inline_payload();
    conn.send_frame(&make_frame(0, max), Some(OP_TIMEOUT))
        .expect("send");
    assert_eq!(
        conn.stats().out_of_line_sent,
        0,
        "the largest inline frame stays in the ring"
    );
    conn.send_frame(&make_frame(1, max + 1), Some(OP_TIMEOUT))
        .expect("send");
    conn.send_frame(&make_frame(2, 3 * max), Some(OP_TIMEOUT))
        .expect("send");
    assert_eq!(conn.stats().out_of_line_sent, 2);
    peer.expect_word(b"ok");
    drop(conn);
    peer.expect_success();
}

/// A typed message whose archive (8 MiB) exceeds the ring (1 MiB) goes out
/// of line, and so does its 8 MiB reply; both arrive intact.
fn typed_larger_than_the_ring(trust: Trust) {
    let config = service_config(trust);
    let (mut conn, peer) = connect_peer("service", &config, &[]);
    let len = 8 << 20;
    assert!(len > config.ring_capacity);
    let data = pattern(len, 0x33);
    let checksum = fnv64(&data);
    let message = Big {
        data,
        checksum,
        reply_len: len as u64,
    };
    let reply = conn
        .send_sync(
            Remote::<Service>::new(SERVICE_DESTINATION),
            &message,
            OP_TIMEOUT,
        )
        .expect("the large call");
    assert!(reply.intact, "the service saw the checksum match");
    assert_eq!(reply.checksum.to_native(), checksum);
    assert_eq!(reply.data.len(), len);
    assert!(
        reply.data.as_slice() == pattern(len, 0x5a).as_slice(),
        "the large reply is intact"
    );
    drop(reply);
    let stats = conn.stats();
    assert_eq!((stats.out_of_line_sent, stats.out_of_line_received), (1, 1));
    // A second large one: the sender now serializes straight into a memfd.
    let reply = conn
        .send_sync(
            Remote::<Service>::new(SERVICE_DESTINATION),
            &Big {
                data: pattern(len, 0x44),
                checksum: fnv64(&pattern(len, 0x44)),
                reply_len: 16,
            },
            OP_TIMEOUT,
        )
        .expect("the second large call");
    assert!(reply.intact, "the second large request arrived intact");
    assert_eq!(reply.data.len(), 16);
    drop(reply);
    let stats = conn.stats();
    assert_eq!((stats.out_of_line_sent, stats.out_of_line_received), (2, 1));
    // A small message after the large ones still travels in the ring.
    let sum = conn
        .send_sync(
            Remote::<Service>::new(SERVICE_DESTINATION),
            &Add { a: 2, b: 2 },
            OP_TIMEOUT,
        )
        .expect("a small call");
    assert_eq!(sum.value.to_native(), 4);
    assert_eq!(conn.stats().out_of_line_sent, 2);
    drop(sum);
    drop(conn);
    peer.expect_success();
}

#[test]
fn typed_larger_than_the_ring_trusted() {
    typed_larger_than_the_ring(Trust::Trusted);
}

#[test]
fn typed_larger_than_the_ring_untrusted() {
    typed_larger_than_the_ring(Trust::Untrusted);
}
