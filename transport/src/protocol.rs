//! `protocol!`: a receiver and its messages, declared once.

/// Declares a receiver and its messages, like a WebKit `.messages.in` file.
///
/// It generates: a marker type for the receiver (implementing
/// [`Receiver`](crate::Receiver), with an id and a schema hash of the whole
/// declaration); one struct per message and per reply (rkyv-archivable,
/// implementing [`Message`](crate::Message) and [`Request`](crate::Request));
/// a handler trait with one method per message; and
/// `Receiver::handler(impl Handler)`, whose result is registered on a
/// connection and dispatches each message to its method after validating it.
/// A message with a reply has its method return the reply, which is sent
/// back to the caller. Each method gets the [`Context`](crate::Context) of
/// the connection the message came from (to send, call back, take the
/// message's descriptors), not the connection itself. Methods take `&self` so that a message may re-enter
/// a receiver whose handler is further up the stack (keep state in a
/// `Cell`/`RefCell`, and do not hold a `RefCell` borrow across a synchronous
/// call).
///
/// Attributes before `fn`: `@allowed_while_waiting` lets the receiver
/// dispatch the message while it waits for a synchronous reply;
/// `@reply_later` (on a message with a reply) gives its method a
/// [`ReplyHandle`](crate::ReplyHandle) instead of having it return the
/// reply: the handler may answer after it returns, from any thread (see
/// below).
///
/// A message's doc comments come first, then its `#[cfg(...)]`s, which
/// apply to everything the message makes: its struct, its reply's struct,
/// its handler method, its dispatch and its part of the receiver's schema
/// (WebKit guards messages by platform this way). A message compiled out is
/// absent, as if never declared.
///
/// With ferry-transport's `fuzzing` feature, every message and reply also
/// implements [`arbitrary::Arbitrary`](https://docs.rs/arbitrary) (each
/// field's type must implement it too), and the receiver implements
/// `ferry_transport::fuzzing::Protocol`, which the fuzzing checkers use to
/// know its messages.
///
/// ```
/// use ferry_transport::{Connection, ConnectionConfig, Context, Remote};
/// use std::cell::RefCell;
/// use std::collections::HashMap;
/// use std::time::Duration;
///
/// ferry_transport::protocol! {
///     /// A tiny key-value store.
///     pub receiver Store handled_by StoreHandler {
///         /// Stores a value.
///         fn put => Put { key: String, value: u64 };
///         /// Reads one back.
///         fn get => Get { key: String } -> GetReply { value: Option<u64> };
///     }
/// }
///
/// // Handlers take `&self`: a handler's own synchronous call may bring
/// // another message for the same receiver, dispatched re-entrantly.
/// #[derive(Default)]
/// struct Map(RefCell<HashMap<String, u64>>);
/// impl StoreHandler for Map {
///     fn put(&self, _: &mut Context, message: &ArchivedPut) {
///         self.0.borrow_mut().insert(message.key.to_string(), message.value.to_native());
///     }
///     fn get(&self, _: &mut Context, message: &ArchivedGet) -> GetReply {
///         GetReply { value: self.0.borrow().get(message.key.as_str()).copied() }
///     }
/// }
///
/// let config = ConnectionConfig::default().schema(ferry_transport::schema_of(&[
///     <Store as ferry_transport::Receiver>::SCHEMA,
/// ]));
/// let (mut client, mut server) = Connection::pair(config)?;
/// server.register(1, Store::handler(Map::default()));
/// let store = Remote::<Store>::new(1);
/// client.send(store, &Put { key: "answer".into(), value: 42 })?;
///
/// // Serve on another thread while this one calls synchronously.
/// let server = std::thread::spawn(move || {
///     while server.dispatch(Some(Duration::from_secs(5))).unwrap_or(0) > 0 {}
/// });
/// let reply = client.send_sync(store, &Get { key: "answer".into() }, Duration::from_secs(5))?;
/// assert_eq!(reply.value.as_ref().map(|v| v.to_native()), Some(42));
/// drop(client);
/// server.join().unwrap();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// A handler that answers later, from another thread, takes the reply's
/// handle with it (WebKit's completion handler). The connection sends the
/// answer at its next `dispatch`; a `dispatch` waiting then is woken for
/// it. Dropping the handle unanswered answers with an error
/// ([`CallError::NoReply`](crate::CallError::NoReply)).
///
/// ```
/// use ferry_transport::{CallError, Connection, ConnectionConfig, Context, NoReply};
/// use ferry_transport::{Remote, ReplyHandle};
/// use std::time::Duration;
///
/// ferry_transport::protocol! {
///     pub receiver Cookies handled_by CookiesHandler {
///         /// Read on the cookie store's own thread.
///         @reply_later fn get => Get { dropped: bool } -> Header { value: String };
///     }
/// }
///
/// struct Store;
/// impl CookiesHandler for Store {
///     fn get(&self, _: &mut Context, message: &ArchivedGet, reply: ReplyHandle<Header>) {
///         let dropped = message.dropped;
///         std::thread::spawn(move || {
///             if !dropped {
///                 reply.reply(&Header { value: "a=1".into() });
///             } // else: dropped unanswered, the caller gets an error reply
///         });
///     }
/// }
///
/// let config = ConnectionConfig::default().schema(ferry_transport::schema_of(&[
///     <Cookies as ferry_transport::Receiver>::SCHEMA,
/// ]));
/// let (mut client, mut server) = Connection::pair(config)?;
/// server.register(0, Cookies::handler(Store));
/// let server = std::thread::spawn(move || {
///     while server.dispatch(Some(Duration::from_secs(5))).unwrap_or(0) > 0 {}
/// });
/// let cookies = Remote::<Cookies>::new(0);
/// let header = client.send_sync(cookies, &Get { dropped: false }, Duration::from_secs(5))?;
/// assert_eq!(header.value.as_str(), "a=1");
/// let refused = client.send_sync(cookies, &Get { dropped: true }, Duration::from_secs(5));
/// assert_eq!(refused.err(), Some(CallError::NoReply(NoReply::Dropped)));
/// drop(client);
/// server.join().unwrap();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// A message under a `#[cfg]` that does not hold does not exist: its
/// receiver's schema is that of the declaration without it, so a build
/// with it and a build without it refuse each other, and two builds
/// without it agree.
///
/// ```
/// mod with_dim {
///     ferry_transport::protocol! {
///         pub receiver Lamp handled_by LampHandler {
///             fn on => On {};
///             /// Only where dimming exists.
///             #[cfg(any())]
///             fn dim => Dim { level: u8 };
///         }
///     }
/// }
/// mod without_dim {
///     ferry_transport::protocol! {
///         pub receiver Lamp handled_by LampHandler { fn on => On {}; }
///     }
/// }
/// use ferry_transport::Receiver;
/// assert_eq!(
///     <with_dim::Lamp as Receiver>::SCHEMA,
///     <without_dim::Lamp as Receiver>::SCHEMA
/// );
/// // Its handler has no method for it either: this is the whole handler.
/// struct Switch;
/// impl with_dim::LampHandler for Switch {
///     fn on(&self, _: &mut ferry_transport::Context, _: &with_dim::ArchivedOn) {}
/// }
/// ```
///
/// ```compile_fail,E0422
/// ferry_transport::protocol! {
///     pub receiver Lamp handled_by LampHandler {
///         fn on => On {};
///         #[cfg(any())]
///         fn dim => Dim { level: u8 };
///     }
/// }
/// let _ = Dim { level: 1 }; // compiled out: the type does not exist
/// ```
///
/// Sending a message to a receiver that does not declare it does not compile:
///
/// ```compile_fail
/// # use ferry_transport::{Connection, ConnectionConfig, Remote};
/// ferry_transport::protocol! {
///     pub receiver Lamp handled_by LampHandler { fn on => On {}; }
/// }
/// ferry_transport::protocol! {
///     pub receiver Door handled_by DoorHandler { fn open => Open {}; }
/// }
/// let (mut a, _b) = Connection::pair(ConnectionConfig::default()).unwrap();
/// a.send(Remote::<Lamp>::new(1), &Open {}).unwrap(); // Open is a Door message
/// ```
#[macro_export]
macro_rules! protocol {
    (
        $(#[$receiver_meta:meta])*
        $vis:vis receiver $Receiver:ident handled_by $Handler:ident {
            $(
                $(#[doc = $doc:expr])*
                $(#[cfg($($cfg:tt)*)])*
                $(@$attribute:ident)*
                fn $method:ident => $Message:ident { $($field:ident : $field_ty:ty),* $(,)? }
                $( -> $Reply:ident { $($reply_field:ident : $reply_ty:ty),* $(,)? } )?
                ;
            )*
        }
    ) => {
        $(#[$receiver_meta])*
        #[derive(Debug, Clone, Copy)]
        $vis struct $Receiver;

        impl $crate::Receiver for $Receiver {
            const NAME: &'static str = stringify!($Receiver);
            const ID: u32 = $crate::hash32(stringify!($Receiver));
            // The receiver's name, then each message compiled in, as
            // declared: a message left out by its `#[cfg]` counts as never
            // declared.
            const SCHEMA: u32 = {
                let mut hash = $crate::hash32(stringify!($Receiver));
                $(
                    $(#[cfg($($cfg)*)])*
                    {
                        hash = $crate::hash32_continue(hash, stringify!(
                            $(@$attribute)* $Message { $($field : $field_ty),* }
                            $( -> $Reply { $($reply_field : $reply_ty),* } )? ;
                        ));
                    }
                )*
                hash
            };

            fn allowed_while_waiting(message: u32) -> ::core::option::Option<bool> {
                $(
                    $(#[cfg($($cfg)*)])*
                    if message == <$Message as $crate::Message>::ID {
                        return ::core::option::Option::Some(
                            <$Message as $crate::Message>::ALLOWED_WHILE_WAITING,
                        );
                    }
                )*
                ::core::option::Option::None
            }
        }

        const _: () = $crate::assert_distinct_ids(&[$($crate::hash32(stringify!($Message))),*]);

        $(
            $(#[doc = $doc])*
            $(#[cfg($($cfg)*)])*
            #[derive(Debug, Clone, PartialEq, $crate::rkyv::Archive, $crate::rkyv::Serialize, $crate::rkyv::Deserialize)]
            #[rkyv(crate = $crate::rkyv)]
            $vis struct $Message {
                $(
                    #[allow(missing_docs)]
                    pub $field: $field_ty,
                )*
            }

            $(#[cfg($($cfg)*)])*
            impl $crate::Message for $Message {
                type Receiver = $Receiver;
                const NAME: &'static str = stringify!($Message);
                const ID: u32 = $crate::hash32(stringify!($Message));
                const ALLOWED_WHILE_WAITING: bool = $crate::__protocol_allowed!($($attribute)*);
            }

            $crate::__protocol_reply! {
                [$(#[cfg($($cfg)*)])*] $vis $Message
                $( $Reply { $($reply_field : $reply_ty),* } )?
            }
        )*

        // Under ferry-transport's `fuzzing` feature: `Arbitrary` for every
        // message and reply, and the receiver's message list for the
        // checkers of `ferry_transport::fuzzing` (nothing otherwise).
        $crate::__protocol_fuzzing! {
            $Receiver {
                $(
                    [$(#[cfg($($cfg)*)])*] $Message { $($field : $field_ty),* }
                    $( -> $Reply { $($reply_field : $reply_ty),* } )? ;
                )*
            }
        }

        #[doc = concat!("Handles the messages of [`", stringify!($Receiver), "`].")]
        $vis trait $Handler {
            $(
                $crate::__protocol_method! {
                    @scan [$($attribute)*] now
                    [$(#[doc = $doc])* $(#[cfg($($cfg)*)])*] $method $Message $($Reply)?
                }
            )*
        }

        impl $Receiver {
            /// Wraps `handler` for [`Connection::register`]($crate::Connection::register).
            $vis fn handler<H: $Handler + Send + 'static>(handler: H) -> $crate::BoundReceiver {
                $crate::BoundReceiver::new::<$Receiver>(move |context, incoming| {
                    $Receiver::handle_incoming(&handler, context, incoming)
                })
            }

            /// Hands a received frame to `handler` if it is a message of this
            /// receiver: pull-style receiving, with a handler that may borrow
            /// from the caller (no `Send`, no `'static`). Returns whether it
            /// was one; an invalid message is a violation, as in `dispatch`.
            $vis fn handle<H: $Handler + ?Sized>(
                handler: &H,
                received: &mut $crate::Received<'_>,
            ) -> ::core::result::Result<bool, $crate::DispatchError> {
                received.handle_as::<$Receiver>(|context, incoming| {
                    $Receiver::handle_incoming(handler, context, incoming)
                })
            }

            #[doc(hidden)]
            $vis fn handle_incoming<H: $Handler + ?Sized>(
                handler: &H,
                connection: &mut $crate::Context<'_>,
                incoming: &$crate::Incoming,
            ) -> ::core::result::Result<(), $crate::DispatchError> {
                match incoming.envelope().message {
                    $(
                        $(#[cfg($($cfg)*)])*
                        id if id == <$Message as $crate::Message>::ID => {
                            let message = match incoming.access::<$Message>(stringify!($Message)) {
                                Ok(message) => message,
                                Err(violation) => return Err(connection.protocol_violation(violation)),
                            };
                            $crate::__protocol_call!(
                                @scan [$($attribute)*] now
                                handler, connection, incoming, message, $method $($Reply)?
                            )
                        }
                    )*
                    other => Err(connection.protocol_violation($crate::Violation::UnknownMessage {
                        receiver: stringify!($Receiver),
                        message: other,
                    })),
                }
            }
        }
    };
}

/// A message's reply struct and its `Request` impl, under the message's
/// `#[cfg]`s (nothing for a message without a reply).
#[doc(hidden)]
#[macro_export]
macro_rules! __protocol_reply {
    ([$($cfg:tt)*] $vis:vis $Message:ident) => {};
    (
        [$($cfg:tt)*] $vis:vis $Message:ident
        $Reply:ident { $($reply_field:ident : $reply_ty:ty),* }
    ) => {
        #[doc = concat!("The reply to [`", stringify!($Message), "`].")]
        $($cfg)*
        #[derive(Debug, Clone, PartialEq, $crate::rkyv::Archive, $crate::rkyv::Serialize, $crate::rkyv::Deserialize)]
        #[rkyv(crate = $crate::rkyv)]
        $vis struct $Reply {
            $(
                #[allow(missing_docs)]
                pub $reply_field: $reply_ty,
            )*
        }

        $($cfg)*
        impl $crate::Request for $Message {
            type Reply = $Reply;
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __protocol_allowed {
    () => {
        false
    };
    (allowed_while_waiting $($rest:ident)*) => {
        $crate::__protocol_allowed!($($rest)*) || true
    };
    (reply_later $($rest:ident)*) => {
        $crate::__protocol_allowed!($($rest)*)
    };
    ($other:ident $($rest:ident)*) => {
        compile_error!(concat!("unknown message attribute @", stringify!($other)))
    };
}

/// Declares a handler method: `now` (returns its reply) or `later` (takes
/// a reply handle), found by scanning the message's attributes.
#[doc(hidden)]
#[macro_export]
macro_rules! __protocol_method {
    (@scan [] $when:ident $($rest:tt)*) => {
        $crate::__protocol_method! { $when $($rest)* }
    };
    (@scan [reply_later $($more:ident)*] $when:ident $($rest:tt)*) => {
        $crate::__protocol_method! { @scan [$($more)*] later $($rest)* }
    };
    (@scan [$other:ident $($more:ident)*] $when:ident $($rest:tt)*) => {
        $crate::__protocol_method! { @scan [$($more)*] $when $($rest)* }
    };
    (now [$($meta:tt)*] $method:ident $Message:ident) => {
        $($meta)*
        fn $method(
            &self,
            connection: &mut $crate::Context<'_>,
            message: &<$Message as $crate::rkyv::Archive>::Archived,
        );
    };
    (now [$($meta:tt)*] $method:ident $Message:ident $Reply:ident) => {
        $($meta)*
        fn $method(
            &self,
            connection: &mut $crate::Context<'_>,
            message: &<$Message as $crate::rkyv::Archive>::Archived,
        ) -> $Reply;
    };
    (later [$($meta:tt)*] $method:ident $Message:ident $Reply:ident) => {
        $($meta)*
        fn $method(
            &self,
            connection: &mut $crate::Context<'_>,
            message: &<$Message as $crate::rkyv::Archive>::Archived,
            reply: $crate::ReplyHandle<$Reply>,
        );
    };
    (later [$($meta:tt)*] $method:ident $Message:ident) => {
        compile_error!(concat!("@reply_later on ", stringify!($Message), ", which has no reply"));
    };
}

/// Calls a handler method (see `__protocol_method`) and sends its reply.
#[doc(hidden)]
#[macro_export]
macro_rules! __protocol_call {
    (@scan [] $when:ident $($rest:tt)*) => {
        $crate::__protocol_call! { $when $($rest)* }
    };
    (@scan [reply_later $($more:ident)*] $when:ident $($rest:tt)*) => {
        $crate::__protocol_call! { @scan [$($more)*] later $($rest)* }
    };
    (@scan [$other:ident $($more:ident)*] $when:ident $($rest:tt)*) => {
        $crate::__protocol_call! { @scan [$($more)*] $when $($rest)* }
    };
    (now $handler:ident, $connection:ident, $incoming:ident, $message:ident, $method:ident) => {{
        $handler.$method($connection, $message);
        Ok(())
    }};
    (now $handler:ident, $connection:ident, $incoming:ident, $message:ident, $method:ident $Reply:ident) => {{
        let reply: $Reply = $handler.$method($connection, $message);
        $connection.send_reply(&*$incoming.envelope(), &reply)
    }};
    (later $handler:ident, $connection:ident, $incoming:ident, $message:ident, $method:ident $Reply:ident) => {{
        match $connection.reply_handle::<$Reply>(&*$incoming.envelope())? {
            ::core::option::Option::Some(reply) => $handler.$method($connection, $message, reply),
            // Refused at the bound: the requester got an error reply.
            ::core::option::Option::None => {}
        }
        Ok(())
    }};
    (later $($rest:tt)*) => {{
        // The method's declaration already failed to compile.
        Ok(())
    }};
}

/// `protocol!`'s fuzzing support, chosen by ferry-transport's own `fuzzing`
/// feature: a `#[cfg_attr(feature = ...)]` emitted by `protocol!` would be
/// evaluated in the crate that calls it, whose features are not ours.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
#[macro_export]
macro_rules! __protocol_fuzzing {
    (
        $Receiver:ident {
            $(
                $cfgs:tt $Message:ident { $($field:ident : $field_ty:ty),* }
                $( -> $Reply:ident { $($reply_field:ident : $reply_ty:ty),* } )? ;
            )*
        }
    ) => {
        // A message's `#[cfg]`s (in `$cfgs`) apply to its impls and to its
        // entry in the list, as to everything else `protocol!` writes for it.
        $(
            $crate::__protocol_arbitrary! { $cfgs $Message { $($field : $field_ty),* } }
            $( $crate::__protocol_arbitrary! { $cfgs $Reply { $($reply_field : $reply_ty),* } } )?
        )*

        impl $crate::fuzzing::Protocol for $Receiver {
            fn visit<V: $crate::fuzzing::Visitor>(visitor: &mut V) {
                $( $crate::__protocol_visit! { visitor, $cfgs $Message $($Reply)? } )*
            }
        }
    };
}

/// Without the `fuzzing` feature, `protocol!` generates nothing for fuzzing.
#[cfg(not(feature = "fuzzing"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __protocol_fuzzing {
    ($($tokens:tt)*) => {};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __protocol_arbitrary {
    ([$(#[$cfg:meta])*] $Type:ident { $($field:ident : $field_ty:ty),* }) => {
        $(#[$cfg])*
        impl<'a> $crate::fuzzing::arbitrary::Arbitrary<'a> for $Type {
            #[allow(unused_variables)]
            fn arbitrary(
                u: &mut $crate::fuzzing::arbitrary::Unstructured<'a>,
            ) -> $crate::fuzzing::arbitrary::Result<Self> {
                ::core::result::Result::Ok($Type {
                    $( $field: $crate::fuzzing::arbitrary::Arbitrary::arbitrary(u)?, )*
                })
            }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __protocol_visit {
    ($visitor:ident, [$(#[$cfg:meta])*] $Message:ident) => {
        $(#[$cfg])*
        let () = $visitor.message::<$Message>();
    };
    ($visitor:ident, [$(#[$cfg:meta])*] $Message:ident $Reply:ident) => {
        $(#[$cfg])*
        let () = $visitor.request::<$Message>();
    };
}
