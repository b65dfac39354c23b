//! A connection: one ring per direction in one sealed region, plus a control
//! socket for liveness, descriptors and out-of-line payloads.
//!
//! This file answers "what is a connection's state and who changes it":
//! the struct, how it is built, and the transitions of its lifecycle. The
//! public operations are grouped by use in `raw.rs` (frames), `call.rs`
//! (typed sends, replies, synchronous calls), `dispatch.rs` (handlers) and
//! `readiness.rs` (event loops); each part of the state has its own owner
//! type: [`Outbox`], [`Inbox`], [`Lifecycle`], [`ReceiverRegistry`],
//! [`PendingCalls`], [`SetAside`].

use crate::config::{ConnectionConfig, region_len};
use crate::endpoint::{ENDPOINT_FDS, Endpoint, EndpointError, EndpointInfo};
use crate::error::{
    CallError, Cause, DispatchError, OpenError, RecvError, RingRecvOutcome, SendError, Violation,
    from_ring_recv,
};
use crate::inbox::{Inbox, InboxError, Ready};
use crate::incoming::Incoming;
use crate::lifecycle::{Lifecycle, Transition};
use crate::outbox::Outbox;
use crate::pending::PendingCalls;
use crate::registry::ReceiverRegistry;
use crate::reply_handle::LateReplies;
use crate::routed::RoutedCalls;
use crate::set_aside::SetAside;
use crate::shared_outbox::OutboxCell;
use crate::stats::TransportStats;
use ferry_handoff::Channel;
use ferry_handoff::hangup::{HangupWatch, watch_hangup};
use ferry_ring::{
    Consumer, Notifier, Producer, RING_ALIGN, Region, RingSpan, check_layout, init, ring_size,
};
use std::marker::PhantomData;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

/// A registered handler: type-erased, validates and dispatches one message.
pub(crate) type Handler = dyn Fn(&mut Context<'_>, &Incoming) -> Result<(), DispatchError> + Send;

/// A handler for the reply to a request sent with `send_with_reply`.
pub(crate) type ReplyHandler =
    Box<dyn FnOnce(&mut Context<'_>, Result<&Incoming, CallError>) + Send>;

/// The connection as a handler sees it: everything a handler does with the
/// connection its message came from (send, call, reply, take descriptors,
/// register receivers; read-only access to the rest through `Deref`), but
/// not the connection itself. A handler cannot move, replace or drop the
/// connection it runs on (`mem::replace` needs a `&mut Connection`), so the
/// message it reads in place, the registry it runs from and the pins it
/// holds stay with the connection they came from. Its operations are in
/// `context.rs`.
///
/// Safe code cannot reach the `&mut Connection` inside:
///
/// ```compile_fail
/// fn replace(context: &mut ferry_transport::Context<'_>, other: ferry_transport::Connection) {
///     let _old = std::mem::replace(&mut **context, other);
/// }
/// ```
///
/// Nor can a handler hand its context to another thread: that thread could
/// dispatch a message to the very handler still running on this one, and
/// handlers are `Send` but not `Sync` (their state may be a `Cell`), so the
/// two calls would race on it.
///
/// ```compile_fail,E0277
/// fn dispatch_elsewhere(context: &mut ferry_transport::Context<'_>) {
///     std::thread::scope(|scope| {
///         scope.spawn(|| context.try_dispatch());
///     });
/// }
/// ```
pub struct Context<'a> {
    pub(crate) connection: &'a mut Connection,
    /// Keeps `Context` (and `&mut Context`) on the thread that runs the
    /// handler: `&'a mut Connection` alone would be `Send`, because
    /// `Connection` is.
    _this_thread: PhantomData<*const ()>,
}

impl std::ops::Deref for Context<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.connection
    }
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Context").field(&self.connection).finish()
    }
}

/// A receiver implementation ready to be registered on a connection; made
/// by the `handler` function [`protocol!`](crate::protocol) generates.
pub struct BoundReceiver {
    pub(crate) name: &'static str,
    pub(crate) id: u32,
    pub(crate) schema: u32,
    pub(crate) allowed_while_waiting: fn(u32) -> Option<bool>,
    pub(crate) handler: Box<Handler>,
}

