//! The typed layer: what the traits of [`#[nmsg::events]`](crate::events) stand on.
//!
//! `#[nmsg::events]` on a trait generates a typed emitter (`<Trait>Client`) and a
//! handler adapter (`<Trait>Api`). Both lower to the frames dynamic
//! [`Router::emit`] and [`Router::on`] produce, so a typed Rust peer, a dynamic
//! Rust peer and a JavaScript peer talk to each other. This module holds the
//! types the generated code uses:
//!
//! - [`Response`]: the future a typed call returns, of the peer's reply.
//! - [`Peer`]: a handler parameter that is not on the wire, the router the event
//!   arrived on, to answer that same peer.
//! - [`WireArg`]: the bound every argument and reply type meets.
//! - [`HandlerTable`]: where handlers are registered, a [`Router`] or an [`Api`].
//!
//! # How each method shape lowers to frames
//!
//! | trait method | emitter (`<Trait>Client`) | frame | handler (`<Trait>Api`) |
//! |---|---|---|---|
//! | `fn note(&self, a: A, b: B)` | `note(a, b) -> Result<(), Error>`, once queued | `{e: "note", a: [a, b]}` | runs `note(a, b)`; no answer |
//! | `async fn get(&self, a: A) -> T` | `get(a) -> Response<T>` | `{e: "get", a: [a], c: [1]}` | invokes the trailing callback: `cb(value)` |
//! | `async fn try_get(&self) -> Result<T, E>` | `try_get() -> Response<Result<T, E>>` | `{e: "try_get", a: [], c: [0]}` | error-first, as Node: `cb(null, value)` or `cb(err)` |
//! | `fn pick(&self, cb: Callback<(X, Y)>)` | `pick(cb) -> Result<(), Error>` | `{e: "pick", a: [], c: [0]}` | gets the peer's callback; `cb.call((x, y))` answers |
//! | `fn join(&self, name: String, peer: Peer)` | `join(name)`: the peer is not sent | `{e: "join", a: [name]}` | gets the router the event came on |
//!
//! `async` only says how the handler runs (spawned on the runtime, rather than on
//! the connection's reader task); whether there is a reply is said by the return
//! type alone.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), nmsg::Error> {
//! #[nmsg::events]
//! pub trait Calculator {
//!     /// Adds two numbers.
//!     async fn add(&self, a: f64, b: f64) -> f64;
//!     /// Divides, or says why not.
//!     async fn div(&self, a: f64, b: f64) -> Result<f64, String>;
//! }
//!
//! struct Calc;
//! impl Calculator for Calc {
//!     async fn add(&self, a: f64, b: f64) -> f64 {
//!         a + b
//!     }
//!     async fn div(&self, a: f64, b: f64) -> Result<f64, String> {
//!         if b == 0.0 { Err("division by zero".into()) } else { Ok(a / b) }
//!     }
//! }
//!
//! let (client, server, _link) = nmsg::transport::memory::pair();
//! CalculatorApi::new(Calc).serve(&server);
//! let calc = CalculatorClient::new(&client);
//! assert_eq!(calc.add(1.0, 2.0).await?, 3.0);
//! // The outer `?` takes transport errors; the inner `Result` is the handler's.
//! assert_eq!(calc.div(1.0, 0.0).await?, Err("division by zero".to_string()));
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Serialize;

use crate::args::{Arg, Args, FromArg, FromArgs, OutArgs, ToArg};
use crate::callback::{Answer, Callback, RemoteCallback};
use crate::error::Error;
use crate::handler::HandlerReturn;
use crate::router::{Api, Router};

/// The peer an event came from: a handler parameter of this type is filled
/// with the router the event arrived on, and is not one of the wire arguments.
///
/// It dereferences to [`Router`], so a handler can emit back on the same
/// connection, dynamically or through a generated client:
///
/// ```
/// use nmsg::Peer;
///
/// #[nmsg::events]
/// pub trait Lobby {
///     /// `peer` is not sent: the emitter's method is `join(name)`.
///     fn join(&self, name: String, peer: Peer);
/// }
///
/// #[nmsg::events]
/// pub trait Guest {
///     fn welcome(&self, text: String);
/// }
///
/// struct MyLobby;
/// impl Lobby for MyLobby {
///     fn join(&self, name: String, peer: Peer) {
///         // Call the guest back on the connection it joined on.
///         let _ = GuestClient::new(&peer).welcome(format!("welcome, {name}"));
///     }
/// }
/// ```
///
/// The macro recognises the parameter by its type's name, `Peer` (written
/// `Peer`, `nmsg::Peer` or any path ending in `Peer`); a data type of your own
/// with that name can be imported under another one.
#[derive(Clone)]
pub struct Peer {
    router: Router,
}

