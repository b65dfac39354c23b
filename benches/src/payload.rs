//! What travels, and the copy rule every transport is measured under.
//!
//! The rule: the sender copies the whole message (`memcpy`) from a private,
//! prepared buffer into the transport (the ring, the slot, the socket); the
//! receiver copies the whole message out into a private buffer of its own
//! ([`Sink`]) and checks a few 64-bit words of that copy. Both copies run
//! at memory speed, and the check costs a handful of loads whatever the
//! size, so what is measured is the transport moving bytes, not the work
//! done on them. (An earlier rule had the receiver checksum every byte:
//! at 4 KiB the checksum, not the transport, set the pace.)
//!
//! A message of `size` bytes is a fixed pattern with up to three words
//! *stamped* by the sender: the first word is the *tag* (a sequence number,
//! or one of the markers [`SYNC`] and [`QUIT`]); from 16 bytes on, the last
//! 8 bytes hold the tag mixed with one key, and from 32 bytes on, the 8-byte
//! word in the middle holds it mixed with another. The receiver reads the
//! stamped words of its copy and folds them into a [`Msg::check`]; the
//! sender knows what the check of a message tagged `t` must be
//! ([`expected`]), so the two sides share nothing but the size, and a torn,
//! stale or misplaced copy is caught by the side that sent it.
//!
//! Private buffers are page-aligned ([`PageAligned`]). This matters on this
//! machine: glibc's `memcpy` switches to `rep movsb` from about 2 KiB on,
//! and on this AMD Zen 3 host `rep movsb` runs about 25 times slower when
//! the destination lies 1 to 16 bytes above the source modulo 4 KiB (a
//! 4 KiB copy: 2 µs instead of 80 ns). A buffer wherever the allocator put
//! it would make a run fast or slow by the luck of its address.

/// The smallest message: the tag word.
pub const MIN_SIZE: usize = 8;
/// Tag of the message that asks the receiver of a stream for an
/// acknowledgement (count and check total of what it received since the
/// last).
pub const SYNC: u64 = u64::MAX - 1;
/// Tag of the message that ends a job; it is answered like [`SYNC`] (or
/// echoed, in a round trip), then the peer waits for the next job.
pub const QUIT: u64 = u64::MAX;
/// Length of an acknowledgement: message count, then check total.
pub const ACK_LEN: usize = 16;
/// The smallest message whose size is drawn from a distribution
/// (`--sizes-from`): the tag, the length word, and the last stamped word.
pub const MIN_SIZED: usize = 24;
/// Where a message of a drawn size carries its length (the second word):
/// the transports without frames of their own (the floors, sockets and
/// pipes) read it to know how much follows.
pub const LEN_WORD: usize = 8;

/// Mixed into the tag for the last word.
const LAST_KEY: u64 = 0x9E37_79B9_7F4A_7C15;
/// Mixed into the tag for the middle word.
const MIDDLE_KEY: u64 = 0xC2B2_AE3D_27D4_EB4F;
/// Alignment of private buffers: a page (see the module documentation).
const PAGE: usize = 4096;

/// Offset of the last stamped word of a `len`-byte message, if it has one
/// apart from the tag.
#[inline]
fn last_word(len: usize) -> Option<usize> {
    (len >= 16).then(|| len - 8)
}

/// Offset of the middle stamped word, if the message is long enough for it
/// to overlap neither the tag nor the last word.
#[inline]
fn middle_word(len: usize) -> Option<usize> {
    (len >= 32).then_some((len / 2) & !7)
}

