//! # nmsg: bidirectional event messaging between processes
//!
//! A Rust implementation of the Node.js "Node Messenger" (nmsg) protocol: both
//! sides `emit` events and handle them with `on`; arguments mix data and
//! callbacks in any position, and a callback invoked on the remote side sends
//! its arguments back, which may be callbacks again, to any depth.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), nmsg::Error> {
//! use nmsg::{args, Args, Callback, Router};
//!
//! let (client, server, _link) = nmsg::transport::memory::pair();
//! server.on("ping", |args: Args| -> Result<(), nmsg::Error> {
//!     // ping(data, done): answer through the callback, with a callback of our own.
//!     let inner = Callback::new(|(more,): (nmsg::RemoteCallback,)| {
//!         let _ = more.call(("deeper",));
//!     });
//!     args.callback(1)?.call(("pong", inner))
//! });
//! let (done, reply) = Callback::<(String, Callback<(Callback<(String,)>,)>)>::once();
//! client.emit("ping", args![42, done])?;
//! let (pong, inner) = reply.await?;
//! assert_eq!(pong, "pong");
//! let (deeper, last) = Callback::<(String,)>::once();
//! inner.call((deeper,))?;
//! assert_eq!(last.await?.0, "deeper");
//! # Ok(()) }
//! ```
//!
//! ## Layout
//!
//! - [`protocol`]: the wire protocol nmsg speaks, and where it departs from the original.
//! - [`framing`]: length-prefixed messages over a byte stream, with a size limit.
//! - [`codec`]: the [`Codec`] trait, [`MsgPack`] (default) and [`Json`].
//! - [`frame`]: the wire model (event, response, bulk) and its validation.
//! - [`args`](crate::Args) and [`callback`](crate::Callback): argument lists and callbacks.
//! - [`router`](crate::Router): the user's handle, a facade over parts with one job
//!   each: options, routes (handlers, the wildcard, the wiretap, the `Api`), sending
//!   (encoding, the `emit` family), the outbox (queue, bulks, bounds), pending
//!   callbacks (ids, deadlines, connection lost) and the transport's `Link`.
//! - [`transport`]: driving a router over a stream through its [`Link`](transport::Link)
//!   (the transport's handle, apart from the user's `Router`), with a connection's
//!   own [`ConnectionOptions`](transport::ConnectionOptions); TCP, Unix sockets, in-memory,
//!   and TLS (feature `tls`: `transport::tls`); what a transport verified about the
//!   peer ([`PeerIdentity`](transport::PeerIdentity): a TLS certificate, Unix credentials).
//! - [`Client`] and [`Server`]: connecting and accepting, backoff, the offline queue.
//!   Client, server and each connection share one lifecycle mechanism: a status to
//!   read or wait on, a stop request, and the end with its reason.
//! - [`SessionOptions`] (`session`): sessions, opt-in on both ends: a
//!   handshake, numbered messages kept until acknowledged, resume after a
//!   break, heartbeats.
//! - `auth`: authentication, opt-in on both ends: credentials on the hello
//!   ([`ClientBuilder::credentials`]), checked by the server's authenticator
//!   ([`ServerBuilder::authenticate`]) before it serves the connection.
//! - [`Value`]: the dynamic value type.
//! - [`observe`]: the tracing spans and the metrics nmsg records (one table).
//! - [`typed`] and [`events`]: the typed layer, `#[nmsg::events]` traits over the router.
//! - `src/bin/nmsg` (feature `cli`): the `nmsg` command line, a client and a
//!   server of this crate for poking a live peer (README.md, `nmsg --help`).

#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

mod args;
mod auth;
mod backoff;
mod callback;
mod client;
pub mod codec;
pub mod contract;
mod error;
pub mod frame;
pub mod framing;
mod handler;
mod jsnum;
mod lifecycle;
pub mod observe;
pub mod protocol;
mod router;
mod server;
mod session;
mod sync;
pub mod transport;
pub mod typed;
#[cfg(feature = "typescript")]
pub mod typescript;
mod value;

pub use args::{Arg, Args, FromArg, FromArgs, IntoArgs, OutArgs, ToArg};
pub use auth::{
    AuthIdentity, AuthRequest, Reject, DEFAULT_AUTH_TIMEOUT, DEFAULT_MAX_CREDENTIALS_SIZE,
};
pub use backoff::{Backoff, DEFAULT_JITTER};
pub use callback::{Callback, LocalCallback, RemoteCallback, Reply};
pub use client::{Client, ClientBuilder, ClientEvent};
pub use codec::{BulkForm, Codec, Json, MsgPack};
pub use error::{Disconnect, EncodeError, Error, FramingError, Panicked, ProtocolError};
pub use handler::{AsyncReturn, BoxError, HandlerReturn, SyncReturn};
pub use lifecycle::DEFAULT_STOP_TIMEOUT;
pub use router::{
    Api, Buffering, Flow, Router, RouterBuilder, DEFAULT_LATENCY_ALLOWANCE, DEFAULT_MAX_PENDING,
    DEFAULT_MAX_QUEUED_BYTES, DEFAULT_MAX_QUEUED_FRAMES, DEFAULT_MAX_RUNNING_HANDLERS, WILDCARD,
};
pub use server::{
    Server, ServerBuilder, ServerEvent, Socket, DEFAULT_MAX_BUFFERED_BYTES, DEFAULT_MAX_CONNECTIONS,
};
pub use session::{
    SessionOptions, Unacked, DEFAULT_ACK_COUNT, DEFAULT_ACK_DELAY, DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_HEARTBEAT_TIMEOUT, DEFAULT_HELLO_TIMEOUT, DEFAULT_HELLO_WAIT, DEFAULT_MAX_REPLAY_AGE,
    DEFAULT_MAX_REPLAY_BYTES, DEFAULT_MAX_REPLAY_MESSAGES, DEFAULT_SESSION_WINDOW,
};
pub use value::{from_value, to_value, Value};
pub use {nmsg_macros::events, typed::Peer, typed::Response};

/// The Rust examples of the repository's README, compiled (and those not marked
/// `no_run`, run) by `cargo test --doc`. Only doctests see this item, so the
/// crate's documentation is unchanged.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
