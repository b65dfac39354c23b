//! Connections made through a `ferry_handoff::Broker`: the test process is
//! the broker; it spawns a service child (an `Acceptor` as its connection
//! handler) and a client child (`ferry_transport::connect`), which then talk
//! directly. A client built with another schema is refused with a clear
//! error.

mod support;

use ferry_handoff::{AllowAll, Broker, BrokerClient, BrokerEvent, ConnectError};
use ferry_transport::{Accepted, Acceptor, IntroductionError, Remote, Trust, connect};
use std::collections::HashMap;
use std::process::ExitStatus;
use std::time::{Duration, Instant};
use support::proto::*;
use support::*;

/// The child test: runs the role the parent asked for, or nothing.
#[test]
fn child() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        "service" => child_service(),
        "client" => child_client(),
        other => panic!("unknown role {other}"),
    }
}

fn child_service() {
    let config = service_config(Trust::Untrusted).schema(param("SCHEMA"));
    let (acceptor, accepted) = Acceptor::new(config);
    let client = BrokerClient::builder()
        .handler(acceptor)
        .from_env()
        .expect("the broker client");
    let connections: u64 = param("CONNECTIONS");
    for _ in 0..connections {
        let Accepted {
            peer,
            mut connection,
        } = accepted.recv_timeout(OP_TIMEOUT).expect("a connection");
        assert_eq!(peer.service, "client");
        assert_eq!(connection.config().peer_name, peer.to_string());
        serve(&mut connection, ServiceImpl::default());
    }
    // Stay until the broker shuts down; nobody else may connect meanwhile.
    let deadline = Instant::now() + OP_TIMEOUT;
    while client.is_broker_alive() {
        assert!(Instant::now() < deadline, "the broker never went away");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(accepted.try_recv().is_err(), "an unexpected connection");
}

fn child_client() {
    let client = BrokerClient::from_env().expect("the broker client");
    let config = service_config(Trust::Untrusted).schema(param("SCHEMA"));
    let service = Remote::<Service>::new(SERVICE_DESTINATION);
    match param::<String>("EXPECT").as_str() {
        "ok" => {
            let mut conn = connect(&client, "service", config, OP_TIMEOUT).expect("connect");
            assert!(
                conn.config().peer_name.starts_with("service"),
                "{}",
                conn.config().peer_name
            );
            for seq in 0..100 {
                conn.send(service, &note(seq)).expect("send");
            }
            let tally = conn
                .send_sync(service, &Tally {}, OP_TIMEOUT)
                .expect("tally");
            assert_eq!((tally.notes.to_native(), tally.bad.to_native()), (100, 0));
            let sum = conn
                .send_sync(service, &Add { a: 40, b: 2 }, OP_TIMEOUT)
                .expect("add");
            assert_eq!(sum.value.to_native(), 42);
        }
        "mismatch" => match connect(&client, "service", config, OP_TIMEOUT) {
            Err(IntroductionError::Broker(ConnectError::TargetFailed(reason))) => {
                assert!(
                    reason.contains("schema mismatch"),
                    "unclear reason: {reason}"
                );
            }
            Err(e) => panic!("expected the target to refuse, got {e}"),
            Ok(_) => panic!("a client with another schema was connected"),
        },
        other => panic!("unknown expectation {other}"),
    }
}

/// Runs a broker with a service and a client child; returns their exit
/// statuses by service name.
fn run_broker(
    client_schema: u64,
    expect: &str,
    connections: u64,
) -> HashMap<String, Option<ExitStatus>> {
    let mut broker = Broker::new(AllowAll).expect("broker");
    let service_params = [
        ("SCHEMA", SERVICE_SCHEMA.to_string()),
        ("CONNECTIONS", connections.to_string()),
    ];
    broker
        .spawn("service", child_command("service", &service_params))
        .expect("spawn the service");
    let client_params = [
        ("SCHEMA", client_schema.to_string()),
        ("EXPECT", expect.to_string()),
    ];
    broker
        .spawn("client", child_command("client", &client_params))
        .expect("spawn the client");
    let mut exits = HashMap::new();
    let mut record = |event: BrokerEvent| {
        if let BrokerEvent::ChildExited { child, status } = event {
            exits.insert(child.service.clone(), status);
        }
    };
    let deadline = Instant::now() + EXIT_TIMEOUT;
    let mut client_done = false;
    while !client_done {
        assert!(Instant::now() < deadline, "the client did not finish");
        broker
            .turn(Duration::from_millis(100), |event| {
                if matches!(&event, BrokerEvent::ChildExited { child, .. } if child.service == "client") {
                    client_done = true;
                }
                record(event);
            })
            .expect("broker turn");
    }
    broker.shutdown(EXIT_TIMEOUT, &mut record);
    exits
}

fn assert_succeeded(exits: &HashMap<String, Option<ExitStatus>>, name: &str) {
    match exits.get(name) {
        Some(Some(status)) => assert!(
            status.success(),
            "{name} failed ({status}); its stderr is above"
        ),
        other => panic!("{name}: no exit status ({other:?})"),
    }
}

/// The client asks the broker for "service"; the service's `Acceptor`
/// creates the connection; the two children then exchange typed messages
/// (asynchronous and synchronous) directly.
#[test]
fn connect_through_a_broker() {
    let exits = run_broker(SERVICE_SCHEMA, "ok", 1);
    assert_succeeded(&exits, "client");
    assert_succeeded(&exits, "service");
}

/// A client built with another schema is refused by the service's
/// `Acceptor` before any connection exists, and learns why.
#[test]
fn schema_mismatch_through_a_broker() {
    let exits = run_broker(SERVICE_SCHEMA ^ 1, "mismatch", 0);
    assert_succeeded(&exits, "client");
    assert_succeeded(&exits, "service");
}

/// The broker process provides the service itself (`Broker::serve` with an
/// `Acceptor`): the client child reaches it through the ordinary
/// introduction path, from the peer `service#0`, and the two exchange typed
/// messages over the connection the broker process created.
#[test]
fn the_broker_process_serves_through_an_acceptor() {
    let mut broker = Broker::new(AllowAll).expect("broker");
    let (acceptor, accepted) = Acceptor::new(service_config(Trust::Untrusted));
    broker.serve("service", acceptor).expect("serve");
    let client_params = [
        ("SCHEMA", SERVICE_SCHEMA.to_string()),
        ("EXPECT", "ok".to_string()),
    ];
    let client = broker
        .spawn("client", child_command("client", &client_params))
        .expect("spawn the client");
    // The broker's own end is served on a thread while the broker turns.
    let server = std::thread::spawn(move || {
        let Accepted {
            peer,
            mut connection,
        } = accepted.recv_timeout(OP_TIMEOUT).expect("a connection");
        assert_eq!(peer.service, "client");
        serve(&mut connection, ServiceImpl::default());
    });
    let mut status = None;
    let mut made = false;
    let deadline = Instant::now() + EXIT_TIMEOUT;
    while status.is_none() {
        assert!(Instant::now() < deadline, "the client did not finish");
        broker
            .turn(Duration::from_millis(100), |event| match event {
                BrokerEvent::ChildExited { child, status: s } if child.instance == client => {
                    status = Some(s);
                }
                BrokerEvent::IntroductionMade { requester, target }
                    if requester.instance == client =>
                {
                    assert_eq!(target.to_string(), "service#0");
                    made = true;
                }
                _ => {}
            })
            .expect("broker turn");
    }
    server.join().expect("the broker process served the client");
    assert!(made, "no introduction to the broker's own service");
    let status = status.flatten().expect("the client's exit status");
    assert!(
        status.success(),
        "the client failed ({status}); its stderr is above"
    );
}
