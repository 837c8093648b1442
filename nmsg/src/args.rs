//! Arguments: [`OutArgs`] for what is sent, [`Args`] for what arrives.
//!
//! An argument list mixes data and callbacks in any order. Outgoing data is
//! anything `Serialize`; incoming data stays encoded until a handler asks for
//! it with a type, so it is deserialized once, straight into that type.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use serde::de::{DeserializeOwned, IntoDeserializer};
use serde::Serialize;

use crate::callback::{Callback, LocalCallback, RemoteCallback};
use crate::codec::decode_arg;
use crate::error::Error;
use crate::frame::{Frame, FrameKind};
use crate::router::Router;
use crate::value::Value;

/// One outgoing argument: data or a callback.
pub enum Arg<'a> {
    /// Data, serialized when the frame is encoded.
    Data(Box<dyn erased_serde::Serialize + 'a>),
    /// A local callback the peer may invoke.
    Callback(Box<dyn LocalCallback>),
}

impl fmt::Debug for Arg<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arg::Data(_) => f.write_str("Data(..)"),
            Arg::Callback(_) => f.write_str("Callback(..)"),
        }
    }
}

/// The items of an [`OutArgs`]: inline up to four, which nearly every frame
/// fits (with a request's trailing callback), so building one allocates no list.
pub(crate) type ArgList<'a> = smallvec::SmallVec<[Arg<'a>; 4]>;

/// An outgoing argument list, usually built with [`args!`](crate::args!).
#[derive(Debug, Default)]
pub struct OutArgs<'a> {
    pub(crate) items: ArgList<'a>,
}

impl<'a> OutArgs<'a> {
    /// An empty argument list.
    pub fn new() -> Self {
        OutArgs {
            items: ArgList::new(),
        }
    }

    /// Appends data.
    pub fn data<T: Serialize + 'a>(mut self, value: T) -> Self {
        self.items.push(Arg::Data(Box::new(value)));
        self
    }

    /// Appends any argument: data, or a [`Callback`].
    #[allow(clippy::should_implement_trait)]
    pub fn push(&mut self, arg: impl ToArg<'a>) {
        self.items.push(arg.to_arg());
    }

    /// Appends any argument, builder style.
    pub fn arg(mut self, arg: impl ToArg<'a>) -> Self {
        self.push(arg);
        self
    }

    /// Number of arguments.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when there are no arguments.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    #[doc(hidden)]
    pub fn from_vec(items: Vec<Arg<'a>>) -> Self {
        OutArgs {
            items: ArgList::from_vec(items),
        }
    }

    /// For [`args!`](crate::args!): the list without a heap allocation when it fits inline.
    #[doc(hidden)]
    pub fn from_array<const N: usize>(items: [Arg<'a>; N]) -> Self {
        OutArgs {
            items: items.into_iter().collect(),
        }
    }
}

/// Something that can stand in an argument list: any `Serialize` value, or a [`Callback`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be sent as an nmsg argument",
    label = "arguments are `Serialize` data or `nmsg::Callback`s"
)]
pub trait ToArg<'a> {
    /// Converts into an [`Arg`].
    fn to_arg(self) -> Arg<'a>;
}

impl<'a, T: Serialize + 'a> ToArg<'a> for T {
    fn to_arg(self) -> Arg<'a> {
        Arg::Data(Box::new(self))
    }
}

impl<'a> ToArg<'a> for Arg<'a> {
    fn to_arg(self) -> Arg<'a> {
        self
    }
}

impl<'a, A: FromArgs + Send + 'static> ToArg<'a> for Callback<A> {
    fn to_arg(self) -> Arg<'a> {
        Arg::Callback(self.into_local())
    }
}

/// Something that converts into a whole argument list: `()`, a tuple of
/// [`ToArg`] values, a `Vec<Arg>`, or [`OutArgs`].
pub trait IntoArgs<'a> {
    /// Converts into an [`OutArgs`].
    fn into_args(self) -> OutArgs<'a>;
}

impl<'a> IntoArgs<'a> for OutArgs<'a> {
    fn into_args(self) -> OutArgs<'a> {
        self
    }
}

