//! # ferry-ring
//!
//! A lock-free single-producer/single-consumer ring of variable-length frames
//! in shared memory, with futex wake-ups, for two processes that may not
//! trust each other.
//!
//! - A [`Region`] is a sealed memfd mapped shared (or heap memory for tests).
//!   Its descriptor travels to the peer, which opens it with [`Region::open`];
//!   the seals and the size are checked before anything is mapped.
//! - [`init`] lays a ring out at an offset of a region; [`Producer::attach`]
//!   and [`Consumer::attach`] validate it and return the two ends. An opener
//!   bounds what a peer's region may cost it ([`Region::open_with_limit`])
//!   and checks that the rings it attached do not overlap
//!   ([`check_layout`]).
//! - The producer [`reserve`](Producer::reserve)s room, the caller writes the
//!   payload in place, and [`Grant::commit`] publishes it. The consumer
//!   [`peek`](Consumer::peek)s at the frame in place and
//!   [`release`](Frame::release)s it. Payloads are contiguous and 16-aligned.
//! - A waiting side spins, sleeps on a futex, or both ([`WaitStrategy`]); a
//!   side that is awake costs its peer no syscall, and a side that only
//!   claims to sleep costs it one wake per claim, not one per publish. An
//!   event loop waits on a [`Notifier`] instead.
//! - Every value loaded from shared memory is validated; a peer that breaks
//!   the protocol gets this end a [`Corruption`] error, never a panic, an
//!   out-of-bounds access or an endless loop.
//!
//! ```
//! use ferry_ring::{Consumer, Producer, Region, WaitStrategy};
//! use std::sync::Arc;
//! use std::time::Duration;
//! # #[cfg(not(miri))] { // miri cannot run memfd or mmap
//! # (|| -> Result<(), Box<dyn std::error::Error>> {
//! // The creating process: a sealed memfd with one ring of 64 KiB.
//! let capacity = 64 * 1024;
//! let region = Arc::new(Region::create(ferry_ring::ring_size(capacity))?);
//! ferry_ring::init(&region, 0, capacity)?;
//! let mut producer = Producer::attach(Arc::clone(&region), 0)?;
//!
//! // The peer process would receive `region.fd()` over a Unix socket and
//! // call `Region::open`; here we open a second mapping ourselves.
//! let fd = region.fd().unwrap().try_clone_to_owned()?;
//! let mut consumer = Consumer::attach(Arc::new(Region::open(fd)?), 0)?
//!     .with_wait_strategy(WaitStrategy::Park);
//!
//! let mut grant = producer.reserve(11, Some(Duration::from_secs(1)))?;
//! grant.copy_from_slice(b"hello ferry");
//! grant.commit();
//!
//! let frame = consumer.peek(Some(Duration::from_secs(1)))?;
//! assert_eq!(frame.payload(), b"hello ferry");
//! frame.release();
//! # Ok(()) })().unwrap();
//! # }
//! ```
#![deny(missing_docs)]

mod attachment;
mod blob;
mod claim;
mod consumer;
mod disconnect;
mod error;
pub mod frame;
mod futex;
mod layout;
mod memfd;
mod notifier;
mod pinned;
mod placement;
mod producer;
mod region;
mod ring;
mod stats;
mod sync;
mod wait;
mod wake;

pub use blob::{BlobWriter, SealedBlob};
pub use consumer::{Consumer, Frame};
pub use disconnect::DisconnectHandle;
pub use error::{AttachError, Corruption, RecvError, RegionError, SendError};
pub use layout::{HEADER_SIZE, LAYOUT_VERSION, MAGIC, RING_ALIGN};
pub use notifier::{MAX_DRAINED_PER_CLEAR, Notifier, NotifierError};
pub use pinned::PinnedFrame;
pub use placement::{RingSpan, check_layout};
pub use producer::{FoundRoom, Grant, Producer};
pub use region::{MAX_REGION_SIZE, Region};
pub use ring::{MAX_CAPACITY, MIN_CAPACITY, channel, create, init, ring_size};
pub use stats::Stats;
pub use wait::{DEFAULT_SPIN, ParseWaitStrategyError, WaitStrategy};
pub use wake::WakeHandle;
