//! The half of a connection that travels to the peer: descriptors plus a
//! small metadata blob, opaque to the broker that forwards it.

use ferry_ring::RING_ALIGN;
use thiserror::Error;

/// One end of a connection, ready for the process that will open it with
/// [`crate::Connection::open`]: ferry-handoff's endpoint, which a broker
/// forwards without looking inside. Its `fds` are, in order: the shared
/// region (memfd), the control socket, and the opener's end of the
/// notification socketpair (`AF_UNIX`, `SOCK_DGRAM`; the creator keeps the
/// other end, one socketpair signals both ways); its `metadata` is an
/// encoded [`EndpointInfo`]: magic `FERRYEP1`, version (u32), descriptor
/// count (u32), region length, opener's rx offset, opener's tx offset,
/// schema (u64 each), all little-endian.
pub use ferry_handoff::Endpoint;

/// Descriptors an endpoint carries.
pub const ENDPOINT_FDS: usize = 3;
const MAGIC: [u8; 8] = *b"FERRYEP1";
/// 2: one notification socketpair instead of two eventfds.
const VERSION: u32 = 2;
const ENCODED_LEN: usize = 48;

/// What the metadata says, from the opener's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointInfo {
    /// Bytes in the shared region.
    pub region_len: u64,
    /// Offset of the ring the opener reads.
    pub rx_offset: u64,
    /// Offset of the ring the opener writes.
    pub tx_offset: u64,
    /// The creator's schema hash.
    pub schema: u64,
}

/// Why endpoint metadata was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EndpointError {
    /// Wrong length.
    #[error("metadata of {0} bytes, expected {ENCODED_LEN}")]
    Length(usize),
    /// Not ferry endpoint metadata, or another version.
    #[error("not a ferry endpoint of version {VERSION}")]
    Magic,
    /// The descriptor count differs from what an endpoint carries.
    #[error("{found} descriptors, expected {ENDPOINT_FDS}")]
    FdCount {
        /// Descriptors received.
        found: usize,
    },
    /// The notification descriptor is not an `AF_UNIX` datagram socket.
    #[error("notification descriptor refused: {0}")]
    Notification(String),
    /// Ring offsets that are misaligned, equal, or outside the region.
    #[error("ring offsets {rx} and {tx} do not fit a region of {region_len} bytes")]
    Offsets {
        /// Opener's receive ring offset.
        rx: u64,
        /// Opener's send ring offset.
        tx: u64,
        /// Region size.
        region_len: u64,
    },
}

impl EndpointInfo {
    /// Encodes the metadata.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENCODED_LEN);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(ENDPOINT_FDS as u32).to_le_bytes());
        for value in [self.region_len, self.rx_offset, self.tx_offset, self.schema] {
            out.extend_from_slice(&value.to_le_bytes());
        }
        out
    }

    /// Decodes and checks metadata that arrived with `fd_count` descriptors.
    /// Never panics, whatever the bytes: fuzzers call it directly. (The rings
    /// themselves are validated again when they are attached.)
    pub fn decode(bytes: &[u8], fd_count: usize) -> Result<EndpointInfo, EndpointError> {
        if bytes.len() != ENCODED_LEN {
            return Err(EndpointError::Length(bytes.len()));
        }
        let u32_at =
            |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default());
        let u64_at =
            |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
        if bytes[..8] != MAGIC || u32_at(8) != VERSION {
            return Err(EndpointError::Magic);
        }
        if u32_at(12) as usize != ENDPOINT_FDS || fd_count != ENDPOINT_FDS {
            return Err(EndpointError::FdCount { found: fd_count });
        }
        let info = EndpointInfo {
            region_len: u64_at(16),
            rx_offset: u64_at(24),
            tx_offset: u64_at(32),
            schema: u64_at(40),
        };
        let aligned = |offset: u64| offset % RING_ALIGN as u64 == 0 && offset < info.region_len;
        if !aligned(info.rx_offset) || !aligned(info.tx_offset) || info.rx_offset == info.tx_offset
        {
            return Err(EndpointError::Offsets {
                rx: info.rx_offset,
                tx: info.tx_offset,
                region_len: info.region_len,
            });
        }
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let info = EndpointInfo {
            region_len: 1 << 21,
            rx_offset: 0,
            tx_offset: 1 << 20,
            schema: 42,
        };
        let bytes = info.encode();
        assert_eq!(EndpointInfo::decode(&bytes, ENDPOINT_FDS), Ok(info));
        assert_eq!(
            EndpointInfo::decode(&bytes, 2),
            Err(EndpointError::FdCount { found: 2 })
        );
        assert_eq!(
            EndpointInfo::decode(&bytes[1..], ENDPOINT_FDS),
            Err(EndpointError::Length(47))
        );
        let mut bad = bytes.clone();
        bad[0] ^= 1;
        assert_eq!(
            EndpointInfo::decode(&bad, ENDPOINT_FDS),
            Err(EndpointError::Magic)
        );
        let same = EndpointInfo {
            tx_offset: 0,
            ..info
        }
        .encode();
        assert!(matches!(
            EndpointInfo::decode(&same, ENDPOINT_FDS),
            Err(EndpointError::Offsets { .. })
        ));
        let outside = EndpointInfo {
            tx_offset: 1 << 22,
            ..info
        }
        .encode();
        assert!(matches!(
            EndpointInfo::decode(&outside, ENDPOINT_FDS),
            Err(EndpointError::Offsets { .. })
        ));
    }
}
