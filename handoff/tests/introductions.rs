//! Introductions across real processes: this test process is the broker,
//! its children are this binary re-executed in a role (see `common`).

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

use common::{assert_success, role_command, turn_until, wait_exit};
use ferry_handoff::{
    AllowAll, Broker, BrokerConfig, BrokerEvent, ConnectFailure, Decision, PeerId,
};

#[test]
fn child_role() {
    common::child_main();
}

#[test]
fn introduction_carries_a_memfd_both_sides_map() {
    let mut broker = Broker::new(AllowAll).unwrap();
    let network = broker
        .spawn("network", role_command("network-memfd"))
        .unwrap();
    let web = broker.spawn("web", role_command("web-memfd")).unwrap();
    let mut events = Vec::new();
    assert_success(&mut broker, &mut events, web);
    assert!(
        events.iter().any(|e| matches!(e,
            BrokerEvent::IntroductionMade { requester, target }
                if requester.instance == web && target.instance == network)),
        "{events:#?}"
    );
}

#[test]
fn denied_by_policy() {
    let policy = |requester: &PeerId, service: &str| {
        if requester.service == "web" && service == "network" {
            Decision::Deny
        } else {
            Decision::Allow
        }
    };
    let mut broker = Broker::new(policy).unwrap();
    broker
        .spawn("network", role_command("network-plain"))
        .unwrap();
    let web = broker
        .spawn("web", role_command("connect:network:Denied"))
        .unwrap();
    // The policy is consulted before the service is looked up: a denied
    // requester does not learn whether the service exists.
    let nosy = broker
        .spawn("web", role_command("connect:nonexistent:UnknownService"))
        .unwrap();
    let mut events = Vec::new();
    assert_success(&mut broker, &mut events, web);
    assert_success(&mut broker, &mut events, nosy);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, BrokerEvent::IntroductionDenied { .. }))
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, BrokerEvent::IntroductionRequested { .. }))
    );
}

#[test]
fn unknown_service() {
    let mut broker = Broker::new(AllowAll).unwrap();
    let web = broker
        .spawn("web", role_command("connect:gpu:UnknownService"))
        .unwrap();
    let mut events = Vec::new();
    assert_success(&mut broker, &mut events, web);
    assert!(events.iter().any(|e| matches!(
        e,
        BrokerEvent::IntroductionFailed {
            failure: ConnectFailure::UnknownService,
            ..
        }
    )));
}

#[test]
fn target_refuses() {
    let mut broker = Broker::new(AllowAll).unwrap();
    broker
        .spawn("network", role_command("network-fail"))
        .unwrap();
    let web = broker
        .spawn("web", role_command("connect:network:TargetFailed"))
        .unwrap();
    let mut events = Vec::new();
    assert_success(&mut broker, &mut events, web);
    assert!(events.iter().any(|e| matches!(e,
        BrokerEvent::IntroductionFailed { failure: ConnectFailure::TargetFailed(reason), .. }
            if reason == "no capacity")));
}

#[test]
fn target_killed_before_answering() {
    let mut broker = Broker::new(AllowAll).unwrap();
    let network = broker
        .spawn("network", role_command("network-slow"))
        .unwrap();
    let web = broker
        .spawn("web", role_command("connect:network:TargetGone"))
        .unwrap();
    let mut events = Vec::new();
    // Kill the target as soon as the request has been forwarded to it.
    turn_until(&mut broker, &mut events, |_, events| {
        events
            .iter()
            .any(|e| matches!(e, BrokerEvent::IntroductionRequested { .. }))
    });
    broker.kill(network).unwrap();
    assert_success(&mut broker, &mut events, web);
    let status = wait_exit(&mut broker, &mut events, network);
    assert_eq!(status.signal(), Some(libc::SIGKILL));
}

