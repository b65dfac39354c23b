//! Where a connection stands: open, then disconnected (the peer closed or
//! died) or failed (the peer broke the protocol, and we closed it). The
//! only owner of that state, and of the errors each operation returns once
//! the connection is no longer open.

use crate::error::{DispatchError, RecvError, SendError, Violation};

/// A connection's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum State {
    Open,
    /// The peer closed its end or died.
    Disconnected,
    /// The peer broke the protocol; we closed the connection.
    Failed(Violation),
}

/// The state and the peer's name used in errors.
#[derive(Debug)]
pub(crate) struct Lifecycle {
    state: State,
    peer: String,
}

/// What a transition did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    /// The connection was open (or only disconnected, for a violation) and
    /// has now ended: the caller releases what waits on it.
    Ended,
    /// It had ended before; nothing changed.
    AlreadyEnded,
}

impl Lifecycle {
    pub(crate) fn new(peer: String) -> Self {
        Lifecycle {
            state: State::Open,
            peer,
        }
    }

    pub(crate) fn state(&self) -> &State {
        &self.state
    }

    pub(crate) fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// The violation that ended the connection, if one did.
    pub(crate) fn violation(&self) -> Option<&Violation> {
        match &self.state {
            State::Failed(violation) => Some(violation),
            _ => None,
        }
    }

    /// The peer closed its end or died.
    pub(crate) fn peer_gone(&mut self) -> Transition {
        if self.state == State::Open {
            self.state = State::Disconnected;
            Transition::Ended
        } else {
            Transition::AlreadyEnded
        }
    }

    /// The peer broke the protocol. A violation also replaces an earlier
    /// disconnection: it is the more telling report, and nothing the peer
    /// sent may be dispatched any more.
    pub(crate) fn fail(&mut self, violation: Violation) -> Transition {
        if matches!(self.state, State::Failed(_)) {
            Transition::AlreadyEnded
        } else {
            self.state = State::Failed(violation);
            Transition::Ended
        }
    }

    /// The error reporting `violation` to a receiver.
    pub(crate) fn violation_error(&self, violation: Violation) -> RecvError {
        RecvError::ProtocolViolation {
            peer: self.peer.clone(),
            violation,
        }
    }

    /// The error a receive returns once the connection is no longer open.
    pub(crate) fn recv_error(&self) -> Option<RecvError> {
        match &self.state {
            State::Open => None,
            State::Disconnected => Some(RecvError::Disconnected),
            State::Failed(violation) => Some(self.violation_error(violation.clone())),
        }
    }

    /// The error a send returns once the connection is no longer open.
    pub(crate) fn send_error(&self) -> Option<SendError> {
        match &self.state {
            State::Open => None,
            State::Disconnected => Some(SendError::Disconnected),
            State::Failed(violation) => Some(SendError::Failed(violation.clone())),
        }
    }

    /// The error dispatching returns once the peer broke the protocol (a
    /// disconnection still lets what arrived before it be dispatched).
    pub(crate) fn dispatch_error(&self) -> Option<DispatchError> {
        match &self.state {
            State::Failed(violation) => Some(DispatchError::ProtocolViolation {
                peer: self.peer.clone(),
                violation: violation.clone(),
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_then_disconnected_then_failed() {
        let mut life = Lifecycle::new("peer".into());
        assert!(life.is_open());
        assert_eq!(life.recv_error(), None);
        assert_eq!(life.peer_gone(), Transition::Ended);
        assert_eq!(life.peer_gone(), Transition::AlreadyEnded);
        assert_eq!(life.recv_error(), Some(RecvError::Disconnected));
        assert_eq!(life.send_error(), Some(SendError::Disconnected));
        assert_eq!(life.dispatch_error(), None);
        // A violation found after the disconnection still wins.
        assert_eq!(life.fail(Violation::UnexpectedRawFrame), Transition::Ended);
        assert_eq!(
            life.fail(Violation::UnexpectedReply(1)),
            Transition::AlreadyEnded
        );
        assert_eq!(
            life.send_error(),
            Some(SendError::Failed(Violation::UnexpectedRawFrame))
        );
        assert!(matches!(
            life.dispatch_error(),
            Some(DispatchError::ProtocolViolation { .. })
        ));
        // Once failed, the peer going away changes nothing.
        assert_eq!(life.peer_gone(), Transition::AlreadyEnded);
        assert!(!life.is_open());
    }
}