impl Peer {
    /// The peer behind `router`.
    pub fn new(router: Router) -> Self {
        Peer { router }
    }

    /// The router the event arrived on.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Who the peer authenticated as (see [`Router::auth_identity`]).
    pub fn auth_identity(&self) -> Option<std::sync::Arc<crate::AuthIdentity>> {
        self.router.auth_identity()
    }

    /// What the transport verified about the peer: the certificate of a
    /// mutual TLS client, the credentials of a Unix socket's peer process
    /// (see [`Router::peer_identity`]).
    pub fn identity(&self) -> Option<std::sync::Arc<crate::transport::PeerIdentity>> {
        self.router.peer_identity()
    }

    /// The router, by value.
    pub fn into_router(self) -> Router {
        self.router
    }
}

impl Deref for Peer {
    type Target = Router;

    fn deref(&self) -> &Router {
        &self.router
    }
}

impl From<Router> for Peer {
    fn from(router: Router) -> Self {
        Peer::new(router)
    }
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Peer").field(&self.router).finish()
    }
}

/// A type that can travel as an argument or a reply of a typed event: data
/// that is `Serialize + DeserializeOwned`, or a [`Callback<(A, B, ..)>`](Callback)
/// whose arguments are such types again.
///
/// Implemented for every type that qualifies; there is nothing to implement.
/// `#[nmsg::events]` checks each parameter and reply type against it, so a type
/// that does not qualify is reported where the trait names it.
///
/// ```
/// use nmsg::{typed::WireArg, Callback};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// pub struct Point {
///     x: i32,
///     y: i32,
/// }
///
/// fn travels<T: WireArg>() {}
/// travels::<Point>();
/// travels::<Vec<Option<String>>>();
/// travels::<Callback<(Point, Callback<(bool,)>)>>();
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot travel as an nmsg argument or reply",
    label = "neither serde data nor a `Callback` of a tuple",
    note = "data is `Serialize + DeserializeOwned + Send + 'static` (derive both serde traits; use owned types such as `String`); a callback is `nmsg::Callback<(A, B, ..)>`"
)]
pub trait WireArg: FromArg + ToArg<'static> + Send + 'static {}

#[diagnostic::do_not_recommend]
impl<T> WireArg for T where T: Serialize + DeserializeOwned + Send + 'static {}

impl<A> WireArg for Callback<A> where A: FromArgs + Send + 'static {}

/// A table handlers are registered in: a [`Router`] (its `on` handlers) or a
/// shared [`Api`]. The generated `<Trait>Api::register` takes either.
///
/// ```
/// #[nmsg::events]
/// trait Clock {
///     fn now(&self) -> u64;
/// }
/// struct Fixed;
/// impl Clock for Fixed {
///     fn now(&self) -> u64 { 0 }
/// }
///
/// let clock = ClockApi::new(Fixed);
/// let router = nmsg::Router::new();
/// clock.register(&router); // this router's own handlers
/// let api = nmsg::Api::new();
/// clock.register(&api); // a table shared by a server's sockets
/// assert!(api.contains("now"));
/// ```
pub trait HandlerTable {
    /// Sets the handler for `event`, replacing any earlier one.
    fn handle<F, R, M>(&self, event: &str, handler: F)
    where
        F: Fn(Args) -> R + Send + Sync + 'static,
        R: HandlerReturn<M>,
        M: 'static;
}

impl HandlerTable for Router {
    fn handle<F, R, M>(&self, event: &str, handler: F)
    where
        F: Fn(Args) -> R + Send + Sync + 'static,
        R: HandlerReturn<M>,
        M: 'static,
    {
        self.on(event, handler);
    }
}

impl HandlerTable for Api {
    fn handle<F, R, M>(&self, event: &str, handler: F)
    where
        F: Fn(Args) -> R + Send + Sync + 'static,
        R: HandlerReturn<M>,
        M: 'static,
    {
        self.on(event, handler);
    }
}

/// The future of a typed call's reply, returned by the generated emitter for a
/// method with a return type.
///
/// The event is queued when the emitter's method is called, not when this is
/// first polled, so calls go out in the order they are made. It resolves to
/// the reply, or to an error: [`Error::Timeout`] when the peer does not answer
/// within the frame's timeout, [`Error::Disconnected`] when the connection
/// drops first, [`Error::Closed`] when the router closes, [`Error::Argument`]
/// when the answer does not decode into `T`, or the error that kept the event
/// from being queued. It never hangs past the timeout.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), nmsg::Error> {
/// #[nmsg::events]
/// trait Clock {
///     fn now(&self) -> u64;
/// }
/// struct Fixed;
/// impl Clock for Fixed {
///     fn now(&self) -> u64 { 42 }
/// }
/// let (client, server, _link) = nmsg::transport::memory::pair();
/// ClockApi::new(Fixed).serve(&server);
/// let response: nmsg::Response<u64> = ClockClient::new(&client).now();
/// assert_eq!(response.await?, 42);
/// # Ok(()) }
/// ```
#[must_use = "the reply is lost unless the Response is awaited"]
pub struct Response<T> {
    state: State<T>,
}

