//! The kernel baselines: a Unix stream socketpair (`uds`) and two pipes
//! (`pipe`), blocking reads and writes. The sender's buffer holds the
//! pattern; `write` copies it into the kernel (the one copy into the
//! transport); the receiver `read`s it out into its private buffer (the copy
//! out) and checks the stamped words there.

use crate::Result;
use crate::catalog::Transport;
use crate::endpoint::{Counters, Endpoint};
use crate::job::Job;
use crate::payload::{
    ACK_LEN, MIN_SIZED, Msg, PageAligned, Pattern, Sink, announced_len, stamp, stamp_sized,
    write_ack,
};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;

/// Either end: a descriptor to read and one to write (the same socket for
/// `uds`).
pub struct StreamEnd {
    reader: File,
    writer: File,
    message: PageAligned,
    sink: Sink,
    rx_len: usize,
    /// Messages of drawn sizes: each announces its length.
    sized: bool,
    counters: Counters,
}

impl StreamEnd {
    /// Creates the socketpair or the pipes; returns the peer's descriptors.
    pub fn create(job: &mut Job, rx_len: usize) -> Result<(StreamEnd, Vec<OwnedFd>)> {
        match job.transport {
            Transport::Uds => {
                let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
                let ours = OwnedFd::from(ours);
                let end = StreamEnd::new(job, ours.try_clone()?, ours, rx_len);
                Ok((end, vec![OwnedFd::from(theirs)]))
            }
            _ => {
                let flags = rustix::pipe::PipeFlags::CLOEXEC;
                let (to_peer_r, to_peer_w) = rustix::pipe::pipe_with(flags)?;
                let (from_peer_r, from_peer_w) = rustix::pipe::pipe_with(flags)?;
                let end = StreamEnd::new(job, from_peer_r, to_peer_w, rx_len);
                Ok((end, vec![to_peer_r, from_peer_w]))
            }
        }
    }

    /// Takes the descriptors the parent sent.
    pub fn open(job: &Job, fds: Vec<OwnedFd>, rx_len: usize) -> Result<StreamEnd> {
        let mut fds = fds.into_iter();
        let (Some(first), second) = (fds.next(), fds.next()) else {
            return Err("no descriptors with the job".into());
        };
        let (reader, writer) = match second {
            Some(second) => (first, second),
            None => (first.try_clone()?, first),
        };
        Ok(StreamEnd::new(job, reader, writer, rx_len))
    }

    fn new(job: &Job, reader: OwnedFd, writer: OwnedFd, rx_len: usize) -> StreamEnd {
        StreamEnd {
            reader: File::from(reader),
            writer: File::from(writer),
            message: {
                let mut message = PageAligned::new(job.size);
                message.copy_from_slice(Pattern::new(job.size).bytes());
                message
            },
            sink: Sink::new(rx_len),
            rx_len,
            sized: job.sizes.is_some(),
            counters: Counters::default(),
        }
    }
}

impl Endpoint for StreamEnd {
    fn send(&mut self, tag: u64) -> Result<()> {
        stamp(&mut self.message, tag);
        self.writer.write_all(&self.message)?;
        self.counters.sent += 1;
        Ok(())
    }

    fn send_sized(&mut self, tag: u64, len: usize) -> Result<()> {
        let message = self
            .message
            .get_mut(..len)
            .ok_or("a drawn size beyond the job's largest")?;
        stamp_sized(message, tag);
        self.writer.write_all(message)?;
        self.counters.sent += 1;
        Ok(())
    }

    fn send_ack(&mut self, count: u64, sum: u64) -> Result<()> {
        let mut ack = [0u8; ACK_LEN];
        write_ack(&mut ack, count, sum);
        self.writer.write_all(&ack)?;
        self.counters.sent += 1;
        Ok(())
    }

    fn recv(&mut self) -> Result<Msg> {
        let len = if self.sized {
            // The head first: it says how much follows (bounded before use).
            self.reader.read_exact(self.sink.space(MIN_SIZED)?)?;
            let len = announced_len(self.sink.space(MIN_SIZED)?, self.rx_len)?;
            self.reader
                .read_exact(&mut self.sink.space(len)?[MIN_SIZED..])?;
            len
        } else {
            self.reader.read_exact(self.sink.space(self.rx_len)?)?;
            self.rx_len
        };
        self.counters.received += 1;
        Ok(self.sink.inspect(len))
    }

    fn can_poll(&self) -> bool {
        true
    }

    /// Reads a message once its first bytes are there (`poll` with no
    /// wait); the rest follows, since the peer writes whole messages.
    fn try_recv(&mut self) -> Result<Option<Msg>> {
        let mut fds = [rustix::event::PollFd::new(
            &self.reader,
            rustix::event::PollFlags::IN,
        )];
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        if rustix::event::poll(&mut fds, Some(&zero))? == 0 {
            return Ok(None);
        }
        self.recv().map(Some)
    }

    fn counters(&self) -> Counters {
        self.counters
    }
}
