//! A received frame: its validated envelope, where its body is, and the
//! descriptors that came with it.

use crate::error::{Violation, invalid_archive};
use crate::message::Archivable;
use crate::wire::{ENVELOPE_SIZE, Envelope};
use ferry_ring::{PinnedFrame, SealedBlob};
use rkyv::util::AlignedVec;
use std::os::fd::OwnedFd;

/// Where the bytes of a received frame are. Every variant owns what keeps
/// its bytes valid: no pointer into shared memory lives here.
pub(crate) enum Body {
    /// In place in the ring (trusted peers): the pinned frame keeps the
    /// region mapped and the room from the producer until it is dropped.
    InPlace(PinnedFrame),
    /// In a private 16-aligned copy (untrusted peers, or set aside).
    Copied(AlignedVec<16>),
    /// In a sealed, read-only blob (out-of-line frames).
    Blob(SealedBlob),
    /// Already given back.
    Finished,
}

/// A received frame: its envelope, its body, its descriptors.
pub struct Incoming {
    pub(crate) envelope: Envelope,
    pub(crate) body: Body,
    pub(crate) fds: Vec<OwnedFd>,
}

impl Incoming {
    /// The frame's envelope.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The whole frame as received (envelope slot included) while it is in
    /// the ring or copied; empty for a blob or once finished.
    pub(crate) fn frame(&self) -> &[u8] {
        match &self.body {
            Body::InPlace(frame) => frame.bytes(),
            Body::Copied(buffer) => buffer,
            Body::Blob(_) | Body::Finished => &[],
        }
    }

    /// The body: the bytes after the envelope (or the whole blob for an
    /// out-of-line frame), 16-aligned.
    pub fn bytes(&self) -> &[u8] {
        match &self.body {
            Body::Blob(blob) => blob.bytes(),
            _ => self.frame().get(ENVELOPE_SIZE..).unwrap_or_default(),
        }
    }

    /// Takes the descriptors that came with the frame (out-of-line blobs not
    /// included).
    pub fn take_fds(&mut self) -> Vec<OwnedFd> {
        std::mem::take(&mut self.fds)
    }

    /// Validates the body as an archive of `T` and returns it.
    pub fn access<T: Archivable>(&self, name: &'static str) -> Result<&T::Archived, Violation> {
        access_archive::<T>(self.bytes(), name)
    }

    /// Descriptors this message keeps open: those that came with it and, for
    /// an out-of-line frame, its blob's (the body holds the memfd as well
    /// as its mapping).
    pub(crate) fn held_fds(&self) -> usize {
        self.fds.len() + usize::from(matches!(self.body, Body::Blob(_)))
    }

    /// Whether the body lives in the ring (and pins it).
    pub(crate) fn in_place(&self) -> bool {
        matches!(self.body, Body::InPlace(_))
    }
}

/// Validates `bytes` as an archive of `T` (bytecheck) and returns it.
pub(crate) fn access_archive<'a, T: Archivable>(
    bytes: &'a [u8],
    name: &'static str,
) -> Result<&'a T::Archived, Violation> {
    rkyv::access::<T::Archived, rkyv::rancor::Error>(bytes)
        .map_err(|error| invalid_archive(name, error))
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("envelope", &self.envelope)
            .field("len", &self.bytes().len())
            .field("fds", &self.fds.len())
            .finish()
    }
}
