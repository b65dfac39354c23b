//! The control messages exchanged between the broker and its children, and
//! their validated binary encoding.
//!
//! # Wire format (protocol version 1)
//!
//! Every message is one `SOCK_SEQPACKET` packet, little-endian throughout:
//!
//! ```text
//! u8 version (= 1) | u8 kind | body
//! ```
//!
//! | kind | message | body | descriptors |
//! |---|---|---|---|
//! | 1 | [`Hello`](ControlMessage::Hello) | peer | 0 |
//! | 2 | [`Connect`](ControlMessage::Connect) | u64 request, name service, blob metadata | 0 |
//! | 3 | [`CreateConnection`](ControlMessage::CreateConnection) | u64 request, peer requester, blob metadata | 0 |
//! | 4 | [`ConnectionCreated`](ControlMessage::ConnectionCreated) | u64 request, u8 fd count, blob metadata | fd count |
//! | 5 | [`CreateFailed`](ControlMessage::CreateFailed) | u64 request, text reason | 0 |
//! | 6 | [`Connected`](ControlMessage::Connected) | u64 request, peer, u8 fd count, blob metadata | fd count |
//! | 7 | [`ConnectFailed`](ControlMessage::ConnectFailed) | u64 request, u8 code, text detail | 0 |
//! | 8 | [`Denied`](ControlMessage::Denied) | u64 request | 0 |
//! | 9 | [`PeerGone`](ControlMessage::PeerGone) | peer | 0 |
//! | 10 | [`Report`](ControlMessage::Report) | peer accused, text reason | 0 |
//!
//! where `name` is a `u8` length and a [service name](validate_service_name),
//! `peer` is a name and a `u64` instance id, `blob` is a `u16` length and at
//! most [`MAX_METADATA_LEN`] bytes, and `text` is a `u16` length and at most
//! [`MAX_TEXT_LEN`] bytes of UTF-8. A failure `code` is 1 unknown service,
//! 2 target failed (the only one with a detail text), 3 target gone, 4 timed
//! out, 5 busy (the requester's own limit), 6 target busy.
//!
//! Decoding trusts nothing: every length is checked against its bound and
//! against the bytes actually present, trailing bytes are an error, and the
//! number of descriptors that arrived with the packet must be exactly the
//! number the message declares. [`ControlMessage::decode`] never panics,
//! whatever the input (it is exercised with random inputs in the tests and is
//! the entry point for the fuzz target).

use std::fmt;

/// The protocol version this crate speaks; the first byte of every message.
pub const PROTOCOL_VERSION: u8 = 1;
/// The longest service name, in bytes.
pub const MAX_SERVICE_NAME_LEN: usize = 64;
/// The largest metadata blob carried by a connect request or an endpoint.
pub const MAX_METADATA_LEN: usize = 4096;
/// The longest error text (a target's failure reason), in bytes of UTF-8.
pub const MAX_TEXT_LEN: usize = 1024;
/// The most descriptors one introduction may carry.
pub const MAX_INTRODUCTION_FDS: usize = 16;

const PEER_MAX_LEN: usize = 1 + MAX_SERVICE_NAME_LEN + 8;
/// The largest encoded control message, in bytes: a receive buffer of this
/// size never truncates a valid message.
pub const MAX_ENCODED_LEN: usize = 2 + 8 + PEER_MAX_LEN + 1 + 2 + MAX_METADATA_LEN;

// The biggest message is `Connected`; make sure the others fit too.
const _: () = assert!(MAX_ENCODED_LEN >= 2 + 8 + 1 + MAX_SERVICE_NAME_LEN + 2 + MAX_METADATA_LEN);
const _: () = assert!(MAX_ENCODED_LEN >= 2 + 8 + 1 + 2 + MAX_TEXT_LEN);
const _: () = assert!(MAX_ENCODED_LEN >= 2 + PEER_MAX_LEN + 2 + MAX_TEXT_LEN);
const _: () = assert!(MAX_INTRODUCTION_FDS <= u8::MAX as usize);

/// The broker's number for one spawned child, unique for the broker's
/// lifetime (never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(pub u64);

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Who a child is: the service it was spawned as and its instance id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerId {
    /// The service name given to [`Broker::spawn`](crate::Broker::spawn).
    pub service: String,
    /// The instance id the broker assigned.
    pub instance: InstanceId,
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.service, self.instance)
    }
}

