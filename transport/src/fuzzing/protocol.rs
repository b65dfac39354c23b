//! What a user's protocol is to the checkers: its receivers, visited
//! message by message. `protocol!` implements [`Protocol`] for each
//! receiver under the `fuzzing` feature; tuples of protocols are protocols.

use crate::message::{Archivable, Message, Request};
use arbitrary::Arbitrary;
use rkyv::api::high::HighDeserializer;
use rkyv::rancor;

/// A message or reply type the checkers can build from fuzz bytes, validate,
/// deserialize and serialize again. Every type `protocol!` declares is one
/// under the `fuzzing` feature.
pub trait Fuzzable:
    Archivable
    + std::fmt::Debug
    + for<'a> Arbitrary<'a>
    + rkyv::Archive<Archived: rkyv::Deserialize<Self, HighDeserializer<rancor::Error>>>
{
}

impl<T> Fuzzable for T where
    T: Archivable
        + std::fmt::Debug
        + for<'a> Arbitrary<'a>
        + rkyv::Archive<Archived: rkyv::Deserialize<T, HighDeserializer<rancor::Error>>>
{
}

/// Receives each message of a [`Protocol`].
pub trait Visitor {
    /// A message without a reply.
    fn message<M: Message + Fuzzable>(&mut self);
    /// A message with a reply.
    fn request<M: Request<Reply: Fuzzable> + Fuzzable>(&mut self);
}

/// The receivers a connection carries, for the checkers: `protocol!`
/// implements it for each receiver it declares (under the `fuzzing`
/// feature), and tuples of protocols are protocols.
pub trait Protocol: 'static {
    /// Calls `visitor` with each message of each receiver.
    fn visit<V: Visitor>(visitor: &mut V);
}

macro_rules! tuple_protocol {
    ($($P:ident),+) => {
        impl<$($P: Protocol),+> Protocol for ($($P,)+) {
            fn visit<V: Visitor>(visitor: &mut V) {
                $( $P::visit(visitor); )+
            }
        }
    };
}
tuple_protocol!(A);
tuple_protocol!(A, B);
tuple_protocol!(A, B, C);
tuple_protocol!(A, B, C, D);
tuple_protocol!(A, B, C, D, E);
tuple_protocol!(A, B, C, D, E, F);
tuple_protocol!(A, B, C, D, E, F, G);
tuple_protocol!(A, B, C, D, E, F, G, H);
