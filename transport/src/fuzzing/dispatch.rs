//! The dispatch checker: a hostile peer's frames and attachments into a
//! connection with the user's handlers ([`Target::dispatch`]).
//!
//! The victim is a real connection (`Connection::create`) with the
//! target's receivers registered, each wrapped so that it reports being
//! entered after a violation or too deep inside waiting calls. The peer
//! holds the other end without a `Connection`: it writes the input's frames
//! into the ring the victim reads and sends its attachments on the control
//! socket, then closes its ring; the victim then makes a synchronous call
//! (synchronous-wait mode: what arrives meanwhile is dispatched or set
//! aside), and dispatches, or receives raw frames, until it stops.
//!
//! The input (build one with [`dispatch_input`]): a mode byte (the bits in
//! [`mode`]), 8 bytes of limits if [`mode::LIMITS`] is set, then
//! operations ([`PeerOp`]), each a tag byte (`% 3`): 0, a frame (`u16`
//! length, bytes); 1, an attachment (a byte: non-zero for a 16-byte header
//! that follows; a descriptor count `% 4`; per descriptor a kind byte `% 4`:
//! 0 a sealed blob (`u16` length, bytes), 1 an unsealed memfd (`u16`
//! size), 2 an eventfd, 3 a pipe); 2, a well-formed message (a length
//! byte, bytes). Integers are little-endian; reading past the end yields
//! zeros.

use super::catalog::{Catalog, frame_bytes};
use super::fds::{FdSnapshot, attached_fds_held, one_at_a_time};
use super::finding::{Check, Finding};
use super::peer::{AttachedFd, HostilePeer, PeerOp};
use super::protocol::Protocol;
use super::target::Target;
use super::watch::Watch;
use crate::config::{ConnectionConfig, Trust};
use crate::connection::Connection;
use crate::error::DispatchError;
use arbitrary::Unstructured;
use std::hint::black_box;
use std::time::Duration;

/// Bits of the mode byte.
pub mod mode {
    /// `Trust::Trusted` (frames read in place), else `Untrusted`.
    pub const TRUSTED: u8 = 1;
    /// Receive with the raw API (`try_recv_frame`) instead of `dispatch`.
    pub const RAW_API: u8 = 2;
    /// The victim first makes a synchronous call (to the protocol's first
    /// request), which dispatches or sets aside what arrives meanwhile.
    pub const SYNC_CALL: u8 = 4;
    /// The victim first sends this many requests with reply handlers
    /// (`(mode >> REPLY_HANDLERS_SHIFT) & 3`; request ids from 1).
    pub const REPLY_HANDLERS_SHIFT: u8 = 3;
    /// `max_deferred_bytes` of 256, so the set-aside queue overflows.
    pub const SMALL_DEFERRED: u8 = 32;
    /// One descriptor per message (else four).
    pub const ONE_FD: u8 = 64;
    /// Limits follow the mode byte (8 bytes: `max_sync_nesting % 5`,
    /// `max_deferred_bytes` as a `u16`, `max_deferred_fds % 8`,
    /// `max_dispatch_batch`, `max_pending_replies % 4`,
    /// `max_message_size` as a `u16`).
    pub const LIMITS: u8 = 128;
}

/// Input bytes used, at most.
const MAX_INPUT: usize = 16 * 1024;
/// How long the victim's synchronous call waits: its peer closed its ring
/// before, so the call normally ends as soon as it has read everything.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the victim's replies wait for room (its ring is never read).
const REPLY_TIMEOUT: Duration = Duration::from_millis(200);
/// How long the descriptor count may take to come down after an input.
const FD_GRACE: Duration = Duration::from_secs(2);

/// What the victim did with one input.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DispatchReport {
    /// Messages its handlers handled (or raw frames received).
    pub handled: usize,
    /// How the synchronous call ended, if one was made.
    pub sync_call: Option<String>,
    /// How the victim stopped.
    pub end: String,
    /// The most attached descriptors held after a call into the victim.
    pub most_fds_held: usize,
}

