//! Target `message`: the transport's byte-level decoders (the envelope,
//! attachment header and out-of-line body of `ferry_transport::wire`,
//! endpoint metadata, introduction requests) and rkyv validation of every
//! declared message.
//!
//! Input: `selector: u8`, then the bytes for the decoder it picks
//! (`selector % KINDS`, see [`Kind`]). For archives, bit 7 of the selector
//! shifts the bytes off 16-byte alignment by `1 + (selector >> 4 & 7)`.
//!
//! Checked, beyond "never panics": whatever a decoder accepts re-encodes to
//! the same bytes, and what an encoder writes decodes to what it encoded;
//! every archive goes through `ferry_transport::fuzzing::decode::check_archive`
//! (trusted and untrusted validation agree; an accepted archive's value
//! re-encodes into an archive that validates and re-encodes identically).

use crate::input::{Cursor, Writer};
use crate::proto::*;
use ferry_transport::fuzzing::Fuzzable;
use ferry_transport::fuzzing::decode::check_archive;
use ferry_transport::rkyv::{self, rancor, util::AlignedVec};
use ferry_transport::wire::{
    ATTACHMENT_HEADER_SIZE, ENVELOPE_SIZE, Envelope, Flags, OUT_OF_LINE_BODY_SIZE,
    decode_attachment_header, decode_out_of_line_body, encode_attachment_header,
    encode_out_of_line_body,
};
use ferry_transport::{EndpointInfo, decode_request};

/// What a `message` input decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// `Envelope::decode(bytes[1..], bytes[0] as max_fds)`.
    Envelope,
    /// `EndpointInfo::decode(bytes[1..], bytes[0] as fd_count)`.
    EndpointInfo,
    /// `decode_attachment_header(bytes)`.
    Attachment,
    /// `decode_request(bytes)`.
    Request,
    /// `ArchivedLoadResource`.
    LoadResource,
    /// `ArchivedGetCookies`.
    GetCookies,
    /// `ArchivedCookies`.
    Cookies,
    /// `ArchivedSetCookie`.
    SetCookie,
    /// `ArchivedPublish`.
    Publish,
    /// `ArchivedLookup`.
    Lookup,
    /// `ArchivedFound`.
    Found,
    /// `decode_out_of_line_body(bytes)`.
    OutOfLineBody,
}

const KINDS: u8 = Kind::OutOfLineBody as u8 + 1;
const ALL: [Kind; KINDS as usize] = [
    Kind::Envelope,
    Kind::EndpointInfo,
    Kind::Attachment,
    Kind::Request,
    Kind::LoadResource,
    Kind::GetCookies,
    Kind::Cookies,
    Kind::SetCookie,
    Kind::Publish,
    Kind::Lookup,
    Kind::Found,
    Kind::OutOfLineBody,
];

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut c = Cursor::new(data);
    let selector = c.u8();
    let kind = ALL[usize::from(selector % KINDS)];
    let misalign = if selector & 0x80 != 0 {
        1 + usize::from((selector >> 4) & 7)
    } else {
        0
    };
    let bytes = c.rest();
    match kind {
        Kind::Envelope => envelope(bytes),
        Kind::EndpointInfo => endpoint_info(bytes),
        Kind::Attachment => attachment(bytes),
        Kind::Request => request(bytes),
        Kind::LoadResource => archive::<LoadResource>(bytes, misalign),
        Kind::GetCookies => archive::<GetCookies>(bytes, misalign),
        Kind::Cookies => archive::<Cookies>(bytes, misalign),
        Kind::SetCookie => archive::<SetCookie>(bytes, misalign),
        Kind::Publish => archive::<Publish>(bytes, misalign),
        Kind::Lookup => archive::<Lookup>(bytes, misalign),
        Kind::Found => archive::<Found>(bytes, misalign),
        Kind::OutOfLineBody => out_of_line_body(bytes),
    }
}

/// An input for [`run`].
pub fn encode(kind: Kind, bytes: &[u8]) -> Vec<u8> {
    Writer::new().u8(kind as u8).bytes(bytes).finish()
}