impl BoundReceiver {
    /// Wraps a dispatch function for receiver `R`. Generated code calls this.
    #[doc(hidden)]
    pub fn new<R: crate::message::Receiver>(
        handler: impl Fn(&mut Context<'_>, &Incoming) -> Result<(), DispatchError> + Send + 'static,
    ) -> BoundReceiver {
        BoundReceiver {
            name: R::NAME,
            id: R::ID,
            schema: R::SCHEMA,
            allowed_while_waiting: R::allowed_while_waiting,
            handler: Box::new(handler),
        }
    }
}

impl std::fmt::Debug for BoundReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BoundReceiver({})", self.name)
    }
}

/// One end of a bidirectional, shared-memory connection to another process.
///
/// - The **raw frame API** ([`send_frame`](Self::send_frame),
///   [`recv_frame`](Self::recv_frame), ...) carries bytes, optionally with
///   descriptors, for IPC layers that bring their own encoding.
/// - The **typed API** ([`send`](Self::send), [`send_sync`](Self::send_sync),
///   [`dispatch`](Self::dispatch), ...) carries rkyv archives of messages
///   declared with [`protocol!`](crate::protocol), serialized straight into
///   the ring and read in place.
///
/// A connection is driven by one thread at a time (`&mut self`); it is `Send`.
///
/// ```
/// use ferry_transport::{Connection, ConnectionConfig};
/// use std::time::Duration;
///
/// let (mut a, mut b) = Connection::pair(ConnectionConfig::default())?;
/// a.send_frame(b"ping", Some(Duration::from_secs(1)))?;
/// let frame = b.recv_frame(Some(Duration::from_secs(1)))?;
/// assert_eq!(frame.bytes(), b"ping");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Connection {
    /// The send path: owned, or shared with the sending halves once split.
    pub(crate) outbox: OutboxCell,
    pub(crate) inbox: Inbox,
    pub(crate) control: Channel,
    pub(crate) config: ConnectionConfig,
    pub(crate) lifecycle: Lifecycle,
    pub(crate) receivers: ReceiverRegistry<Handler>,
    pub(crate) calls: PendingCalls<ReplyHandler>,
    /// Answers to the peer's requests given on other threads.
    pub(crate) late: LateReplies,
    pub(crate) set_aside: SetAside,
    /// Descriptors of the message a handler is running for.
    pub(crate) message_fds: Vec<OwnedFd>,
    /// Our end of the notification socketpair: the peer signals it when we
    /// wait in an event loop (our readiness descriptor); we signal the peer
    /// through it.
    pub(crate) notify: Notifier,
    /// Who learns of the peer's death for this process (see
    /// `watched_here`).
    pub(crate) hangup: HangupWatch,
    /// Synchronous calls of the sending halves, whose replies this end's
    /// dispatch routes to them.
    pub(crate) routed: Arc<RoutedCalls>,
    /// Held for as long as this end lives: the requester's slot in the
    /// limits of the `Acceptor` that created it.
    pub(crate) admission: Option<ferry_handoff::Admission>,
}

/// Watches the control socket: when the peer hangs up (closes or dies),
/// every wait on the rings ends and the readiness descriptor turns readable.
fn watch_peer(
    control: &Channel,
    tx: &Producer,
    rx: &Consumer,
    notify: &Notifier,
    routed: &Arc<RoutedCalls>,
) -> std::io::Result<HangupWatch> {
    let rx_gone = rx.disconnect_handle();
    let tx_gone = tx.disconnect_handle();
    let notify = notify.try_clone()?;
    let routed = Arc::clone(routed);
    watch_hangup(control.as_fd(), move || {
        rx_gone.disconnect();
        tx_gone.disconnect();
        // Sending halves waiting in a synchronous call learn it too.
        routed.end(CallError::Disconnected);
        // No I/O on the socket the peer shares: a peer that filled it or
        // cleared O_NONBLOCK cannot block this thread (which watches every
        // connection of the process).
        notify.set_readable_forever();
    })
}

/// Ring offsets of a region holding two rings of `capacity`, and its size.
fn layout(capacity: usize) -> (usize, usize, usize) {
    let second = ring_size(capacity).next_multiple_of(RING_ALIGN);
    (0, second, region_len(capacity))
}

impl Connection {
    /// Both ends of a connection, in this process: for tests, for threads,
    /// and for handing one end to a child across `fork`. After the fork each
    /// process keeps its end and lets go of the other with
    /// [`leave`](Self::leave) (dropping it would close the connection for
    /// both); each then notices the other's death at once.
    pub fn pair(config: ConnectionConfig) -> Result<(Connection, Connection), OpenError> {
        #[cfg(miri)]
        return Connection::pair_in_memory(config);
        #[cfg(not(miri))]
        {
            let (mine, endpoint) = Connection::create(config.clone())?;
            let theirs = Connection::open(endpoint, config)?;
            Ok((mine, theirs))
        }
    }

