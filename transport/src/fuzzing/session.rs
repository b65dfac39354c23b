//! The structure-aware checker ([`Target::session`]): a live connection
//! driven by sequences of valid messages of the protocol, requests with
//! replies (taken or never taken), synchronous calls both ways and
//! hang-ups, mixed with mutated and garbage frames, the way Chromium fuzzes
//! its IPC with structure-aware inputs: the messages are built from the
//! fuzzer's bytes through `Arbitrary`, so they pass validation and reach
//! deep into the handlers, and the mutations find what validation misses.
//!
//! Both ends are real `Connection`s in this process (`Connection::pair`),
//! driven from one thread: the victim, with the target's receivers
//! registered (wrapped, as in [`Target::dispatch`]), and the peer, which
//! the input drives. The peer answers the victim's requests with replies
//! of the declared type built from the input: between steps for replies
//! to requests the victim sends from its handlers, and, for a synchronous
//! call the victim makes (`Call`), before the call (the reply waits in the
//! ring for the call to read it), validly or, as the input says, mutated
//! or naming another message. A handler of the victim that calls the peer
//! synchronously gets no answer and waits for its own timeout.
//!
//! The input is read with [`arbitrary::Unstructured`]: the victim's trust,
//! whether the peer reads what the victim sends (or never takes its
//! replies), `max_sync_nesting` and a small or the configured
//! `max_deferred_bytes`; then up to 64 steps (see [`Step`]).

use super::catalog::{Catalog, Entry, frame_bytes};
use super::dispatch::check_budgets;
use super::fds::{ATTACHED_MEMFD, FdSnapshot, attached_fds_held, one_at_a_time};
use super::finding::{Check, Finding};
use super::protocol::Protocol;
use super::target::Target;
use super::watch::Watch;
use crate::config::Trust;
use crate::connection::Connection;
use crate::error::Violation;
use crate::outbox::Room;
use crate::wire::{ENVELOPE_SIZE, Envelope, Flags};
use arbitrary::Unstructured;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

/// Steps in one session, at most.
const MAX_STEPS: usize = 64;
/// Ring size of the session's connection (each direction).
const RING_CAPACITY: usize = 64 * 1024;
/// How long the victim's synchronous calls wait. The peer's answer is in
/// the ring before the call is made; a mutated one may never name the call
/// (its reply flag flipped), and the call then waits this long.
const CALL_TIMEOUT: Duration = Duration::from_millis(10);
/// How long a reply waits for room in a ring the other side does not read.
const REPLY_TIMEOUT: Duration = Duration::from_millis(100);
/// How long the descriptor count may take to come down after an input.
const FD_GRACE: Duration = Duration::from_secs(2);

/// One step of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The peer sends a valid message (a request among them, synchronous
    /// or not, whose reply it takes only if it reads).
    Send,
    /// The peer sends a valid message with descriptors attached.
    SendWithFds,
    /// The peer sends a valid message whose bytes are then mutated.
    Mutated,
    /// The peer sends a frame of arbitrary bytes.
    Garbage,
    /// The victim dispatches what arrived.
    Dispatch,
    /// The victim makes a synchronous call, which the peer answers.
    Call,
    /// The peer hangs up (drops its connection): the session ends.
    HangUp,
}

impl Step {
    /// The step a byte picks, weighted: mostly honest messages and
    /// dispatching, now and then a mutation, rarely a hang-up (which ends
    /// the session).
    fn from_byte(byte: u8) -> Step {
        match byte {
            0..=99 => Step::Send,
            100..=119 => Step::SendWithFds,
            120..=149 => Step::Mutated,
            150..=164 => Step::Garbage,
            165..=214 => Step::Dispatch,
            215..=249 => Step::Call,
            _ => Step::HangUp,
        }
    }
}

/// How the peer answers the victim's requests during a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// With a valid reply.
    Valid,
    /// With a valid reply whose body is then mutated.
    Mutated,
    /// With a reply that names another message of the protocol.
    WrongMessage,
}