fn envelope(bytes: &[u8]) {
    let mut c = Cursor::new(bytes);
    let max_fds = usize::from(c.u8());
    let frame = c.rest();
    let Ok(envelope) = Envelope::decode(frame, max_fds) else {
        return;
    };
    let mut again = [0u8; ENVELOPE_SIZE];
    envelope.write_to(&mut again);
    assert_eq!(&again[..], &frame[..ENVELOPE_SIZE], "{envelope:?}");
    let flags = envelope.flags;
    assert_eq!(flags.0 & !Flags::ALL, 0);
    assert!(!flags.has(Flags::REPLY) || envelope.request_id != 0);
    assert_eq!(flags.has(Flags::RAW), envelope.receiver == 0);
    assert!(!flags.has(Flags::RAW) || envelope.message == 0);
    let blob = usize::from(flags.has(Flags::OUT_OF_LINE));
    let fds = usize::from(envelope.fd_count);
    assert!(
        fds >= blob && fds <= max_fds + blob,
        "{envelope:?} with max {max_fds}"
    );
}

fn endpoint_info(bytes: &[u8]) {
    let mut c = Cursor::new(bytes);
    let fd_count = usize::from(c.u8());
    let metadata = c.rest();
    let Ok(info) = EndpointInfo::decode(metadata, fd_count) else {
        return;
    };
    assert_eq!(info.encode(), metadata, "{info:?}");
    assert_eq!(fd_count, ferry_transport::ENDPOINT_FDS);
    for offset in [info.rx_offset, info.tx_offset] {
        assert!(offset < info.region_len && offset % ferry_ring::RING_ALIGN as u64 == 0);
    }
    assert_ne!(info.rx_offset, info.tx_offset);
}

fn attachment(bytes: &[u8]) {
    if let Some(sequence) = decode_attachment_header(bytes) {
        assert_eq!(bytes.len(), ATTACHMENT_HEADER_SIZE);
        assert_eq!(&bytes[..8], b"FERRYFDS");
        assert_eq!(bytes[8..], sequence.to_le_bytes());
        assert_eq!(encode_attachment_header(sequence), bytes);
    }
    // Every header the sender writes decodes to its sequence number.
    let sequence = bytes
        .iter()
        .fold(0u64, |s, &b| s.rotate_left(8) ^ u64::from(b));
    assert_eq!(
        decode_attachment_header(&encode_attachment_header(sequence)),
        Some(sequence)
    );
}

fn out_of_line_body(bytes: &[u8]) {
    match decode_out_of_line_body(bytes) {
        Some(len) => {
            assert_eq!(bytes.len(), OUT_OF_LINE_BODY_SIZE);
            assert_eq!(encode_out_of_line_body(len), bytes);
        }
        None => assert_ne!(bytes.len(), OUT_OF_LINE_BODY_SIZE, "{bytes:?} refused"),
    }
}

fn request(bytes: &[u8]) {
    if let Some(schema) = decode_request(bytes) {
        assert_eq!(bytes.len(), 16);
        assert_eq!(&bytes[..8], b"FERRYRQ1");
        assert_eq!(bytes[8..], schema.to_le_bytes());
    }
}

/// Validates `bytes` as an archive of `T`, copied to `misalign` bytes past
/// a 16-aligned address (refused or accepted, never undefined behaviour),
/// then checks it with the public `fuzzing::decode::check_archive`: a
/// trusted and an untrusted receiver agree, and an accepted archive's value
/// re-encodes identically.
pub fn archive<T: Fuzzable>(bytes: &[u8], misalign: usize) {
    let mut buffer = AlignedVec::<16>::with_capacity(misalign + bytes.len());
    buffer.extend_from_slice(&[0u8; 16][..misalign]);
    buffer.extend_from_slice(bytes);
    let _ = std::hint::black_box(rkyv::access::<T::Archived, rancor::Error>(
        &buffer[misalign..],
    ));
    if let Err(finding) = check_archive::<T>(bytes) {
        panic!("{finding}");
    }
}