impl<'a> IntoArgs<'a> for Vec<Arg<'a>> {
    fn into_args(self) -> OutArgs<'a> {
        OutArgs::from_vec(self)
    }
}

impl<'a> IntoArgs<'a> for () {
    fn into_args(self) -> OutArgs<'a> {
        OutArgs::new()
    }
}

macro_rules! tuple_args {
    ($($name:ident)+) => {
        impl<'a, $($name: ToArg<'a>),+> IntoArgs<'a> for ($($name,)+) {
            #[allow(non_snake_case)]
            fn into_args(self) -> OutArgs<'a> {
                let ($($name,)+) = self;
                OutArgs::from_array([$($name.to_arg()),+])
            }
        }

        impl<$($name: FromArg),+> FromArgs for ($($name,)+) {
            #[allow(non_snake_case, unused_assignments)]
            fn from_args(args: &Args) -> Result<Self, Error> {
                let mut index = 0;
                $(
                    let $name = $name::from_arg(args, index)?;
                    index += 1;
                )+
                Ok(($($name,)+))
            }
        }
    };
}

tuple_args!(A1);
tuple_args!(A1 A2);
tuple_args!(A1 A2 A3);
tuple_args!(A1 A2 A3 A4);
tuple_args!(A1 A2 A3 A4 A5);
tuple_args!(A1 A2 A3 A4 A5 A6);
tuple_args!(A1 A2 A3 A4 A5 A6 A7);
tuple_args!(A1 A2 A3 A4 A5 A6 A7 A8);
tuple_args!(A1 A2 A3 A4 A5 A6 A7 A8 A9);
tuple_args!(A1 A2 A3 A4 A5 A6 A7 A8 A9 A10);
tuple_args!(A1 A2 A3 A4 A5 A6 A7 A8 A9 A10 A11);
tuple_args!(A1 A2 A3 A4 A5 A6 A7 A8 A9 A10 A11 A12);

/// Builds an outgoing argument list from data and callbacks, in order.
///
/// ```
/// use nmsg::{args, Callback};
/// let list = args!["hello", 42, Callback::new(|(reply,): (String,)| println!("{reply}"))];
/// assert_eq!(list.len(), 3);
/// ```
#[macro_export]
macro_rules! args {
    () => { $crate::OutArgs::new() };
    ($($arg:expr),+ $(,)?) => {
        $crate::OutArgs::from_array([$($crate::ToArg::to_arg($arg)),+])
    };
}

/// The frame an [`Args`] came with, shared by its clones and its callbacks.
/// It holds no bytes of the message: the data arguments are in the `Args`
/// ([`Args::detached`]), so a [`RemoteCallback`] kept after its handler keeps
/// only this, not the buffer the message was read into.
pub(crate) struct Received {
    pub(crate) router: Router,
    pub(crate) frame: Frame,
    /// "Invoked" flags of the first 64 callbacks, one bit each: no allocation
    /// per frame for them.
    invoked: AtomicU64,
    /// Flags of callbacks past the 64th (empty, so unallocated, for nearly every frame).
    invoked_more: Box<[AtomicBool]>,
    pub(crate) epoch: u64,
}

/// A frame just received and the message it came in ([`Received::new`]),
/// which [`Args::new`] takes; reads as the [`Received`].
pub(crate) struct Incoming {
    received: Arc<Received>,
    payload: Bytes,
}

impl std::ops::Deref for Incoming {
    type Target = Received;

    fn deref(&self) -> &Received {
        &self.received
    }
}

impl Received {
    /// `frame`, received in `payload` (its data ranges count from the
    /// payload's start) while the connection epoch was `epoch`.
    // Gives the frame with its message, for `Args::new`: the transport's side
    // makes both in one call.
    #[allow(clippy::new_ret_no_self)]
    pub(crate) fn new(router: Router, payload: Bytes, frame: Frame, epoch: u64) -> Incoming {
        let invoked_more = (64..frame.callbacks.len())
            .map(|_| AtomicBool::new(false))
            .collect();
        let received = Arc::new(Received {
            router,
            frame,
            invoked: AtomicU64::new(0),
            invoked_more,
            epoch,
        });
        Incoming { received, payload }
    }

