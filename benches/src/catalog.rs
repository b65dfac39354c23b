//! The transports the tool can measure: their names on the command line
//! and in the output, and which settings and measurements apply to each.

use crate::mode::Mode;
use crate::{BoxError, Result};

/// A transport the tool can measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// ferry-transport's typed API: an rkyv message per direction
    /// (`send` + `dispatch`).
    Ferry,
    /// ferry-transport's typed synchronous call (`send_sync`), latency only.
    FerrySync,
    /// ferry-transport's raw frames (`reserve_frame` + `recv_frame`).
    FerryRaw,
    /// ferry-ring alone: `reserve`/`commit` and `peek`/`release`.
    FerryRing,
    /// ferry-ring with batched publishes (`commit_deferred` + `flush`,
    /// `release_deferred`), throughput only.
    FerryRingBatch,
    /// Two sequence counters and a payload area, both sides spinning.
    FloorSpin,
    /// The same, sleeping on a futex.
    FloorFutex,
    /// A Unix stream socketpair.
    Uds,
    /// Two pipes.
    Pipe,
    /// iceoryx2 publish-subscribe (feature `peers`).
    Iceoryx2,
    /// ipc-channel byte channels (feature `peers`).
    IpcChannel,
}

/// Every transport, in the order tables list them.
pub const ALL: [Transport; 11] = [
    Transport::Ferry,
    Transport::FerrySync,
    Transport::FerryRaw,
    Transport::FerryRing,
    Transport::FerryRingBatch,
    Transport::FloorSpin,
    Transport::FloorFutex,
    Transport::Uds,
    Transport::Pipe,
    Transport::Iceoryx2,
    Transport::IpcChannel,
];

impl Transport {
    /// The name on the command line and in the output.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Ferry => "ferry",
            Transport::FerrySync => "ferry-sync",
            Transport::FerryRaw => "ferry-raw",
            Transport::FerryRing => "ferry-ring",
            Transport::FerryRingBatch => "ferry-ring-batch",
            Transport::FloorSpin => "floor-spin",
            Transport::FloorFutex => "floor-futex",
            Transport::Uds => "uds",
            Transport::Pipe => "pipe",
            Transport::Iceoryx2 => "iceoryx2",
            Transport::IpcChannel => "ipc-channel",
        }
    }

    /// Parses a name.
    pub fn parse(text: &str) -> Result<Transport> {
        ALL.into_iter().find(|t| t.name() == text).ok_or_else(|| {
            let names: Vec<_> = ALL.iter().map(|t| t.name()).collect();
            BoxError::from(format!(
                "unknown transport {text} (one of: all, {})",
                names.join(", ")
            ))
        })
    }

    /// Whether this build can run it.
    pub fn available(self) -> bool {
        cfg!(feature = "peers") || !matches!(self, Transport::Iceoryx2 | Transport::IpcChannel)
    }

    /// Whether it can run a measurement of `mode`.
    pub fn supports(self, mode: Mode) -> bool {
        match self {
            Transport::FerrySync => mode == Mode::Latency,
            Transport::FerryRingBatch => mode == Mode::Throughput,
            _ => true,
        }
    }

    /// What `all` means for `mode`.
    pub fn all(mode: Mode) -> Vec<Transport> {
        ALL.into_iter()
            .filter(|t| t.available() && t.supports(mode))
            .collect()
    }

    /// Whether `--wait` changes it (ferry's endpoints); the others wait in
    /// one fixed way.
    pub fn uses_wait(self) -> bool {
        matches!(
            self,
            Transport::Ferry
                | Transport::FerrySync
                | Transport::FerryRaw
                | Transport::FerryRing
                | Transport::FerryRingBatch
        )
    }

    /// Whether `--trust` changes it (ferry-transport's receivers).
    pub fn uses_trust(self) -> bool {
        matches!(
            self,
            Transport::Ferry | Transport::FerrySync | Transport::FerryRaw
        )
    }

    /// How it waits when `--wait` does not apply: `spin`, `futex` or
    /// `kernel` (blocking system calls).
    pub fn fixed_wait(self) -> &'static str {
        match self {
            Transport::FloorSpin | Transport::Iceoryx2 => "spin",
            Transport::FloorFutex => "futex",
            _ => "kernel",
        }
    }
}
