//! Defects the fuzz targets found in ferry's crates, reproduced without
//! libFuzzer and kept as regression tests once fixed. A defect not fixed yet
//! is `#[ignore]`d here (and `dispatch` fails CI on it) until it is.

use ferry_fuzz::dispatch::{self, Op::Frame, mode};
use ferry_fuzz::proto::*;
use ferry_transport::rkyv::{self, rancor};
use ferry_transport::wire::{ENVELOPE_SIZE, Envelope, Flags};
use ferry_transport::{Message, Receiver};

fn frame<M: Message>(destination: u64, request_id: u64, flags: u16, body: &[u8]) -> Vec<u8> {
    let envelope = Envelope {
        destination,
        request_id,
        receiver: <M::Receiver as Receiver>::ID,
        schema: <M::Receiver as Receiver>::SCHEMA,
        message: M::ID,
        flags: Flags(flags),
        fd_count: 0,
    };
    let mut bytes = vec![0u8; ENVELOPE_SIZE];
    envelope.write_to(&mut bytes);
    bytes.extend_from_slice(body);
    bytes
}

/// transport/src/dispatch.rs, `Connection::dispatch`: messages set aside
/// during a synchronous call are dispatched after one of them was found
/// invalid. The victim calls synchronously; while it waits, an invalid
/// `Publish` and a valid `LoadResource` arrive (both set aside), then the
/// reply. The next `dispatch` reports the invalid `Publish` as a protocol
/// violation and closes the connection; the one after that still runs the
/// `LoadResource` handler (the harness's handlers panic: "LoadResource
/// handled after the victim reported a protocol violation").
#[test]
fn set_aside_messages_are_not_dispatched_after_a_violation() {
    let load = LoadResource {
        request_id: 1,
        url: "after the violation".into(),
    };
    let cookies = Cookies { cookies: vec![] };
    let ops = [
        Frame(frame::<Publish>(1, 0, 0, b"not an archive of Publish")),
        Frame(frame::<LoadResource>(
            0,
            0,
            0,
            &rkyv::to_bytes::<rancor::Error>(&load).unwrap(),
        )),
        Frame(frame::<GetCookies>(
            0,
            1,
            Flags::REPLY,
            &rkyv::to_bytes::<rancor::Error>(&cookies).unwrap(),
        )),
    ];
    dispatch::run(&dispatch::encode(mode::SYNC_CALL, &ops));
}

/// transport/src/call.rs, `complete_reply`: a reply was matched by request
/// id only, so a reply naming another message was validated as the reply
/// type the caller expected (found by `dispatch`: a `Found` archive accepted
/// as `Cookies` because the bytes happened to validate). Now the reply must
/// name its request's receiver and message, or it is a violation.
#[test]
fn a_reply_naming_another_message_is_a_violation() {
    let cookies = Cookies {
        cookies: vec!["a=b".into()],
    };
    let ops = [Frame(frame::<Publish>(
        0,
        1,
        Flags::REPLY,
        &rkyv::to_bytes::<rancor::Error>(&cookies).unwrap(),
    ))];
    let report = dispatch::run_report(&dispatch::encode(mode::SYNC_CALL, &ops));
    let call = report.sync_call.expect("the victim made its call");
    assert!(
        call.contains("MismatchedReply") || call.contains("names another message"),
        "{call}"
    );
}

/// transport/src/set_aside.rs, `SetAside::push`: the descriptor budget of
/// the messages set aside during a synchronous call counted the descriptors
/// a message carries but not the sealed blob an out-of-line message holds
/// open (its body), so a peer could make a waiting call hold one descriptor
/// per message up to `max_deferred_bytes` (64 MiB by default: some 250 000
/// blobs of one byte, far past any descriptor limit). Here the budget is no
/// descriptor at all and six blobs arrive while the victim waits: the
/// harness counts the blobs held after the call ("7 attached descriptors
/// held after the synchronous call", at most 2 allowed). Now a blob counts
/// as a descriptor.
#[test]
fn blobs_set_aside_count_against_the_descriptor_budget() {
    let report = dispatch::run_report(&blobs_while_waiting());
    assert_eq!(
        report.sync_call.as_deref(),
        Some("too many messages arrived while waiting for the reply")
    );
    assert!(report.most_fds_held <= 2, "{report:?}");
}

/// The input of [`blobs_set_aside_count_against_the_descriptor_budget`]
/// (also `regressions/dispatch/blobs_set_aside`).
fn blobs_while_waiting() -> Vec<u8> {
    use ferry_fuzz::dispatch::{Fd, Limits, Op::Attachment};
    let blob = rkyv::to_bytes::<rancor::Error>(&Publish {
        entries: vec![sample_entry(7)],
        origin: None,
        version: 1,
    })
    .unwrap()
    .to_vec();
    let mut out_of_line =
        frame::<Publish>(1, 0, Flags::OUT_OF_LINE, &(blob.len() as u64).to_le_bytes());
    // One descriptor: the blob (the envelope's last field).
    out_of_line[30..32].copy_from_slice(&1u16.to_le_bytes());
    let mut ops = Vec::new();
    for _ in 0..6 {
        ops.push(Attachment {
            header: None,
            fds: vec![Fd::Blob(blob.clone())],
        });
        ops.push(Frame(out_of_line.clone()));
    }
    let limits = Limits {
        max_sync_nesting: 4,
        max_deferred_bytes: u16::MAX,
        max_deferred_fds: 0,
        max_dispatch_batch: u8::MAX,
        max_pending_replies: 3,
        max_message_size: u16::MAX,
    };
    dispatch::encode_with_limits(mode::SYNC_CALL | mode::ONE_FD, Some(limits), &ops)
}

/// Writes the regression inputs this file builds into `regressions/`
/// (run with `--ignored` after changing the input format).
#[test]
#[ignore]
fn write_regression_inputs() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions/dispatch");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("blobs_set_aside"), blobs_while_waiting()).unwrap();
}
