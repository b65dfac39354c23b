//! The broker: spawns children, introduces them to each other under a
//! policy, and watches them.
//!
//! # Introductions
//!
//! A child asks for a service ([`ControlMessage::Connect`]). The broker asks
//! its [`Policy`]; on a denial the requester gets
//! [`Denied`](ControlMessage::Denied). Otherwise the broker picks the oldest
//! live child registered under that service name, sends it
//! [`CreateConnection`](ControlMessage::CreateConnection), and waits (at most
//! [`BrokerConfig::introduction_timeout`]) for
//! [`ConnectionCreated`](ControlMessage::ConnectionCreated) with descriptors
//! or [`CreateFailed`](ControlMessage::CreateFailed). It forwards the
//! descriptors to the requester in [`Connected`](ControlMessage::Connected)
//! and closes its own copies at once, so the two children hold the only
//! copies. Every other outcome — unknown service, a target that fails, dies,
//! hangs up or does not answer in time — becomes a
//! [`ConnectFailed`](ControlMessage::ConnectFailed) reply: a requester never
//! waits on the broker forever.
//!
//! # Liveness
//!
//! The broker polls every child's channel (messages and hang-up) and its
//! pidfd (exit). When a child's channel hangs up, the child has left: its
//! pending introductions fail, and every child it was introduced to receives
//! [`PeerGone`](ControlMessage::PeerGone). When its process exits the broker
//! reaps it (no zombies) and reports [`BrokerEvent::ChildExited`]. Without
//! pidfds (Linux < 5.3) children are reaped by polling `waitpid` every
//! [`REAP_INTERVAL`].
//!
//! # Limits: one child cannot deny a service to the others
//!
//! - A requester has at most [`BrokerConfig::max_pending_per_child`]
//!   introductions in flight; more are answered
//!   [`Busy`](ConnectFailure::Busy).
//! - A target is asked for at most [`BrokerConfig::max_pending_per_target`]
//!   connections at a time, and for at most
//!   [`BrokerConfig::max_pending_per_requester_and_target`] of them on one
//!   requester's behalf; beyond either the requester is answered
//!   [`TargetBusy`](ConnectFailure::TargetBusy) (and
//!   [`BrokerEvent::IntroductionFailed`] reports it). So a child that bursts
//!   requests with large metadata cannot fill a target's control socket, nor
//!   take all of a target's slots.
//! - Messages the broker sends to a child on someone else's behalf (a
//!   create-connection request, a peer-gone notice) never count against the
//!   child: if its socket is full, the requester is told
//!   [`TargetBusy`](ConnectFailure::TargetBusy) (a peer-gone notice is
//!   dropped; the child still sees that connection hang up).
//! - How many connections a service keeps alive per requester is the
//!   service's to bound: the create-connection request names the requester
//!   (see [`RequesterLimits`](crate::RequesterLimits)).
//!
//! # The broker's own services
//!
//! The broker process can provide services itself ([`Broker::serve`]): a
//! child asks for one like for any other, the policy is consulted the same
//! way, and the broker's own [`ConnectionHandler`] creates the connection
//! and answers at once. So the process that owns the broker is a peer like
//! the others, reached through the ordinary introduction path.
//!
//! # Relaunch
//!
//! A child spawned with [`Broker::spawn_restarting`] is spawned again when
//! it crashes, at most a given number of times (see [`restart`](crate::restart)).
//!
//! # Reports
//!
//! A child that received garbage from a peer may report it
//! ([`ControlMessage::Report`]); the [`ReportPolicy`] decides (by default
//! nothing happens). A report is untrusted: the accused must be alive and a
//! child the accuser was introduced to (either way), or one whose request
//! to the accuser is in flight (a service may judge the request itself);
//! a child that accuses
//! one it never met, or one that never existed, is cut off itself (a false
//! accuser is suspect). A report about a child that has already left is
//! passed on as [`ReportOutcome::AccusedGone`] without asking the policy.
//! A child's reports beyond [`BrokerConfig::max_reports_per_child`] are
//! ignored ([`ReportOutcome::RateLimited`]) without asking the policy. The
//! policy sees both identities (the broker's names, not the accuser's
//! claims), so it can decide which services may accuse which.
//!
//! # Misbehaving children
//!
//! A child that sends a malformed message, an oversized packet, too many
//! descriptors, a message only the broker sends, an answer to an
//! introduction it was not asked for, reports a child it was never
//! introduced to (or one that never existed), or that stops reading its
//! channel until the socket buffer fills with answers to its own requests,
//! is cut off: the broker reports [`BrokerEvent::Misbehaved`], kills it with
//! `SIGKILL`, and closes its channel. The broker never blocks on a child: it
//! only sends and receives with `MSG_DONTWAIT`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustix::event::{EventfdFlags, PollFd, PollFlags};
use rustix::io::Errno;
use rustix::process::Signal;

use crate::bootstrap::{self, SpawnError};
use crate::channel::{Channel, RecvError, SendError};
use crate::client::{ConnectionHandler, ConnectionRequest};
use crate::message::{
    self, ConnectFailure, ControlMessage, InstanceId, MAX_ENCODED_LEN, MAX_INTRODUCTION_FDS, PeerId,
};
use crate::pidfd;
use crate::report::{IgnoreReports, ReportOutcome, ReportPolicy, Verdict};
use crate::restart::Restart;
use crate::wait::{self, Deadline};

/// The instance id of the broker process itself, as the peer of a child
/// introduced to one of its own services (see [`Broker::serve`]). Children
/// are numbered from 1.
pub const BROKER_INSTANCE: InstanceId = InstanceId(0);

/// How often children are reaped by polling when the kernel has no pidfds.
pub const REAP_INTERVAL: Duration = Duration::from_millis(50);
/// The longest a [`Broker::run`] poll sleeps (it wakes earlier for any
/// event, deadline or [`BrokerHandle`] request).
const RUN_TICK: Duration = Duration::from_secs(1);
/// Messages read from one child per turn, so one chatty child cannot starve
/// the others.
const MESSAGES_PER_TURN: usize = 64;

