//! The broker's own services, relaunching a crashed service, and reports of
//! misbehaving peers, across real processes: this test process is the
//! broker, its children are this binary re-executed in a role (see
//! `common`).

mod common;

use std::os::unix::process::ExitStatusExt;

use common::{assert_success, exit_of, role_command, turn_until, wait_exit};
use ferry_handoff::{
    AllowAll, BROKER_INSTANCE, Broker, BrokerConfig, BrokerEvent, Decision, PeerId, ReportOutcome,
    Verdict,
};

#[test]
fn child_role() {
    common::child_main();
}

#[test]
fn a_child_reaches_the_brokers_own_service_through_an_introduction() {
    let policy = |requester: &PeerId, service: &str| {
        if requester.service == "stranger" && service == "ui" {
            Decision::Deny
        } else {
            Decision::Allow
        }
    };
    let mut broker = Broker::new(policy).unwrap();
    // The handler runs in this process: the memfd it creates is checked by
    // a thread of ours after the child wrote a pattern into it.
    broker.serve("ui", common::memfd_handler).unwrap();
    let web = broker
        .spawn("web", role_command("web-memfd-to:ui"))
        .unwrap();
    let stranger = broker
        .spawn("stranger", role_command("connect:ui:Denied"))
        .unwrap();
    let mut events = Vec::new();
    assert_success(&mut broker, &mut events, web);
    assert_success(&mut broker, &mut events, stranger);
    assert!(
        events.iter().any(|e| matches!(e,
            BrokerEvent::IntroductionMade { requester, target }
                if requester.instance == web
                    && target.service == "ui"
                    && target.instance == BROKER_INSTANCE)),
        "{events:#?}"
    );
    assert!(
        events.iter().any(|e| matches!(e,
            BrokerEvent::IntroductionDenied { requester, service }
                if requester.instance == stranger && service == "ui")),
        "{events:#?}"
    );
}

