//! Reports of misbehaving peers: a child that received garbage from a peer
//! it was introduced to tells the broker ([`BrokerClient::report`]), and the
//! broker's [`ReportPolicy`] decides what becomes of the accused.
//!
//! A report is untrusted input like any other message a child sends. The
//! broker therefore checks it before the policy sees it (see
//! [`Broker`](crate::Broker), "Reports"): only a child introduced to the
//! accused (or being introduced: a service may judge a connection request
//! itself) may accuse it (a child that accuses a stranger is cut off itself),
//! and a child's reports beyond
//! [`BrokerConfig::max_reports_per_child`](crate::BrokerConfig::max_reports_per_child)
//! are ignored. The policy then decides with both identities in hand, so it
//! can trust some accusers more than others (WebKit's UI process terminates
//! a WebContent process the Network process says sent an invalid message).
//!
//! [`BrokerClient::report`]: crate::BrokerClient::report

use crate::message::PeerId;

/// What the broker does with the accused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Kill it with `SIGKILL` and close its channel; the children it was
    /// introduced to receive `PeerGone`.
    Terminate,
    /// Leave it alone (the report is still passed on as an event).
    Ignore,
}

/// Decides what happens to a child another child reports, once the broker
/// has checked that the two were introduced.
///
/// Any `FnMut(&PeerId, &PeerId, &str) -> Verdict + Send` (accuser, accused,
/// reason) is a report policy. Without one the broker ignores every report.
pub trait ReportPolicy: Send {
    /// `accuser` says `accused` misbehaved, for `reason`.
    fn judge(&mut self, accuser: &PeerId, accused: &PeerId, reason: &str) -> Verdict;
}

impl<F> ReportPolicy for F
where
    F: FnMut(&PeerId, &PeerId, &str) -> Verdict + Send,
{
    fn judge(&mut self, accuser: &PeerId, accused: &PeerId, reason: &str) -> Verdict {
        self(accuser, accused, reason)
    }
}

/// The report policy of a broker that has none: every report is ignored.
#[derive(Debug, Clone, Copy, Default)]
pub struct IgnoreReports;

impl ReportPolicy for IgnoreReports {
    fn judge(&mut self, _: &PeerId, _: &PeerId, _: &str) -> Verdict {
        Verdict::Ignore
    }
}

/// What became of a report (in [`BrokerEvent::Reported`](crate::BrokerEvent::Reported)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportOutcome {
    /// The policy said [`Verdict::Terminate`]: the accused was killed.
    Terminated,
    /// The policy said [`Verdict::Ignore`].
    Ignored,
    /// The accused had already left; nothing to decide.
    AccusedGone,
    /// The accuser had used up its reports; the policy was not asked.
    RateLimited,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::InstanceId;

    #[test]
    fn closures_are_report_policies() {
        let mut only_network = |accuser: &PeerId, _: &PeerId, _: &str| {
            if accuser.service == "network" {
                Verdict::Terminate
            } else {
                Verdict::Ignore
            }
        };
        let peer = |service: &str, n| PeerId {
            service: service.into(),
            instance: InstanceId(n),
        };
        let web = peer("web", 2);
        assert_eq!(
            only_network.judge(&peer("network", 1), &web, "garbage"),
            Verdict::Terminate
        );
        assert_eq!(
            only_network.judge(&peer("gpu", 3), &web, "garbage"),
            Verdict::Ignore
        );
        assert_eq!(
            IgnoreReports.judge(&peer("network", 1), &web, "x"),
            Verdict::Ignore
        );
    }
}