    /// [`pair`](Self::pair) under miri, which has no memfd (nor `mmap` of
    /// a file, nor `SCM_RIGHTS`): both ends share one heap region and are
    /// assembled here, as `create` and `open` would, with the same ring
    /// layout, and with the real rest (control socketpair, notification
    /// descriptors, hang-up watch). What `create` and `open` add on top
    /// (a sealed memfd, an endpoint, checking the descriptors a peer handed
    /// over) needs the kernel; the multi-process suites exercise it.
    #[cfg(miri)]
    fn pair_in_memory(config: ConnectionConfig) -> Result<(Connection, Connection), OpenError> {
        let (first, second, region_len) = layout(config.ring_capacity);
        let region = Arc::new(Region::heap(region_len));
        // The first end sends on the first ring, as a creator does.
        init(&region, first, config.ring_capacity)?;
        init(&region, second, config.ring_capacity)?;
        let (control, peer_control) =
            Channel::pair().map_err(|e| OpenError::Control(Cause::new(e)))?;
        let (notify, peer_notify) = Notifier::pair()?;
        let first_end = Connection::assemble(
            Arc::clone(&region),
            second,
            first,
            control,
            notify,
            config.clone(),
        )?;
        let second_end =
            Connection::assemble(region, first, second, peer_control, peer_notify, config)?;
        Ok((first_end, second_end))
    }

    /// Creates a connection: keeps one end and returns the [`Endpoint`] to
    /// send to the peer, which opens it with [`Connection::open`].
    pub fn create(config: ConnectionConfig) -> Result<(Connection, Endpoint), OpenError> {
        let (first, second, region_len) = layout(config.ring_capacity);
        let region = Arc::new(Region::create(region_len)?);
        // The creator sends on the first ring and receives on the second.
        init(&region, first, config.ring_capacity)?;
        init(&region, second, config.ring_capacity)?;
        let (ours, theirs) = Channel::pair().map_err(|e| OpenError::Control(Cause::new(e)))?;
        let (our_notify, their_notify) = Notifier::pair()?;
        let region_fd = region
            .fd()
            .ok_or_else(|| OpenError::Io(std::io::Error::other("a created region is shared")))?
            .try_clone_to_owned()?;
        let endpoint = Endpoint {
            fds: vec![region_fd, OwnedFd::from(theirs), their_notify.into_fd()],
            metadata: EndpointInfo {
                region_len: region_len as u64,
                rx_offset: first as u64,
                tx_offset: second as u64,
                schema: config.schema,
            }
            .encode(),
        };
        let connection = Connection::assemble(region, second, first, ours, our_notify, config)?;
        Ok((connection, endpoint))
    }

    /// Opens the end a peer created and sent us. Checks the metadata, the
    /// descriptors (a sealed memfd of the announced size, a SEQPACKET
    /// socket), the rings, and that both sides share the schema hash.
    ///
    /// The creator chose the region and the rings; this end bounds what it
    /// accepts: a region larger than
    /// [`max_region_size`](ConnectionConfig::max_region_size) is refused
    /// before it is mapped ([`OpenError::Region`] with
    /// [`RegionError::TooLarge`](ferry_ring::RegionError::TooLarge)), and
    /// rings that overlap or are larger than
    /// [`max_ring_capacity`](ConnectionConfig::max_ring_capacity) are
    /// refused before they are used ([`OpenError::Ring`] with
    /// [`AttachError::Overlap`](ferry_ring::AttachError::Overlap) or
    /// [`AttachError::CapacityTooLarge`](ferry_ring::AttachError::CapacityTooLarge)).
    pub fn open(endpoint: Endpoint, config: ConnectionConfig) -> Result<Connection, OpenError> {
        let info = EndpointInfo::decode(&endpoint.metadata, endpoint.fds.len())?;
        if info.schema != config.schema {
            return Err(OpenError::SchemaMismatch {
                ours: config.schema,
                theirs: info.schema,
            });
        }
        let [region_fd, control, notify]: [OwnedFd; ENDPOINT_FDS] = endpoint
            .fds
            .try_into()
            .map_err(|fds: Vec<OwnedFd>| EndpointError::FdCount { found: fds.len() })?;
        let region = Region::open_with_limit(region_fd, config.accepted_region_size())?;
        if region.len() as u64 != info.region_len {
            return Err(OpenError::Region(ferry_ring::RegionError::BadSize(
                region.len() as u64,
            )));
        }
        let control =
            Channel::from_checked(control).map_err(|e| OpenError::Control(Cause::new(e)))?;
        let notify = Notifier::from_received(notify)
            .map_err(|e| EndpointError::Notification(e.to_string()))?;
        Connection::assemble(
            Arc::new(region),
            info.rx_offset as usize,
            info.tx_offset as usize,
            control,
            notify,
            config,
        )
    }