#[inline]
fn read_word(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

#[inline]
fn write_word(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

/// Folds the stamped words into one value.
#[inline]
fn fold(first: u64, middle: u64, last: u64) -> u64 {
    first
        .wrapping_add(middle.rotate_left(21))
        .wrapping_add(last.rotate_left(42))
}

/// Stamps `tag` into a message already holding the pattern (first, middle
/// and last word, as the length allows).
#[inline]
pub fn stamp(message: &mut [u8], tag: u64) {
    let len = message.len();
    write_word(message, 0, tag);
    if let Some(at) = middle_word(len) {
        write_word(message, at, tag ^ MIDDLE_KEY);
    }
    if let Some(at) = last_word(len) {
        write_word(message, at, tag ^ LAST_KEY);
    }
}

/// Stamps `tag` like [`stamp`] and the message's length into its second
/// word ([`LEN_WORD`]); for messages of drawn sizes (at least
/// [`MIN_SIZED`] bytes, so the stamps do not overlap).
#[inline]
pub fn stamp_sized(message: &mut [u8], tag: u64) {
    stamp(message, tag);
    let len = message.len() as u64;
    write_word(message, LEN_WORD, len);
}

/// The length a message of a drawn size announces in its first
/// [`MIN_SIZED`] bytes, checked: at least [`MIN_SIZED`], at most `capacity`.
#[inline]
pub fn announced_len(head: &[u8], capacity: usize) -> crate::Result<usize> {
    if head.len() < LEN_WORD + 8 {
        return Err("a message of a drawn size is shorter than its length word".into());
    }
    let len = read_word(head, LEN_WORD);
    if len < MIN_SIZED as u64 || len > capacity as u64 {
        return Err(
            format!("a message announces {len} B; expected {MIN_SIZED} to {capacity} B").into(),
        );
    }
    Ok(len as usize)
}

/// The check a receiver computes for a `len`-byte message tagged `tag`.
#[inline]
pub fn expected(len: usize, tag: u64) -> u64 {
    fold(
        tag,
        middle_word(len).map_or(0, |_| tag ^ MIDDLE_KEY),
        last_word(len).map_or(0, |_| tag ^ LAST_KEY),
    )
}

/// A zeroed buffer whose first byte is page-aligned. Safe code: a vector a
/// page longer than asked, used from its first page boundary on.
#[derive(Debug, Clone)]
pub struct PageAligned {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl PageAligned {
    /// `len` zero bytes.
    pub fn new(len: usize) -> PageAligned {
        let storage = vec![0u8; len + PAGE];
        let start = storage.as_ptr().align_offset(PAGE).min(PAGE);
        PageAligned {
            storage,
            start,
            len,
        }
    }
}

impl std::ops::Deref for PageAligned {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }
}

impl std::ops::DerefMut for PageAligned {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

/// The sender's prepared message of one size.
#[derive(Debug, Clone)]
pub struct Pattern {
    bytes: PageAligned,
}

impl Pattern {
    /// The pattern of `size` bytes (at least [`MIN_SIZE`]), unstamped.
    pub fn new(size: usize) -> Pattern {
        assert!(size >= MIN_SIZE, "messages carry at least an 8-byte tag");
        let mut bytes = PageAligned::new(size);
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = ((i as u32).wrapping_mul(2_654_435_761) >> 24) as u8;
        }
        Pattern { bytes }
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false: a pattern has at least a tag.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The unstamped bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Writes the message tagged `tag` to `dst` (exactly `len()` bytes): one
    /// `memcpy` of the whole pattern, then the stamps.
    #[inline]
    pub fn write(&self, dst: &mut [u8], tag: u64) {
        dst.copy_from_slice(&self.bytes);
        stamp(dst, tag);
    }

    /// Writes the message of `dst.len()` bytes (at most `len()`, at least
    /// [`MIN_SIZED`]) tagged `tag`: one `memcpy` of the pattern's first
    /// bytes, then [`stamp_sized`].
    #[inline]
    pub fn write_sized(&self, dst: &mut [u8], tag: u64) {
        dst.copy_from_slice(&self.bytes[..dst.len()]);
        stamp_sized(dst, tag);
    }

    /// Resizes `message`, a copy of the pattern's first bytes (stamps
    /// aside), to `len` bytes, copying only the bytes it gains, and stamps
    /// it with [`stamp_sized`]. For the transports that send an owned
    /// vector (ferry's typed messages).
    pub fn resize_sized(&self, message: &mut Vec<u8>, len: usize, tag: u64) {
        let have = message.len();
        if len < have {
            message.truncate(len);
        } else {
            message.extend_from_slice(&self.bytes[have..len]);
        }
        stamp_sized(message, tag);
    }

    /// The check of the message tagged `tag`.
    #[inline]
    pub fn expected(&self, tag: u64) -> u64 {
        expected(self.len(), tag)
    }
}

/// Writes an acknowledgement.
#[inline]
pub fn write_ack(dst: &mut [u8], count: u64, total: u64) {
    write_word(dst, 0, count);
    write_word(dst, 8, total);
}

/// What a receiver learned from its copy of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Msg {
    /// The first word: the tag (or an acknowledgement's count).
    pub tag: u64,
    /// The second word (an acknowledgement's check total), 0 if absent.
    pub word1: u64,
    /// The stamped words folded together (see [`expected`]).
    pub check: u64,
    /// Length in bytes.
    pub len: usize,
}

/// Reads the stamped words of a message (at least [`MIN_SIZE`] bytes;
/// shorter ones read as zeros).
#[inline]
pub fn inspect(bytes: &[u8]) -> Msg {
    let len = bytes.len();
    if len < MIN_SIZE {
        return Msg {
            len,
            ..Msg::default()
        };
    }
    let first = read_word(bytes, 0);
    Msg {
        tag: first,
        word1: if len >= 16 { read_word(bytes, 8) } else { 0 },
        check: fold(
            first,
            middle_word(len).map_or(0, |at| read_word(bytes, at)),
            last_word(len).map_or(0, |at| read_word(bytes, at)),
        ),
        len,
    }
}

/// A receiver's private buffer: every message is copied into it whole
/// (`memcpy`), then [`inspect`]ed there.
#[derive(Debug, Clone)]
pub struct Sink {
    buffer: PageAligned,
}

impl Sink {
    /// A sink for messages of up to `capacity` bytes (acknowledgements
    /// always fit).
    pub fn new(capacity: usize) -> Sink {
        Sink {
            buffer: PageAligned::new(capacity.max(ACK_LEN)),
        }
    }

    /// Copies `bytes` in and inspects the copy. A message longer than the
    /// sink is an error (the peer sent something else than agreed).
    #[inline]
    pub fn receive(&mut self, bytes: &[u8]) -> crate::Result<Msg> {
        let copy = self.space(bytes.len())?;
        copy.copy_from_slice(bytes);
        Ok(inspect(copy))
    }

    /// The first `len` bytes of the buffer, for a transport that copies into
    /// it itself (a `read`); then [`inspect`](Self::inspect) them.
    #[inline]
    pub fn space(&mut self, len: usize) -> crate::Result<&mut [u8]> {
        let capacity = self.buffer.len();
        self.buffer.get_mut(..len).ok_or_else(|| {
            format!("a message of {len} B does not fit the {capacity}-byte receive buffer").into()
        })
    }

    /// Inspects the first `len` bytes the transport copied in.
    #[inline]
    pub fn inspect(&self, len: usize) -> Msg {
        inspect(&self.buffer[..len.min(self.buffer.len())])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_of_a_stamped_message_is_predictable() {
        for size in [8, 9, 15, 16, 17, 31, 32, 33, 64, 100, 1024, 4099] {
            let pattern = Pattern::new(size);
            let mut message = vec![0u8; size];
            pattern.write(&mut message, 12345);
            let mut sink = Sink::new(size);
            let msg = sink.receive(&message).unwrap();
            assert_eq!(msg.check, pattern.expected(12345), "size {size}");
            assert_eq!(msg.tag, 12345);
            assert_eq!(msg.len, size);
            assert_ne!(pattern.expected(12345), pattern.expected(12346));
        }
    }

    #[test]
    fn the_check_sees_each_stamped_word() {
        let pattern = Pattern::new(1000);
        let mut message = vec![0u8; 1000];
        pattern.write(&mut message, 7);
        for at in [0, 7, 500, 503, 992, 999] {
            let mut changed = message.clone();
            changed[at] ^= 1;
            assert_ne!(inspect(&changed).check, pattern.expected(7), "byte {at}");
        }
    }

    #[test]
    fn private_buffers_are_page_aligned() {
        for len in [8, 4096, 1 << 20] {
            let buffer = PageAligned::new(len);
            assert_eq!(buffer.as_ptr() as usize % PAGE, 0);
            assert_eq!(buffer.len(), len);
            assert!(buffer.iter().all(|&b| b == 0));
        }
        assert_eq!(Pattern::new(4096).bytes().as_ptr() as usize % PAGE, 0);
    }

    #[test]
    fn a_sink_refuses_a_message_longer_than_itself() {
        let mut sink = Sink::new(64);
        assert!(sink.receive(&[0u8; 65]).is_err());
        assert_eq!(sink.receive(&[0u8; 64]).unwrap().len, 64);
    }

    #[test]
    fn an_acknowledgement_reads_back() {
        let mut ack = [0u8; ACK_LEN];
        write_ack(&mut ack, 3, 0xdead_beef);
        let msg = inspect(&ack);
        assert_eq!((msg.tag, msg.word1), (3, 0xdead_beef));
    }
}
