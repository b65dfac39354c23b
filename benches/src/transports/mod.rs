//! The transports under test, and how each is set up across the two
//! processes: the parent creates what is shared and sends descriptors with
//! the job; the peer opens them.

pub mod ferry;
pub mod floor;
pub mod kernel;
#[cfg(feature = "peers")]
pub mod peers;
pub mod ring;

use crate::Result;
use crate::catalog::Transport;
use crate::job::Job;
use crate::mode::Mode;
use std::os::fd::OwnedFd;

/// The parent's end of a transport.
pub enum AnyEnd {
    /// `ferry` and `ferry-sync`.
    Typed(ferry::TypedClient),
    /// `ferry-raw`.
    Raw(ferry::RawEnd),
    /// `ferry-ring` and `ferry-ring-batch`.
    Ring(ring::RingEnd),
    /// The floors.
    Floor(floor::FloorEnd),
    /// `uds` and `pipe`.
    Stream(kernel::StreamEnd),
    /// iceoryx2.
    #[cfg(feature = "peers")]
    Iceoryx2(peers::IceoryxEnd),
    /// ipc-channel.
    #[cfg(feature = "peers")]
    IpcChannel(peers::IpcEnd),
}

/// Runs `$body` with `$end` bound to the concrete endpoint inside an
/// [`AnyEnd`], so the measuring loops are compiled for each transport
/// (no dynamic dispatch in the hot path).
#[macro_export]
macro_rules! with_end {
    ($any:expr, $end:ident => $body:expr) => {
        match $any {
            $crate::transports::AnyEnd::Typed($end) => $body,
            $crate::transports::AnyEnd::Raw($end) => $body,
            $crate::transports::AnyEnd::Ring($end) => $body,
            $crate::transports::AnyEnd::Floor($end) => $body,
            $crate::transports::AnyEnd::Stream($end) => $body,
            #[cfg(feature = "peers")]
            $crate::transports::AnyEnd::Iceoryx2($end) => $body,
            #[cfg(feature = "peers")]
            $crate::transports::AnyEnd::IpcChannel($end) => $body,
        }
    };
}

/// What the parent holds between sending the job and the peer being ready.
pub enum Prepared {
    /// The end is complete already.
    Ready(Box<AnyEnd>),
    /// ipc-channel: the peer must connect first.
    #[cfg(feature = "peers")]
    IpcChannel(peers::IpcPending),
}

impl Prepared {
    /// Completes the parent's end once the job is sent.
    pub fn finish(self) -> Result<AnyEnd> {
        match self {
            Prepared::Ready(end) => Ok(*end),
            #[cfg(feature = "peers")]
            Prepared::IpcChannel(pending) => Ok(AnyEnd::IpcChannel(pending.accept()?)),
        }
    }
}

/// The length the parent receives: replies of the same size in a round
/// trip, acknowledgements in a stream.
pub fn parent_rx_len(job: &Job) -> usize {
    match job.mode {
        Mode::Latency => job.size,
        Mode::Throughput => crate::payload::ACK_LEN,
    }
}

/// Creates the shared parts of `job`'s transport: the parent's end (maybe
/// still pending) and the descriptors for the peer. Fills `job.meta`.
pub fn prepare(job: &mut Job) -> Result<(Prepared, Vec<OwnedFd>)> {
    if !job.transport.available() {
        return Err(format!(
            "{} needs the `peers` feature (cargo run --release -p ferry-bench --features peers)",
            job.transport.name()
        )
        .into());
    }
    let rx_len = parent_rx_len(job);
    Ok(match job.transport {
        Transport::Ferry | Transport::FerrySync => {
            let (client, fds) = ferry::TypedClient::create(job)?;
            (Prepared::Ready(Box::new(AnyEnd::Typed(client))), fds)
        }
        Transport::FerryRaw => {
            let (end, fds) = ferry::RawEnd::create(job, rx_len)?;
            (Prepared::Ready(Box::new(AnyEnd::Raw(end))), fds)
        }
        Transport::FerryRing | Transport::FerryRingBatch => {
            let (end, fds) = ring::RingEnd::create(job)?;
            (Prepared::Ready(Box::new(AnyEnd::Ring(end))), fds)
        }
        Transport::FloorSpin | Transport::FloorFutex => {
            let (end, fds) = floor::FloorEnd::create(job, rx_len)?;
            (Prepared::Ready(Box::new(AnyEnd::Floor(end))), fds)
        }
        Transport::Uds | Transport::Pipe => {
            let (end, fds) = kernel::StreamEnd::create(job, rx_len)?;
            (Prepared::Ready(Box::new(AnyEnd::Stream(end))), fds)
        }
        #[cfg(feature = "peers")]
        Transport::IpcChannel => {
            let pending = peers::IpcPending::create(job, rx_len)?;
            (Prepared::IpcChannel(pending), Vec::new())
        }
        #[cfg(feature = "peers")]
        Transport::Iceoryx2 => {
            let end = peers::IceoryxEnd::open(job, true, rx_len)?;
            (Prepared::Ready(Box::new(AnyEnd::Iceoryx2(end))), Vec::new())
        }
        #[cfg(not(feature = "peers"))]
        Transport::Iceoryx2 | Transport::IpcChannel => unreachable!("checked above"),
    })
}

/// The peer's end of a transport.
pub enum PeerEnd {
    /// Any transport served by the generic loops.
    Generic(AnyEnd),
    /// ferry's typed API, served by its handlers.
    Typed(ferry::TypedServer),
}

/// Opens the peer's end of `job`'s transport from the descriptors sent.
pub fn open(job: &Job, fds: Vec<OwnedFd>) -> Result<PeerEnd> {
    let rx_len = job.size;
    Ok(match job.transport {
        Transport::Ferry | Transport::FerrySync => {
            PeerEnd::Typed(ferry::TypedServer::open(job, fds)?)
        }
        Transport::FerryRaw => {
            PeerEnd::Generic(AnyEnd::Raw(ferry::RawEnd::open(job, fds, rx_len)?))
        }
        Transport::FerryRing | Transport::FerryRingBatch => {
            PeerEnd::Generic(AnyEnd::Ring(ring::RingEnd::open(job, fds)?))
        }
        Transport::FloorSpin | Transport::FloorFutex => {
            PeerEnd::Generic(AnyEnd::Floor(floor::FloorEnd::open(job, fds, rx_len)?))
        }
        Transport::Uds | Transport::Pipe => {
            PeerEnd::Generic(AnyEnd::Stream(kernel::StreamEnd::open(job, fds, rx_len)?))
        }
        #[cfg(feature = "peers")]
        Transport::IpcChannel => {
            PeerEnd::Generic(AnyEnd::IpcChannel(peers::IpcEnd::connect(job, rx_len)?))
        }
        #[cfg(feature = "peers")]
        Transport::Iceoryx2 => PeerEnd::Generic(AnyEnd::Iceoryx2(peers::IceoryxEnd::open(
            job, false, rx_len,
        )?)),
        #[cfg(not(feature = "peers"))]
        Transport::Iceoryx2 | Transport::IpcChannel => {
            return Err("this build has no `peers` feature".into());
        }
    })
}
