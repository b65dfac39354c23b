//! Pull-style typed receiving across processes: the child receives each
//! frame, looks at its type, reads it in place, replies, or hands it to a
//! handler that borrows the child's own state (no `Send`, no `'static`), and
//! dispatches exactly one message at a time.

mod support;

use ferry_transport::{Connection, ConnectionConfig, Context, Receiver, Remote, Trust};
use std::time::Duration;
use support::*;

ferry_transport::protocol! {
    /// A counter the parent drives.
    pub receiver Tally handled_by TallyHandler {
        fn add => Add { n: u64 };
        fn total => Total {} -> TotalReply { total: u64 };
        fn label => Label { text: String };
    }
}

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

fn config(trust: Trust) -> ConnectionConfig {
    ConnectionConfig::default()
        .trust(trust)
        .schema(ferry_transport::schema_of(&[Tally::SCHEMA]))
}

#[test]
fn child() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        "pull" => child_pull(),
        other => panic!("unknown role {other}"),
    }
}

/// A handler borrowing the child's local state: not `Send`, not `'static`.
struct Labels<'a> {
    seen: &'a std::cell::RefCell<Vec<String>>,
}

impl TallyHandler for Labels<'_> {
    fn add(&self, _: &mut Context, _: &ArchivedAdd) {
        unreachable!("adds are read by hand")
    }
    fn total(&self, _: &mut Context, _: &ArchivedTotal) -> TotalReply {
        unreachable!("totals are answered by hand")
    }
    fn label(&self, _: &mut Context, message: &ArchivedLabel) {
        self.seen.borrow_mut().push(message.text.to_string());
    }
}

/// Receives until the parent hangs up: adds by hand, totals answered by
/// hand, labels through a borrowing handler; then reports.
fn child_pull() {
    let (mut conn, control) = child_connect();
    let mut total = 0u64;
    let seen = std::cell::RefCell::new(Vec::new());
    let labels = Labels { seen: &seen };
    loop {
        let mut frame = match conn.recv_frame(WAIT) {
            Ok(frame) => frame,
            Err(ferry_transport::RecvError::Disconnected) => break,
            Err(error) => panic!("recv: {error}"),
        };
        if let Some(add) = frame.get::<Add>().expect("valid add") {
            total += add.n.to_native();
        } else if frame.is::<Total>() {
            frame.reply::<Total>(&TotalReply { total }).expect("reply");
        } else {
            assert!(Tally::handle(&labels, &mut frame).expect("handle"));
        }
    }
    tell(
        &control,
        format!("{total}:{}", seen.borrow().join(",")).as_bytes(),
    );
}

fn run(trust: Trust) {
    let (mut conn, peer) = connect_peer("pull", &config(trust), &[]);
    let tally = Remote::<Tally>::new(0);
    for n in 1..=100 {
        conn.send(tally, &Add { n }).expect("add");
    }
    conn.send(tally, &Label { text: "a".into() })
        .expect("label");
    let reply = conn
        .send_sync(tally, &Total {}, Duration::from_secs(10))
        .expect("total");
    assert_eq!(reply.total.to_native(), 5050);
    conn.send(tally, &Label { text: "b".into() })
        .expect("label");
    let reply = conn
        .send_sync(tally, &Total {}, Duration::from_secs(10))
        .expect("total");
    assert_eq!(reply.total.to_native(), 5050);
    drop(conn);
    assert_eq!(peer.hear(), b"5050:a,b");
    peer.expect_success();
}

#[test]
fn pull_style_receive_trusted() {
    run(Trust::Trusted);
}

#[test]
fn pull_style_receive_untrusted() {
    run(Trust::Untrusted);
}

/// `dispatch_one` handles exactly one message per call, set-aside ones
/// first (in one process: the point is the count).
#[test]
fn dispatch_one_handles_exactly_one() {
    struct Count(std::sync::Arc<std::sync::atomic::AtomicU64>);
    impl TallyHandler for Count {
        fn add(&self, _: &mut Context, message: &ArchivedAdd) {
            self.0
                .fetch_add(message.n.to_native(), std::sync::atomic::Ordering::SeqCst);
        }
        fn total(&self, _: &mut Context, _: &ArchivedTotal) -> TotalReply {
            TotalReply {
                total: self.0.load(std::sync::atomic::Ordering::SeqCst),
            }
        }
        fn label(&self, _: &mut Context, _: &ArchivedLabel) {}
    }
    let (mut a, mut b) = Connection::pair(config(Trust::Trusted)).expect("pair");
    let sum = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    b.register(0, Tally::handler(Count(sum.clone())));
    for n in [1, 10, 100] {
        a.send(Remote::<Tally>::new(0), &Add { n }).expect("add");
    }
    let load = || sum.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(b.dispatch_one(WAIT), Ok(true));
    assert_eq!(load(), 1);
    assert_eq!(b.dispatch_one(WAIT), Ok(true));
    assert_eq!(load(), 11);
    assert_eq!(b.dispatch_one(WAIT), Ok(true));
    assert_eq!(load(), 111);
    assert_eq!(b.dispatch_one(Some(Duration::ZERO)), Ok(false));
}