/// Why the broker could not introduce a requester to a service (other than a
/// policy denial, which is its own message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectFailure {
    /// No live child is registered under that service name.
    UnknownService,
    /// The target's handler refused or failed; its reason.
    TargetFailed(String),
    /// The target exited or hung up before answering.
    TargetGone,
    /// The target did not answer within the broker's introduction timeout.
    TimedOut,
    /// The requester already has too many introductions in flight.
    Busy,
    /// The target has too many introductions in flight (in all, or from
    /// this requester), or its control socket is full: try again later.
    /// Nothing is wrong with the requester or the target.
    TargetBusy,
}

impl ConnectFailure {
    fn code(&self) -> u8 {
        match self {
            ConnectFailure::UnknownService => 1,
            ConnectFailure::TargetFailed(_) => 2,
            ConnectFailure::TargetGone => 3,
            ConnectFailure::TimedOut => 4,
            ConnectFailure::Busy => 5,
            ConnectFailure::TargetBusy => 6,
        }
    }
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectFailure::UnknownService => f.write_str("unknown service"),
            ConnectFailure::TargetFailed(reason) => write!(f, "target failed: {reason}"),
            ConnectFailure::TargetGone => f.write_str("target gone"),
            ConnectFailure::TimedOut => f.write_str("target did not answer in time"),
            ConnectFailure::Busy => f.write_str("too many introductions in flight"),
            ConnectFailure::TargetBusy => {
                f.write_str("the target has too many introductions in flight")
            }
        }
    }
}

/// One control message. Messages that carry descriptors
/// ([`ConnectionCreated`](Self::ConnectionCreated) and
/// [`Connected`](Self::Connected)) are sent together with them in the same
/// packet; the descriptors are not part of the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlMessage {
    /// Broker → child, first message on a fresh bootstrap channel: who the
    /// child is.
    Hello {
        /// The child's own identity.
        you: PeerId,
    },
    /// Child → broker: introduce me to a child of `service`.
    Connect {
        /// The requester's id for this request, echoed in the reply.
        request: u64,
        /// The service wanted.
        service: String,
        /// Opaque bytes forwarded to the target's handler.
        metadata: Vec<u8>,
    },
    /// Broker → target: create a connection for `requester`.
    CreateConnection {
        /// The broker's id for this introduction.
        request: u64,
        /// Who asked.
        requester: PeerId,
        /// The requester's metadata, forwarded as is.
        metadata: Vec<u8>,
    },
    /// Target → broker: here is the requester's end (the descriptors travel
    /// with this message).
    ConnectionCreated {
        /// The broker's id from [`CreateConnection`](Self::CreateConnection).
        request: u64,
        /// Opaque bytes forwarded to the requester.
        metadata: Vec<u8>,
    },
    /// Target → broker: the connection could not be created.
    CreateFailed {
        /// The broker's id from [`CreateConnection`](Self::CreateConnection).
        request: u64,
        /// Human-readable reason, forwarded to the requester.
        reason: String,
    },
    /// Broker → requester: the introduction succeeded (the descriptors travel
    /// with this message).
    Connected {
        /// The requester's id from [`Connect`](Self::Connect).
        request: u64,
        /// The child the requester is now connected to.
        peer: PeerId,
        /// The target's metadata.
        metadata: Vec<u8>,
    },
    /// Broker → requester: the introduction failed.
    ConnectFailed {
        /// The requester's id from [`Connect`](Self::Connect).
        request: u64,
        /// Why.
        failure: ConnectFailure,
    },
    /// Broker → requester: the policy does not allow this introduction.
    Denied {
        /// The requester's id from [`Connect`](Self::Connect).
        request: u64,
    },
    /// Broker → child: a child you were introduced to is gone.
    PeerGone {
        /// The child that is gone.
        peer: PeerId,
    },
    /// Child → broker: a peer I was introduced to sent me garbage (the
    /// broker's report policy decides what happens to it; see
    /// [`ReportPolicy`](crate::ReportPolicy)).
    Report {
        /// The child accused.
        peer: PeerId,
        /// What it did, for the broker's log.
        reason: String,
    },
}

