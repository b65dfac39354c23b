//! Other IPC crates from crates.io, measured side by side with ferry (cargo
//! feature `peers`), under the same copy rule.
//!
//! - **iceoryx2** publish-subscribe over `[u8]` slices, one service per
//!   direction: the sender loans a sample in shared memory and copies the
//!   pattern into it, the receiver copies the sample out into its private
//!   buffer. Both sides
//!   busy-poll (`receive` in a loop): iceoryx2's publish-subscribe has no
//!   blocking receive of its own (its event services would add a second
//!   mechanism), so it is compared with `floor-spin` and ferry in Spin mode.
//!   Overflow is off and the publisher retries until delivered, so a
//!   stream loses nothing.
//! - **ipc-channel** byte channels (`IpcBytesSender` / `IpcBytesReceiver`),
//!   set up through an `IpcOneShotServer`: Unix sockets underneath, a
//!   blocking `recv` that returns a fresh `Vec<u8>`.

use crate::Result;
use crate::endpoint::{Counters, Endpoint, OP_TIMEOUT};
use crate::job::Job;
use crate::payload::{
    ACK_LEN, Msg, PageAligned, Pattern, Sink, inspect, stamp, stamp_sized, write_ack,
};
use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::prelude::*;
use ipc_channel::ipc::{IpcBytesReceiver, IpcBytesSender, IpcOneShotServer, IpcSender};
use std::time::Instant;

fn error(context: &str, e: impl std::fmt::Debug) -> crate::BoxError {
    format!("{context}: {e:?}").into()
}

/// Either end of the iceoryx2 transport.
pub struct IceoryxEnd {
    // Ports first: fields drop in order, and ports go before their node.
    publisher: Publisher<ipc::Service, [u8], ()>,
    subscriber: Subscriber<ipc::Service, [u8], ()>,
    _services: [PortFactory<ipc::Service, [u8], ()>; 2],
    _node: Node<ipc::Service>,
    pattern: Pattern,
    sink: Sink,
    rx_len: usize,
    sized: bool,
    counters: Counters,
}

/// The concrete port factory of a publish-subscribe service.
type PortFactory<S, P, H> =
    iceoryx2::service::port_factory::publish_subscribe::PortFactory<S, P, H>;

impl IceoryxEnd {
    /// Opens (the parent: creates) both services and this end's ports.
    pub fn open(job: &Job, parent: bool, rx_len: usize) -> Result<IceoryxEnd> {
        set_log_level(LogLevel::Error);
        let node = NodeBuilder::new()
            .create::<ipc::Service>()
            .map_err(|e| error("iceoryx2 node", e))?;
        // Enough samples in flight for a stream to keep both sides busy.
        let depth = (job.ring / job.size.max(ACK_LEN)).clamp(2, 256);
        let service = |direction: &str| -> Result<PortFactory<ipc::Service, [u8], ()>> {
            let name = format!("{}/{direction}", job.name);
            let name = ServiceName::new(&name).map_err(|e| error("iceoryx2 service name", e))?;
            node.service_builder(&name)
                .publish_subscribe::<[u8]>()
                .enable_safe_overflow(false)
                .history_size(0)
                .subscriber_max_buffer_size(depth)
                .max_publishers(1)
                .max_subscribers(1)
                .open_or_create()
                .map_err(|e| error("iceoryx2 service", e))
        };
        let to_peer = service("to-peer")?;
        let to_parent = service("to-parent")?;
        let (outgoing, incoming) = if parent {
            (&to_peer, &to_parent)
        } else {
            (&to_parent, &to_peer)
        };
        let publisher = outgoing
            .publisher_builder()
            .initial_max_slice_len(job.size.max(ACK_LEN))
            .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
            .create()
            .map_err(|e| error("iceoryx2 publisher", e))?;
        let subscriber = incoming
            .subscriber_builder()
            .buffer_size(depth)
            .create()
            .map_err(|e| error("iceoryx2 subscriber", e))?;
        Ok(IceoryxEnd {
            publisher,
            subscriber,
            _services: [to_peer, to_parent],
            _node: node,
            pattern: Pattern::new(job.size),
            sink: Sink::new(rx_len),
            rx_len,
            sized: job.sizes.is_some(),
            counters: Counters::default(),
        })
    }
}

impl Endpoint for IceoryxEnd {
    fn send(&mut self, tag: u64) -> Result<()> {
        let sample = self
            .publisher
            .loan_slice_uninit(self.pattern.len())
            .map_err(|e| error("iceoryx2 loan", e))?;
        let mut sample = sample.write_from_slice(self.pattern.bytes());
        stamp(sample.payload_mut(), tag);
        sample.send().map_err(|e| error("iceoryx2 send", e))?;
        self.counters.sent += 1;
        Ok(())
    }

    fn send_sized(&mut self, tag: u64, len: usize) -> Result<()> {
        let bytes = self
            .pattern
            .bytes()
            .get(..len)
            .ok_or("a drawn size beyond the job's largest")?;
        let sample = self
            .publisher
            .loan_slice_uninit(len)
            .map_err(|e| error("iceoryx2 loan", e))?;
        let mut sample = sample.write_from_slice(bytes);
        stamp_sized(sample.payload_mut(), tag);
        sample.send().map_err(|e| error("iceoryx2 send", e))?;
        self.counters.sent += 1;
        Ok(())
    }

    fn send_ack(&mut self, count: u64, sum: u64) -> Result<()> {
        let mut ack = [0u8; ACK_LEN];
        write_ack(&mut ack, count, sum);
        let sample = self
            .publisher
            .loan_slice_uninit(ACK_LEN)
            .map_err(|e| error("iceoryx2 loan", e))?;
        sample
            .write_from_slice(&ack)
            .send()
            .map_err(|e| error("iceoryx2 send", e))?;
        self.counters.sent += 1;
        Ok(())
    }

