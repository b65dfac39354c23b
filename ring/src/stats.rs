//! Per-endpoint counters: plain integers owned by one side, so keeping them
//! costs nothing on the hot path.

/// What an endpoint has done since it was attached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames committed (producer) or released (consumer).
    pub frames: u64,
    /// Payload bytes in those frames.
    pub bytes: u64,
    /// Times this side went to sleep on the futex.
    pub parks: u64,
    /// `futex_wake` calls this side issued because its peer was asleep.
    pub wakes: u64,
}