    pub(crate) fn claim(&self, slot: usize) -> bool {
        match slot.checked_sub(64) {
            None => self.invoked.fetch_or(1 << slot, Ordering::AcqRel) & (1 << slot) == 0,
            Some(i) => self.invoked_more[i]
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok(),
        }
    }

    pub(crate) fn release(&self, slot: usize) {
        match slot.checked_sub(64) {
            None => {
                self.invoked.fetch_and(!(1 << slot), Ordering::Release);
            }
            Some(i) => self.invoked_more[i].store(false, Ordering::Release),
        }
    }

    pub(crate) fn is_invoked(&self, slot: usize) -> bool {
        match slot.checked_sub(64) {
            None => self.invoked.load(Ordering::Acquire) & (1 << slot) != 0,
            Some(i) => self.invoked_more[i].load(Ordering::Acquire),
        }
    }
}

/// Where an argument of an incoming frame stands.
enum Slot<'a> {
    Name(&'a str),
    Data(&'a [u8]),
    Callback(usize),
    Missing,
}

/// The arguments of an incoming event or callback invocation.
///
/// Cheap to clone. Data is decoded on request, into the type asked for:
///
/// ```no_run
/// # fn demo(router: nmsg::Router) {
/// router.on("add", |args: nmsg::Args| -> Result<(), nmsg::Error> {
///     let (a, b, reply): (f64, f64, nmsg::RemoteCallback) = args.parse()?;
///     reply.call((a + b,))
/// });
/// # }
/// ```
///
/// The data stays in the buffer the message was read into, shared with the
/// other messages read with it: an `Args` given to a sync handler holds that
/// buffer (8 KiB or more) while it lives. An async handler's `Args` holds a
/// copy of its own frame's bytes instead, made when the handler is called;
/// [`Args::detached`] makes one for an `Args` kept otherwise.
#[derive(Clone)]
pub struct Args {
    pub(crate) received: Arc<Received>,
    /// The bytes the data arguments are in: the message they came in, or a
    /// copy of this frame's part of it ([`Args::detached`]).
    payload: Bytes,
    /// Where `payload` starts in the message (the frame's data ranges count
    /// from the message's start).
    base: usize,
    /// For the wildcard handler: the event name stands first.
    with_name: bool,
}

impl Args {
    pub(crate) fn new(incoming: Incoming) -> Self {
        Args {
            received: incoming.received,
            payload: incoming.payload,
            base: 0,
            with_name: false,
        }
    }

    pub(crate) fn with_event_name(&self) -> Self {
        Args {
            with_name: true,
            ..self.clone()
        }
    }

    /// These arguments, holding a copy of their own frame's bytes rather than
    /// the buffer the message was read into (which other messages share, 8 KiB
    /// or more): for an `Args` kept long after its handler returned. The
    /// callbacks are the same (invoking one through either invokes it).
    /// Async handlers get theirs detached already.
    pub fn detached(&self) -> Args {
        self.clone().detach()
    }

    /// [`Args::detached`], in place.
    pub(crate) fn detach(mut self) -> Args {
        let data = &self.received.frame.data;
        let start = data.iter().map(|r| r.start).min().unwrap_or(self.base);
        let end = data.iter().map(|r| r.end).max().unwrap_or(start);
        self.payload = if end > start {
            Bytes::copy_from_slice(&self.payload[start - self.base..end - self.base])
        } else {
            Bytes::new()
        };
        self.base = start;
        self
    }

    fn frame(&self) -> &Frame {
        &self.received.frame
    }

    /// The event name, or `None` for a callback invocation.
    pub fn event(&self) -> Option<&str> {
        match &self.frame().kind {
            FrameKind::Event(name) => Some(name),
            FrameKind::Response { .. } => None,
        }
    }

    /// The id the peer gave this frame.
    pub fn frame_id(&self) -> u32 {
        self.frame().id
    }

    /// How long the peer keeps this frame's callbacks alive, as it said with `t`;
    /// `None` when it did not say (the protocol's default is 15 s). A callback
    /// invoked later than this reaches a peer that has forgotten it.
    pub fn timeout(&self) -> Option<std::time::Duration> {
        self.frame()
            .timeout
            .and_then(|t| std::time::Duration::try_from_secs_f64(t).ok())
    }

    /// The router this frame arrived on: emit on it to answer the same peer.
    pub fn peer(&self) -> &Router {
        &self.received.router
    }

    /// Number of arguments, data and callbacks (with the event name first, for the wildcard handler).
    pub fn len(&self) -> usize {
        self.frame().arg_count() + self.with_name as usize
    }

    /// True when there are no arguments.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn slot(&self, index: usize) -> Slot<'_> {
        let index = match (self.with_name, index) {
            (true, 0) => return Slot::Name(self.event().unwrap_or("")),
            (true, i) => i - 1,
            (false, i) => i,
        };
        let frame = self.frame();
        if index >= frame.arg_count() {
            return Slot::Missing;
        }
        match frame.callbacks.binary_search(&(index as u32)) {
            Ok(slot) => Slot::Callback(slot),
            Err(before) => {
                let range = &frame.data[index - before];
                Slot::Data(&self.payload[range.start - self.base..range.end - self.base])
            }
        }
    }

    /// True when the argument at `index` is a callback.
    pub fn is_callback(&self, index: usize) -> bool {
        matches!(self.slot(index), Slot::Callback(_))
    }

    /// Decodes the data argument at `index` as a `T`.
    ///
    /// A missing argument decodes as nil would, so `Option<T>` gives `None` (as a
    /// JavaScript function sees `undefined`); other types give an error.
    pub fn get<T: DeserializeOwned>(&self, index: usize) -> Result<T, Error> {
        match self.slot(index) {
            Slot::Data(raw) => decode_arg(&**self.received.router.codec_ref(), raw)
                .map_err(|e| Error::argument(index, e)),
            Slot::Name(name) => {
                T::deserialize(IntoDeserializer::<serde::de::value::Error>::into_deserializer(name))
                    .map_err(|e| Error::argument(index, e))
            }
            Slot::Callback(_) => Err(Error::argument(index, "is a callback, not data")),
            Slot::Missing => {
                T::deserialize(IntoDeserializer::<serde::de::value::Error>::into_deserializer(()))
                    .map_err(|_| {
                        Error::argument(
                            index,
                            format!("missing (there are {} arguments)", self.len()),
                        )
                    })
            }
        }
    }

    /// The data argument at `index` as a dynamic [`Value`].
    pub fn value(&self, index: usize) -> Result<Value, Error> {
        self.get(index)
    }

    /// The callback at `index`, to invoke with [`RemoteCallback::call`].
    pub fn callback(&self, index: usize) -> Result<RemoteCallback, Error> {
        match self.slot(index) {
            Slot::Callback(slot) => Ok(RemoteCallback::new(self.received.clone(), slot)),
            Slot::Missing => Err(Error::argument(
                index,
                format!("missing (there are {} arguments)", self.len()),
            )),
            _ => Err(Error::argument(index, "is data, not a callback")),
        }
    }

    /// Converts the whole list, by position, into a tuple of data types,
    /// [`RemoteCallback`]s and [`Callback`]s. Extra arguments are ignored.
    pub fn parse<T: FromArgs>(&self) -> Result<T, Error> {
        T::from_args(self)
    }
}

