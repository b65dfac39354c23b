//! A hostile peer's hands: the producer side of a connection held by hand.
//! The attacker process does not open a `Connection`: it maps the region
//! (the endpoint's first descriptor), attaches its own `ferry_ring::Producer`
//! to the ring the victim reads, and publishes whatever frames it likes, with
//! any envelope, descriptors attached over the connection's control socket.

use super::{OP_TIMEOUT, RawMap, offsets};
use ferry_handoff::Channel;
use ferry_ring::{Producer, Region, WaitStrategy};
use ferry_transport::wire::{ENVELOPE_SIZE, Envelope};
use ferry_transport::{Endpoint, EndpointInfo};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The producer side of a connection, held by hand.
pub struct RawPeer {
    pub producer: Producer,
    pub raw: Arc<RawMap>,
    /// The connection's control socket (liveness and attachments).
    pub control: Channel,
    _notify: Vec<OwnedFd>,
    /// Offset of the ring we write in the region.
    pub ring: usize,
    pub capacity: u64,
    /// Our mirror of the producer's tail.
    pub tail: u64,
    /// The sequence number of the last attachment sent.
    pub attachments: u64,
}

impl RawPeer {
    pub fn open(endpoint: Endpoint) -> RawPeer {
        let info = EndpointInfo::decode(&endpoint.metadata, endpoint.fds.len())
            .expect("endpoint metadata");
        let mut fds = endpoint.fds.into_iter();
        let region_fd = fds.next().expect("region");
        let control = Channel::from(fds.next().expect("control socket"));
        let raw = Arc::new(RawMap::new(region_fd.as_fd()));
        let region = Arc::new(Region::open(region_fd).expect("region"));
        let ring = info.tx_offset as usize;
        let producer = Producer::attach(region, ring)
            .expect("attach")
            .with_wait_strategy(WaitStrategy::Park);
        let capacity = producer.capacity() as u64;
        let tail = raw.load_u64(ring + offsets::TAIL);
        RawPeer {
            producer,
            raw,
            control,
            _notify: fds.collect(),
            ring,
            capacity,
            tail,
            attachments: 0,
        }
    }

    /// Whether the victim closed the connection.
    pub fn gone(&self) -> bool {
        self.control.is_hung_up().unwrap_or(true)
    }

    /// Publishes a frame of `parts` concatenated; returns the region offset
    /// of its payload, or `None` if the victim went away first.
    pub fn publish(&mut self, parts: &[&[u8]]) -> Option<usize> {
        self.publish_at(parts).map(|(_, payload)| payload)
    }

    /// Publishes a frame; returns its ring position and the region offset of
    /// its payload, or `None` if the victim went away first.
    pub fn publish_at(&mut self, parts: &[&[u8]]) -> Option<(u64, usize)> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        // Where the producer will put it (mirrors ring/src/producer.rs).
        let size = 16 + len.next_multiple_of(16) as u64;
        let mut tail = self.tail;
        if size > self.capacity - tail % self.capacity {
            tail += self.capacity - tail % self.capacity;
        }
        let payload = self.ring + offsets::DATA + (tail % self.capacity) as usize + 16;
        loop {
            match self.producer.reserve(len, Some(Duration::from_millis(50))) {
                Ok(mut grant) => {
                    let mut at = 0;
                    for part in parts {
                        grant[at..at + part.len()].copy_from_slice(part);
                        at += part.len();
                    }
                    grant.commit();
                    break;
                }
                Err(ferry_ring::SendError::TimedOut) => {}
                Err(_) => return None,
            }
            if self.gone() {
                return None;
            }
        }
        self.tail = tail + size;
        assert_eq!(
            self.raw.load_u64(self.ring + offsets::TAIL),
            self.tail,
            "the mirror of the producer's tail is off"
        );
        Some((tail, payload))
    }

    /// Publishes `envelope` and `body`.
    pub fn publish_message(&mut self, envelope: &Envelope, body: &[u8]) -> Option<usize> {
        let mut head = [0u8; ENVELOPE_SIZE];
        envelope.write_to(&mut head);
        self.publish(&[&head, body])
    }

    /// Sends descriptors over the control socket as the attachment with
    /// `sequence`.
    pub fn attach(&mut self, sequence: u64, fds: &[BorrowedFd<'_>]) {
        let mut header = *b"FERRYFDS\0\0\0\0\0\0\0\0";
        header[8..].copy_from_slice(&sequence.to_le_bytes());
        self.control
            .send(&header, fds)
            .expect("send the attachment");
        self.attachments = sequence;
    }

    /// Sends descriptors as the next attachment, waiting at most `timeout`
    /// for room in the control socket; false if they could not be sent
    /// (the victim stopped reading them, or went away).
    pub fn try_attach_next(&mut self, fds: &[BorrowedFd<'_>], timeout: Duration) -> bool {
        let sequence = self.attachments + 1;
        let header = ferry_transport::wire::encode_attachment_header(sequence);
        if self.control.send_timeout(&header, fds, timeout).is_err() {
            return false;
        }
        self.attachments = sequence;
        true
    }

    /// Waits until the victim has released everything published.
    pub fn wait_consumed(&self) {
        let deadline = Instant::now() + OP_TIMEOUT;
        while self.raw.load_u64(self.ring + offsets::HEAD) != self.tail {
            assert!(Instant::now() < deadline, "the victim does not read");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits for the victim to close the connection.
    pub fn wait_closed(&self) {
        assert!(
            self.control.wait_hangup(Some(OP_TIMEOUT)).expect("poll"),
            "the victim did not close the connection"
        );
    }
}