/// A policy's verdict on an introduction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Introduce them.
    Allow,
    /// Refuse: the requester receives [`Denied`](ControlMessage::Denied).
    Deny,
}

/// Decides who may talk to whom: consulted for every introduction with the
/// requester's identity and the service it asks for.
///
/// Any `FnMut(&PeerId, &str) -> Decision + Send` is a policy.
pub trait Policy: Send {
    /// May `requester` be introduced to a child of `service`?
    fn decide(&mut self, requester: &PeerId, service: &str) -> Decision;
}

impl<F> Policy for F
where
    F: FnMut(&PeerId, &str) -> Decision + Send,
{
    fn decide(&mut self, requester: &PeerId, service: &str) -> Decision {
        self(requester, service)
    }
}

/// A policy that allows every introduction.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Policy for AllowAll {
    fn decide(&mut self, _: &PeerId, _: &str) -> Decision {
        Decision::Allow
    }
}

/// Tunables of a [`Broker`].
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// How long a target has to answer a create-connection request before
    /// the requester is told [`ConnectFailure::TimedOut`] (at most a year).
    pub introduction_timeout: Duration,
    /// How many introductions one child may have in flight as a requester;
    /// more are answered with [`ConnectFailure::Busy`]. Default 64.
    pub max_pending_per_child: usize,
    /// How many create-connection requests one target may have in flight
    /// (from all requesters); more are answered with
    /// [`ConnectFailure::TargetBusy`]. It also bounds what the broker queues
    /// in the target's control socket: 16 requests with the largest metadata
    /// take about 70 KiB, a third of Linux's default socket buffer. Default
    /// 16.
    pub max_pending_per_target: usize,
    /// How many of a target's in-flight requests may be on behalf of one
    /// requester; more are answered with [`ConnectFailure::TargetBusy`], so
    /// one requester cannot take all of a target's slots. Default 4.
    pub max_pending_per_requester_and_target: usize,
    /// How many reports ([`ControlMessage::Report`]) one child may make in
    /// its lifetime; later ones are ignored
    /// ([`ReportOutcome::RateLimited`]) without asking the
    /// [`ReportPolicy`], so a child cannot make the broker spend its turns
    /// judging. Default 16.
    pub max_reports_per_child: usize,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            introduction_timeout: Duration::from_secs(5),
            max_pending_per_child: 64,
            max_pending_per_target: 16,
            max_pending_per_requester_and_target: 4,
            max_reports_per_child: 16,
        }
    }
}

/// What became of a message the broker sent a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    Sent,
    /// The child's socket is full.
    Full,
    /// The child is gone (or leaving).
    Gone,
}

/// Something the broker's owner may want to know.
#[derive(Debug)]
pub enum BrokerEvent {
    /// A child exited and was reaped. `status` is `None` if someone else
    /// reaped it first.
    ChildExited {
        /// Who.
        child: PeerId,
        /// Its exit status.
        status: Option<ExitStatus>,
    },
    /// A child broke the protocol and was cut off (killed, channel closed).
    Misbehaved {
        /// Who.
        child: PeerId,
        /// What it did.
        reason: String,
    },
    /// An allowed introduction was forwarded to its target, which has not
    /// answered yet.
    IntroductionRequested {
        /// Who asked.
        requester: PeerId,
        /// Who was asked to create the connection.
        target: PeerId,
    },
    /// The requester received the target's descriptors.
    IntroductionMade {
        /// Who asked.
        requester: PeerId,
        /// Who created the connection.
        target: PeerId,
    },
    /// The policy refused an introduction.
    IntroductionDenied {
        /// Who asked.
        requester: PeerId,
        /// For what.
        service: String,
    },
    /// A child reported a peer it was introduced to (a report that names a
    /// stranger is not passed on: its sender is cut off, see
    /// [`Misbehaved`](Self::Misbehaved)).
    Reported {
        /// Who reported.
        accuser: PeerId,
        /// Who was accused.
        accused: PeerId,
        /// The accuser's reason (untrusted text, at most
        /// [`MAX_TEXT_LEN`](message::MAX_TEXT_LEN) bytes).
        reason: String,
        /// What the broker did.
        outcome: ReportOutcome,
    },
    /// A child spawned with [`Broker::spawn_restarting`] exited
    /// unsuccessfully and was spawned again.
    Restarted {
        /// The child that exited (already reported by
        /// [`ChildExited`](Self::ChildExited)).
        old: PeerId,
        /// The new child, under the same service name.
        new: PeerId,
        /// Its process id.
        pid: u32,
        /// How many more relaunches it has.
        restarts_left: u32,
    },
    /// A child spawned with [`Broker::spawn_restarting`] exited
    /// unsuccessfully and was not spawned again.
    NotRestarted {
        /// The child that exited.
        child: PeerId,
        /// Why: no relaunches left, or the spawn failed.
        reason: String,
    },
    /// An introduction failed; the requester was told why.
    IntroductionFailed {
        /// Who asked.
        requester: PeerId,
        /// For what.
        service: String,
        /// Why it failed.
        failure: ConnectFailure,
    },
}

/// Why [`Broker::kill`] failed.
#[derive(Debug, thiserror::Error)]
pub enum KillError {
    /// No such child (never spawned, or already reaped).
    #[error("no child {0}")]
    UnknownChild(InstanceId),
    /// The signal could not be sent.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Why a broker turn failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// `poll` or the wake-up descriptor failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A cloneable, `Send + Sync` handle to stop a running [`Broker`] or kill one
/// of its children from another thread.
#[derive(Debug, Clone)]
pub struct BrokerHandle(Arc<HandleShared>);

#[derive(Debug)]
struct HandleShared {
    /// An eventfd in the broker's poll set.
    wake: OwnedFd,
    stop: AtomicBool,
    kills: Mutex<Vec<InstanceId>>,
}

impl HandleShared {
    fn wake(&self) {
        // A full counter (EAGAIN) means a wake-up is pending anyway.
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
    }
}

impl BrokerHandle {
    /// Makes [`Broker::run`] return after its current turn.
    pub fn stop(&self) {
        self.0.stop.store(true, Ordering::Release);
        self.0.wake();
    }