    fn assemble(
        region: Arc<Region>,
        rx_offset: usize,
        tx_offset: usize,
        mut control: Channel,
        notify: Notifier,
        config: ConnectionConfig,
    ) -> Result<Connection, OpenError> {
        let mut tx =
            Producer::attach(Arc::clone(&region), tx_offset)?.with_wait_strategy(config.wait);
        tx.set_notifier(Some(notify.try_clone()?));
        let mut rx = Consumer::attach(region, rx_offset)?.with_wait_strategy(config.wait);
        // Releasing signals the peer when it waits for room in an event loop
        // (write readiness); nothing while it does not.
        rx.set_notifier(Some(notify.try_clone()?));
        // Each attach checked its own ring; together they must not share a
        // byte, and a creator must not impose rings larger than we accept.
        // The capacities are the endpoints' private copies: rewriting the
        // headers now changes nothing checked here.
        check_layout(
            &[
                RingSpan {
                    offset: tx_offset,
                    capacity: tx.capacity(),
                },
                RingSpan {
                    offset: rx_offset,
                    capacity: rx.capacity(),
                },
            ],
            config.accepted_ring_capacity(),
        )?;
        // One more than the user limit: an out-of-line blob travels as a
        // descriptor too.
        control.set_max_fds(config.max_fds_per_message + 1);
        let routed = Arc::new(RoutedCalls::default());
        let hangup = watch_peer(&control, &tx, &rx, &notify, &routed)?;
        let late = LateReplies::new(rx.wake_handle(), config.max_reply_handles);
        Ok(Connection {
            outbox: OutboxCell::Own(Outbox::new(tx, config.max_message_size)),
            inbox: Inbox::new(rx, &config),
            control,
            lifecycle: Lifecycle::new(config.peer_name.clone()),
            config,
            receivers: ReceiverRegistry::default(),
            calls: PendingCalls::default(),
            late,
            set_aside: SetAside::default(),
            message_fds: Vec::new(),
            notify,
            hangup,
            routed,
            admission: None,
        })
    }

    /// Lets go of this end in this process only, without closing the
    /// connection: for the end a `fork` duplicated into a process that does
    /// not use it (see [`pair`](Self::pair)). Only this process's
    /// descriptors and mapping are released; nothing is written to the
    /// shared rings, so the process that uses this end goes on, and its peer
    /// notices nothing until that process closes it or dies. Reply handlers
    /// still pending here are dropped without running: they belong to the
    /// process that uses the end. A [split](Self::split) connection's
    /// producer belongs to its sending halves too: split only in the
    /// process that keeps the end.
    pub fn leave(self) {
        let Connection { outbox, inbox, .. } = self;
        match outbox {
            OutboxCell::Own(outbox) => outbox.tx.detach(),
            // Split: the sending halves hold the producer too; this process
            // lets go of it when they are gone, as when it is dropped.
            OutboxCell::Shared(_) => {}
        }
        inbox.rx.detach();
    }

    /// The configuration this end was built with.
    pub fn config(&self) -> &ConnectionConfig {
        &self.config
    }

    /// Whether the connection is still usable (the peer has not closed,
    /// died, or broken the protocol).
    pub fn is_open(&self) -> bool {
        self.lifecycle.is_open()
    }

    /// The protocol violation that ended the connection, if that is how it
    /// ended.
    pub fn violation(&self) -> Option<&Violation> {
        self.lifecycle.violation()
    }

    /// After a `Disconnected`: whether the peer closed its end in an orderly
    /// way (dropped its connection) rather than vanishing (killed, crashed).
    /// Read from memory the peer shares: a hint for reporting, not a fact
    /// to rely on.
    pub fn peer_closed_cleanly(&self) -> bool {
        self.inbox.rx.peer_closed()
    }