#[test]
fn target_killed_while_answering() {
    let mut broker = Broker::new(AllowAll).unwrap();
    // Its handler creates the endpoint, then SIGKILLs its own process.
    let network = broker
        .spawn("network", role_command("network-suicide"))
        .unwrap();
    let web = broker
        .spawn("web", role_command("connect:network:TargetGone"))
        .unwrap();
    let mut events = Vec::new();
    assert_success(&mut broker, &mut events, web);
    let status = wait_exit(&mut broker, &mut events, network);
    assert_eq!(status.signal(), Some(libc::SIGKILL));
}

#[test]
fn target_that_does_not_answer_in_time() {
    let config = BrokerConfig {
        introduction_timeout: Duration::from_millis(300),
        ..BrokerConfig::default()
    };
    let mut broker = Broker::with_config(AllowAll, config).unwrap();
    broker
        .spawn("network", role_command("network-slow"))
        .unwrap();
    let web = broker
        .spawn("web", role_command("connect:network:TimedOut"))
        .unwrap();
    let mut events = Vec::new();
    assert_success(&mut broker, &mut events, web);
    assert!(events.iter().any(|e| matches!(
        e,
        BrokerEvent::IntroductionFailed {
            failure: ConnectFailure::TimedOut,
            ..
        }
    )));
}

#[test]
fn peers_are_told_when_a_peer_dies() {
    let mut broker = Broker::new(AllowAll).unwrap();
    let network = broker
        .spawn("network", role_command("network-plain"))
        .unwrap();
    let web = broker.spawn("web", role_command("web-peer-gone")).unwrap();
    let mut events = Vec::new();
    turn_until(&mut broker, &mut events, |_, events| {
        events
            .iter()
            .any(|e| matches!(e, BrokerEvent::IntroductionMade { .. }))
    });
    broker.kill(network).unwrap();
    assert_success(&mut broker, &mut events, web);
}

#[test]
fn misbehaving_children_are_cut_off() {
    for kind in [
        "bytes",
        "version",
        "wrong-kind",
        "unexpected-fds",
        "too-many-fds",
        "forged-answer",
        "oversized",
    ] {
        let mut broker = Broker::new(AllowAll).unwrap();
        let bad = broker
            .spawn("bad", role_command(&format!("garbage:{kind}")))
            .unwrap();
        let mut events = Vec::new();
        let status = wait_exit(&mut broker, &mut events, bad);
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{kind}: {events:#?}");
        assert!(
            events.iter().any(|e| matches!(e,
                BrokerEvent::Misbehaved { child, .. } if child.instance == bad)),
            "{kind}: {events:#?}"
        );
    }
}

#[test]
fn a_process_without_a_bootstrap_channel_gets_a_clear_error() {
    let mut command = role_command("no-bootstrap");
    command.env_remove(ferry_handoff::BOOTSTRAP_ENV);
    let mut child = command.spawn().unwrap();
    let status = common_wait(&mut child);
    assert!(status.success(), "{status:?}");
}

/// Waits for a plain child, bounded.
fn common_wait(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + common::TEST_PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("child did not exit in time");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn spawn_failure_is_reported() {
    let mut broker = Broker::new(AllowAll).unwrap();
    assert!(matches!(
        broker.spawn("ghost", Command::new("/nonexistent/ferry-child")),
        Err(ferry_handoff::SpawnError::Spawn(_))
    ));
}

#[test]
fn shutdown_lets_children_exit_on_their_own() {
    let mut broker = Broker::new(AllowAll).unwrap();
    // It serves until it sees the broker gone, then exits with 0.
    let network = broker
        .spawn("network", role_command("network-plain"))
        .unwrap();
    let mut exits = Vec::new();
    broker.shutdown(common::TEST_PATIENCE, |e| {
        if let BrokerEvent::ChildExited { child, status } = e {
            exits.push((child.instance, status));
        }
    });
    assert_eq!(exits.len(), 1, "{exits:?}");
    let (who, status) = &exits[0];
    assert_eq!(*who, network);
    assert!(status.unwrap().success(), "{status:?}");
}