/// Why bytes could not be decoded as a [`ControlMessage`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The packet is empty.
    #[error("empty control message")]
    Empty,
    /// The packet is longer than any valid message.
    #[error("control message of {len} bytes exceeds the maximum of {MAX_ENCODED_LEN}")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// The version byte is not [`PROTOCOL_VERSION`].
    #[error("unsupported control protocol version {0} (this side speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u8),
    /// The kind byte names no message.
    #[error("unknown control message kind {0}")]
    UnknownKind(u8),
    /// A field runs past the end of the packet.
    #[error("control message ends in the middle of a field")]
    UnexpectedEnd,
    /// Bytes are left over after the last field.
    #[error("{0} trailing bytes after the control message")]
    TrailingBytes(usize),
    /// A length field exceeds its bound.
    #[error("{field} is {len} bytes long, the maximum is {max}")]
    FieldTooLong {
        /// Which field.
        field: &'static str,
        /// Its declared length.
        len: usize,
        /// Its bound.
        max: usize,
    },
    /// A text field is not UTF-8.
    #[error("{0} is not valid UTF-8")]
    InvalidUtf8(&'static str),
    /// A service name is empty or has characters outside `[A-Za-z0-9._-]`.
    #[error("invalid service name")]
    InvalidServiceName,
    /// The failure code of a `ConnectFailed` is unknown.
    #[error("unknown connect failure code {0}")]
    UnknownFailureCode(u8),
    /// The number of descriptors that arrived differs from the number the
    /// message declares (messages other than `ConnectionCreated` and
    /// `Connected` declare none).
    #[error("message declares {declared} descriptors but {received} arrived")]
    DescriptorMismatch {
        /// What the message says.
        declared: usize,
        /// What arrived.
        received: usize,
    },
}

/// Why a [`ControlMessage`] could not be encoded (one of its fields is out of
/// bounds).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A field exceeds its bound.
    #[error("{field} is {len} bytes long, the maximum is {max}")]
    FieldTooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// Its bound.
        max: usize,
    },
    /// A service name is empty or has characters outside `[A-Za-z0-9._-]`.
    #[error("invalid service name {0:?}")]
    InvalidServiceName(String),
    /// Descriptors attached to a message that carries none, or more than
    /// [`MAX_INTRODUCTION_FDS`].
    #[error("{count} descriptors cannot travel with this message (at most {max})")]
    Descriptors {
        /// How many were attached.
        count: usize,
        /// How many this message may carry.
        max: usize,
    },
}

