//! Relaunching a crashed service: a child spawned with
//! [`Broker::spawn_restarting`](crate::Broker::spawn_restarting) is spawned
//! again, under the same service name and with a fresh command, when it
//! exits unsuccessfully, up to a number of times.
//!
//! The new process is a new child: a new [`InstanceId`](crate::InstanceId)
//! (ids are never reused) and a new bootstrap channel. Nothing carries over:
//! the children that were introduced to the old one receive `PeerGone` for
//! it when its channel hangs up, and reach the new one by asking the broker
//! for the service again (until the new one is registered, at the old one's
//! reaping, such a request fails with `UnknownService` or `TargetGone`: ask
//! again).

use std::process::Command;

/// Builds the command of each (re)launch of a restartable service.
pub type MakeCommand = Box<dyn FnMut() -> Command + Send>;

/// How a restartable child is relaunched.
pub(crate) struct Restart {
    /// The command of the next launch.
    pub(crate) make: MakeCommand,
    /// Relaunches left.
    pub(crate) left: u32,
}