/// Builds an input for [`Target::dispatch`]: `mode` (see [`mode`];
/// [`mode::LIMITS`] is set when `limits` are given), then `ops`.
pub fn dispatch_input(mode: u8, limits: Option<[u8; 8]>, ops: &[PeerOp]) -> Vec<u8> {
    let mut out = Vec::new();
    match limits {
        Some(limits) => {
            out.push(mode | mode::LIMITS);
            out.extend_from_slice(&limits);
        }
        None => out.push(mode & !mode::LIMITS),
    }
    for op in ops {
        match op {
            PeerOp::Frame(bytes) => {
                let bytes = &bytes[..bytes.len().min(usize::from(u16::MAX))];
                out.push(0);
                out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
                out.extend_from_slice(bytes);
            }
            PeerOp::Attachment { header, fds } => {
                out.push(1);
                match header {
                    Some(header) => {
                        out.push(1);
                        out.extend_from_slice(header);
                    }
                    None => out.push(0),
                }
                out.push(fds.len().min(3) as u8);
                for fd in fds.iter().take(3) {
                    match fd {
                        AttachedFd::Blob(bytes) => {
                            let bytes = &bytes[..bytes.len().min(usize::from(u16::MAX))];
                            out.push(0);
                            out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
                            out.extend_from_slice(bytes);
                        }
                        AttachedFd::Unsealed(len) => {
                            out.push(1);
                            out.extend_from_slice(&len.to_le_bytes());
                        }
                        AttachedFd::Event => out.push(2),
                        AttachedFd::Pipe => out.push(3),
                    }
                }
            }
            PeerOp::Message(bytes) => {
                let bytes = &bytes[..bytes.len().min(usize::from(u8::MAX))];
                out.push(2);
                out.push(bytes.len() as u8);
                out.extend_from_slice(bytes);
            }
        }
    }
    out
}

/// Reads an input's fields off its front; zeros past the end.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.0.split_at(n.min(self.0.len()));
        self.0 = tail;
        head
    }
    fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }
    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | u16::from(self.u8()) << 8
    }
    fn op(&mut self) -> PeerOp {
        match self.u8() % 3 {
            0 => {
                let len = usize::from(self.u16());
                PeerOp::Frame(self.bytes(len).to_vec())
            }
            1 => {
                let header = (self.u8() != 0).then(|| {
                    let mut header = [0u8; 16];
                    let bytes = self.bytes(16);
                    header[..bytes.len()].copy_from_slice(bytes);
                    header
                });
                let fds = (0..self.u8() % 4)
                    .map(|_| match self.u8() % 4 {
                        0 => {
                            let len = usize::from(self.u16());
                            AttachedFd::Blob(self.bytes(len).to_vec())
                        }
                        1 => AttachedFd::Unsealed(self.u16()),
                        2 => AttachedFd::Event,
                        _ => AttachedFd::Pipe,
                    })
                    .collect();
                PeerOp::Attachment { header, fds }
            }
            _ => {
                let len = usize::from(self.u8());
                PeerOp::Message(self.bytes(len).to_vec())
            }
        }
    }
}

fn apply_limits(config: ConnectionConfig, c: &mut Cursor<'_>) -> ConnectionConfig {
    config
        .max_sync_nesting(u32::from(c.u8() % 5))
        .max_deferred_bytes(usize::from(c.u16()))
        .max_deferred_fds(usize::from(c.u8() % 8))
        .max_dispatch_batch(usize::from(c.u8()))
        .max_pending_replies(usize::from(c.u8() % 4))
        .max_message_size(usize::from(c.u16()))
}

/// Checks the budgets after a call into the victim.
pub(crate) fn check_budgets(
    victim: &Connection,
    baseline: usize,
    most_fds_held: &mut usize,
) -> Result<(), Finding> {
    let config = victim.config();
    // Between calls, only the set-aside queue may hold what the peer
    // attached (a handler's descriptors are closed when it returns, and
    // anything kept beyond is a leak, found after the input): the
    // descriptors are counted, process-wide, while it holds messages.
    if !victim.has_deferred() {
        return Ok(());
    }
    let held = attached_fds_held().saturating_sub(baseline);
    *most_fds_held = (*most_fds_held).max(held);
    // The queue's budget, and the one message that overflows it (its
    // descriptors and, out of line, its blob).
    let allowed = config.max_deferred_fds + config.max_fds_per_message + 1;
    if held > allowed {
        return Err(Finding::new(
            Check::DeferredFds,
            format!(
                "{held} attached descriptors held: max_deferred_fds {} and one message of {} at most",
                config.max_deferred_fds,
                config.max_fds_per_message + 1
            ),
        ));
    }
    if victim
        .set_aside
        .exceeds_by_more_than_one(victim.set_aside_budget())
    {
        return Err(Finding::new(
            Check::DeferredBytes,
            format!(
                "messages set aside exceed max_deferred_bytes {} / max_deferred_fds {} by more \
                 than one message",
                config.max_deferred_bytes, config.max_deferred_fds
            ),
        ));
    }
    Ok(())
}