/// Checks a service name: 1 to [`MAX_SERVICE_NAME_LEN`] bytes of
/// `[A-Za-z0-9._-]`.
pub fn validate_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SERVICE_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Cuts `text` to at most [`MAX_TEXT_LEN`] bytes, at a character boundary.
pub(crate) fn truncate_text(mut text: String) -> String {
    if text.len() > MAX_TEXT_LEN {
        let mut end = MAX_TEXT_LEN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

const KIND_HELLO: u8 = 1;
const KIND_CONNECT: u8 = 2;
const KIND_CREATE_CONNECTION: u8 = 3;
const KIND_CONNECTION_CREATED: u8 = 4;
const KIND_CREATE_FAILED: u8 = 5;
const KIND_CONNECTED: u8 = 6;
const KIND_CONNECT_FAILED: u8 = 7;
const KIND_DENIED: u8 = 8;
const KIND_PEER_GONE: u8 = 9;
const KIND_REPORT: u8 = 10;

impl ControlMessage {
    /// A short name of the message kind, for diagnostics.
    pub fn kind_name(&self) -> &'static str {
        match self {
            ControlMessage::Hello { .. } => "Hello",
            ControlMessage::Connect { .. } => "Connect",
            ControlMessage::CreateConnection { .. } => "CreateConnection",
            ControlMessage::ConnectionCreated { .. } => "ConnectionCreated",
            ControlMessage::CreateFailed { .. } => "CreateFailed",
            ControlMessage::Connected { .. } => "Connected",
            ControlMessage::ConnectFailed { .. } => "ConnectFailed",
            ControlMessage::Denied { .. } => "Denied",
            ControlMessage::PeerGone { .. } => "PeerGone",
            ControlMessage::Report { .. } => "Report",
        }
    }

    /// Whether this kind of message travels with descriptors.
    pub fn carries_descriptors(&self) -> bool {
        matches!(
            self,
            ControlMessage::ConnectionCreated { .. } | ControlMessage::Connected { .. }
        )
    }

    /// Encodes the message, to be sent together with `fd_count` descriptors,
    /// replacing the contents of `out`.
    pub fn encode(&self, fd_count: usize, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let max_fds = if self.carries_descriptors() {
            MAX_INTRODUCTION_FDS
        } else {
            0
        };
        if fd_count > max_fds {
            return Err(EncodeError::Descriptors {
                count: fd_count,
                max: max_fds,
            });
        }
        out.clear();
        out.push(PROTOCOL_VERSION);
        let mut w = Writer(out);
        match self {
            ControlMessage::Hello { you } => {
                w.u8(KIND_HELLO);
                w.peer(you)?;
            }
            ControlMessage::Connect {
                request,
                service,
                metadata,
            } => {
                w.u8(KIND_CONNECT);
                w.u64(*request);
                w.service(service)?;
                w.blob(metadata)?;
            }
            ControlMessage::CreateConnection {
                request,
                requester,
                metadata,
            } => {
                w.u8(KIND_CREATE_CONNECTION);
                w.u64(*request);
                w.peer(requester)?;
                w.blob(metadata)?;
            }
            ControlMessage::ConnectionCreated { request, metadata } => {
                w.u8(KIND_CONNECTION_CREATED);
                w.u64(*request);
                w.fd_count(fd_count);
                w.blob(metadata)?;
            }
            ControlMessage::CreateFailed { request, reason } => {
                w.u8(KIND_CREATE_FAILED);
                w.u64(*request);
                w.text(reason)?;
            }
            ControlMessage::Connected {
                request,
                peer,
                metadata,
            } => {
                w.u8(KIND_CONNECTED);
                w.u64(*request);
                w.peer(peer)?;
                w.fd_count(fd_count);
                w.blob(metadata)?;
            }
            ControlMessage::ConnectFailed { request, failure } => {
                w.u8(KIND_CONNECT_FAILED);
                w.u64(*request);
                w.u8(failure.code());
                w.text(match failure {
                    ConnectFailure::TargetFailed(reason) => reason,
                    _ => "",
                })?;
            }
            ControlMessage::Denied { request } => {
                w.u8(KIND_DENIED);
                w.u64(*request);
            }
            ControlMessage::PeerGone { peer } => {
                w.u8(KIND_PEER_GONE);
                w.peer(peer)?;
            }
            ControlMessage::Report { peer, reason } => {
                w.u8(KIND_REPORT);
                w.peer(peer)?;
                w.text(reason)?;
            }
        }
        Ok(())
    }

    /// Decodes one packet that arrived together with `fd_count` descriptors.
    ///
    /// Every field is validated; any violation is an error, never a panic.
    /// The caller owns the descriptors and should close them (drop them) when
    /// this fails.
    pub fn decode(bytes: &[u8], fd_count: usize) -> Result<ControlMessage, DecodeError> {
        if bytes.is_empty() {
            return Err(DecodeError::Empty);
        }
        if bytes.len() > MAX_ENCODED_LEN {
            return Err(DecodeError::TooLarge { len: bytes.len() });
        }
        let mut r = Reader { bytes, pos: 0 };
        let version = r.u8()?;
        if version != PROTOCOL_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let kind = r.u8()?;
        let mut declared_fds = 0;
        let message = match kind {
            KIND_HELLO => ControlMessage::Hello { you: r.peer()? },
            KIND_CONNECT => ControlMessage::Connect {
                request: r.u64()?,
                service: r.service()?,
                metadata: r.blob()?,
            },
            KIND_CREATE_CONNECTION => ControlMessage::CreateConnection {
                request: r.u64()?,
                requester: r.peer()?,
                metadata: r.blob()?,
            },
            KIND_CONNECTION_CREATED => {
                let request = r.u64()?;
                declared_fds = r.fd_count()?;
                ControlMessage::ConnectionCreated {
                    request,
                    metadata: r.blob()?,
                }
            }
            KIND_CREATE_FAILED => ControlMessage::CreateFailed {
                request: r.u64()?,
                reason: r.text("failure reason")?,
            },
            KIND_CONNECTED => {
                let request = r.u64()?;
                let peer = r.peer()?;
                declared_fds = r.fd_count()?;
                ControlMessage::Connected {
                    request,
                    peer,
                    metadata: r.blob()?,
                }
            }
            KIND_CONNECT_FAILED => {
                let request = r.u64()?;
                let code = r.u8()?;
                let detail = r.text("failure detail")?;
                // Only a target's failure has a text; elsewhere it must be
                // empty, so that the encoding stays canonical.
                if code != 2 && !detail.is_empty() {
                    return Err(DecodeError::FieldTooLong {
                        field: "failure detail",
                        len: detail.len(),
                        max: 0,
                    });
                }
                let failure = match code {
                    1 => ConnectFailure::UnknownService,
                    2 => ConnectFailure::TargetFailed(detail),
                    3 => ConnectFailure::TargetGone,
                    4 => ConnectFailure::TimedOut,
                    5 => ConnectFailure::Busy,
                    6 => ConnectFailure::TargetBusy,
                    other => return Err(DecodeError::UnknownFailureCode(other)),
                };
                ControlMessage::ConnectFailed { request, failure }
            }
            KIND_DENIED => ControlMessage::Denied { request: r.u64()? },
            KIND_PEER_GONE => ControlMessage::PeerGone { peer: r.peer()? },
            KIND_REPORT => ControlMessage::Report {
                peer: r.peer()?,
                reason: r.text("report reason")?,
            },
            other => return Err(DecodeError::UnknownKind(other)),
        };
        let rest = bytes.len() - r.pos;
        if rest != 0 {
            return Err(DecodeError::TrailingBytes(rest));
        }
        if declared_fds != fd_count {
            return Err(DecodeError::DescriptorMismatch {
                declared: declared_fds,
                received: fd_count,
            });
        }
        Ok(message)
    }
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn fd_count(&mut self, count: usize) {
        // `encode` checked count <= MAX_INTRODUCTION_FDS, which fits a u8.
        self.0.push(u8::try_from(count).unwrap_or(u8::MAX));
    }

    fn service(&mut self, name: &str) -> Result<(), EncodeError> {
        if !validate_service_name(name) {
            return Err(EncodeError::InvalidServiceName(name.to_owned()));
        }
        // A valid name is at most 64 bytes long.
        self.0.push(name.len() as u8);
        self.0.extend_from_slice(name.as_bytes());
        Ok(())
    }

    fn peer(&mut self, peer: &PeerId) -> Result<(), EncodeError> {
        self.service(&peer.service)?;
        self.u64(peer.instance.0);
        Ok(())
    }

    fn u16_prefixed(
        &mut self,
        field: &'static str,
        bytes: &[u8],
        max: usize,
    ) -> Result<(), EncodeError> {
        if bytes.len() > max {
            return Err(EncodeError::FieldTooLong {
                field,
                len: bytes.len(),
                max,
            });
        }
        // max <= MAX_METADATA_LEN (4096), so the length fits a u16.
        self.0
            .extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        self.0.extend_from_slice(bytes);
        Ok(())
    }

    fn blob(&mut self, blob: &[u8]) -> Result<(), EncodeError> {
        self.u16_prefixed("metadata", blob, MAX_METADATA_LEN)
    }

    fn text(&mut self, text: &str) -> Result<(), EncodeError> {
        self.u16_prefixed("text", text.as_bytes(), MAX_TEXT_LEN)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        let rest = &self.bytes[self.pos..];
        if len > rest.len() {
            return Err(DecodeError::UnexpectedEnd);
        }
        self.pos += len;
        Ok(&rest[..len])
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut le = [0u8; 8];
        le.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(le))
    }

    fn fd_count(&mut self) -> Result<usize, DecodeError> {
        let count = usize::from(self.u8()?);
        if count > MAX_INTRODUCTION_FDS {
            return Err(DecodeError::FieldTooLong {
                field: "descriptor count",
                len: count,
                max: MAX_INTRODUCTION_FDS,
            });
        }
        Ok(count)
    }

    fn service(&mut self) -> Result<String, DecodeError> {
        let len = usize::from(self.u8()?);
        if len > MAX_SERVICE_NAME_LEN {
            return Err(DecodeError::FieldTooLong {
                field: "service name",
                len,
                max: MAX_SERVICE_NAME_LEN,
            });
        }
        let bytes = self.take(len)?;
        let name = std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidServiceName)?;
        if !validate_service_name(name) {
            return Err(DecodeError::InvalidServiceName);
        }
        Ok(name.to_owned())
    }

    fn peer(&mut self) -> Result<PeerId, DecodeError> {
        Ok(PeerId {
            service: self.service()?,
            instance: InstanceId(self.u64()?),
        })
    }

    fn u16_prefixed(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = usize::from(self.u16()?);
        if len > max {
            return Err(DecodeError::FieldTooLong { field, len, max });
        }
        self.take(len)
    }

    fn blob(&mut self) -> Result<Vec<u8>, DecodeError> {
        Ok(self.u16_prefixed("metadata", MAX_METADATA_LEN)?.to_vec())
    }

    fn text(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let bytes = self.u16_prefixed(field, MAX_TEXT_LEN)?;
        let text = std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8(field))?;
        Ok(text.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(service: &str, instance: u64) -> PeerId {
        PeerId {
            service: service.to_owned(),
            instance: InstanceId(instance),
        }
    }

    /// One of every message, with the descriptor count it travels with.
    fn samples() -> Vec<(ControlMessage, usize)> {
        vec![
            (
                ControlMessage::Hello {
                    you: peer("network", 1),
                },
                0,
            ),
            (
                ControlMessage::Connect {
                    request: 7,
                    service: "network".into(),
                    metadata: b"cookie jar".to_vec(),
                },
                0,
            ),
            (
                ControlMessage::CreateConnection {
                    request: u64::MAX,
                    requester: peer("web-content.3", 3),
                    metadata: vec![0xff; MAX_METADATA_LEN],
                },
                0,
            ),
            (
                ControlMessage::ConnectionCreated {
                    request: 1,
                    metadata: vec![1, 2, 3],
                },
                2,
            ),
            (
                ControlMessage::ConnectionCreated {
                    request: 1,
                    metadata: vec![],
                },
                MAX_INTRODUCTION_FDS,
            ),
            (
                ControlMessage::CreateFailed {
                    request: 2,
                    reason: "é".repeat(MAX_TEXT_LEN / 2),
                },
                0,
            ),
            (
                ControlMessage::Connected {
                    request: 9,
                    peer: peer(&"n".repeat(MAX_SERVICE_NAME_LEN), u64::MAX),
                    metadata: vec![0; MAX_METADATA_LEN],
                },
                MAX_INTRODUCTION_FDS,
            ),
            (
                ControlMessage::ConnectFailed {
                    request: 3,
                    failure: ConnectFailure::TargetFailed("no memory".into()),
                },
                0,
            ),
            (
                ControlMessage::ConnectFailed {
                    request: 3,
                    failure: ConnectFailure::UnknownService,
                },
                0,
            ),
            (
                ControlMessage::ConnectFailed {
                    request: 3,
                    failure: ConnectFailure::TargetGone,
                },
                0,
            ),
            (
                ControlMessage::ConnectFailed {
                    request: 3,
                    failure: ConnectFailure::TimedOut,
                },
                0,
            ),
            (
                ControlMessage::ConnectFailed {
                    request: 3,
                    failure: ConnectFailure::Busy,
                },
                0,
            ),
            (
                ControlMessage::ConnectFailed {
                    request: 3,
                    failure: ConnectFailure::TargetBusy,
                },
                0,
            ),
            (ControlMessage::Denied { request: 4 }, 0),
            (
                ControlMessage::PeerGone {
                    peer: peer("gpu", 2),
                },
                0,
            ),
            (
                ControlMessage::Report {
                    peer: peer("web", 7),
                    reason: "sent a frame that is no message".into(),
                },
                0,
            ),
        ]
    }

    fn encoded(msg: &ControlMessage, fds: usize) -> Vec<u8> {
        let mut out = Vec::new();
        msg.encode(fds, &mut out).expect("sample encodes");
        out
    }

    #[test]
    fn every_message_round_trips() {
        for (msg, fds) in samples() {
            let bytes = encoded(&msg, fds);
            assert!(bytes.len() <= MAX_ENCODED_LEN, "{msg:?}");
            assert_eq!(ControlMessage::decode(&bytes, fds), Ok(msg));
        }
    }

    #[test]
    fn the_largest_message_fits_the_bound_exactly() {
        let msg = ControlMessage::Connected {
            request: 0,
            peer: peer(&"x".repeat(MAX_SERVICE_NAME_LEN), 0),
            metadata: vec![0; MAX_METADATA_LEN],
        };
        assert_eq!(encoded(&msg, 0).len(), MAX_ENCODED_LEN);
    }

    #[test]
    fn every_truncation_is_an_error() {
        for (msg, fds) in samples() {
            let bytes = encoded(&msg, fds);
            for len in 0..bytes.len() {
                assert!(
                    ControlMessage::decode(&bytes[..len], fds).is_err(),
                    "{msg:?} cut at {len}"
                );
            }
        }
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        for (msg, fds) in samples() {
            let mut bytes = encoded(&msg, fds);
            bytes.push(0);
            let result = ControlMessage::decode(&bytes, fds);
            assert!(
                matches!(
                    result,
                    Err(DecodeError::TrailingBytes(1) | DecodeError::TooLarge { .. })
                ),
                "{msg:?}: {result:?}"
            );
        }
    }

    #[test]
    fn descriptor_count_must_match() {
        for (msg, fds) in samples() {
            let bytes = encoded(&msg, fds);
            assert_eq!(
                ControlMessage::decode(&bytes, fds + 1),
                Err(DecodeError::DescriptorMismatch {
                    declared: fds,
                    received: fds + 1
                })
            );
            if fds > 0 {
                assert!(ControlMessage::decode(&bytes, 0).is_err());
            }
        }
    }

    #[test]
    fn header_errors() {
        assert_eq!(ControlMessage::decode(&[], 0), Err(DecodeError::Empty));
        assert_eq!(
            ControlMessage::decode(&[2, KIND_DENIED, 0, 0, 0, 0, 0, 0, 0, 0], 0),
            Err(DecodeError::UnsupportedVersion(2))
        );
        assert_eq!(
            ControlMessage::decode(&[PROTOCOL_VERSION, 0], 0),
            Err(DecodeError::UnknownKind(0))
        );
        assert_eq!(
            ControlMessage::decode(&[PROTOCOL_VERSION, 200], 0),
            Err(DecodeError::UnknownKind(200))
        );
        assert_eq!(
            ControlMessage::decode(&vec![PROTOCOL_VERSION; MAX_ENCODED_LEN + 1], 0),
            Err(DecodeError::TooLarge {
                len: MAX_ENCODED_LEN + 1
            })
        );
    }

    #[test]
    fn field_errors() {
        // Service name: too long, bad characters, empty, not UTF-8.
        let connect = |name: &[u8]| {
            let mut b = vec![PROTOCOL_VERSION, KIND_CONNECT];
            b.extend_from_slice(&1u64.to_le_bytes());
            b.push(name.len() as u8);
            b.extend_from_slice(name);
            b.extend_from_slice(&0u16.to_le_bytes());
            b
        };
        assert!(ControlMessage::decode(&connect(b"network"), 0).is_ok());
        assert!(matches!(
            ControlMessage::decode(&connect(&[b'a'; 65]), 0),
            Err(DecodeError::FieldTooLong { .. })
        ));
        for bad in [
            &b""[..],
            b"net work",
            b"net/work",
            b"\xff\xfe",
            b"r\xc3\xa9seau",
        ] {
            assert_eq!(
                ControlMessage::decode(&connect(bad), 0),
                Err(DecodeError::InvalidServiceName),
                "{bad:?}"
            );
        }
        // Metadata longer than the bound, even if the bytes are there.
        let mut b = vec![PROTOCOL_VERSION, KIND_CONNECTION_CREATED];
        b.extend_from_slice(&1u64.to_le_bytes());
        b.push(0);
        b.extend_from_slice(&(MAX_METADATA_LEN as u16 + 1).to_le_bytes());
        b.resize(b.len() + MAX_METADATA_LEN + 1, 0);
        assert!(matches!(
            ControlMessage::decode(&b, 0),
            Err(DecodeError::FieldTooLong {
                field: "metadata",
                ..
            })
        ));
        // A length that claims more than is present.
        let mut b = vec![PROTOCOL_VERSION, KIND_CONNECTION_CREATED];
        b.extend_from_slice(&1u64.to_le_bytes());
        b.push(0);
        b.extend_from_slice(&100u16.to_le_bytes());
        b.extend_from_slice(&[0; 10]);
        assert_eq!(
            ControlMessage::decode(&b, 0),
            Err(DecodeError::UnexpectedEnd)
        );
        // Too many descriptors declared.
        let mut b = vec![PROTOCOL_VERSION, KIND_CONNECTION_CREATED];
        b.extend_from_slice(&1u64.to_le_bytes());
        b.push(MAX_INTRODUCTION_FDS as u8 + 1);
        b.extend_from_slice(&0u16.to_le_bytes());
        assert!(matches!(
            ControlMessage::decode(&b, MAX_INTRODUCTION_FDS + 1),
            Err(DecodeError::FieldTooLong {
                field: "descriptor count",
                ..
            })
        ));
        // Failure text not UTF-8, unknown failure code.
        let mut b = vec![PROTOCOL_VERSION, KIND_CREATE_FAILED];
        b.extend_from_slice(&1u64.to_le_bytes());
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(b"\xc3\x28");
        assert_eq!(
            ControlMessage::decode(&b, 0),
            Err(DecodeError::InvalidUtf8("failure reason"))
        );
        let mut b = vec![PROTOCOL_VERSION, KIND_CONNECT_FAILED];
        b.extend_from_slice(&1u64.to_le_bytes());
        b.push(99);
        b.extend_from_slice(&0u16.to_le_bytes());
        assert_eq!(
            ControlMessage::decode(&b, 0),
            Err(DecodeError::UnknownFailureCode(99))
        );
    }

    #[test]
    fn encode_refuses_out_of_bounds_fields() {
        let mut out = Vec::new();
        let too_long = ControlMessage::Connect {
            request: 1,
            service: "network".into(),
            metadata: vec![0; MAX_METADATA_LEN + 1],
        };
        assert!(matches!(
            too_long.encode(0, &mut out),
            Err(EncodeError::FieldTooLong { .. })
        ));
        let bad_name = ControlMessage::Connect {
            request: 1,
            service: "a b".into(),
            metadata: vec![],
        };
        assert!(matches!(
            bad_name.encode(0, &mut out),
            Err(EncodeError::InvalidServiceName(_))
        ));
        let fds_on_denied = ControlMessage::Denied { request: 1 };
        assert!(matches!(
            fds_on_denied.encode(1, &mut out),
            Err(EncodeError::Descriptors { count: 1, max: 0 })
        ));
        let too_many = ControlMessage::ConnectionCreated {
            request: 1,
            metadata: vec![],
        };
        assert!(too_many.encode(MAX_INTRODUCTION_FDS + 1, &mut out).is_err());
    }

    #[test]
    fn truncate_text_respects_char_boundaries() {
        let text = "é".repeat(MAX_TEXT_LEN); // 2 bytes each
        let cut = truncate_text(text);
        assert!(cut.len() <= MAX_TEXT_LEN);
        assert_eq!(cut.chars().count(), MAX_TEXT_LEN / 2);
        let odd = format!("a{}", "é".repeat(MAX_TEXT_LEN));
        assert_eq!(truncate_text(odd).len(), MAX_TEXT_LEN - 1);
    }

    /// A cheap in-tree fuzzer: random bytes, and valid messages with random
    /// corruption, must decode to a value or an error, never panic; whatever
    /// decodes must re-encode to the same bytes.
    #[test]
    fn random_and_corrupted_input_never_panics() {
        let mut rng = fastrand::Rng::with_seed(0xfe44);
        let samples: Vec<Vec<u8>> = samples().iter().map(|(m, f)| encoded(m, *f)).collect();
        let mut out = Vec::new();
        for i in 0..200_000 {
            let fds = rng.usize(0..=MAX_INTRODUCTION_FDS + 1);
            let bytes = if i % 2 == 0 {
                let len = rng.usize(0..64);
                let mut b: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
                if len > 1 && rng.bool() {
                    b[0] = PROTOCOL_VERSION;
                    b[1] = rng.u8(0..12);
                }
                b
            } else {
                let mut b = samples[rng.usize(..samples.len())].clone();
                for _ in 0..rng.usize(1..4) {
                    let at = rng.usize(..b.len());
                    b[at] = rng.u8(..);
                }
                b.truncate(rng.usize(1..=b.len()));
                b
            };
            if let Ok(msg) = ControlMessage::decode(&bytes, fds) {
                msg.encode(fds, &mut out)
                    .expect("decoded messages re-encode");
                assert_eq!(out, bytes);
            }
        }
    }
}