    fn recv(&mut self) -> Result<Msg> {
        let mut spins = 0u32;
        let mut deadline = None;
        loop {
            if let Some(msg) = self.try_recv()? {
                return Ok(msg);
            }
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins % (1 << 14) == 0 {
                let now = Instant::now();
                if now >= *deadline.get_or_insert(now + OP_TIMEOUT) {
                    return Err("iceoryx2: nothing received for 30 s".into());
                }
            }
        }
    }

    fn can_poll(&self) -> bool {
        true
    }

    fn try_recv(&mut self) -> Result<Option<Msg>> {
        let received = self
            .subscriber
            .receive()
            .map_err(|e| error("iceoryx2 receive", e))?;
        let Some(sample) = received else {
            return Ok(None);
        };
        let msg = self.sink.receive(sample.payload())?;
        if msg.len != self.rx_len && !self.sized {
            return Err(format!("sample of {} B, expected {}", msg.len, self.rx_len).into());
        }
        self.counters.received += 1;
        Ok(Some(msg))
    }

    fn counters(&self) -> Counters {
        self.counters
    }
}

/// The channels each side ends up with: a sender and a receiver.
type Pair = (IpcBytesSender, IpcBytesReceiver);

/// The parent's ipc-channel end until the peer connects.
pub struct IpcPending {
    server: IpcOneShotServer<Pair>,
    job: Job,
    rx_len: usize,
}

impl IpcPending {
    /// Creates the one-shot server; its name travels in `job.meta`.
    pub fn create(job: &mut Job, rx_len: usize) -> Result<IpcPending> {
        let (server, name) = IpcOneShotServer::<Pair>::new()?;
        job.meta = name.into_bytes();
        Ok(IpcPending {
            server,
            job: job.clone(),
            rx_len,
        })
    }

    /// Waits for the peer, which sends the parent's pair of channels.
    pub fn accept(self) -> Result<IpcEnd> {
        let (_, (sender, receiver)) = self
            .server
            .accept()
            .map_err(|e| error("ipc-channel accept", e))?;
        Ok(IpcEnd::new(&self.job, sender, receiver, self.rx_len))
    }
}

/// Either end of the ipc-channel transport.
pub struct IpcEnd {
    sender: IpcBytesSender,
    receiver: IpcBytesReceiver,
    message: PageAligned,
    rx_len: usize,
    sized: bool,
    counters: Counters,
}

impl IpcEnd {
    fn new(job: &Job, sender: IpcBytesSender, receiver: IpcBytesReceiver, rx_len: usize) -> IpcEnd {
        IpcEnd {
            sender,
            receiver,
            message: {
                let mut message = PageAligned::new(job.size);
                message.copy_from_slice(Pattern::new(job.size).bytes());
                message
            },
            rx_len,
            sized: job.sizes.is_some(),
            counters: Counters::default(),
        }
    }

    /// The peer's side: connects to the parent's one-shot server and hands
    /// it its pair of channels.
    pub fn connect(job: &Job, rx_len: usize) -> Result<IpcEnd> {
        let name = String::from_utf8(job.meta.clone())?;
        let bootstrap = IpcSender::<Pair>::connect(name)?;
        let (to_peer, from_parent) = ipc_channel::ipc::bytes_channel()?;
        let (to_parent, from_peer) = ipc_channel::ipc::bytes_channel()?;
        bootstrap
            .send((to_peer, from_peer))
            .map_err(|e| error("ipc-channel bootstrap", e))?;
        Ok(IpcEnd::new(job, to_parent, from_parent, rx_len))
    }
}

impl IpcEnd {
    /// Inspects a received message (`recv` returns a fresh vector: the copy
    /// out into a private buffer is already made) and counts it.
    fn check(&mut self, bytes: &[u8]) -> Result<Msg> {
        let msg = inspect(bytes);
        if (msg.len != self.rx_len && !self.sized) || msg.len > self.rx_len {
            return Err(format!("message of {} B, expected {}", msg.len, self.rx_len).into());
        }
        self.counters.received += 1;
        Ok(msg)
    }
}

impl Endpoint for IpcEnd {
    fn send(&mut self, tag: u64) -> Result<()> {
        stamp(&mut self.message, tag);
        self.sender.send(&self.message)?;
        self.counters.sent += 1;
        Ok(())
    }

    fn send_sized(&mut self, tag: u64, len: usize) -> Result<()> {
        let message = self
            .message
            .get_mut(..len)
            .ok_or("a drawn size beyond the job's largest")?;
        stamp_sized(message, tag);
        self.sender.send(message)?;
        self.counters.sent += 1;
        Ok(())
    }

    fn send_ack(&mut self, count: u64, sum: u64) -> Result<()> {
        let mut ack = [0u8; ACK_LEN];
        write_ack(&mut ack, count, sum);
        self.sender.send(&ack)?;
        self.counters.sent += 1;
        Ok(())
    }

    fn recv(&mut self) -> Result<Msg> {
        let bytes = self
            .receiver
            .recv()
            .map_err(|e| error("ipc-channel recv", e))?;
        self.check(&bytes)
    }

    fn can_poll(&self) -> bool {
        true
    }

    fn try_recv(&mut self) -> Result<Option<Msg>> {
        match self.receiver.try_recv() {
            Ok(bytes) => self.check(&bytes).map(Some),
            Err(ipc_channel::TryRecvError::Empty) => Ok(None),
            Err(e) => Err(error("ipc-channel try_recv", e)),
        }
    }

    fn counters(&self) -> Counters {
        self.counters
    }
}
