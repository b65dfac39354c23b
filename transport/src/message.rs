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

/// What can be sent as message `M`: `M` itself, or a *view* of it, a type
/// of the sender's whose archive is `M`'s archive, byte for byte. A view
/// borrows the sender's own bytes and strings (rkyv's
/// `#[rkyv(with = AsVec)]` for `&[T]`, `#[rkyv(with = AsString)]` for
/// `&str`), so a large message is serialized from the sender's buffers
/// straight into the ring instead of being copied into an `M` first. The
/// peer cannot tell: it receives an `M`. Declare a view with rkyv's derive
/// and `#[rkyv(as = ArchivedM)]`, field by field as `M` declares them; the
/// compiler refuses a view whose archive is not `M`'s. A borrowed field
/// takes `omit_bounds` and the struct the serializer bounds below: with the
/// derive's own bound on the field, rustc does not see that
/// `AsString`'s archive of a `&str` is an `ArchivedString`.
///
/// ```
/// # #[cfg(not(miri))] {
/// use ferry_transport::rkyv::{self, with::{AsString, AsVec}};
/// use ferry_transport::{Connection, ConnectionConfig, Context, Remote};
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// ferry_transport::protocol! {
///     pub receiver Store handled_by StoreHandler {
///         fn put => Put { key: String, data: Vec<u8> };
///     }
/// }
///
/// /// `Put`, borrowing the sender's key and bytes.
/// #[derive(rkyv::Archive, rkyv::Serialize)]
/// #[rkyv(crate = ferry_transport::rkyv, as = ArchivedPut)]
/// #[rkyv(serialize_bounds(__S: rkyv::ser::Writer + rkyv::ser::Allocator,
///                         __S::Error: rkyv::rancor::Source))]
/// struct PutView<'a> {
///     #[rkyv(with = AsString, omit_bounds)]
///     key: &'a str,
///     #[rkyv(with = AsVec, omit_bounds)]
///     data: &'a [u8],
/// }
///
/// struct Sizes(Arc<AtomicUsize>);
/// impl StoreHandler for Sizes {
///     fn put(&self, _: &mut Context, put: &ArchivedPut) {
///         assert_eq!(put.key.as_str(), "frame-1");
///         self.0.store(put.data.len(), Ordering::Relaxed);
///     }
/// }
///
/// let (mut tx, mut rx) = Connection::pair(ConnectionConfig::default())?;
/// let size = Arc::new(AtomicUsize::new(0));
/// rx.register(1, Store::handler(Sizes(size.clone())));
/// let frame = vec![7u8; 64 * 1024]; // the sender's own buffer
/// let view = PutView { key: "frame-1", data: &frame };
/// tx.send_as::<Put>(Remote::new(1), &view)?;
/// rx.dispatch(Some(std::time::Duration::from_secs(5)))?;
/// assert_eq!(size.load(Ordering::Relaxed), 64 * 1024);
/// # }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// A view is sent only as the message whose archive it has:
///
/// ```compile_fail
/// use ferry_transport::rkyv::{self, with::AsString};
/// use ferry_transport::{Connection, ConnectionConfig, Remote};
///
/// ferry_transport::protocol! {
///     pub receiver Store handled_by StoreHandler {
///         fn put => Put { key: String };
///         fn remove => Remove { key: String };
///     }
/// }
///
/// #[derive(rkyv::Archive, rkyv::Serialize)]
/// #[rkyv(crate = ferry_transport::rkyv, as = ArchivedPut)]
/// #[rkyv(serialize_bounds(__S: rkyv::ser::Writer + rkyv::ser::Allocator,
///                         __S::Error: rkyv::rancor::Source))]
/// struct PutView<'a> {
///     #[rkyv(with = AsString, omit_bounds)]
///     key: &'a str,
/// }
///
/// let (mut tx, _rx) = Connection::pair(ConnectionConfig::default()).unwrap();
/// // `Remove` has the same fields, but its archive is another type.
/// tx.send_as::<Remove>(Remote::new(1), &PutView { key: "k" }).unwrap();
/// ```
pub trait View<M: Message>: Archivable<Archived = <M as rkyv::Archive>::Archived> {}

impl<M: Message, V> View<M> for V where V: Archivable<Archived = <M as rkyv::Archive>::Archived> {}

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