/// What a session did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SessionReport {
    /// Steps run.
    pub steps: usize,
    /// Messages the victim's handlers handled.
    pub handled: usize,
    /// Requests of the victim the peer answered.
    pub answered: usize,
    /// Whether anything the peer sent was mutated or garbage.
    pub corrupted: bool,
    /// The violation that ended the victim's connection, if one did.
    pub violation: Option<String>,
    /// The most attached descriptors held after a call into the victim.
    pub most_fds_held: usize,
}

/// The peer's side of a session.
struct Peer {
    connection: Connection,
    /// Whether it reads what the victim sends between steps.
    reads: bool,
    /// Whether anything it sent was mutated or garbage.
    corrupted: bool,
    answered: usize,
}

impl Peer {
    /// Sends `frame` as it is, straight into the ring.
    fn raw(&mut self, frame: &[u8]) {
        let mut outbox = self.connection.outbox.lock();
        let tx = &mut outbox.tx;
        let len = frame.len().min(tx.max_payload());
        if let Ok(mut grant) = tx.try_reserve(len) {
            grant.copy_from_slice(&frame[..len]);
            grant.commit();
        }
        drop(outbox);
        self.corrupted = true;
        // A malformed attachment: a corrupted frame that announces
        // descriptors fails at once instead of waiting for them.
        let _ = self.connection.control.try_send(b"no more fds here", &[]);
    }

    /// Sends a well-formed frame (out of line if it is large), unless it
    /// is larger than the connection allows (an honest peer does not send
    /// it).
    fn send(&mut self, envelope: Envelope, body: &[u8], fds: &[OwnedFd]) {
        if body.len() > self.connection.config.max_message_size {
            return;
        }
        let fds: Vec<_> = fds.iter().map(|fd| fd.as_fd()).collect();
        let connection = &mut self.connection;
        let _ = connection.outbox.lock().send_bytes(
            envelope,
            body,
            &fds,
            Room::Try,
            &connection.control,
        );
    }

    /// Reads what the victim sent, answering its requests, until nothing
    /// is left.
    fn serve(&mut self, catalog: &Catalog) {
        loop {
            // The frame is dropped (its room given back) once its envelope
            // is read.
            let received = self
                .connection
                .try_recv_frame()
                .map(|frame| *frame.envelope());
            let Ok(envelope) = received else {
                return;
            };
            let flags = envelope.flags;
            if envelope.request_id == 0 || flags.has(Flags::REPLY) || flags.has(Flags::RAW) {
                continue;
            }
            let Some(entry) = catalog.find(envelope.receiver, envelope.schema, envelope.message)
            else {
                continue;
            };
            // The answer to the victim's own synchronous calls was sent
            // before the call (see `Step::Call`).
            if flags.has(Flags::SYNC) {
                continue;
            }
            self.answer(
                catalog,
                entry,
                envelope,
                Answer::Valid,
                &mut Unstructured::new(&[]),
            );
        }
    }

    fn answer(
        &mut self,
        catalog: &Catalog,
        entry: &Entry,
        request: Envelope,
        answer: Answer,
        u: &mut Unstructured<'_>,
    ) {
        let Some((build, _)) = entry.reply else {
            return;
        };
        let mut envelope = Envelope {
            flags: Flags(Flags::REPLY),
            fd_count: 0,
            ..request
        };
        let body = build(u).unwrap_or_default();
        self.answered += 1;
        match answer {
            Answer::Valid => self.send(envelope, &body, &[]),
            Answer::Mutated => {
                let mut frame = frame_bytes(&envelope, &body);
                mutate(&mut frame, u);
                self.raw(&frame);
            }
            Answer::WrongMessage => {
                if let Some(other) = catalog.pick(u) {
                    envelope.receiver = other.receiver;
                    envelope.schema = other.schema;
                    envelope.message = other.message;
                }
                self.raw(&frame_bytes(&envelope, &body));
            }
        }
    }
}