enum State<T> {
    Waiting {
        reply: Answer<Args>,
        decode: fn(&Args) -> Result<T, Error>,
    },
    Failed(Option<Error>),
}

impl<T> Response<T> {
    /// Emits `event` with `args` and a trailing callback, whose arguments
    /// `decode` turns into the reply.
    fn send(
        router: &Router,
        event: &str,
        args: OutArgs<'_>,
        timeout: Option<Duration>,
        decode: fn(&Args) -> Result<T, Error>,
    ) -> Self {
        let state = match router.call(event, args, timeout) {
            Ok(reply) => State::Waiting { reply, decode },
            Err(e) => State::Failed(Some(e)),
        };
        Response { state }
    }
}

impl<T> Future for Response<T> {
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().state {
            State::Waiting { reply, decode } => match Pin::new(reply).poll(cx) {
                Poll::Ready(Ok(args)) => Poll::Ready(decode(&args)),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
            // Polling again after completion gives `Closed` rather than panicking.
            State::Failed(e) => Poll::Ready(Err(e.take().unwrap_or(Error::Closed))),
        }
    }
}

impl<T> fmt::Debug for Response<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            State::Waiting { .. } => f.write_str("Response(waiting)"),
            State::Failed(e) => f.debug_tuple("Response").field(e).finish(),
        }
    }
}

fn emit(
    router: &Router,
    event: &str,
    args: OutArgs<'_>,
    timeout: Option<Duration>,
) -> Result<(), Error> {
    match timeout {
        Some(timeout) => router.emit_with_timeout(event, args, timeout),
        None => router.emit(event, args),
    }
}

/// A typed handler's arguments that do not fit its parameters: logged, told
/// to the client's or server's events (`BadRequest`), and answered with `cb(message)` when the method is error-first (`refuse` is
/// the position of its reply callback).
#[cold]
fn refuse(args: &Args, event: &str, refuse: Option<usize>, error: Error) -> Error {
    tracing::warn!(event, %error, "nmsg: the arguments of a request do not fit its typed handler");
    args.peer().bad_request(event, &error);
    if let Some(at) = refuse {
        if let Ok(reply) = args.callback(at) {
            let _ = reply.call((format!("bad arguments for {event}: {error}"),));
        }
    }
    error
}

/// What the generated code calls. Not a public API: it changes without notice.
///
/// Only `wire` bounds its type parameter: the generated code converts each
/// value through the `Wire` it gives, called with the span of the user's type.
#[doc(hidden)]
pub mod __private {
    use super::*;

    /// The conversions of a type that travels. The generated code gets them
    /// from `wire` only, so that a type that does not qualify gives one error,
    /// the same at every use (the compiler reports it once).
    #[allow(missing_debug_implementations)]
    pub struct Wire<T> {
        pub from_arg: fn(&Args, usize) -> Result<T, Error>,
        pub to_arg: fn(T) -> Arg<'static>,
    }

    pub const fn wire<T: WireArg>() -> Wire<T> {
        Wire {
            from_arg: <T as FromArg>::from_arg,
            to_arg: <T as ToArg<'static>>::to_arg,
        }
    }

    /// A decoder of a reply, from the arguments the trailing callback got.
    pub type Decode<T> = fn(&Args) -> Result<T, Error>;
    /// A decoder of one argument.
    pub type DecodeArg<T> = fn(&Args, usize) -> Result<T, Error>;

    pub fn emit(
        router: &Router,
        event: &str,
        args: OutArgs<'_>,
        timeout: Option<Duration>,
    ) -> Result<(), Error> {
        super::emit(router, event, args, timeout)
    }

    pub fn request<T>(
        router: &Router,
        event: &str,
        args: OutArgs<'_>,
        timeout: Option<Duration>,
        decode: Decode<T>,
    ) -> Response<T> {
        Response::send(router, event, args, timeout, decode)
    }

    /// Decodes an error-first answer: `(null, value)` is `Ok(value)`, `(err)` is `Err(err)`.
    pub fn error_first<T, E>(
        args: &Args,
        ok: DecodeArg<T>,
        err: DecodeArg<E>,
    ) -> Result<Result<T, E>, Error> {
        let no_error =
            !args.is_callback(0) && matches!(args.get::<Option<IgnoredAny>>(0), Ok(None));
        if no_error {
            ok(args, 1).map(Ok)
        } else {
            err(args, 0).map(Err)
        }
    }