    /// Asks the broker to kill a child with `SIGKILL` at its next turn (see
    /// [`Broker::kill`]); unknown ids are ignored.
    pub fn kill(&self, child: InstanceId) {
        self.0
            .kills
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(child);
        self.0.wake();
    }
}

struct ChildEntry {
    peer: PeerId,
    process: Child,
    /// `None` if the kernel has no pidfds.
    pidfd: Option<OwnedFd>,
    /// `None` once the child has left (hung up, cut off).
    channel: Option<Channel>,
    /// Whether it was cut off (so it is reported once).
    cut_off: bool,
    /// The children it was introduced to (in either direction).
    introduced: BTreeSet<InstanceId>,
    /// Its introductions in flight, as a requester.
    outstanding: usize,
    /// Create-connection requests in flight to it, as a target.
    serving: usize,
    /// Reports it has made.
    reports: usize,
    /// How it is relaunched if it crashes (see [`Broker::spawn_restarting`]).
    restart: Option<Restart>,
}

impl ChildEntry {
    fn signal_kill(&mut self) -> io::Result<()> {
        match &self.pidfd {
            Some(pidfd) => match rustix::process::pidfd_send_signal(pidfd, Signal::KILL) {
                Ok(()) | Err(Errno::SRCH) => Ok(()),
                Err(e) => Err(e.into()),
            },
            None => match self.process.kill() {
                // Already reaped by `try_wait`: nothing to kill.
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(()),
                other => other,
            },
        }
    }
}

/// An introduction forwarded to a target, awaiting its answer.
struct Pending {
    requester: InstanceId,
    /// The requester's own request id.
    request: u64,
    target: InstanceId,
    service: String,
    deadline: Instant,
}

/// The broker (the "UI process" side): owns the children and their
/// channels.
///
/// It is driven by its owner: [`turn`](Self::turn) waits for at most one
/// poll and handles what arrived; [`run`](Self::run) turns until stopped
/// through a [`BrokerHandle`]. Neither spins: they sleep in `poll` on the
/// children's channels and pidfds until something happens or the next
/// introduction deadline. Events are passed to a callback at the end of each
/// turn.
///
/// Dropping the broker closes every channel (children see the broker gone),
/// kills the children that are still running and reaps them; use
/// [`shutdown`](Self::shutdown) to give them time to exit on their own.
pub struct Broker {
    policy: Box<dyn Policy>,
    report_policy: Box<dyn ReportPolicy>,
    /// Services the broker process provides itself (see [`Broker::serve`]).
    local: BTreeMap<String, Box<dyn ConnectionHandler>>,
    /// Cleared by [`Broker::shutdown`]: children leaving then stay gone.
    restarts_enabled: bool,
    config: BrokerConfig,
    children: BTreeMap<InstanceId, ChildEntry>,
    pending: HashMap<u64, Pending>,
    next_instance: u64,
    next_request: u64,
    shared: Arc<HandleShared>,
    /// Events of the current turn, handed to the owner at its end.
    events: Vec<BrokerEvent>,
    /// Children whose channel is to be closed; see `settle`.
    departing: Vec<InstanceId>,
    recv_buf: Vec<u8>,
    send_buf: Vec<u8>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("children", &self.children.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// A broker with the default [`BrokerConfig`].
    pub fn new(policy: impl Policy + 'static) -> io::Result<Broker> {
        Broker::with_config(policy, BrokerConfig::default())
    }

    /// A broker with the given configuration.
    pub fn with_config(policy: impl Policy + 'static, config: BrokerConfig) -> io::Result<Broker> {
        let wake = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        Ok(Broker {
            policy: Box::new(policy),
            report_policy: Box::new(IgnoreReports),
            local: BTreeMap::new(),
            restarts_enabled: true,
            config,
            children: BTreeMap::new(),
            pending: HashMap::new(),
            next_instance: 1,
            next_request: 1,
            shared: Arc::new(HandleShared {
                wake,
                stop: AtomicBool::new(false),
                kills: Mutex::new(Vec::new()),
            }),
            events: Vec::new(),
            departing: Vec::new(),
            recv_buf: vec![0; MAX_ENCODED_LEN],
            send_buf: Vec::with_capacity(MAX_ENCODED_LEN),
        })
    }

    /// A handle to stop [`run`](Self::run) or kill children from other
    /// threads.
    pub fn handle(&self) -> BrokerHandle {
        BrokerHandle(self.shared.clone())
    }

    /// Spawns `command` as a child providing `service`, with a bootstrap
    /// channel (see [`bootstrap`]), and registers it. The
    /// child's first message is [`Hello`](ControlMessage::Hello) with its
    /// identity.
    pub fn spawn(&mut self, service: &str, command: Command) -> Result<InstanceId, SpawnError> {
        if !message::validate_service_name(service) {
            return Err(SpawnError::InvalidServiceName(service.to_owned()));
        }
        self.spawn_child(service, command, None)
    }

    /// Spawns a child providing `service` like [`spawn`](Self::spawn), with
    /// the command `make_command` builds, and relaunches it (with a fresh
    /// command from `make_command`, under the same service name, as a new
    /// child) each time it exits unsuccessfully (a signal, a non-zero exit
    /// code, or an exit someone else reaped), at most `max_restarts` times.
    /// A successful exit (code 0) ends it for good, and so does
    /// [`shutdown`](Self::shutdown). Each relaunch is reported as
    /// [`BrokerEvent::Restarted`] after the old child's
    /// [`BrokerEvent::ChildExited`]; a crash with no relaunch left (or a
    /// failed relaunch) as [`BrokerEvent::NotRestarted`]. See
    /// [`restart`](crate::restart) for what clients see.
    pub fn spawn_restarting(
        &mut self,
        service: &str,
        max_restarts: u32,
        mut make_command: impl FnMut() -> Command + Send + 'static,
    ) -> Result<InstanceId, SpawnError> {
        if !message::validate_service_name(service) {
            return Err(SpawnError::InvalidServiceName(service.to_owned()));
        }
        let command = make_command();
        let restart = Restart {
            make: Box::new(make_command),
            left: max_restarts,
        };
        self.spawn_child(service, command, Some(restart))
    }

    /// Provides `service` from the broker process itself: a child that asks
    /// for it (and that the [`Policy`] allows) is introduced to the broker,
    /// whose `handler` creates the connection exactly as a child's handler
    /// would (a ferry-transport `Acceptor` is one). The requester sees the
    /// ordinary [`Connected`](ControlMessage::Connected) from the peer
    /// `service#0` ([`BROKER_INSTANCE`]); no second socket is needed to reach
    /// the broker's own receivers.
    ///
    /// The handler runs on the broker's thread, inside its turn: it must not
    /// block (creating shared memory and sockets is fine). An endpoint with
    /// more than [`MAX_INTRODUCTION_FDS`] descriptors or more than
    /// [`MAX_METADATA_LEN`](message::MAX_METADATA_LEN) bytes of metadata
    /// fails the introduction. A local service takes precedence over
    /// children spawned under the same name.
    pub fn serve(
        &mut self,
        service: &str,
        handler: impl ConnectionHandler,
    ) -> Result<(), SpawnError> {
        if !message::validate_service_name(service) {
            return Err(SpawnError::InvalidServiceName(service.to_owned()));
        }
        self.local.insert(service.to_owned(), Box::new(handler));
        Ok(())
    }

    /// Replaces the [`ReportPolicy`] (by default every report is ignored).
    pub fn set_report_policy(&mut self, policy: impl ReportPolicy + 'static) {
        self.report_policy = Box::new(policy);
    }

    fn spawn_child(
        &mut self,
        service: &str,
        command: Command,
        restart: Option<Restart>,
    ) -> Result<InstanceId, SpawnError> {
        let (process, mut channel) = bootstrap::spawn_with_channel(command)?;
        channel.set_max_fds(MAX_INTRODUCTION_FDS);
        // The child is ours and not yet reaped, so its pid cannot be reused:
        // pidfd_open on it is race-free.
        let pidfd = i32::try_from(process.id())
            .ok()
            .and_then(|pid| pidfd::open_raw(pid).ok());
        let id = InstanceId(self.next_instance);
        self.next_instance += 1;
        let peer = PeerId {
            service: service.to_owned(),
            instance: id,
        };
        self.children.insert(
            id,
            ChildEntry {
                peer: peer.clone(),
                process,
                pidfd,
                channel: Some(channel),
                cut_off: false,
                introduced: BTreeSet::new(),
                outstanding: 0,
                serving: 0,
                reports: 0,
                restart,
            },
        );
        self.send_to(id, &ControlMessage::Hello { you: peer }, &[]);
        self.settle();
        Ok(id)
    }

    /// Kills a child with `SIGKILL` (through its pidfd when there is one, so
    /// a recycled pid is never hit). The broker notices the exit, reaps it
    /// and reports it at a later turn.
    pub fn kill(&mut self, child: InstanceId) -> Result<(), KillError> {
        let entry = self
            .children
            .get_mut(&child)
            .ok_or(KillError::UnknownChild(child))?;
        entry.signal_kill()?;
        Ok(())
    }

    /// The identity of a child that has not been reaped yet.
    pub fn peer(&self, child: InstanceId) -> Option<&PeerId> {
        self.children.get(&child).map(|c| &c.peer)
    }

    /// The process id of a child that has not been reaped yet.
    pub fn pid(&self, child: InstanceId) -> Option<u32> {
        self.children.get(&child).map(|c| c.process.id())
    }

    /// How many create-connection requests `target` has in flight (at most
    /// [`BrokerConfig::max_pending_per_target`]); 0 for unknown children.
    pub fn introductions_in_flight(&self, target: InstanceId) -> usize {
        self.children.get(&target).map_or(0, |c| c.serving)
    }

    /// The children that have not been reaped yet.
    pub fn children(&self) -> impl Iterator<Item = &PeerId> {
        self.children.values().map(|c| &c.peer)
    }

    /// Waits at most `timeout` for something to happen, handles it, and
    /// passes the resulting events to `on_event`.
    pub fn turn(
        &mut self,
        timeout: Duration,
        mut on_event: impl FnMut(BrokerEvent),
    ) -> Result<(), BrokerError> {
        let result = self.turn_inner(timeout);
        for event in self.events.drain(..) {
            on_event(event);
        }
        result
    }

    /// Turns until [`BrokerHandle::stop`] is called.
    pub fn run(&mut self, mut on_event: impl FnMut(BrokerEvent)) -> Result<(), BrokerError> {
        loop {
            if self.shared.stop.swap(false, Ordering::AcqRel) {
                return Ok(());
            }
            self.turn(RUN_TICK, &mut on_event)?;
        }
    }

    /// Closes every child's channel (so they see the broker gone), waits up
    /// to `grace` for them to exit, reaping and reporting them, then kills
    /// and reaps the rest.
    pub fn shutdown(mut self, grace: Duration, mut on_event: impl FnMut(BrokerEvent)) {
        self.restarts_enabled = false;
        let ids: Vec<InstanceId> = self.children.keys().copied().collect();
        self.departing.extend(ids);
        self.settle();
        let deadline = Deadline::after(Some(grace));
        while !self.children.is_empty() {
            let Some(left) = deadline.remaining().filter(|d| !d.is_zero()) else {
                break;
            };
            if self.turn(left, &mut on_event).is_err() {
                break;
            }
        }
        // Drop kills and reaps what is left.
    }

    fn turn_inner(&mut self, timeout: Duration) -> Result<(), BrokerError> {
        self.apply_handle_requests();
        let mut wait_for = timeout;
        if let Some(next) = self.pending.values().map(|p| p.deadline).min() {
            wait_for = wait_for.min(next.saturating_duration_since(Instant::now()));
        }
        if self.children.values().any(|c| c.pidfd.is_none()) {
            wait_for = wait_for.min(REAP_INTERVAL);
        }

        let mut readable = Vec::new();
        let mut exited = Vec::new();
        let woken;
        {
            let mut fds = Vec::with_capacity(1 + 2 * self.children.len());
            let mut owners = Vec::with_capacity(2 * self.children.len());
            fds.push(PollFd::new(&self.shared.wake, PollFlags::IN));
            for (id, child) in &self.children {
                if let Some(channel) = &child.channel {
                    fds.push(PollFd::new(channel, PollFlags::IN | PollFlags::RDHUP));
                    owners.push((*id, false));
                }
                match &child.pidfd {
                    Some(pidfd) => {
                        fds.push(PollFd::new(pidfd, PollFlags::IN));
                        owners.push((*id, true));
                    }
                    None => exited.push(*id),
                }
            }
            match rustix::event::poll(&mut fds, Some(&wait::timespec(wait_for))) {
                Ok(_) | Err(Errno::INTR) => {}
                Err(e) => return Err(io::Error::from(e).into()),
            }
            woken = !fds[0].revents().is_empty();
            for (fd, (id, is_pidfd)) in fds[1..].iter().zip(owners) {
                if !fd.revents().is_empty() {
                    if is_pidfd {
                        exited.push(id);
                    } else {
                        readable.push(id);
                    }
                }
            }
        }
        if woken {
            let mut counter = [0u8; 8];
            match rustix::io::read(&self.shared.wake, &mut counter) {
                Ok(_) | Err(Errno::AGAIN) => {}
                Err(e) => return Err(io::Error::from(e).into()),
            }
            self.apply_handle_requests();
        }
        for id in readable {
            self.service_channel(id, MESSAGES_PER_TURN);
            self.settle();
        }
        for id in exited {
            self.try_reap(id);
        }
        self.expire_pending();
        self.settle();
        Ok(())
    }

    fn apply_handle_requests(&mut self) {
        let kills = std::mem::take(
            &mut *self
                .shared
                .kills
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for id in kills {
            let _ = self.kill(id);
        }
    }

    /// Reads and handles up to `limit` messages from a child.
    fn service_channel(&mut self, id: InstanceId, limit: usize) {
        for _ in 0..limit {
            let Some(channel) = self.children.get(&id).and_then(|c| c.channel.as_ref()) else {
                return;
            };
            match channel.try_recv(&mut self.recv_buf) {
                Ok(None) => return,
                Ok(Some(received)) => {
                    match ControlMessage::decode(&self.recv_buf[..received.len], received.fds.len())
                    {
                        Ok(msg) => self.on_message(id, msg, received.fds),
                        Err(e) => self.cut_off(id, format!("malformed control message: {e}")),
                    }
                }
                Err(RecvError::Disconnected) => {
                    self.departing.push(id);
                    return;
                }
                Err(RecvError::TimedOut) => return,
                Err(RecvError::Io(_)) => {
                    // Not the child's fault; treat the channel as gone.
                    self.departing.push(id);
                    return;
                }
                Err(e) => {
                    self.cut_off(id, format!("bad control packet: {e}"));
                    return;
                }
            }
        }
    }

    fn on_message(&mut self, from: InstanceId, msg: ControlMessage, fds: Vec<OwnedFd>) {
        match msg {
            ControlMessage::Connect {
                request,
                service,
                metadata,
            } => self.introduce(from, request, service, metadata),
            ControlMessage::ConnectionCreated { request, metadata } => {
                self.complete(from, request, Ok((metadata, fds)));
            }
            ControlMessage::CreateFailed { request, reason } => {
                self.complete(from, request, Err(reason));
            }
            ControlMessage::Report { peer, reason } => self.judge(from, peer, reason),
            other => self.cut_off(
                from,
                format!("sent {}, which only the broker sends", other.kind_name()),
            ),
        }
    }

    /// A child asks for a service.
    fn introduce(&mut self, from: InstanceId, request: u64, service: String, metadata: Vec<u8>) {
        let Some(requester) = self.children.get(&from) else {
            return;
        };
        let requester_peer = requester.peer.clone();
        if requester.outstanding >= self.config.max_pending_per_child {
            self.reply_failure(from, request, service, ConnectFailure::Busy);
            return;
        }
        // The policy comes first, so a denied requester learns nothing about
        // which services exist.
        if self.policy.decide(&requester_peer, &service) == Decision::Deny {
            self.send_to(from, &ControlMessage::Denied { request }, &[]);
            self.events.push(BrokerEvent::IntroductionDenied {
                requester: requester_peer,
                service,
            });
            return;
        }
        if self.local.contains_key(&service) {
            self.introduce_locally(from, request, service, metadata);
            return;
        }
        let target = self
            .children
            .iter()
            .find(|(_, c)| c.peer.service == service && c.channel.is_some())
            .map(|(id, c)| (*id, c.peer.clone()));
        let Some((target, target_peer)) = target else {
            self.reply_failure(from, request, service, ConnectFailure::UnknownService);
            return;
        };
        let serving = self.children.get(&target).map_or(0, |c| c.serving);
        let for_this_requester = self
            .pending
            .values()
            .filter(|p| p.target == target && p.requester == from)
            .count();
        if serving >= self.config.max_pending_per_target
            || for_this_requester >= self.config.max_pending_per_requester_and_target
        {
            self.reply_failure(from, request, service, ConnectFailure::TargetBusy);
            return;
        }
        let broker_request = self.next_request;
        self.next_request += 1;
        let ask = ControlMessage::CreateConnection {
            request: broker_request,
            requester: requester_peer.clone(),
            metadata,
        };
        // Sent on the requester's behalf: a full socket is not the target's
        // fault (the broker filled it), so the requester hears TargetBusy
        // and the target is left alone.
        match self.send_on_behalf(target, &ask) {
            Delivery::Sent => {}
            Delivery::Full => {
                self.reply_failure(from, request, service, ConnectFailure::TargetBusy);
                return;
            }
            Delivery::Gone => {
                self.reply_failure(from, request, service, ConnectFailure::TargetGone);
                return;
            }
        }
        self.pending.insert(
            broker_request,
            Pending {
                requester: from,
                request,
                target,
                service,
                deadline: deadline_after(self.config.introduction_timeout),
            },
        );
        if let Some(requester) = self.children.get_mut(&from) {
            requester.outstanding += 1;
        }
        if let Some(target) = self.children.get_mut(&target) {
            target.serving += 1;
        }
        self.events.push(BrokerEvent::IntroductionRequested {
            requester: requester_peer,
            target: target_peer,
        });
    }

    /// A target answers a create-connection request.
    fn complete(
        &mut self,
        from: InstanceId,
        broker_request: u64,
        answer: Result<(Vec<u8>, Vec<OwnedFd>), String>,
    ) {
        let Some(target) = self.pending.get(&broker_request).map(|p| p.target) else {
            if broker_request == 0 || broker_request >= self.next_request {
                self.cut_off(
                    from,
                    "answered an introduction that was never requested".into(),
                );
            }
            // Otherwise a late answer (the introduction timed out or its
            // requester left): drop it, closing its descriptors.
            return;
        };
        if target != from {
            self.cut_off(
                from,
                "answered an introduction meant for another child".into(),
            );
            return;
        }
        let Some(pending) = self.take_pending(broker_request) else {
            return;
        };
        let (Some(requester), Some(target)) = (
            self.children
                .get(&pending.requester)
                .map(|c| c.peer.clone()),
            self.children.get(&from).map(|c| c.peer.clone()),
        ) else {
            return;
        };
        match answer {
            Ok((metadata, fds)) => {
                let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
                let reply = ControlMessage::Connected {
                    request: pending.request,
                    peer: target.clone(),
                    metadata,
                };
                if self.send_to(pending.requester, &reply, &borrowed) {
                    if pending.requester != from {
                        self.link(pending.requester, from);
                    }
                    self.events
                        .push(BrokerEvent::IntroductionMade { requester, target });
                }
                // `fds` drops here: the broker keeps no copy of what it
                // forwarded.
            }
            Err(reason) => {
                let failure = ConnectFailure::TargetFailed(message::truncate_text(reason));
                self.reply_failure(pending.requester, pending.request, pending.service, failure);
            }
        }
    }

    /// Introduces a child to a service of the broker's own (see
    /// [`serve`](Self::serve)): the handler answers at once.
    fn introduce_locally(
        &mut self,
        from: InstanceId,
        request: u64,
        service: String,
        metadata: Vec<u8>,
    ) {
        let Some(requester) = self.children.get(&from).map(|c| c.peer.clone()) else {
            return;
        };
        let Some(handler) = self.local.get_mut(&service) else {
            return;
        };
        let ours = PeerId {
            service: service.clone(),
            instance: BROKER_INSTANCE,
        };
        let created = handler.create_connection(ConnectionRequest {
            requester: requester.clone(),
            metadata,
        });
        let endpoint = match created {
            Ok(endpoint)
                if endpoint.fds.len() <= MAX_INTRODUCTION_FDS
                    && endpoint.metadata.len() <= message::MAX_METADATA_LEN =>
            {
                endpoint
            }
            Ok(endpoint) => {
                let reason = format!(
                    "the broker's {service} handler made an endpoint of {} descriptors and {} bytes",
                    endpoint.fds.len(),
                    endpoint.metadata.len()
                );
                let failure = ConnectFailure::TargetFailed(message::truncate_text(reason));
                self.reply_failure(from, request, service, failure);
                return;
            }
            Err(reason) => {
                let failure = ConnectFailure::TargetFailed(message::truncate_text(reason));
                self.reply_failure(from, request, service, failure);
                return;
            }
        };
        let borrowed: Vec<BorrowedFd<'_>> = endpoint.fds.iter().map(AsFd::as_fd).collect();
        let reply = ControlMessage::Connected {
            request,
            peer: ours.clone(),
            metadata: endpoint.metadata.clone(),
        };
        if self.send_to(from, &reply, &borrowed) {
            self.events.push(BrokerEvent::IntroductionMade {
                requester,
                target: ours,
            });
        }
        // `endpoint` drops here: the broker process keeps only its own end
        // (the handler's).
    }

    /// A child reports a peer. The report is checked before the policy sees
    /// it: the accused must be a child the accuser was introduced to, or
    /// one whose introduction to the accuser is in flight.
    fn judge(&mut self, from: InstanceId, accused: PeerId, reason: String) {
        let Some(accuser) = self.children.get_mut(&from) else {
            return;
        };
        accuser.reports += 1;
        let over_limit = accuser.reports > self.config.max_reports_per_child;
        // Introduced, or being introduced: a service asked to create a
        // connection may judge the request itself (its metadata is the
        // requester's words), before its answer reaches the broker.
        let linked = accuser.introduced.contains(&accused.instance)
            || self
                .pending
                .values()
                .any(|p| p.target == from && p.requester == accused.instance);
        let accuser_peer = accuser.peer.clone();
        let accused_entry = self.children.get(&accused.instance);
        let accused_alive =
            accused_entry.is_some_and(|c| c.channel.is_some() && !c.cut_off && c.peer == accused);
        let outcome = if over_limit {
            ReportOutcome::RateLimited
        } else if !accused_alive {
            // A child never spawned (or under another name) is a false
            // accusation; one that already left is nothing to judge.
            let known = accused.instance != BROKER_INSTANCE
                && accused.instance.0 < self.next_instance
                && accused_entry.is_none_or(|c| c.peer == accused);
            if !known {
                self.cut_off(from, format!("reported {accused}, which does not exist"));
                return;
            }
            ReportOutcome::AccusedGone
        } else if !linked {
            self.cut_off(
                from,
                format!("reported {accused}, which it was never introduced to"),
            );
            return;
        } else {
            match self.report_policy.judge(&accuser_peer, &accused, &reason) {
                Verdict::Terminate => {
                    self.terminate(accused.instance);
                    ReportOutcome::Terminated
                }
                Verdict::Ignore => ReportOutcome::Ignored,
            }
        };
        self.events.push(BrokerEvent::Reported {
            accuser: accuser_peer,
            accused,
            reason,
            outcome,
        });
    }

    /// Kills a child on the report policy's verdict and closes its channel
    /// (reported as [`BrokerEvent::Reported`], not as misbehaviour the
    /// broker saw itself).
    fn terminate(&mut self, id: InstanceId) {
        let Some(child) = self.children.get_mut(&id) else {
            return;
        };
        child.cut_off = true;
        let _ = child.signal_kill();
        self.departing.push(id);
    }

    fn link(&mut self, a: InstanceId, b: InstanceId) {
        if let Some(child) = self.children.get_mut(&a) {
            child.introduced.insert(b);
        }
        if let Some(child) = self.children.get_mut(&b) {
            child.introduced.insert(a);
        }
    }

    fn reply_failure(
        &mut self,
        requester: InstanceId,
        request: u64,
        service: String,
        failure: ConnectFailure,
    ) {
        let Some(peer) = self.children.get(&requester).map(|c| c.peer.clone()) else {
            return;
        };
        let reply = ControlMessage::ConnectFailed {
            request,
            failure: failure.clone(),
        };
        self.send_to(requester, &reply, &[]);
        self.events.push(BrokerEvent::IntroductionFailed {
            requester: peer,
            service,
            failure,
        });
    }

    /// Removes an introduction from the books: it no longer counts against
    /// its requester or its target.
    fn take_pending(&mut self, broker_request: u64) -> Option<Pending> {
        let pending = self.pending.remove(&broker_request)?;
        if let Some(requester) = self.children.get_mut(&pending.requester) {
            requester.outstanding = requester.outstanding.saturating_sub(1);
        }
        if let Some(target) = self.children.get_mut(&pending.target) {
            target.serving = target.serving.saturating_sub(1);
        }
        Some(pending)
    }

    fn fail_pending(&mut self, pending: Pending, failure: ConnectFailure) {
        self.reply_failure(pending.requester, pending.request, pending.service, failure);
    }

    fn expire_pending(&mut self) {
        let now = Instant::now();
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(pending) = self.take_pending(id) {
                self.fail_pending(pending, ConnectFailure::TimedOut);
            }
        }
    }

    /// Sends a child a message of its own making (its `Hello`, an answer to
    /// its own request) without blocking. A full socket is then the child's
    /// doing (it asks without reading the answers): it is cut off. On any
    /// failure `false` is returned (a hung-up child is marked departing).
    fn send_to(&mut self, id: InstanceId, msg: &ControlMessage, fds: &[BorrowedFd<'_>]) -> bool {
        match self.deliver(id, msg, fds) {
            Delivery::Sent => true,
            Delivery::Full => {
                self.cut_off(
                    id,
                    "does not read its control channel (socket buffer full)".into(),
                );
                false
            }
            Delivery::Gone => false,
        }
    }

    /// Sends a child a message on someone else's behalf without blocking; a
    /// full socket is reported, never held against the child.
    fn send_on_behalf(&mut self, id: InstanceId, msg: &ControlMessage) -> Delivery {
        self.deliver(id, msg, &[])
    }

    /// One non-blocking send; a child that hung up is marked departing.
    fn deliver(
        &mut self,
        id: InstanceId,
        msg: &ControlMessage,
        fds: &[BorrowedFd<'_>],
    ) -> Delivery {
        let Some(channel) = self.children.get(&id).and_then(|c| c.channel.as_ref()) else {
            return Delivery::Gone;
        };
        // The broker only builds messages from validated parts, so this
        // cannot fail; if it did, the message is simply not delivered and the
        // requester's own timeout ends its wait.
        if msg.encode(fds.len(), &mut self.send_buf).is_err() {
            return Delivery::Gone;
        }
        match channel.try_send(&self.send_buf, fds) {
            Ok(()) => Delivery::Sent,
            Err(SendError::WouldBlock) => Delivery::Full,
            Err(_) => {
                self.departing.push(id);
                Delivery::Gone
            }
        }
    }

    /// Cuts a misbehaving child off: reports it, kills it, closes its
    /// channel.
    fn cut_off(&mut self, id: InstanceId, reason: String) {
        let Some(child) = self.children.get_mut(&id) else {
            return;
        };
        if child.cut_off {
            return;
        }
        child.cut_off = true;
        let _ = child.signal_kill();
        self.events.push(BrokerEvent::Misbehaved {
            child: child.peer.clone(),
            reason,
        });
        self.departing.push(id);
    }

    /// Processes departures: closes the channel, fails the introductions
    /// that involve the child, and tells the children it was introduced to.
    /// Sending `PeerGone` can make more children depart; the loop takes care
    /// of them without recursion.
    fn settle(&mut self) {
        while let Some(id) = self.departing.pop() {
            let Some(child) = self.children.get_mut(&id) else {
                continue;
            };
            if child.channel.take().is_none() {
                continue;
            }
            let gone = child.peer.clone();
            let introduced = std::mem::take(&mut child.introduced);
            let involved: Vec<u64> = self
                .pending
                .iter()
                .filter(|(_, p)| p.target == id || p.requester == id)
                .map(|(request, _)| *request)
                .collect();
            for request in involved {
                let Some(pending) = self.take_pending(request) else {
                    continue;
                };
                if pending.requester != id {
                    self.fail_pending(pending, ConnectFailure::TargetGone);
                }
            }
            for other in introduced {
                if let Some(child) = self.children.get_mut(&other) {
                    child.introduced.remove(&id);
                }
                // On the departed child's behalf: a full socket drops the
                // notice rather than cut `other` off.
                self.send_on_behalf(other, &ControlMessage::PeerGone { peer: gone.clone() });
            }
        }
    }

    /// Reaps a child if it has exited.
    fn try_reap(&mut self, id: InstanceId) {
        let Some(child) = self.children.get_mut(&id) else {
            return;
        };
        let status = match child.process.try_wait() {
            Ok(Some(status)) => Some(status),
            Ok(None) => return,
            // ECHILD: reaped behind our back (e.g. SIGCHLD ignored).
            Err(_) => None,
        };
        // What it sent before exiting is still queued: its last answers
        // count. The queue is finite (the socket buffer).
        self.service_channel(id, usize::MAX);
        self.departing.push(id);
        self.settle();
        if let Some(child) = self.children.remove(&id) {
            self.events.push(BrokerEvent::ChildExited {
                child: child.peer.clone(),
                status,
            });
            let crashed = !status.is_some_and(|s| s.success());
            if let (Some(restart), true, true) = (child.restart, crashed, self.restarts_enabled) {
                self.relaunch(child.peer, restart);
            }
        }
    }

    /// Spawns a crashed restartable child again, if it has relaunches left.
    fn relaunch(&mut self, old: PeerId, mut restart: Restart) {
        if restart.left == 0 {
            self.events.push(BrokerEvent::NotRestarted {
                child: old,
                reason: "no relaunches left".into(),
            });
            return;
        }
        restart.left -= 1;
        let restarts_left = restart.left;
        let command = (restart.make)();
        match self.spawn_child(&old.service, command, Some(restart)) {
            Ok(new) => {
                let pid = self.pid(new).unwrap_or(0);
                let new = PeerId {
                    service: old.service.clone(),
                    instance: new,
                };
                self.events.push(BrokerEvent::Restarted {
                    old,
                    new,
                    pid,
                    restarts_left,
                });
            }
            Err(e) => self.events.push(BrokerEvent::NotRestarted {
                child: old,
                reason: format!("relaunch failed: {e}"),
            }),
        }
    }
}

/// `timeout` from now, saturating at a year (an `Instant` cannot hold more).
fn deadline_after(timeout: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(365 * 24 * 3600);
    let now = Instant::now();
    now.checked_add(timeout.min(FAR)).unwrap_or(now)
}

impl Drop for Broker {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            child.channel = None;
            let _ = child.signal_kill();
        }
        for child in self.children.values_mut() {
            let _ = child.process.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closures_are_policies() {
        let mut deny_gpu = |_: &PeerId, service: &str| {
            if service == "gpu" {
                Decision::Deny
            } else {
                Decision::Allow
            }
        };
        let who = PeerId {
            service: "web".into(),
            instance: InstanceId(1),
        };
        assert_eq!(deny_gpu.decide(&who, "gpu"), Decision::Deny);
        assert_eq!(deny_gpu.decide(&who, "network"), Decision::Allow);
        assert_eq!(AllowAll.decide(&who, "gpu"), Decision::Allow);
    }

    #[test]
    fn spawn_rejects_bad_service_names() {
        let mut broker = Broker::new(AllowAll).unwrap();
        assert!(matches!(
            broker.spawn("no spaces", Command::new("true")),
            Err(SpawnError::InvalidServiceName(_))
        ));
    }

    #[test]
    fn a_child_that_exits_is_reaped_and_reported() {
        let mut broker = Broker::new(AllowAll).unwrap();
        let id = broker.spawn("true", Command::new("true")).unwrap();
        let mut exited = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        while exited.is_none() && Instant::now() < deadline {
            broker
                .turn(Duration::from_millis(100), |e| {
                    if let BrokerEvent::ChildExited { child, status } = e {
                        exited = Some((child, status));
                    }
                })
                .unwrap();
        }
        let (child, status) = exited.expect("exit reported");
        assert_eq!(child.instance, id);
        assert!(status.unwrap().success());
        assert!(broker.children().next().is_none());
        assert!(matches!(broker.kill(id), Err(KillError::UnknownChild(_))));
    }

    #[test]
    fn handle_stops_run_and_kills() {
        let mut broker = Broker::new(AllowAll).unwrap();
        let mut sleeper = Command::new("sleep");
        sleeper.arg("30");
        let id = broker.spawn("sleeper", sleeper).unwrap();
        let handle = broker.handle();
        let stopper = std::thread::spawn(move || {
            handle.kill(id);
            std::thread::sleep(Duration::from_millis(50));
            handle.stop();
        });
        let mut events = Vec::new();
        broker.run(|e| events.push(e)).unwrap();
        stopper.join().unwrap();
        // The exit may be seen before or after the stop.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !events
            .iter()
            .any(|e| matches!(e, BrokerEvent::ChildExited { .. }))
            && Instant::now() < deadline
        {
            broker
                .turn(Duration::from_millis(100), |e| events.push(e))
                .unwrap();
        }
        use std::os::unix::process::ExitStatusExt;
        let status = events.iter().find_map(|e| match e {
            BrokerEvent::ChildExited { status, .. } => *status,
            _ => None,
        });
        assert_eq!(status.and_then(|s| s.signal()), Some(libc::SIGKILL));
    }
}
