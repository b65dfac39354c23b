//! Watching the user's handlers from the inside: each one registered by a
//! checker is wrapped, so that it reports being entered after a violation
//! or inside too many waiting calls, whatever the user's code does.

use super::finding::{Check, Finding};
use crate::connection::{BoundReceiver, Connection};
use std::sync::{Arc, Mutex};

/// What the wrapped handlers saw during one input.
#[derive(Debug, Default)]
struct Seen {
    /// The first invariant a handler found broken.
    finding: Option<Finding>,
    /// Messages handled.
    handled: usize,
}

/// Shared by the wrapped handlers of one input.
#[derive(Debug, Clone, Default)]
pub(crate) struct Watch(Arc<Mutex<Seen>>);

impl Watch {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records `finding` unless one was recorded before.
    pub(crate) fn report(&self, finding: Finding) {
        self.seen().finding.get_or_insert(finding);
    }

    /// The first finding, if any.
    pub(crate) fn finding(&self) -> Option<Finding> {
        self.seen().finding.clone()
    }

    /// Messages the wrapped handlers handled.
    pub(crate) fn handled(&self) -> usize {
        self.seen().handled
    }

    /// A message handler of `receiver` is entered on `connection`.
    fn entering(&self, connection: &Connection, receiver: &str) {
        let mut seen = self.seen();
        seen.handled += 1;
        if let Some(violation) = connection.violation() {
            seen.finding.get_or_insert(Finding::new(
                Check::DispatchedAfterViolation,
                format!("a {receiver} message was handled after the violation {violation}"),
            ));
        }
        // Waiting calls dispatch messages only while they nest less deep
        // than the bound; a plain dispatch (depth 0) always does.
        let depth = connection.calls.sync_depth();
        let bound = connection.config.max_sync_nesting;
        if depth > 0 && depth >= bound {
            seen.finding.get_or_insert(Finding::new(
                Check::NestingTooDeep,
                format!(
                    "a {receiver} message was handled inside {depth} waiting calls, \
                     max_sync_nesting {bound}"
                ),
            ));
        }
    }

    /// A reply handler of a `request` ran: with a reply (`ok`), or with the
    /// error that ended its wait.
    pub(crate) fn reply_handled(&self, connection: &Connection, ok: bool, request: &str) {
        if !ok {
            return;
        }
        let mut seen = self.seen();
        seen.handled += 1;
        if let Some(violation) = connection.violation() {
            seen.finding.get_or_insert(Finding::new(
                Check::DispatchedAfterViolation,
                format!("the reply to a {request} was handled after the violation {violation}"),
            ));
        }
    }

    /// `receiver`, whose handler reports to this watch before it runs.
    pub(crate) fn wrap(&self, receiver: BoundReceiver) -> BoundReceiver {
        let watch = self.clone();
        let inner = receiver.handler;
        let name = receiver.name;
        BoundReceiver {
            handler: Box::new(move |context, incoming| {
                watch.entering(context.connection, name);
                inner(context, incoming)
            }),
            ..receiver
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConnectionConfig;
    use crate::error::Violation;

    #[test]
    #[cfg_attr(miri, ignore)] // a connection needs a memfd
    fn a_handler_entered_after_a_violation_is_reported() {
        let (mut victim, _peer) = Connection::pair(ConnectionConfig::default()).expect("pair");
        let watch = Watch::default();
        watch.entering(&victim, "Lamp");
        assert_eq!(watch.finding(), None, "an open connection may dispatch");
        // Planted: the handler runs although the connection failed.
        victim.fail(Violation::UnexpectedRawFrame);
        watch.entering(&victim, "Lamp");
        let finding = watch.finding().expect("reported");
        assert_eq!(finding.check, Check::DispatchedAfterViolation, "{finding}");
        assert_eq!(watch.handled(), 2);
    }

    #[test]
    #[cfg_attr(miri, ignore)] // a connection needs a memfd
    fn a_handler_entered_too_deep_is_reported() {
        let config = ConnectionConfig::default().max_sync_nesting(2);
        let (mut victim, _peer) = Connection::pair(config).expect("pair");
        let watch = Watch::default();
        victim.calls.enter_sync();
        watch.entering(&victim, "Lamp");
        assert_eq!(
            watch.finding(),
            None,
            "one waiting call of two may dispatch"
        );
        // Planted: a handler runs inside as many waiting calls as allowed.
        victim.calls.enter_sync();
        watch.entering(&victim, "Lamp");
        assert_eq!(
            watch.finding().map(|f| f.check),
            Some(Check::NestingTooDeep)
        );
        victim.calls.leave_sync();
        victim.calls.leave_sync();
    }

    #[test]
    #[cfg_attr(miri, ignore)] // a connection needs a memfd
    fn a_reply_handled_after_a_violation_is_reported() {
        let (mut victim, _peer) = Connection::pair(ConnectionConfig::default()).expect("pair");
        let watch = Watch::default();
        victim.fail(Violation::UnexpectedRawFrame);
        // The error a failed connection gives its reply handlers is fine.
        watch.reply_handled(&victim, false, "Get");
        assert_eq!(watch.finding(), None);
        watch.reply_handled(&victim, true, "Get");
        assert_eq!(
            watch.finding().map(|f| f.check),
            Some(Check::DispatchedAfterViolation)
        );
    }
}
