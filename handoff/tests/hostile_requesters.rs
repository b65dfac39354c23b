//! One child must not be able to deny a service to the others (issue 10,
//! hole 7). Real processes: this test is the broker, the attacker, the
//! service and the honest child are this binary re-executed (see `common`).

mod common;

use std::process::ExitStatus;

use common::{assert_success, role_command, turn_until};
use ferry_handoff::{AllowAll, Broker, BrokerConfig, BrokerEvent, ConnectFailure, InstanceId};

#[test]
fn child_role() {
    common::child_main();
}

fn failures_for(events: &[BrokerEvent], who: InstanceId, what: &ConnectFailure) -> usize {
    events
        .iter()
        .filter(|e| {
            matches!(e,
            BrokerEvent::IntroductionFailed { requester, failure, .. }
                if requester.instance == who && failure == what)
        })
        .count()
}

fn misbehaved(events: &[BrokerEvent], who: InstanceId) -> Option<&str> {
    events.iter().find_map(|e| match e {
        BrokerEvent::Misbehaved { child, reason } if child.instance == who => Some(reason.as_str()),
        _ => None,
    })
}

fn exited(events: &[BrokerEvent], who: InstanceId) -> Option<Option<ExitStatus>> {
    common::exit_of(events, who)
}

/// (a) A child bursts `Connect` requests with the largest metadata at a slow
/// service. Before: the broker filled the service's control socket with
/// create-connection requests and then SIGKILLed the *service* for "not
/// reading". Now the service is asked for at most
/// `max_pending_per_target` connections at a time (at most
/// `max_pending_per_requester_and_target` for the attacker), the attacker
/// hears `TargetBusy`, the service lives, and an honest child connects
/// (retrying while busy, a bounded number of times).
/// (b) The broker reports the attacker's refused requests and never lets
/// the service's in-flight count pass its limit.
#[test]
fn a_bursting_requester_cannot_get_the_service_killed_or_starve_others() {
    let config = BrokerConfig::default();
    let per_target = config.max_pending_per_target;
    let mut broker = Broker::with_config(AllowAll, config).unwrap();
    let network = broker
        .spawn("network", role_command("network-paced:20"))
        .unwrap();
    let attacker = broker.spawn("web", role_command("burst:network")).unwrap();
    let mut events = Vec::new();
    let mut peak_in_flight = 0;
    // The attack is on, and limited: the attacker hears TargetBusy.
    turn_until(&mut broker, &mut events, |broker, events| {
        peak_in_flight = peak_in_flight.max(broker.introductions_in_flight(network));
        failures_for(events, attacker, &ConnectFailure::TargetBusy) >= 100
            || misbehaved(events, network).is_some()
            || exited(events, network).is_some()
    });
    let honest = broker
        .spawn("web", role_command("connect-retry:network:500"))
        .unwrap();
    turn_until(&mut broker, &mut events, |broker, events| {
        peak_in_flight = peak_in_flight.max(broker.introductions_in_flight(network));
        exited(events, honest).is_some() || exited(events, network).is_some()
    });
    assert_eq!(
        misbehaved(&events, network),
        None,
        "the service was cut off for the attacker's requests"
    );
    assert!(
        exited(&events, network).is_none(),
        "the service died during the attack"
    );
    assert_success(&mut broker, &mut events, honest);
    assert!(
        peak_in_flight <= per_target,
        "{peak_in_flight} requests in flight to one target (limit {per_target})"
    );
    let busy = failures_for(&events, attacker, &ConnectFailure::TargetBusy);
    let made_for_attacker = events
        .iter()
        .filter(|e| matches!(e, BrokerEvent::IntroductionMade { requester, .. } if requester.instance == attacker))
        .count();
    assert!(
        misbehaved(&events, attacker).is_none(),
        "the attacker reads its answers: it is limited, not cut off"
    );
    eprintln!(
        "attacker: {busy} TargetBusy answers, {made_for_attacker} introductions made; \
         peak in flight to the service {peak_in_flight} (limit {per_target})"
    );
}

/// A child that keeps its introductions open is held to the service's
/// per-requester limit (the service bounds it with `RequesterLimits`, from
/// the requester identity the broker gives it); an honest child still
/// connects, and a closed introduction frees its slot.
#[test]
fn a_hoarding_requester_is_held_to_its_share_of_the_service() {
    let mut broker = Broker::new(AllowAll).unwrap();
    broker
        .spawn("network", role_command("network-limited:4"))
        .unwrap();
    let hoarder = broker
        .spawn("web", role_command("hoarder:network:4"))
        .unwrap();
    let mut events = Vec::new();
    // Four made, refused, (closed one, retried until its slot was free)
    // a fifth made, refused again: it now holds 4. Counting refusals alone
    // is not enough: the retries while the slot is not yet free are
    // refusals too.
    turn_until(&mut broker, &mut events, |_, events| {
        let outcomes: Vec<bool> = events
            .iter()
            .filter_map(|e| match e {
                BrokerEvent::IntroductionMade { requester, .. }
                    if requester.instance == hoarder =>
                {
                    Some(true)
                }
                BrokerEvent::IntroductionFailed {
                    requester,
                    failure: ConnectFailure::TargetFailed(_),
                    ..
                } if requester.instance == hoarder => Some(false),
                _ => None,
            })
            .collect();
        outcomes.iter().filter(|made| **made).count() >= 5 && outcomes.last() == Some(&false)
            || exited(events, hoarder).is_some()
    });
    assert!(exited(&events, hoarder).is_none(), "{events:#?}");
    let honest = broker
        .spawn("web", role_command("connect:network:ok"))
        .unwrap();
    assert_success(&mut broker, &mut events, honest);
    // The hoarder reports its own checks when the broker goes away.
    let mut statuses = Vec::new();
    broker.shutdown(common::TEST_PATIENCE, |e| statuses.push(e));
    let status = exited(&statuses, hoarder).flatten();
    assert!(
        status.is_some_and(|s| s.success()),
        "hoarder: {status:?}; its stderr is above"
    );
}
