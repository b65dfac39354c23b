//! [`RequesterLimits`]: how a service bounds the live connections it holds
//! for each requester, so that one child that keeps its introductions open
//! cannot exhaust the service's descriptors (or memory) and deny the service
//! to every other child.
//!
//! The broker bounds introductions *in flight*; only the service knows how
//! long a connection it created lives. Its [`ConnectionHandler`] asks
//! [`RequesterLimits::admit`] with the requester the broker named
//! ([`ConnectionRequest::requester`]) before creating anything, refuses the
//! request if the requester is at its limit, and keeps the returned
//! [`Admission`] for as long as the connection lives (dropping it frees the
//! slot).
//!
//! ```
//! use ferry_handoff::{ConnectionRequest, Endpoint, InstanceId, PeerId, RequesterLimits};
//!
//! let limits = RequesterLimits::new(2, 64);
//! let mut live = Vec::new(); // a real service keeps each with its connection
//! let mut handler = move |request: ConnectionRequest| -> Result<Endpoint, String> {
//!     let admission = limits.admit(&request.requester).map_err(|e| e.to_string())?;
//!     live.push(admission);
//!     Ok(Endpoint::default())
//! };
//! let web = PeerId { service: "web".into(), instance: InstanceId(7) };
//! let ask = || ConnectionRequest { requester: web.clone(), metadata: vec![] };
//! assert!(handler(ask()).is_ok());
//! assert!(handler(ask()).is_ok());
//! assert!(handler(ask()).is_err()); // a third live connection for #7 is refused
//! ```
//!
//! [`ConnectionHandler`]: crate::ConnectionHandler
//! [`ConnectionRequest::requester`]: crate::ConnectionRequest::requester

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::message::{InstanceId, PeerId};

/// Counts a service's live connections per requester and in all, against
/// two limits. Cheap to clone (clones share the counts); `Send + Sync`.
#[derive(Debug, Clone)]
pub struct RequesterLimits {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    max_per_requester: usize,
    max_total: usize,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    per_requester: HashMap<InstanceId, usize>,
    total: usize,
}

/// Why [`RequesterLimits::admit`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitReached {
    /// The requester already holds `limit` live connections.
    #[error("{requester} already holds {limit} live connections to this service")]
    PerRequester {
        /// Who asked.
        requester: PeerId,
        /// The per-requester limit.
        limit: usize,
    },
    /// The service already holds `limit` live connections in all.
    #[error("this service already holds {limit} live connections")]
    Total {
        /// The total limit.
        limit: usize,
    },
}

/// One live connection counted against its requester; dropping it frees the
/// slot. Keep it with the connection it was admitted for.
#[derive(Debug)]
pub struct Admission {
    shared: Arc<Shared>,
    requester: InstanceId,
}

impl RequesterLimits {
    /// At most `max_per_requester` live connections per requester and
    /// `max_total` in all.
    pub fn new(max_per_requester: usize, max_total: usize) -> RequesterLimits {
        RequesterLimits {
            shared: Arc::new(Shared {
                max_per_requester,
                max_total,
                counts: Mutex::new(Counts::default()),
            }),
        }
    }

    /// Counts one more live connection for `requester`, or refuses if that
    /// would exceed a limit.
    pub fn admit(&self, requester: &PeerId) -> Result<Admission, LimitReached> {
        let mut counts = self.shared.counts();
        let held = counts
            .per_requester
            .get(&requester.instance)
            .copied()
            .unwrap_or(0);
        if held >= self.shared.max_per_requester {
            return Err(LimitReached::PerRequester {
                requester: requester.clone(),
                limit: self.shared.max_per_requester,
            });
        }
        if counts.total >= self.shared.max_total {
            return Err(LimitReached::Total {
                limit: self.shared.max_total,
            });
        }
        *counts.per_requester.entry(requester.instance).or_insert(0) += 1;
        counts.total += 1;
        Ok(Admission {
            shared: Arc::clone(&self.shared),
            requester: requester.instance,
        })
    }

    /// The live connections `requester` holds.
    pub fn live(&self, requester: &PeerId) -> usize {
        self.shared
            .counts()
            .per_requester
            .get(&requester.instance)
            .copied()
            .unwrap_or(0)
    }

    /// The live connections in all.
    pub fn total(&self) -> usize {
        self.shared.counts().total
    }
}

impl Shared {
    fn counts(&self) -> MutexGuard<'_, Counts> {
        // Every update is completed under the lock without panicking code
        // in between, so a poisoned lock holds consistent counts.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut counts = self.shared.counts();
        counts.total = counts.total.saturating_sub(1);
        if let Some(held) = counts.per_requester.get_mut(&self.requester) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                counts.per_requester.remove(&self.requester);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(instance: u64) -> PeerId {
        PeerId {
            service: "web".into(),
            instance: InstanceId(instance),
        }
    }

    #[test]
    fn per_requester_limit_is_per_requester() {
        let limits = RequesterLimits::new(2, 100);
        let a1 = limits.admit(&peer(1)).unwrap();
        let _a2 = limits.admit(&peer(1)).unwrap();
        assert!(matches!(
            limits.admit(&peer(1)),
            Err(LimitReached::PerRequester { limit: 2, .. })
        ));
        // Another requester is not affected.
        let _b1 = limits.admit(&peer(2)).unwrap();
        assert_eq!(limits.live(&peer(1)), 2);
        drop(a1);
        assert_eq!(limits.live(&peer(1)), 1);
        let _a3 = limits.admit(&peer(1)).unwrap();
        assert_eq!(limits.total(), 3);
    }

    #[test]
    fn total_limit_holds_across_requesters() {
        let limits = RequesterLimits::new(10, 3);
        let held: Vec<Admission> = (1..=3).map(|i| limits.admit(&peer(i)).unwrap()).collect();
        assert_eq!(
            limits.admit(&peer(4)).unwrap_err(),
            LimitReached::Total { limit: 3 }
        );
        drop(held);
        assert_eq!(limits.total(), 0);
        assert!(limits.admit(&peer(4)).is_ok());
    }
}