/// Flips a few bytes of `frame`, as the input says.
fn mutate(frame: &mut [u8], u: &mut Unstructured<'_>) {
    if frame.is_empty() {
        return;
    }
    let count = u.int_in_range(1..=4u8).unwrap_or(1);
    for _ in 0..count {
        // The envelope as often as the body: it decides where the body goes.
        let at = if u.arbitrary::<bool>().unwrap_or(false) {
            u.choose_index(ENVELOPE_SIZE.min(frame.len())).unwrap_or(0)
        } else {
            u.choose_index(frame.len()).unwrap_or(0)
        };
        let xor = u.int_in_range(1..=255u8).unwrap_or(1);
        frame[at] ^= xor;
    }
}

/// A memfd to attach.
fn attached_memfd(len: u16) -> Option<OwnedFd> {
    use rustix::fs::{MemfdFlags, memfd_create};
    let fd = memfd_create(ATTACHED_MEMFD, MemfdFlags::CLOEXEC).ok()?;
    rustix::fs::ftruncate(&fd, u64::from(len)).ok()?;
    Some(fd)
}

impl<P: Protocol> Target<P> {
    /// Runs one input of the structure-aware checker (see [the
    /// module](self)). Besides the invariants [`dispatch`](Self::dispatch)
    /// checks, traffic in which nothing was mutated must never end the
    /// victim's connection with a violation (but for
    /// `Violation::RepliesNotTaken` when the peer does not read).
    pub fn session(&self, data: &[u8]) -> Result<SessionReport, Finding> {
        let _turn = one_at_a_time();
        let before = FdSnapshot::take();
        let report = self.session_victim(data);
        before.check_no_leak(FD_GRACE)?;
        report
    }

    /// [`session`](Self::session) for a fuzz target: panics with the
    /// finding, if any.
    pub fn fuzz_session(&self, data: &[u8]) {
        if let Err(finding) = self.session(data) {
            panic!("{finding}");
        }
    }

