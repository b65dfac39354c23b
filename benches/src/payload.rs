//! What travels: the payload every transport carries, and the checksum the
//! receiver computes over every byte of it.
//!
//! The same copy rule holds for every transport: the sender writes the whole
//! payload into the transport (a copy from its source buffer into the ring,
//! the slot, or the socket), and the receiver reads every byte (a checksum).
//!
//! A message of `size` bytes is a fixed pattern whose first 8-byte word is
//! replaced by a *tag*: a sequence number, or one of the markers [`SYNC`]
//! and [`QUIT`]. The checksum is the wrapping sum of the little-endian
//! 64-bit words (the last one zero-padded), so the checksum of a message is
//! `tag + pattern.sum()`: both sides know what to expect without sharing
//! anything but the size.

/// The smallest message: the tag word.
pub const MIN_SIZE: usize = 8;
/// Tag of the message that asks the receiver of a stream for an
/// acknowledgement (count and checksum of what it received since the last).
pub const SYNC: u64 = u64::MAX - 1;
/// Tag of the message that ends a job; it is answered like [`SYNC`] (or
/// echoed, in a round trip), then the peer waits for the next job.
pub const QUIT: u64 = u64::MAX;
/// Length of an acknowledgement: message count, then checksum total.
pub const ACK_LEN: usize = 16;

/// The payload of one size, and its checksum with a zero tag.
#[derive(Debug, Clone)]
pub struct Pattern {
    bytes: Vec<u8>,
    sum: u64,
}

impl Pattern {
    /// The pattern of `size` bytes (at least [`MIN_SIZE`]).
    pub fn new(size: usize) -> Pattern {
        assert!(size >= MIN_SIZE, "messages carry at least an 8-byte tag");
        let mut bytes: Vec<u8> = (0..size)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        bytes[..8].fill(0);
        let sum = checksum(&bytes);
        Pattern { bytes, sum }
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false: a pattern has at least a tag.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The bytes, with a zero tag.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Writes the message tagged `tag` to `dst` (exactly `len()` bytes).
    #[inline]
    pub fn write(&self, dst: &mut [u8], tag: u64) {
        dst[..8].copy_from_slice(&tag.to_le_bytes());
        dst[8..].copy_from_slice(&self.bytes[8..]);
    }

    /// Sets the tag of a message already holding the pattern.
    #[inline]
    pub fn retag(dst: &mut [u8], tag: u64) {
        dst[..8].copy_from_slice(&tag.to_le_bytes());
    }

    /// The checksum of the message tagged `tag`.
    #[inline]
    pub fn expected(&self, tag: u64) -> u64 {
        tag.wrapping_add(self.sum)
    }
}

/// Writes an acknowledgement.
#[inline]
pub fn write_ack(dst: &mut [u8], count: u64, sum: u64) {
    dst[..8].copy_from_slice(&count.to_le_bytes());
    dst[8..16].copy_from_slice(&sum.to_le_bytes());
}

/// What a receiver learned from a message by reading all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Msg {
    /// The first word: the tag (or an acknowledgement's count).
    pub tag: u64,
    /// The second word (an acknowledgement's checksum total), 0 if absent.
    pub word1: u64,
    /// The checksum of every byte.
    pub sum: u64,
    /// Length in bytes.
    pub len: usize,
}

/// Reads every byte of `bytes`.
#[inline]
pub fn scan(bytes: &[u8]) -> Msg {
    let word = |at: usize| {
        bytes
            .get(at..at + 8)
            .map_or(0, |w| u64::from_le_bytes(w.try_into().unwrap_or_default()))
    };
    Msg {
        tag: word(0),
        word1: word(8),
        sum: checksum(bytes),
        len: bytes.len(),
    }
}

/// The wrapping sum of the little-endian 64-bit words of `bytes`, the last
/// one zero-padded. Four independent lanes, so it runs at memory speed.
#[inline]
pub fn checksum(bytes: &[u8]) -> u64 {
    let mut lanes = [0u64; 4];
    let mut blocks = bytes.chunks_exact(32);
    for block in &mut blocks {
        for (lane, word) in lanes.iter_mut().zip(block.chunks_exact(8)) {
            *lane = lane.wrapping_add(u64::from_le_bytes(word.try_into().unwrap_or_default()));
        }
    }
    let mut sum = lanes.iter().fold(0u64, |acc, &lane| acc.wrapping_add(lane));
    let rest = blocks.remainder();
    let mut words = rest.chunks_exact(8);
    for word in &mut words {
        sum = sum.wrapping_add(u64::from_le_bytes(word.try_into().unwrap_or_default()));
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        let mut last = [0u8; 8];
        last[..tail.len()].copy_from_slice(tail);
        sum = sum.wrapping_add(u64::from_le_bytes(last));
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_a_tagged_message_is_predictable() {
        for size in [8, 9, 15, 16, 17, 31, 32, 33, 64, 100, 1024, 4099] {
            let pattern = Pattern::new(size);
            let mut message = vec![0u8; size];
            pattern.write(&mut message, 12345);
            let msg = scan(&message);
            assert_eq!(msg.sum, pattern.expected(12345), "size {size}");
            assert_eq!(msg.tag, 12345);
            assert_eq!(msg.len, size);
        }
    }

    #[test]
    fn checksum_reads_every_byte() {
        let pattern = Pattern::new(1000);
        let mut message = vec![0u8; 1000];
        pattern.write(&mut message, 7);
        for at in [8, 500, 999] {
            let mut changed = message.clone();
            changed[at] ^= 1;
            assert_ne!(checksum(&changed), checksum(&message), "byte {at}");
        }
    }
}