    /// The largest frame body that travels inside the ring; larger ones go
    /// out of line automatically.
    pub fn max_inline_payload(&self) -> usize {
        match &self.outbox {
            OutboxCell::Own(outbox) => outbox.max_inline(),
            OutboxCell::Shared(shared) => shared.max_inline(),
        }
    }

    /// What this end has done so far, with its rings' counters.
    pub fn stats(&self) -> TransportStats {
        let outbox = self.outbox.read();
        TransportStats {
            // The rings count every frame (out-of-line ones included).
            frames_sent: outbox.tx.stats().frames,
            frames_received: self.inbox.rx.stats().frames,
            out_of_line_sent: outbox.published.out_of_line,
            out_of_line_received: self.inbox.out_of_line,
            fds_sent: outbox.published.fds,
            fds_received: self.inbox.fds,
            dropped_for_gone_destinations: self.receivers.dropped_gone,
            late_replies_dropped: self.calls.late_replies_dropped,
            requests_cancelled: self.calls.cancelled,
            cancels_received: self.late.cancels_received,
            cancels_ignored: self.late.cancels_ignored,
            refused_busy: self.late.refused_busy,
            tx_ring: outbox.tx.stats(),
            rx_ring: self.inbox.rx.stats(),
        }
    }

    // ---- the lifecycle's transitions: the only places that end it ----

    /// The peer closed its end or died: every reply handler learns it.
    pub(crate) fn peer_gone(&mut self) {
        if self.lifecycle.peer_gone() == Transition::Ended {
            if let Some(shared) = self.outbox.shared() {
                shared.end(SendError::Disconnected);
            }
            self.routed.end(CallError::Disconnected);
            self.fail_pending_calls(CallError::Disconnected);
        }
    }

    /// Records that the peer broke the protocol: closes the connection (the
    /// peer sees the hang-up), drops everything it sent that was not
    /// dispatched yet, and returns the error to report.
    pub(crate) fn fail(&mut self, violation: Violation) -> RecvError {
        if self.lifecycle.fail(violation.clone()) == Transition::Ended {
            let _ = self.control.shutdown();
            self.inbox.rx.disconnect_handle().disconnect();
            // Without the senders' lock: one of them may hold it while it
            // waits for room, and this ends that wait.
            match &self.outbox {
                OutboxCell::Own(outbox) => outbox.tx.disconnect_handle().disconnect(),
                OutboxCell::Shared(shared) => shared.disconnect(),
            }
            self.set_aside.clear();
            self.calls.discard_arrived();
            let error = self.lifecycle.violation_error(violation.clone());
            if let Some(shared) = self.outbox.shared() {
                shared.end(SendError::Failed(violation.clone()));
            }
            self.routed.end(error.clone().into());
            self.fail_pending_calls(error.into());
        }
        self.lifecycle.violation_error(violation)
    }

    /// Runs every reply handler with `error`: no reply will come.
    fn fail_pending_calls(&mut self, error: CallError) {
        for handler in self.calls.take_handlers() {
            handler(&mut self.context(), Err(error.clone()));
        }
    }

