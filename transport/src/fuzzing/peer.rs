//! The hostile peer of the dispatch checker: it holds the other end of a
//! victim connection without opening a `Connection` of its own, writes any
//! bytes as frames into the ring the victim reads, and sends any
//! attachments (descriptor messages) on the control socket.

use super::fds::ATTACHED_MEMFD;
use crate::config::ConnectionConfig;
use crate::connection::Connection;
use crate::endpoint::EndpointInfo;
use crate::wire::encode_attachment_header;
use ferry_handoff::Channel;
use ferry_ring::{BlobWriter, Producer, Region};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

/// A descriptor the hostile peer attaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachedFd {
    /// A sealed blob with these bytes (at least one).
    Blob(Vec<u8>),
    /// A memfd of this size, not sealed.
    Unsealed(u16),
    /// An eventfd.
    Event,
    /// The read end of a pipe.
    Pipe,
}

/// What the hostile peer of [`Target::dispatch`](super::Target::dispatch)
/// does, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerOp {
    /// Publishes one frame with these bytes (envelope, then body), whatever
    /// they are.
    Frame(Vec<u8>),
    /// Publishes a well-formed message or reply of the protocol: these
    /// bytes choose which, to which served destination, its request id,
    /// flags and announced descriptors (now and then a wrong one), and its
    /// value (through `Arbitrary`).
    Message(Vec<u8>),
    /// Sends an attachment: `header`, or else the next sequence number's
    /// well-formed header, with these descriptors.
    Attachment {
        /// The control message's bytes, if not a well-formed header.
        header: Option<[u8; 16]>,
        /// The descriptors.
        fds: Vec<AttachedFd>,
    },
}

/// The peer's end of a victim connection.
pub(crate) struct HostilePeer {
    producer: Option<Producer>,
    control: Channel,
    /// The notification descriptor, held as a live peer does until the
    /// victim is gone (closing it could look like a hang-up).
    _notification: Vec<OwnedFd>,
    attachments: u64,
}

impl HostilePeer {
    /// A victim connection made with `config`, and its hostile peer.
    pub(crate) fn new(config: ConnectionConfig) -> (Connection, HostilePeer) {
        let (victim, endpoint) = Connection::create(config).expect("create a connection");
        let info = EndpointInfo::decode(&endpoint.metadata, endpoint.fds.len())
            .expect("our own endpoint's metadata");
        // The order `Endpoint` documents: region, control socket, the rest.
        let mut fds = endpoint.fds.into_iter();
        let region = fds.next().expect("the region");
        let control = Channel::from_checked(fds.next().expect("the control socket"))
            .expect("our own control socket");
        let region = Arc::new(Region::open(region).expect("open our own region"));
        let producer = Producer::attach(region, info.tx_offset as usize).expect("attach");
        let peer = HostilePeer {
            producer: Some(producer),
            control,
            _notification: fds.collect(),
            attachments: 0,
        };
        (victim, peer)
    }

    /// Publishes `bytes` as one frame (cut to the ring's largest); false if
    /// the ring is full or closed.
    pub(crate) fn frame(&mut self, bytes: &[u8]) -> bool {
        let Some(producer) = &mut self.producer else {
            return false;
        };
        let len = bytes.len().min(producer.max_payload());
        match producer.try_reserve(len) {
            Ok(mut grant) => {
                grant.copy_from_slice(&bytes[..len]);
                grant.commit();
                true
            }
            Err(_) => false,
        }
    }

    /// Sends an attachment; the peer keeps none of the descriptors.
    pub(crate) fn attach(&mut self, header: Option<[u8; 16]>, fds: &[AttachedFd]) {
        let owned: Vec<OwnedFd> = fds.iter().filter_map(make_fd).collect();
        let borrowed: Vec<_> = owned.iter().map(|fd| fd.as_fd()).collect();
        let header = header.unwrap_or_else(|| encode_attachment_header(self.attachments + 1));
        if self.control.try_send(&header, &borrowed).is_ok() {
            self.attachments += 1;
        }
    }

    /// Ends the peer's sending: a malformed attachment last (so a frame
    /// that announces descriptors never sent fails at once instead of
    /// waiting for them), then the ring closed (so the victim, once it has
    /// read everything, sees `Closed` instead of waiting for more).
    pub(crate) fn close_ring(&mut self) {
        let _ = self.control.try_send(b"no more fds here", &[]);
        self.producer = None;
    }
}

/// Makes a descriptor to attach (`None` if the system refuses).
fn make_fd(fd: &AttachedFd) -> Option<OwnedFd> {
    use rustix::fs::{MemfdFlags, memfd_create};
    match fd {
        AttachedFd::Blob(bytes) => {
            let mut blob = BlobWriter::create(bytes.len().max(1)).ok()?;
            blob[..bytes.len()].copy_from_slice(bytes);
            let sealed = blob.seal().ok()?;
            sealed.fd().try_clone_to_owned().ok()
        }
        AttachedFd::Unsealed(len) => {
            let fd = memfd_create(ATTACHED_MEMFD, MemfdFlags::CLOEXEC).ok()?;
            rustix::fs::ftruncate(&fd, u64::from(*len)).ok()?;
            Some(fd)
        }
        AttachedFd::Event => rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).ok(),
        AttachedFd::Pipe => rustix::pipe::pipe().ok().map(|(read, _write)| read),
    }
}