impl<P: Protocol> Target<P> {
    /// Runs one input of the dispatch checker (see [the module](self) for
    /// its format): the hostile peer's frames and attachments into a victim
    /// with this target's receivers. Inputs run one at a time in a process
    /// (descriptors are counted process-wide).
    pub fn dispatch(&self, data: &[u8]) -> Result<DispatchReport, Finding> {
        let _turn = one_at_a_time();
        let before = FdSnapshot::take();
        let report = self.dispatch_victim(data);
        // The victim and everything the peer made are gone: so are their
        // descriptors.
        before.check_no_leak(FD_GRACE)?;
        report
    }

    /// [`dispatch`](Self::dispatch) for a fuzz target: panics with the
    /// finding, if any.
    pub fn fuzz_dispatch(&self, data: &[u8]) {
        if let Err(finding) = self.dispatch(data) {
            panic!("{finding}");
        }
    }

    fn dispatch_victim(&self, data: &[u8]) -> Result<DispatchReport, Finding> {
        let catalog = Catalog::of::<P>();
        let mut report = DispatchReport::default();
        let mut c = Cursor(&data[..data.len().min(MAX_INPUT)]);
        let mode = c.u8();
        let mut config = self
            .config
            .clone()
            .trust(if mode & mode::TRUSTED != 0 {
                Trust::Trusted
            } else {
                Trust::Untrusted
            })
            .reply_timeout(REPLY_TIMEOUT)
            .send_timeout(Some(REPLY_TIMEOUT));
        config.max_fds_per_message = if mode & mode::ONE_FD != 0 { 1 } else { 4 };
        if mode & mode::SMALL_DEFERRED != 0 {
            config.max_deferred_bytes = 256;
        }
        if mode & mode::LIMITS != 0 {
            config = apply_limits(config, &mut c);
        }
        // Pipes the process had before (its standard output, say) are not
        // the peer's.
        let baseline = attached_fds_held();
        let watch = Watch::default();
        let (mut victim, mut peer) = HostilePeer::new(config.clone());
        let served = self.register(&mut victim, &watch);

        let request = catalog.requests().next().and_then(|entry| entry.calls);
        if let Some(calls) = request {
            for _ in 0..(mode >> mode::REPLY_HANDLERS_SHIFT) & 3 {
                let mut nothing = Unstructured::new(&[]);
                let _ = (calls.with_reply)(&mut victim, 0, &mut nothing, watch.clone());
            }
        }

        while !c.0.is_empty() {
            match c.op() {
                PeerOp::Frame(bytes) => {
                    peer.frame(&bytes);
                }
                PeerOp::Message(bytes) => {
                    let mut u = Unstructured::new(&bytes);
                    if let Some((envelope, body)) = catalog.frame(&mut u, &served, true, true) {
                        peer.frame(&frame_bytes(&envelope, &body));
                    }
                }
                PeerOp::Attachment { header, fds } => peer.attach(header, &fds),
            }
        }
        peer.close_ring();

        if let (true, Some(calls)) = (mode & mode::SYNC_CALL != 0, request) {
            let mut nothing = Unstructured::new(&[]);
            let called = (calls.sync)(&mut victim, 0, &mut nothing, CALL_TIMEOUT);
            report.sync_call = Some(match called {
                Ok(()) => "reply".into(),
                Err(e) => e.to_string(),
            });
            check_budgets(&victim, baseline, &mut report.most_fds_held)?;
        }
        if mode & mode::RAW_API != 0 {
            for _ in 0..MAX_INPUT {
                match victim.try_recv_frame() {
                    Ok(mut frame) => {
                        let len = frame.bytes().len();
                        if len > config.max_message_size {
                            return Err(Finding::new(
                                Check::MessageSize,
                                format!(
                                    "a frame of {len} bytes received, max_message_size {}",
                                    config.max_message_size
                                ),
                            ));
                        }
                        black_box(frame.bytes().iter().map(|&b| u64::from(b)).sum::<u64>());
                        drop(frame.take_fds());
                        report.handled += 1;
                    }
                    Err(e) => {
                        report.end = e.to_string();
                        break;
                    }
                }
            }
        } else {
            for _ in 0..MAX_INPUT {
                let dispatched = victim.dispatch(Some(Duration::ZERO));
                check_budgets(&victim, baseline, &mut report.most_fds_held)?;
                match dispatched {
                    Ok(0) => {
                        report.end = "idle".into();
                        break;
                    }
                    Ok(n) if n > config.max_dispatch_batch.max(1) => {
                        return Err(Finding::new(
                            Check::DispatchBatch,
                            format!(
                                "dispatch handled {n} messages, max_dispatch_batch {}",
                                config.max_dispatch_batch
                            ),
                        ));
                    }
                    Ok(_) => {}
                    // A reply that could not be sent: the message was
                    // handled; go on.
                    Err(DispatchError::Reply(e)) => report.end = format!("reply failed: {e}"),
                    Err(e) => {
                        report.end = e.to_string();
                        break;
                    }
                }
            }
            if victim.violation().is_some() {
                // Whatever is left, set aside or in the ring, is never
                // handled (the wrapped handlers check).
                let again = victim.dispatch(Some(Duration::ZERO));
                if let Ok(n @ 1..) = again {
                    watch.report(Finding::new(
                        Check::DispatchedAfterViolation,
                        format!("dispatch handled {n} messages after the violation"),
                    ));
                }
            }
        }
        report.handled += watch.handled();
        drop(victim);
        drop(peer);
        match watch.finding() {
            Some(finding) => Err(finding),
            None => Ok(report),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incoming::{Body, Incoming};
    use crate::set_aside::Budget;
    use crate::wire::{ENVELOPE_SIZE, Envelope};
    use rkyv::util::AlignedVec;

    fn set_aside(victim: &mut Connection, body: usize, budget: Budget) {
        let mut buffer = AlignedVec::<16>::new();
        buffer.extend_from_slice(&vec![0u8; ENVELOPE_SIZE + body]);
        let incoming = Incoming {
            envelope: Envelope::default(),
            body: Body::Copied(buffer),
            fds: Vec::new(),
        };
        victim.set_aside.push(incoming, budget);
    }

    #[test]
    #[cfg_attr(miri, ignore)] // a connection needs a memfd
    fn set_aside_bytes_beyond_one_message_are_reported() {
        let config = ConnectionConfig::default().max_deferred_bytes(1000);
        let (mut victim, _peer) = Connection::pair(config).expect("pair");
        let baseline = attached_fds_held();
        let mut most = 0;
        let budget = victim.set_aside_budget();
        // One message beyond the budget is what the queue may hold.
        set_aside(&mut victim, 2000, budget);
        assert_eq!(check_budgets(&victim, baseline, &mut most), Ok(()));
        // Planted: a second one, as if a call had read on after overflowing.
        set_aside(&mut victim, 10, budget);
        let finding = check_budgets(&victim, baseline, &mut most).unwrap_err();
        assert_eq!(finding.check, Check::DeferredBytes, "{finding}");
    }

    #[test]
    #[cfg_attr(miri, ignore)] // memfds
    fn attached_descriptors_beyond_the_budget_are_reported() {
        let config = ConnectionConfig::default()
            .max_deferred_fds(1)
            .max_fds_per_message(1);
        let (mut victim, _peer) = Connection::pair(config).expect("pair");
        let baseline = attached_fds_held();
        let mut most = 0;
        // Descriptors are counted while the queue holds messages.
        let budget = victim.set_aside_budget();
        set_aside(&mut victim, 10, budget);
        let memfd = || {
            rustix::fs::memfd_create(
                super::super::fds::ATTACHED_MEMFD,
                rustix::fs::MemfdFlags::CLOEXEC,
            )
            .expect("memfd")
        };
        // The budget (1) and one message of 1 descriptor and a blob.
        let mut held: Vec<_> = (0..3).map(|_| memfd()).collect();
        assert_eq!(check_budgets(&victim, baseline, &mut most), Ok(()));
        // Planted: one descriptor more, as if the queue kept one too many.
        held.push(memfd());
        let finding = check_budgets(&victim, baseline, &mut most).unwrap_err();
        assert_eq!(finding.check, Check::DeferredFds, "{finding}");
        assert_eq!(most, 4);
    }
}