impl fmt::Debug for Args {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for i in 0..self.len() {
            match self.slot(i) {
                Slot::Callback(_) => list.entry(&format_args!("<callback>")),
                _ => match self.value(i) {
                    Ok(v) => list.entry(&format_args!("{v}")),
                    Err(_) => list.entry(&format_args!("<undecodable>")),
                },
            };
        }
        list.finish()
    }
}

/// A type an incoming argument list converts into: [`Args`] itself, or a tuple
/// of [`FromArg`] types.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be built from nmsg arguments",
    label = "use `nmsg::Args`, or a tuple of deserializable types and callbacks, such as `(String, nmsg::RemoteCallback)`"
)]
pub trait FromArgs: Sized + 'static {
    /// Converts, checking each argument's type.
    fn from_args(args: &Args) -> Result<Self, Error>;
}

impl FromArgs for Args {
    fn from_args(args: &Args) -> Result<Self, Error> {
        Ok(args.clone())
    }
}

impl FromArgs for () {
    fn from_args(_: &Args) -> Result<Self, Error> {
        Ok(())
    }
}

/// A type one incoming argument converts into: any deserializable type,
/// [`RemoteCallback`], or [`Callback<A>`].
pub trait FromArg: Sized + 'static {
    /// Converts the argument at `index`.
    fn from_arg(args: &Args, index: usize) -> Result<Self, Error>;
}

