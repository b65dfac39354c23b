//! What the dispatch and session checkers fuzz: a connection configured as
//! the user configures it, with the user's handlers registered.

use super::protocol::Protocol;
use super::watch::Watch;
use crate::config::ConnectionConfig;
use crate::connection::{BoundReceiver, Connection};
use std::marker::PhantomData;

/// Makes a receiver to register, once per input.
type MakeReceiver = Box<dyn Fn() -> BoundReceiver>;

/// The victim of [`dispatch`](Self::dispatch) and
/// [`session`](Self::session): a connection of protocol `P` (its
/// receivers, on both sides of the connection) made with a configuration,
/// serving the user's handlers at their destinations.
///
/// ```
/// # ferry_transport::protocol! {
/// #     /// A receiver.
/// #     pub receiver Lamp handled_by LampHandler {
/// #         /// Turns it on.
/// #         fn on => On { level: u8 };
/// #     }
/// # }
/// # struct Bulb;
/// # impl LampHandler for Bulb {
/// #     fn on(&self, _: &mut ferry_transport::Context, _: &ArchivedOn) {}
/// # }
/// use ferry_transport::{ConnectionConfig, Receiver, fuzzing::Target, schema_of};
/// let target = Target::<Lamp>::new(ConnectionConfig::default().schema(schema_of(&[Lamp::SCHEMA])))
///     .serve(0, || Lamp::handler(Bulb))
///     .serve(7, || Lamp::handler(Bulb));
/// target.fuzz_session(&[3, 1, 4, 1, 5, 9, 2, 6]);
/// ```
pub struct Target<P: Protocol> {
    pub(crate) config: ConnectionConfig,
    served: Vec<(u64, MakeReceiver)>,
    _protocol: PhantomData<fn() -> P>,
}

impl<P: Protocol> Target<P> {
    /// A victim configured with `config` (its `schema` must be the one the
    /// peer's side of `P` uses; the checkers set `trust`, timeouts and, as
    /// the input says, some limits on top), serving nothing yet.
    pub fn new(config: ConnectionConfig) -> Self {
        Target {
            config,
            served: Vec::new(),
            _protocol: PhantomData,
        }
    }

    /// Registers the receiver `make` returns at `destination`, on every
    /// victim connection (each input makes a new one, so `make` runs once
    /// per input: fresh handler state each time).
    pub fn serve(mut self, destination: u64, make: impl Fn() -> BoundReceiver + 'static) -> Self {
        self.served.push((destination, Box::new(make)));
        self
    }

    /// Registers the served receivers on `victim`, each reporting to
    /// `watch`; returns the (receiver id, destination) pairs.
    pub(crate) fn register(&self, victim: &mut Connection, watch: &Watch) -> Vec<(u32, u64)> {
        self.served
            .iter()
            .map(|(destination, make)| {
                let receiver = make();
                let id = receiver.id;
                victim.register(*destination, watch.wrap(receiver));
                (id, *destination)
            })
            .collect()
    }
}

impl<P: Protocol> std::fmt::Debug for Target<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("config", &self.config)
            .field(
                "served",
                &self.served.iter().map(|(d, _)| *d).collect::<Vec<_>>(),
            )
            .finish()
    }
}
