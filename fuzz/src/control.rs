//! Target `control`: `ferry_handoff::ControlMessage::decode`, with the number
//! of descriptors that arrived with the packet.
//!
//! Input: `fds: u8` (255 means `usize::MAX`), then the packet.
//!
//! Checked: a decoded message re-encodes, with the same descriptor count, to
//! exactly the same bytes (the encoding is canonical) and decodes to the same
//! value; only the kinds that carry descriptors accept any; the metadata the
//! transport puts inside (a connect request's schema, an endpoint) goes
//! through the transport's own decoders.

use crate::input::{Cursor, Writer};
use ferry_handoff::ControlMessage;
use ferry_handoff::message::{MAX_ENCODED_LEN, MAX_INTRODUCTION_FDS};

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut c = Cursor::new(data);
    let fds = match c.u8() {
        u8::MAX => usize::MAX,
        n => usize::from(n),
    };
    let packet = c.rest();
    let Ok(message) = ControlMessage::decode(packet, fds) else {
        return;
    };
    assert!(packet.len() <= MAX_ENCODED_LEN);
    if message.carries_descriptors() {
        assert!(fds <= MAX_INTRODUCTION_FDS, "{fds} descriptors accepted");
    } else {
        assert_eq!(fds, 0, "{} accepted descriptors", message.kind_name());
    }
    let mut again = Vec::new();
    message
        .encode(fds, &mut again)
        .expect("a decoded message encodes");
    assert_eq!(again, packet, "{message:?} is not encoded canonically");
    assert_eq!(ControlMessage::decode(&again, fds).as_ref(), Ok(&message));
    match &message {
        ControlMessage::Connect { metadata, .. }
        | ControlMessage::CreateConnection { metadata, .. } => {
            let _ = ferry_transport::decode_request(metadata);
        }
        ControlMessage::ConnectionCreated { metadata, .. }
        | ControlMessage::Connected { metadata, .. } => {
            let _ = ferry_transport::EndpointInfo::decode(metadata, fds);
        }
        _ => {}
    }
}

/// An input for [`run`]: `message` encoded with `fds` descriptors.
pub fn encode(message: &ControlMessage, fds: usize) -> Vec<u8> {
    let mut packet = Vec::new();
    message.encode(fds, &mut packet).expect("encodes");
    Writer::new().u8(fds as u8).bytes(&packet).finish()
}