impl<T: DeserializeOwned + 'static> FromArg for T {
    fn from_arg(args: &Args, index: usize) -> Result<Self, Error> {
        args.get(index)
    }
}

impl FromArg for RemoteCallback {
    fn from_arg(args: &Args, index: usize) -> Result<Self, Error> {
        args.callback(index)
    }
}

impl<A: FromArgs> FromArg for Callback<A> {
    fn from_arg(args: &Args, index: usize) -> Result<Self, Error> {
        args.callback(index).map(Callback::remote)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_of_seventy_callbacks_is_claimed_once_on_both_sides_of_the_64th() {
        let frame = Frame {
            id: 1,
            kind: FrameKind::Event("many".into()),
            data: Default::default(),
            callbacks: (0..70).collect(),
            timeout: None,
        };
        let received = Received::new(Router::new(), Bytes::new(), frame, 0);
        for slot in [0, 1, 63, 64, 69] {
            assert!(!received.is_invoked(slot));
            assert!(received.claim(slot), "slot {slot}");
            assert!(!received.claim(slot), "slot {slot} claimed twice");
            assert!(received.is_invoked(slot));
        }
        assert!(!received.is_invoked(2) && !received.is_invoked(65));
        received.release(64);
        received.release(1);
        assert!(received.claim(64) && received.claim(1));
        assert!(received.is_invoked(0) && received.is_invoked(63));
    }

    #[test]
    fn detached_arguments_hold_only_their_frames_bytes_and_read_the_same() {
        // A frame in the middle of a larger message (as in a bulk): its data
        // ranges count from the message's start.
        let mut payload = vec![0xc0; 100];
        let five = payload.len();
        payload.push(0x05);
        let hi = payload.len();
        payload.extend_from_slice(&[0xa2, b'h', b'i']);
        payload.extend_from_slice(&[0xc0; 50]);
        let frame = Frame {
            id: 1,
            kind: FrameKind::Event("e".into()),
            data: [five..five + 1, hi..hi + 3].into_iter().collect(),
            callbacks: [2].into_iter().collect(),
            timeout: None,
        };
        let args = Args::new(Received::new(Router::new(), Bytes::from(payload), frame, 0));
        let kept = args.detached();
        assert_eq!(kept.payload.len(), 4, "the frame's own bytes only");
        for a in [&args, &kept, &kept.with_event_name().detached()] {
            let skip = a.with_name as usize;
            assert_eq!(a.get::<u64>(skip).unwrap(), 5);
            assert_eq!(a.get::<String>(skip + 1).unwrap(), "hi");
            assert!(a.is_callback(skip + 2));
        }
        // The callbacks are shared: a claim through one shows in the other.
        assert!(kept.received.claim(0));
        assert!(args.received.is_invoked(0));
        // No data at all: nothing is kept.
        let empty = Frame {
            id: 2,
            kind: FrameKind::Event("e".into()),
            data: Default::default(),
            callbacks: Default::default(),
            timeout: None,
        };
        let none = Args::new(Received::new(
            Router::new(),
            Bytes::from_static(b"xyz"),
            empty,
            0,
        ));
        assert!(none.detached().payload.is_empty());
    }
}
