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

/// A receiver kind this side has registered at least once: messages for
/// it at a destination not registered (any more) are dropped, not a
/// violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Kind {
    pub(crate) name: &'static str,
    pub(crate) schema: u32,
}

/// Handlers by (receiver id, destination), and the receiver kinds this side
/// handles.
///
/// The connection's schema hash cannot be read back into the kinds it
/// declares, so the kinds this side handles are those it registered a
/// receiver of, at any destination, at any time: a message of another kind
/// is a violation; a message of a known kind whose destination is gone (a
/// load cancelled while its data was in flight) is dropped and counted. The
/// kinds are this program's receiver types, so the set is bounded by the
/// code, whatever the peer sends.
pub(crate) struct ReceiverRegistry<H: ?Sized> {
    registrations: IdMap<(u32, u64), Registration<H>>,
    kinds: IdMap<u32, Kind>,
    /// Messages dropped because their destination was not registered.
    pub(crate) dropped_gone: u64,
}

impl<H: ?Sized> Default for ReceiverRegistry<H> {
    fn default() -> Self {
        ReceiverRegistry {
            registrations: IdMap::default(),
            kinds: IdMap::default(),
            dropped_gone: 0,
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
        self.kinds.insert(
            receiver,
            Kind {
                name: registration.name,
                schema: registration.schema,
            },
        );
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

    /// The kind `receiver`, if this side ever registered one of it.
    pub(crate) fn kind(&self, receiver: u32) -> Option<Kind> {
        self.kinds.get(&receiver).copied()
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

    #[test]
    fn kinds_outlive_their_registrations() {
        let mut registry = ReceiverRegistry::<str>::default();
        assert_eq!(registry.kind(1), None);
        registry.register(1, 7, registration("loader"));
        registry.unregister(1, 7);
        assert_eq!(
            registry.kind(1),
            Some(Kind {
                name: "loader",
                schema: 1
            })
        );
        assert_eq!(registry.kind(2), None);
    }
}
