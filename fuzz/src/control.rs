//! Target `control`: `ferry_handoff::ControlMessage::decode`, with the number
//! of descriptors that arrived with the packet, and its encoder on messages
//! built from the input.
//!
//! Input: `fds: u8`, then:
//! - `fds` up to 253 (255 means `usize::MAX`): the packet to decode;
//! - `fds` 254 ([`GENERATE`]): the fields of a message to build (see
//!   [`generate`]: every kind and every `ConnectFailure`, `TargetBusy`
//!   included), which is encoded and decoded again.
//!
//! Checked: a decoded message re-encodes, with the same descriptor count, to
//! exactly the same bytes (the encoding is canonical) and decodes to the same
//! value; only the kinds that carry descriptors accept any; the metadata the
//! transport puts inside (a connect request's schema, an endpoint) goes
//! through the transport's own decoders. A built message that encodes
//! decodes to itself; one that does not has a field out of its bounds.

use crate::input::{Cursor, Writer};
use ferry_handoff::message::{
    MAX_ENCODED_LEN, MAX_INTRODUCTION_FDS, MAX_METADATA_LEN, MAX_TEXT_LEN, validate_service_name,
};
use ferry_handoff::{ConnectFailure, ControlMessage, InstanceId, PeerId};

/// The first byte that makes an input a message to build.
pub const GENERATE: u8 = 254;

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut c = Cursor::new(data);
    let fds = match c.u8() {
        GENERATE => return round_trip(&mut c),
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

/// Builds a message from the input (and the descriptor count it is sent
/// with), encodes it and decodes it again.
fn round_trip(c: &mut Cursor<'_>) {
    let fds = usize::from(c.u8()) % (MAX_INTRODUCTION_FDS + 2);
    let message = generate(c);
    let mut packet = Vec::new();
    match message.encode(fds, &mut packet) {
        Ok(()) => {
            assert!(packet.len() <= MAX_ENCODED_LEN, "{message:?}");
            assert_eq!(
                ControlMessage::decode(&packet, fds),
                Ok(message),
                "{packet:?} with {fds} descriptors"
            );
        }
        Err(_) => assert!(
            out_of_bounds(&message, fds),
            "{message:?} with {fds} descriptors refused"
        ),
    }
}

/// Whether a field of `message` (or the descriptor count) is out of the
/// bounds the encoder enforces.
fn out_of_bounds(message: &ControlMessage, fds: usize) -> bool {
    let descriptors = if message.carries_descriptors() {
        fds > MAX_INTRODUCTION_FDS
    } else {
        fds != 0
    };
    let bad_peer = |peer: &PeerId| !validate_service_name(&peer.service);
    let fields = match message {
        ControlMessage::Hello { you } => bad_peer(you),
        ControlMessage::Connect {
            service, metadata, ..
        } => !validate_service_name(service) || metadata.len() > MAX_METADATA_LEN,
        ControlMessage::CreateConnection {
            requester,
            metadata,
            ..
        } => bad_peer(requester) || metadata.len() > MAX_METADATA_LEN,
        ControlMessage::ConnectionCreated { metadata, .. } => metadata.len() > MAX_METADATA_LEN,
        ControlMessage::Connected { peer, metadata, .. } => {
            bad_peer(peer) || metadata.len() > MAX_METADATA_LEN
        }
        ControlMessage::PeerGone { peer } => bad_peer(peer),
        ControlMessage::Report { peer, reason } => bad_peer(peer) || reason.len() > MAX_TEXT_LEN,
        ControlMessage::CreateFailed { .. }
        | ControlMessage::ConnectFailed { .. }
        | ControlMessage::Denied { .. } => false,
    };
    descriptors || fields
}

/// Builds a control message from the input: a kind byte, then its fields
/// (texts and names as a length byte and bytes, metadata as a `u16` length
/// and bytes, a failure as a code byte and a text).
pub fn generate(c: &mut Cursor<'_>) -> ControlMessage {
    fn text(c: &mut Cursor<'_>) -> String {
        let len = usize::from(c.u8());
        String::from_utf8_lossy(c.bytes(len)).into_owned()
    }
    fn peer(c: &mut Cursor<'_>) -> PeerId {
        PeerId {
            service: text(c),
            instance: InstanceId(c.u64()),
        }
    }
    fn metadata(c: &mut Cursor<'_>) -> Vec<u8> {
        let len = usize::from(c.u16()) % (MAX_METADATA_LEN + 64);
        c.bytes(len).to_vec()
    }
    match c.u8() % 10 {
        0 => ControlMessage::Hello { you: peer(c) },
        1 => ControlMessage::Connect {
            request: c.u64(),
            service: text(c),
            metadata: metadata(c),
        },
        2 => ControlMessage::CreateConnection {
            request: c.u64(),
            requester: peer(c),
            metadata: metadata(c),
        },
        3 => ControlMessage::ConnectionCreated {
            request: c.u64(),
            metadata: metadata(c),
        },
        4 => ControlMessage::CreateFailed {
            request: c.u64(),
            reason: text(c),
        },
        5 => ControlMessage::Connected {
            request: c.u64(),
            peer: peer(c),
            metadata: metadata(c),
        },
        6 => ControlMessage::ConnectFailed {
            request: c.u64(),
            failure: match c.u8() % 6 {
                0 => ConnectFailure::UnknownService,
                1 => ConnectFailure::TargetFailed(text(c)),
                2 => ConnectFailure::TargetGone,
                3 => ConnectFailure::TimedOut,
                4 => ConnectFailure::Busy,
                _ => ConnectFailure::TargetBusy,
            },
        },
        7 => ControlMessage::Denied { request: c.u64() },
        8 => ControlMessage::PeerGone { peer: peer(c) },
        _ => ControlMessage::Report {
            peer: peer(c),
            reason: text(c),
        },
    }
}

/// An input for [`run`]: `message` encoded with `fds` descriptors.
pub fn encode(message: &ControlMessage, fds: usize) -> Vec<u8> {
    let mut packet = Vec::new();
    message.encode(fds, &mut packet).expect("encodes");
    Writer::new().u8(fds as u8).bytes(&packet).finish()
}

/// An input for [`run`] that builds `message` (with `fds` descriptors) from
/// its fields: the inverse of [`generate`].
pub fn encode_fields(message: &ControlMessage, fds: u8) -> Vec<u8> {
    fn text(w: &mut Writer, text: &str) {
        w.u8(text.len() as u8).bytes(text.as_bytes());
    }
    fn peer(w: &mut Writer, peer: &PeerId) {
        text(w, &peer.service);
        w.u64(peer.instance.0);
    }
    fn metadata(w: &mut Writer, metadata: &[u8]) {
        w.u16(metadata.len() as u16).bytes(metadata);
    }
    let mut w = Writer::new();
    w.u8(GENERATE).u8(fds);
    match message {
        ControlMessage::Hello { you } => {
            w.u8(0);
            peer(&mut w, you);
        }
        ControlMessage::Connect {
            request,
            service,
            metadata: m,
        } => {
            w.u8(1).u64(*request);
            text(&mut w, service);
            metadata(&mut w, m);
        }
        ControlMessage::CreateConnection {
            request,
            requester,
            metadata: m,
        } => {
            w.u8(2).u64(*request);
            peer(&mut w, requester);
            metadata(&mut w, m);
        }
        ControlMessage::ConnectionCreated {
            request,
            metadata: m,
        } => {
            w.u8(3).u64(*request);
            metadata(&mut w, m);
        }
        ControlMessage::CreateFailed { request, reason } => {
            w.u8(4).u64(*request);
            text(&mut w, reason);
        }
        ControlMessage::Connected {
            request,
            peer: p,
            metadata: m,
        } => {
            w.u8(5).u64(*request);
            peer(&mut w, p);
            metadata(&mut w, m);
        }
        ControlMessage::ConnectFailed { request, failure } => {
            w.u8(6).u64(*request);
            match failure {
                ConnectFailure::UnknownService => w.u8(0),
                ConnectFailure::TargetFailed(reason) => {
                    w.u8(1);
                    text(&mut w, reason);
                    &mut w
                }
                ConnectFailure::TargetGone => w.u8(2),
                ConnectFailure::TimedOut => w.u8(3),
                ConnectFailure::Busy => w.u8(4),
                ConnectFailure::TargetBusy => w.u8(5),
            };
        }
        ControlMessage::Denied { request } => {
            w.u8(7).u64(*request);
        }
        ControlMessage::PeerGone { peer: p } => {
            w.u8(8);
            peer(&mut w, p);
        }
        ControlMessage::Report { peer: p, reason } => {
            w.u8(9);
            peer(&mut w, p);
            text(&mut w, reason);
        }
    }
    w.finish()
}
