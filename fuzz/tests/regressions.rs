//! Defects the fuzz targets found in ferry's crates, reproduced without
//! libFuzzer and kept as regression tests once fixed. A defect not fixed yet
//! is `#[ignore]`d here (and `dispatch` fails CI on it) until it is.

use ferry_fuzz::dispatch::{self, Op::Frame, mode};
use ferry_fuzz::proto::*;
use ferry_transport::envelope::{ENVELOPE_SIZE, Envelope, Flags};
use ferry_transport::rkyv::{self, rancor};
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