#[test]
fn a_crashed_service_is_relaunched_and_its_client_reconnects() {
    let mut broker = Broker::new(AllowAll).unwrap();
    let first = broker
        .spawn_restarting("network", 1, || role_command("network-plain"))
        .unwrap();
    let web = broker
        .spawn("web", role_command("reconnect:network"))
        .unwrap();
    let mut events = Vec::new();
    turn_until(&mut broker, &mut events, |_, events| {
        events.iter().any(|e| {
            matches!(e, BrokerEvent::IntroductionMade { target, .. } if target.instance == first)
        })
    });
    broker.kill(first).unwrap();
    assert_success(&mut broker, &mut events, web);
    let second = events
        .iter()
        .find_map(|e| match e {
            BrokerEvent::Restarted {
                old,
                new,
                pid,
                restarts_left: 0,
            } if old.instance == first => Some((new.clone(), *pid)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no relaunch: {events:#?}"));
    assert_eq!(second.0.service, "network");
    assert_ne!(second.0.instance, first);
    assert_eq!(broker.pid(second.0.instance), Some(second.1));
    // The client was introduced to the new instance.
    assert!(
        events.iter().any(|e| matches!(e,
            BrokerEvent::IntroductionMade { requester, target }
                if requester.instance == web && *target == second.0)),
        "{events:#?}"
    );
    // One relaunch only: the next crash stays a crash.
    broker.kill(second.0.instance).unwrap();
    let status = wait_exit(&mut broker, &mut events, second.0.instance);
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    turn_until(&mut broker, &mut events, |_, events| {
        events
            .iter()
            .any(|e| matches!(e, BrokerEvent::NotRestarted { child, .. } if *child == second.0))
    });
    assert!(broker.children().all(|c| c.service != "network"));
}

#[test]
fn a_service_that_exits_successfully_is_not_relaunched() {
    let mut broker = Broker::new(AllowAll).unwrap();
    // Asks for a service nobody provides and exits 0.
    let child = broker
        .spawn_restarting("web", 3, || role_command("connect:nobody:UnknownService"))
        .unwrap();
    let mut events = Vec::new();
    assert_success(&mut broker, &mut events, child);
    broker
        .turn(std::time::Duration::from_millis(100), |e| events.push(e))
        .unwrap();
    assert!(
        !events.iter().any(|e| matches!(
            e,
            BrokerEvent::Restarted { .. } | BrokerEvent::NotRestarted { .. }
        )),
        "{events:#?}"
    );
    assert!(broker.children().next().is_none());
}

#[test]
fn a_reported_peer_is_terminated_by_the_policy() {
    let mut broker = Broker::new(AllowAll).unwrap();
    // Only the network service may get a web process killed.
    broker.set_report_policy(|accuser: &PeerId, accused: &PeerId, _: &str| {
        if accuser.service == "network" && accused.service == "web" {
            Verdict::Terminate
        } else {
            Verdict::Ignore
        }
    });
    let network = broker
        .spawn("network", role_command("network-accuser:1"))
        .unwrap();
    let web = broker.spawn("web", role_command("web-peer-gone")).unwrap();
    let mut events = Vec::new();
    let status = wait_exit(&mut broker, &mut events, web);
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{events:#?}");
    assert!(
        events.iter().any(|e| matches!(e,
            BrokerEvent::Reported { accuser, accused, reason, outcome: ReportOutcome::Terminated }
                if accuser.instance == network
                    && accused.instance == web
                    && reason.contains("no message"))),
        "{events:#?}"
    );
    // The accuser is left alone.
    assert!(exit_of(&events, network).is_none());
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, BrokerEvent::Misbehaved { .. })),
        "{events:#?}"
    );
}

#[test]
fn reports_beyond_the_limit_are_ignored_without_asking_the_policy() {
    let config = BrokerConfig {
        max_reports_per_child: 2,
        ..BrokerConfig::default()
    };
    let mut broker = Broker::with_config(AllowAll, config).unwrap();
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = asked.clone();
    broker.set_report_policy(move |_: &PeerId, _: &PeerId, _: &str| {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Verdict::Ignore
    });
    broker
        .spawn("network", role_command("network-accuser:3"))
        .unwrap();
    let web = broker.spawn("web", role_command("web-peer-gone")).unwrap();
    let mut events = Vec::new();
    let outcomes = |events: &[BrokerEvent]| -> Vec<ReportOutcome> {
        events
            .iter()
            .filter_map(|e| match e {
                BrokerEvent::Reported { outcome, .. } => Some(*outcome),
                _ => None,
            })
            .collect()
    };
    turn_until(&mut broker, &mut events, |_, events| {
        outcomes(events).len() == 3
    });
    assert_eq!(
        outcomes(&events),
        [
            ReportOutcome::Ignored,
            ReportOutcome::Ignored,
            ReportOutcome::RateLimited
        ]
    );
    assert_eq!(asked.load(std::sync::atomic::Ordering::Relaxed), 2);
    // Ignored: the accused is still running.
    assert!(exit_of(&events, web).is_none());
    assert!(broker.pid(web).is_some());
}

#[test]
fn a_false_accuser_is_cut_off_and_the_accused_left_alone() {
    let mut broker = Broker::new(AllowAll).unwrap();
    broker.set_report_policy(|_: &PeerId, _: &PeerId, _: &str| Verdict::Terminate);
    let network = broker
        .spawn("network", role_command("network-plain"))
        .unwrap();
    let liar = broker
        .spawn(
            "web",
            role_command(&format!("false-accuser:network:{}", network.0)),
        )
        .unwrap();
    // And one that names a child that never existed.
    let fabulist = broker
        .spawn("web", role_command("false-accuser:network:999"))
        .unwrap();
    let mut events = Vec::new();
    for accuser in [liar, fabulist] {
        let status = wait_exit(&mut broker, &mut events, accuser);
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{events:#?}");
        assert!(
            events.iter().any(|e| matches!(e,
                BrokerEvent::Misbehaved { child, reason }
                    if child.instance == accuser && reason.starts_with("reported network#"))),
            "{events:#?}"
        );
    }
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, BrokerEvent::Reported { .. })),
        "{events:#?}"
    );
    assert!(exit_of(&events, network).is_none());
    assert!(broker.pid(network).is_some());
}