    fn session_victim(&self, data: &[u8]) -> Result<SessionReport, Finding> {
        let catalog = Catalog::of::<P>();
        let mut u = Unstructured::new(data);
        let mut report = SessionReport::default();
        let trusted = u.arbitrary::<bool>().unwrap_or(false);
        let reads = !u.ratio(1, 8).unwrap_or(false);
        let mut config = self
            .config
            .clone()
            .trust(if trusted {
                Trust::Trusted
            } else {
                Trust::Untrusted
            })
            .ring_capacity(RING_CAPACITY)
            .reply_timeout(REPLY_TIMEOUT)
            .send_timeout(Some(REPLY_TIMEOUT))
            .max_sync_nesting(u.int_in_range(0..=4u32).unwrap_or(2));
        if u.ratio(1, 4).unwrap_or(false) {
            config.max_deferred_bytes = 1024;
        }
        let baseline = attached_fds_held();
        let watch = Watch::default();
        let (mut victim, connection) = Connection::pair(config.clone()).expect("a connection pair");
        let served = self.register(&mut victim, &watch);
        let mut peer = Some(Peer {
            connection,
            reads,
            corrupted: false,
            answered: 0,
        });

        while report.steps < MAX_STEPS && !u.is_empty() {
            report.steps += 1;
            let step = Step::from_byte(u.arbitrary().unwrap_or(0));
            let Some(peer_now) = peer.as_mut() else {
                break;
            };
            match step {
                Step::Send | Step::SendWithFds | Step::Mutated => {
                    let lies = step == Step::Mutated;
                    let Some((mut envelope, body)) = catalog.frame(&mut u, &served, lies, false)
                    else {
                        continue;
                    };
                    match step {
                        Step::Send => peer_now.send(envelope, &body, &[]),
                        Step::SendWithFds => {
                            let max = config.max_fds_per_message.min(4);
                            let count = u.int_in_range(0..=max).unwrap_or(0);
                            let fds: Vec<OwnedFd> = (0..count)
                                .filter_map(|_| attached_memfd(u.arbitrary().unwrap_or(0)))
                                .collect();
                            peer_now.send(envelope, &body, &fds);
                        }
                        _ => {
                            envelope.fd_count = 0;
                            let mut frame = frame_bytes(&envelope, &body);
                            mutate(&mut frame, &mut u);
                            peer_now.raw(&frame);
                        }
                    }
                }
                Step::Garbage => {
                    let len = u.int_in_range(0..=96usize).unwrap_or(0);
                    let bytes = u.bytes(len).unwrap_or_default().to_vec();
                    peer_now.raw(&bytes);
                }
                Step::Dispatch => {
                    for _ in 0..64 {
                        if !matches!(victim.dispatch(Some(Duration::ZERO)), Ok(1..)) {
                            break;
                        }
                    }
                    check_budgets(&victim, baseline, &mut report.most_fds_held)?;
                }
                Step::Call => {
                    let requests: Vec<&Entry> = catalog.requests().collect();
                    if requests.is_empty() {
                        continue;
                    }
                    let entry = *requests[u.choose_index(requests.len()).unwrap_or(0)];
                    let destination = u64::from(u.arbitrary::<u8>().unwrap_or(0));
                    let answer = match u.int_in_range(0..=7u8).unwrap_or(0) {
                        0 => Answer::Mutated,
                        1 => Answer::WrongMessage,
                        _ => Answer::Valid,
                    };
                    // The peer answers before the call is made: its reply
                    // waits in the ring, behind what the peer sent before,
                    // for the call to read it (a peer that answers at
                    // once, without a thread to run it).
                    let request = Envelope {
                        destination,
                        request_id: victim.calls.peek_next_id(),
                        receiver: entry.receiver,
                        schema: entry.schema,
                        message: entry.message,
                        flags: Flags(Flags::SYNC),
                        fd_count: 0,
                    };
                    peer_now.answer(&catalog, &entry, request, answer, &mut u);
                    if let Some(calls) = entry.calls {
                        let _ = (calls.sync)(&mut victim, destination, &mut u, CALL_TIMEOUT);
                    }
                    // No call was made (its message could not be built from
                    // what was left of the input): the answer is a reply to
                    // a request never made, which the victim refuses.
                    if victim.calls.peek_next_id() == request.request_id {
                        peer_now.corrupted = true;
                    }
                    check_budgets(&victim, baseline, &mut report.most_fds_held)?;
                }
                Step::HangUp => {
                    report.corrupted |= peer_now.corrupted;
                    report.answered = peer_now.answered;
                    peer = None;
                    break;
                }
            }
            if let Some(peer) = peer.as_mut().filter(|peer| peer.reads) {
                peer.serve(&catalog);
            }
        }
        // What is left is dispatched, the peer gone or serving.
        for _ in 0..64 {
            let dispatched = victim.dispatch(Some(Duration::ZERO));
            check_budgets(&victim, baseline, &mut report.most_fds_held)?;
            if !matches!(dispatched, Ok(1..)) {
                break;
            }
        }
        if let Some(peer) = &peer {
            report.answered = peer.answered;
            report.corrupted |= peer.corrupted;
        }
        report.handled = watch.handled();
        report.violation = victim.violation().map(|v| v.to_string());
        let refused = match victim.violation() {
            None | Some(Violation::RepliesNotTaken) => None,
            Some(violation) => Some(violation.clone()),
        };
        drop(victim);
        drop(peer);
        if let Some(finding) = watch.finding() {
            return Err(finding);
        }
        match refused {
            Some(violation) if !report.corrupted => Err(Finding::new(
                Check::ValidTrafficRefused,
                format!("nothing was mutated, and the victim ended with {violation}"),
            )),
            _ => Ok(report),
        }
    }
}
