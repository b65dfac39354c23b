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
    /// Messages dropped because nothing was registered at their
    /// destination (any more), for a receiver kind this side handles; the
    /// requests among them were answered with an error reply.
    pub dropped_for_gone_destinations: u64,
    /// Replies that arrived for requests this side had given up on
    /// (cancelled, or a synchronous call that timed out), dropped.
    pub late_replies_dropped: u64,
    /// Requests this side cancelled.
    pub requests_cancelled: u64,
    /// The peer's cancels that reached a request in progress here (a live
    /// reply handle).
    pub cancels_received: u64,
    /// The peer's cancels for nothing in progress here (unknown ids,
    /// requests answered already), dropped.
    pub cancels_ignored: u64,
    /// Requests for reply-later messages refused at `max_reply_handles`.
    pub refused_busy: u64,
    /// Counters of the ring this end writes.
    pub tx_ring: Stats,
    /// Counters of the ring this end reads.
    pub rx_ring: Stats,
}
