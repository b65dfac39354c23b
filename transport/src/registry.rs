//! The receiver registry: which handler receives the messages of a
//! receiver kind at a destination (the role of WebKit's
//! `MessageReceiverMap`). Its one owner is the connection; dispatch only
//! looks handlers up.

use crate::id_map::IdMap;
use std::rc::Rc;

/// A registration: the receiver's declared name and schema, and its
/// handler.
pub(crate) struct Registration<H: ?Sized> {
    pub(crate) name: &'static str,
    pub(crate) schema: u32,
    /// The declaration's word on which messages may be dispatched while a
    /// synchronous call waits.
    pub(crate) allowed_while_waiting: fn(u32) -> Option<bool>,
    /// Shared, not taken out while it runs, so that a message can re-enter
    /// a receiver whose handler is further up the stack.
    pub(crate) handler: Rc<H>,
}

/// Handlers by (receiver id, destination).
pub(crate) struct ReceiverRegistry<H: ?Sized> {
    registrations: IdMap<(u32, u64), Registration<H>>,
}

impl<H: ?Sized> Default for ReceiverRegistry<H> {
    fn default() -> Self {
        ReceiverRegistry {
            registrations: IdMap::default(),
        }
    }
}

impl<H: ?Sized> ReceiverRegistry<H> {
    /// Registers `registration` for `receiver` at `destination`; returns
    /// whether it replaced one.
    pub(crate) fn register(
        &mut self,
        receiver: u32,
        destination: u64,
        registration: Registration<H>,
    ) -> bool {
        self.registrations
            .insert((receiver, destination), registration)
            .is_some()
    }

    /// Removes the registration of `receiver` at `destination`; returns
    /// whether there was one.
    pub(crate) fn unregister(&mut self, receiver: u32, destination: u64) -> bool {
        self.registrations
            .remove(&(receiver, destination))
            .is_some()
    }

    /// The registration of `receiver` at `destination`.
    pub(crate) fn lookup(&self, receiver: u32, destination: u64) -> Option<&Registration<H>> {
        self.registrations.get(&(receiver, destination))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(name: &'static str) -> Registration<str> {
        Registration {
            name,
            schema: 1,
            allowed_while_waiting: |_| None,
            handler: Rc::from(name),
        }
    }

    #[test]
    fn register_lookup_replace_unregister() {
        let mut registry = ReceiverRegistry::<str>::default();
        assert!(registry.lookup(1, 7).is_none());
        assert!(!registry.register(1, 7, registration("first")));
        assert!(registry.register(1, 7, registration("second")));
        assert_eq!(registry.lookup(1, 7).map(|r| r.name), Some("second"));
        // Another destination or another receiver kind is another slot.
        assert!(registry.lookup(1, 8).is_none());
        assert!(registry.lookup(2, 7).is_none());
        assert!(registry.unregister(1, 7));
        assert!(!registry.unregister(1, 7));
        assert!(registry.lookup(1, 7).is_none());
    }
}