    /// The connection as a handler sees it.
    pub(crate) fn context(&mut self) -> Context<'_> {
        Context {
            connection: self,
            _this_thread: PhantomData,
        }
    }

    /// What a send's outcome means for the connection: a peer found gone
    /// or corrupting the ring ends it.
    pub(crate) fn sent(&mut self, result: Result<(), SendError>) -> Result<(), SendError> {
        result.map_err(|error| self.send_failed(error))
    }

    /// What a failed send means for the connection (see [`sent`](Self::sent)).
    pub(crate) fn send_failed(&mut self, error: SendError) -> SendError {
        match &error {
            SendError::Disconnected => self.peer_gone(),
            SendError::Failed(violation) => {
                self.fail(violation.clone());
            }
            _ => {}
        }
        error
    }

    /// Whether a send may start: the connection is open and the descriptors
    /// are within the limit.
    pub(crate) fn check_sendable(&mut self, fds: usize) -> Result<(), SendError> {
        if let Some(error) = self.lifecycle.send_error() {
            return Err(error);
        }
        self.watched_here();
        let max = self.config.max_fds_per_message;
        if fds > max {
            return Err(SendError::TooManyFds { count: fds, max });
        }
        Ok(())
    }

    /// Makes sure this process learns of the peer's death: after a `fork`,
    /// the watch this end inherited works only in the process that made it,
    /// so the process that goes on using the end watches it again. Called
    /// by every operation that may wait (a relaxed load when nothing
    /// forked). If the new watch cannot be made (descriptor table full), the
    /// next operation tries again; waits stay bounded meanwhile.
    #[inline]
    pub(crate) fn watched_here(&mut self) {
        if self.hangup.is_inherited() {
            self.watch_here_anew();
        }
    }

    /// [`watched_here`](Self::watched_here) in a forked process.
    #[cold]
    fn watch_here_anew(&mut self) {
        let watched = watch_peer(
            &self.control,
            &self.outbox.lock().tx,
            &self.inbox.rx,
            &self.notify,
            &self.routed,
        );
        if let Ok(watch) = watched {
            self.hangup = watch;
        }
    }

    /// Takes the next frame off the ring. `wait`: `None` to try once,
    /// `Some(timeout)` to wait.
    #[inline]
    pub(crate) fn next_incoming(
        &mut self,
        wait: Option<Option<Duration>>,
    ) -> Result<Incoming, RecvError> {
        if let Some(error) = self.lifecycle.recv_error() {
            return Err(error);
        }
        self.watched_here();
        match self.inbox.next(wait, &self.control) {
            Ok(incoming) => Ok(incoming),
            Err(InboxError::Violation(violation)) => Err(self.fail(violation)),
            Err(InboxError::Ring(error)) => match from_ring_recv(error) {
                RingRecvOutcome::Wait(error) => Err(error),
                RingRecvOutcome::PeerGone => {
                    self.peer_gone();
                    Err(RecvError::Disconnected)
                }
                RingRecvOutcome::Violation(violation) => Err(self.fail(violation)),
            },
        }
    }

    /// The common cases of a busy connection, in few instructions: a frame
    /// already in the ring that [`Inbox::next_plain`] takes, or an empty
    /// ring, on a connection open in this process with no late replies to
    /// send first. [`Ready::Other`] leaves everything else (descriptors, a
    /// blob, a violation, an untrusted peer's frame, a closed or forked
    /// connection) to `next_incoming`, which finds any frame left here
    /// where it was.
    #[inline]
    pub(crate) fn ready_incoming(&mut self) -> Ready {
        if !self.lifecycle.is_open() || self.late.has_queued() || self.hangup.is_inherited() {
            return Ready::Other;
        }
        self.inbox.next_plain()
    }

    /// Gives back what a received frame holds (its room in the ring, or its
    /// private buffer).
    #[inline]
    pub(crate) fn finish(&mut self, incoming: &mut Incoming) {
        self.inbox.finish(incoming);
    }
}

// SAFETY: every field is Send except the handlers' `Rc`s in the registry;
// the handlers themselves are `Send` but not `Sync` (their state may be a
// `Cell`). Both are sound to move with the connection as long as every
// count change and every call of a handler happens on one thread at a
// time, ordered by happens-before, as if they were owned values. They are
// all reached through `&mut Connection` only:
// - the registry's `Rc`s are touched (registered, replaced, dropped) only
//   by `&mut self` methods, and no `&self` method clones one or hands one
//   out;
// - the only clone is made by `route`, lives on its stack while it holds
//   `&mut Connection`, and is dropped before `route` returns (on unwinding
//   too);
// - the handler `route` calls gets a `Context`, which hands out neither the
//   `&mut Connection` (so no `mem::replace`/`swap`, drop or move of the
//   connection while a clone lives) nor itself to another thread (it is
//   not `Send`; the `&Connection` its `Deref` gives is not `Send` either,
//   `Connection` not being `Sync`). A nested dispatch, and so a re-entrant
//   call of the same handler, therefore runs on the handler's own thread.
// So the connection changes threads only when no clone exists, through a
// move that itself orders everything before it. (Handing handlers the
// `&mut Connection` made this false: a handler could `mem::replace` it and
// send it away while `route` held a clone. A `Send` context made it false
// again: a handler could let a scoped thread dispatch to itself.)
unsafe impl Send for Connection {}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.config.peer_name)
            .field("state", self.lifecycle.state())
            .field("trust", &self.config.trust)
            .finish()
    }
}

/// A connection can be moved to another thread (checked at compile time).
const _: fn() = || {
    fn assert_send<T: Send>() {}
    assert_send::<Connection>();
    assert_send::<BoundReceiver>();
    assert_send::<Incoming>();
};
