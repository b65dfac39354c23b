//! What a handler can do with the connection its message came from, through
//! [`Context`]: the typed operations of [`Connection`], forwarded, and none
//! that could move or replace the connection.

use crate::call::Reply;
use crate::connection::{BoundReceiver, Context};
use crate::error::{CallError, DispatchError, SendError, Violation};
use crate::message::{Archivable, Message, Receiver, Remote, Request};
use crate::pending::RequestId;
use crate::reply_handle::ReplyHandle;
use crate::wire::Envelope;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Duration;

impl Context<'_> {
    /// [`Connection::send`](crate::Connection::send).
    pub fn send<M: Message>(
        &mut self,
        to: Remote<M::Receiver>,
        message: &M,
    ) -> Result<(), SendError> {
        self.connection.send(to, message)
    }

    /// [`Connection::try_send`](crate::Connection::try_send).
    pub fn try_send<M: Message>(
        &mut self,
        to: Remote<M::Receiver>,
        message: &M,
    ) -> Result<(), SendError> {
        self.connection.try_send(to, message)
    }

    /// [`Connection::send_with_fds`](crate::Connection::send_with_fds).
    pub fn send_with_fds<M: Message>(
        &mut self,
        to: Remote<M::Receiver>,
        message: &M,
        fds: &[BorrowedFd<'_>],
        timeout: Option<Duration>,
    ) -> Result<(), SendError> {
        self.connection.send_with_fds(to, message, fds, timeout)
    }

    /// [`Connection::send_with_reply`](crate::Connection::send_with_reply).
    pub fn send_with_reply<M: Request>(
        &mut self,
        to: Remote<M::Receiver>,
        message: &M,
        on_reply: impl FnOnce(
            &mut Context<'_>,
            Result<&<M::Reply as rkyv::Archive>::Archived, CallError>,
        ) + Send
        + 'static,
    ) -> Result<(), SendError> {
        self.connection.send_with_reply(to, message, on_reply)
    }

    /// [`Connection::send_cancellable`](crate::Connection::send_cancellable).
    pub fn send_cancellable<M: Request>(
        &mut self,
        to: Remote<M::Receiver>,
        message: &M,
        on_reply: impl FnOnce(
            &mut Context<'_>,
            Result<&<M::Reply as rkyv::Archive>::Archived, CallError>,
        ) + Send
        + 'static,
    ) -> Result<RequestId, SendError> {
        self.connection.send_cancellable(to, message, on_reply)
    }

    /// [`Connection::cancel`](crate::Connection::cancel).
    pub fn cancel(&mut self, request: RequestId) -> Result<bool, SendError> {
        self.connection.cancel(request)
    }

    /// [`Connection::send_sync`](crate::Connection::send_sync): a synchronous call from inside a handler
    /// (the peer may call back meanwhile; see `@allowed_while_waiting`).
    pub fn send_sync<M: Request>(
        &mut self,
        to: Remote<M::Receiver>,
        message: &M,
        timeout: Duration,
    ) -> Result<Reply<M::Reply>, CallError> {
        self.connection.send_sync(to, message, timeout)
    }

    /// [`Connection::dispatch`](crate::Connection::dispatch).
    pub fn dispatch(&mut self, timeout: Option<Duration>) -> Result<usize, DispatchError> {
        self.connection.dispatch(timeout)
    }

    /// [`Connection::try_dispatch`](crate::Connection::try_dispatch).
    pub fn try_dispatch(&mut self) -> Result<usize, DispatchError> {
        self.connection.try_dispatch()
    }

    /// [`Connection::take_fds`](crate::Connection::take_fds): the descriptors that came with the message
    /// being handled (those not taken are closed when the handler returns).
    pub fn take_fds(&mut self) -> Vec<OwnedFd> {
        self.connection.take_fds()
    }

    /// [`Connection::register`](crate::Connection::register).
    pub fn register(&mut self, destination: u64, receiver: BoundReceiver) -> bool {
        self.connection.register(destination, receiver)
    }

    /// [`Connection::unregister`](crate::Connection::unregister).
    pub fn unregister<R: Receiver>(&mut self, destination: u64) -> bool {
        self.connection.unregister::<R>(destination)
    }

    /// [`Connection::protocol_violation`](crate::Connection::protocol_violation). Generated dispatch code calls this.
    #[doc(hidden)]
    pub fn protocol_violation(&mut self, violation: Violation) -> DispatchError {
        self.connection.protocol_violation(violation)
    }

    /// [`Connection::reply_handle`](crate::Connection::reply_handle). Generated dispatch code calls this.
    #[doc(hidden)]
    pub fn reply_handle<T: Archivable>(
        &mut self,
        request: &Envelope,
    ) -> Result<Option<ReplyHandle<T>>, DispatchError> {
        self.connection.reply_handle(request)
    }

    /// [`Connection::send_reply`](crate::Connection::send_reply). Generated dispatch code calls this.
    #[doc(hidden)]
    pub fn send_reply<T: Archivable>(
        &mut self,
        request: &Envelope,
        reply: &T,
    ) -> Result<(), DispatchError> {
        self.connection.send_reply(request, reply)
    }
}
