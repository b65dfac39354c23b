//! Counters of one connection end.

use ferry_ring::Stats;

/// What a connection end has done since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Frames sent (raw and typed, replies included).
    pub frames_sent: u64,
    /// Frames received.
    pub frames_received: u64,
    /// Frames whose body travelled out of line in a sealed blob.
    pub out_of_line_sent: u64,
    /// Out-of-line frames received.
    pub out_of_line_received: u64,
    /// Descriptors sent as attachments (blobs included).
    pub fds_sent: u64,
    /// Descriptors received.
    pub fds_received: u64,
    /// Counters of the ring this end writes.
    pub tx_ring: Stats,
    /// Counters of the ring this end reads.
    pub rx_ring: Stats,
}
