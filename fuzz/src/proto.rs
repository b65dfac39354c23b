//! The protocols the `message` and `dispatch` targets validate and dispatch.
//!
//! [`NetworkConnection`] has the shape of the browser demo's receiver of the
//! same name (the WebContent → Network connection): a load request, a
//! synchronous cookie read with a reply, a cookie write. [`Catalog`] has
//! nested types: vectors of structs with optional strings, nested vectors,
//! an enum with data, `bool` and `char` fields (each with its own validity
//! rule in bytecheck).

use ferry_transport::rkyv;
use ferry_transport::{Receiver, schema_of};

ferry_transport::protocol! {
    /// Shaped like the browser demo's Network-process receiver.
    pub receiver NetworkConnection handled_by NetworkConnectionHandler {
        /// Starts loading `url` for the WebContent process's `request_id`.
        fn load_resource => LoadResource { request_id: u64, url: String };
        /// `document.cookie` read: synchronous.
        fn get_cookies => GetCookies { host: String } -> Cookies { cookies: Vec<String> };
        /// `document.cookie = ...`: asynchronous.
        fn set_cookie => SetCookie { host: String, cookie: String };
    }
}

/// One entry of a [`Catalog`] message.
#[derive(
    Debug, Clone, PartialEq, arbitrary::Arbitrary, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[rkyv(crate = ferry_transport::rkyv)]
pub struct Entry {
    /// A name.
    pub name: String,
    /// An optional note.
    pub note: Option<String>,
    /// Counters.
    pub counts: Vec<u32>,
    /// Nested structs.
    pub children: Vec<Child>,
    /// A tagged value.
    pub value: Value,
}

/// A struct nested in [`Entry`].
#[derive(
    Debug, Clone, PartialEq, arbitrary::Arbitrary, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[rkyv(crate = ferry_transport::rkyv)]
pub struct Child {
    /// An id.
    pub id: u64,
    /// A character (bytecheck refuses surrogates and values past U+10FFFF).
    pub initial: char,
    /// A flag (bytecheck refuses anything but 0 and 1).
    pub enabled: bool,
    /// Optional tags.
    pub tags: Vec<Option<String>>,
    /// Rows of numbers.
    pub grid: Vec<Vec<u32>>,
}

/// An enum with data, in [`Entry`].
#[derive(
    Debug, Clone, PartialEq, arbitrary::Arbitrary, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[rkyv(crate = ferry_transport::rkyv)]
pub enum Value {
    /// Nothing.
    Empty,
    /// A flag.
    Flag(bool),
    /// Some text.
    Text(String),
    /// Some numbers.
    Numbers(Vec<u32>),
    /// A key and an optional value.
    Pair {
        /// The key.
        key: String,
        /// The value.
        value: Option<u64>,
    },
}

ferry_transport::protocol! {
    /// Messages with nested types.
    pub receiver Catalog handled_by CatalogHandler {
        /// Publishes entries.
        fn publish => Publish { entries: Vec<Entry>, origin: Option<String>, version: u16 };
        /// Looks entries up; the reply carries what was found.
        @allowed_while_waiting
        fn lookup => Lookup { names: Vec<String>, limit: Option<u32> } -> Found { entries: Vec<Entry> };
    }
}

/// The connection schema of the `dispatch` target's victim.
pub const SCHEMA: u64 = schema_of(&[
    <NetworkConnection as Receiver>::SCHEMA,
    <Catalog as Receiver>::SCHEMA,
]);

/// A small, real [`Entry`] for seeds and replies.
pub fn sample_entry(i: u32) -> Entry {
    Entry {
        name: format!("entry-{i}"),
        note: i.is_multiple_of(2).then(|| format!("note {i}")),
        counts: (0..i % 5).collect(),
        children: (0..i % 3)
            .map(|j| Child {
                id: u64::from(i) << 8 | u64::from(j),
                initial: ['a', 'é', '字', '🦀'][(j % 4) as usize],
                enabled: j % 2 == 1,
                tags: vec![None, Some(format!("t{j}"))],
                grid: vec![vec![j; j as usize], vec![]],
            })
            .collect(),
        value: match i % 5 {
            0 => Value::Empty,
            1 => Value::Flag(true),
            2 => Value::Text(format!("text {i}")),
            3 => Value::Numbers(vec![i, i + 1, i + 2]),
            _ => Value::Pair {
                key: format!("k{i}"),
                value: i.is_multiple_of(2).then_some(u64::from(i)),
            },
        },
    }
}
