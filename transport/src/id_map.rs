//! Maps keyed by ids (request ids, receiver and destination ids) with a
//! cheap hash.
//!
//! SipHash, std's default, costs tens of nanoseconds per lookup, and a typed
//! round trip does several. Its resistance to collision flooding is not
//! needed here: every key in these maps was inserted by this side (our
//! registrations, our request ids); the peer can only make us look keys up,
//! which costs one probe each whatever it sends.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` keyed by ids.
pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// A multiplicative hash of the integers written into it (Fx-style).
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u32(&mut self, value: u32) {
        self.write_u64(u64::from(value));
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0.rotate_left(5) ^ value).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}
