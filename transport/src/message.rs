//! What a message is: an rkyv-archivable type declared for a receiver.
//! [`protocol!`](crate::protocol) implements these traits; code that sends
//! or dispatches only names them.

use rkyv::api::high::{HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::ser::writer::Buffer;
use rkyv::util::AlignedVec;
use std::marker::PhantomData;

/// A type ferry can serialize into a ring and validate on arrival.
pub trait Archivable:
    rkyv::Archive<Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>>
    + for<'a> rkyv::Serialize<HighSerializer<Buffer<'a>, ArenaHandle<'a>, rancor::Error>>
    + for<'a> rkyv::Serialize<HighSerializer<AlignedVec<16>, ArenaHandle<'a>, rancor::Error>>
{
}

impl<T> Archivable for T where
    T: rkyv::Archive<Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>>
        + for<'a> rkyv::Serialize<HighSerializer<Buffer<'a>, ArenaHandle<'a>, rancor::Error>>
        + for<'a> rkyv::Serialize<HighSerializer<AlignedVec<16>, ArenaHandle<'a>, rancor::Error>>
{
}

/// A receiver: the set of messages one kind of object accepts (the role of
/// a WebKit `.messages.in` file).
pub trait Receiver: 'static {
    /// The receiver's name, as declared.
    const NAME: &'static str;
    /// Its id on the wire (a hash of the name).
    const ID: u32;
    /// A hash of the whole declaration: names, fields, types, replies,
    /// attributes. Two builds of different declarations differ.
    const SCHEMA: u32;

    /// Whether the receiver's declaration lets `message` be dispatched while
    /// a synchronous call waits (`None`: the receiver has no such message).
    /// The receiver decides, not the sender's flag.
    fn allowed_while_waiting(message: u32) -> Option<bool>;
}

/// A message of receiver [`Message::Receiver`].
pub trait Message: Archivable {
    /// The receiver that handles it.
    type Receiver: Receiver;
    /// The message's name, as declared.
    const NAME: &'static str;
    /// Its id within the receiver (a hash of the name).
    const ID: u32;
    /// Whether the receiver may dispatch it while waiting for a sync reply.
    const ALLOWED_WHILE_WAITING: bool;
}

/// A message that has a reply: it can be sent with
/// [`Connection::send_with_reply`](crate::Connection::send_with_reply) or
/// [`Connection::send_sync`](crate::Connection::send_sync).
pub trait Request: Message {
    /// The reply's type.
    type Reply: Archivable;
}

/// An object on the other side of a connection that handles receiver `R`:
/// what typed sends are addressed to. Sending a message that `R` does not
/// declare does not compile.
pub struct Remote<R: Receiver> {
    destination: u64,
    _receiver: PhantomData<fn() -> R>,
}

impl<R: Receiver> Remote<R> {
    /// The object at `destination` on the other side.
    pub const fn new(destination: u64) -> Self {
        Remote {
            destination,
            _receiver: PhantomData,
        }
    }

    /// Its destination id.
    pub const fn destination(&self) -> u64 {
        self.destination
    }
}

impl<R: Receiver> Clone for Remote<R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R: Receiver> Copy for Remote<R> {}

impl<R: Receiver> std::fmt::Debug for Remote<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remote<{}>({})", R::NAME, self.destination)
    }
}

/// 32-bit FNV-1a: wire ids and schema hashes, computed at compile time.
pub const fn hash32(text: &str) -> u32 {
    hash32_continue(0x811c_9dc5, text)
}

/// Continues a [`hash32`] over more text: `hash32_continue(hash32(a), b)`
/// is the hash of `a` followed by `b` (how a receiver's schema hashes the
/// messages compiled in, one at a time).
pub const fn hash32_continue(hash: u32, text: &str) -> u32 {
    let bytes = text.as_bytes();
    let mut hash = hash;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u32;
        hash = hash.wrapping_mul(0x0100_0193);
        i += 1;
    }
    hash
}

/// The schema hash two ends of a connection exchange when it opens, from the
/// receivers each side may send to or handle (order does not matter).
pub const fn schema_of(receivers: &[u32]) -> u64 {
    // Combine with addition of a mix of each hash: order-independent.
    let mut sum: u64 = 0x6665_7272_7900_0001;
    let mut i = 0;
    while i < receivers.len() {
        let mut x = receivers[i] as u64;
        x = (x ^ (x >> 16)).wrapping_mul(0x45d9_f3b3_7197_344d);
        x ^= x >> 29;
        sum = sum.wrapping_add(x);
        i += 1;
    }
    sum
}

/// Fails to compile (at the declaration) if two messages of one receiver
/// hash to the same id.
pub const fn assert_distinct_ids(ids: &[u32]) {
    let mut i = 0;
    while i < ids.len() {
        let mut j = i + 1;
        while j < ids.len() {
            assert!(
                ids[i] != ids[j],
                "two messages of this receiver hash to the same id: rename one"
            );
            j += 1;
        }
        i += 1;
    }
}