    /// Decodes the parameter at `index` of `event`. When it does not fit, the
    /// failure is logged, and with `refuse` (an error-first method, whose
    /// reply callback is at that position) answered with `cb(message)` at
    /// once; the error then goes to the error hook as the handler's.
    pub fn param<T>(
        args: &Args,
        index: usize,
        event: &str,
        refuse: Option<usize>,
        from_arg: DecodeArg<T>,
    ) -> Result<T, Error> {
        from_arg(args, index).map_err(|error| super::refuse(args, event, refuse, error))
    }

    pub fn reply_callback(args: &Args, index: usize) -> Result<RemoteCallback, Error> {
        args.callback(index)
    }

    pub fn peer(args: &Args) -> Peer {
        Peer::new(args.peer().clone())
    }

    /// `cb(value)`.
    pub fn reply(callback: &RemoteCallback, value: Arg<'static>) -> Result<(), Error> {
        callback.call(vec![value])
    }

    /// `X` can describe the type `T` (for TypeScript declarations: see
    /// `nmsg::typescript`, behind the `typescript` feature). The generated
    /// `Declare` impl asks for it of every type its trait names, so the
    /// bound is checked only where declarations are made.
    #[diagnostic::on_unimplemented(
        message = "`{T}` has no TypeScript description",
        label = "the trait names this type",
        note = "derive `ts_rs::TS` for your serde types (with the `typescript` feature of nmsg); a type of another crate can be named through a `#[ts(as = \"..\")]` field or a type of your own"
    )]
    pub trait Describe<T: ?Sized> {
        /// `T`'s TypeScript type, recording the declarations it needs.
        fn describe(&mut self) -> String;
    }

    /// The description of an `#[nmsg::events]` trait, for any `X` that
    /// can describe its types: implemented by each generated `<Trait>Client`.
    pub trait Declare<X> {
        /// The trait's events, their arguments and replies.
        fn declare(x: &mut X) -> TraitDecl;
    }

    /// A trait, described.
    #[derive(Debug, Clone)]
    pub struct TraitDecl {
        /// The trait's name.
        pub name: &'static str,
        /// Its doc comment.
        pub docs: &'static str,
        /// Its events, in declaration order.
        pub events: Vec<EventDecl>,
    }

    /// An event, described.
    #[derive(Debug, Clone)]
    pub struct EventDecl {
        /// Its wire name.
        pub event: &'static str,
        /// Its doc comment.
        pub docs: &'static str,
        /// The wire parameters: name and type.
        pub params: Vec<(&'static str, Ts)>,
        /// The reply.
        pub reply: ReplyDecl,
    }

    /// An event's reply, described.
    #[derive(Debug, Clone)]
    pub enum ReplyDecl {
        /// No reply.
        None,
        /// `cb(value)`.
        Value(Ts),
        /// `cb(null, value)` (`cb(null)` when `ok` is `None`, for `()`) or `cb(err)`.
        ErrorFirst {
            /// The value's type.
            ok: Option<Ts>,
            /// The error's type.
            err: Ts,
        },
    }

    /// A type, as the macro reads it: callbacks and the containers around
    /// them by their shape, other types through `Describe`.
    #[derive(Debug, Clone)]
    pub enum Ts {
        /// A type described through `Describe`.
        Described(String),
        /// A type the macro knows by name: `unknown` for a `Value`, `Buffer`
        /// for `ByteBuf` and `Bytes`, `null` for `()`.
        Known(&'static str),
        /// `Callback<(A, B, ..)>`.
        Callback(Vec<Ts>),
        /// `Option<T>`.
        Option(Box<Ts>),
        /// `Vec<T>`, `VecDeque<T>`, `[T; N]`.
        Array(Box<Ts>),
        /// `(A, B, ..)`.
        Tuple(Vec<Ts>),
        /// `HashMap<K, V>`, `BTreeMap<K, V>`.
        Map(Box<Ts>, Box<Ts>),
    }

    /// `cb(null, value)` (`cb(null)` without a value) or `cb(err)`.
    pub fn reply_error_first(
        callback: &RemoteCallback,
        result: Result<Option<Arg<'static>>, Arg<'static>>,
    ) -> Result<(), Error> {
        match result {
            Ok(Some(value)) => callback.call(vec![().to_arg(), value]),
            Ok(None) => callback.call(((),)),
            Err(error) => callback.call(vec![error]),
        }
    }
}
