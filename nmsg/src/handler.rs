//! Handler shapes: a handler is a closure taking [`Args`] that returns `()`,
//! `Result<(), E>`, or a future of either. One trait, [`HandlerReturn`], covers
//! the return types, with a marker type parameter that keeps the sync and async
//! implementations apart (as axum does for its handlers).

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use crate::args::Args;

/// A boxed error returned by a handler.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What running a handler gives the router.
#[doc(hidden)]
#[allow(missing_debug_implementations)]
pub enum Outcome {
    /// The handler finished.
    Done(Result<(), BoxError>),
    /// The handler returned a future, to be spawned.
    Later(Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>),
}

/// Marker for handlers that finish when they return.
#[derive(Debug)]
pub enum SyncReturn {}
/// Marker for handlers that return a future.
#[derive(Debug)]
pub enum AsyncReturn {}

/// A type a handler may return: `()`, `Result<(), E>`, or a future of either.
///
/// `M` is a marker ([`SyncReturn`] or [`AsyncReturn`]) that the compiler infers.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a valid handler return type",
    label = "handlers return `()`, `Result<(), E>` (E: Into<Box<dyn Error + Send + Sync>>), or a future of one of those",
    note = "an async handler is a closure returning an `async move {{ .. }}` block"
)]
pub trait HandlerReturn<M>: Send + 'static {
    /// True for a future, which is spawned and may keep its arguments long
    /// after the message was dispatched: the router gives it
    /// [`Args::detached`] ones, which hold their own bytes.
    #[doc(hidden)]
    const SPAWNED: bool = false;

    #[doc(hidden)]
    fn into_outcome(self) -> Outcome;
}

impl HandlerReturn<SyncReturn> for () {
    fn into_outcome(self) -> Outcome {
        Outcome::Done(Ok(()))
    }
}

impl<E> HandlerReturn<SyncReturn> for Result<(), E>
where
    E: Into<BoxError> + Send + 'static,
{
    fn into_outcome(self) -> Outcome {
        Outcome::Done(self.map_err(Into::into))
    }
}

impl<F> HandlerReturn<AsyncReturn> for F
where
    F: Future + Send + 'static,
    F::Output: HandlerReturn<SyncReturn>,
{
    const SPAWNED: bool = true;

    fn into_outcome(self) -> Outcome {
        Outcome::Later(Box::pin(async move {
            match self.await.into_outcome() {
                Outcome::Done(r) => r,
                Outcome::Later(f) => f.await,
            }
        }))
    }
}

/// A handler with its type erased, as the router stores it.
pub(crate) trait ErasedHandler: Send + std::marker::Sync + 'static {
    fn call(&self, args: Args) -> Outcome;
}

pub(crate) struct FnHandler<F, R, M> {
    f: F,
    _marker: PhantomData<fn() -> (R, M)>,
}

impl<F, R, M> FnHandler<F, R, M> {
    pub(crate) fn new(f: F) -> Self {
        FnHandler {
            f,
            _marker: PhantomData,
        }
    }
}

impl<F, R, M> ErasedHandler for FnHandler<F, R, M>
where
    F: Fn(Args) -> R + Send + std::marker::Sync + 'static,
    R: HandlerReturn<M>,
    M: 'static,
{
    fn call(&self, args: Args) -> Outcome {
        // Known when compiled: a sync handler pays nothing for it.
        let args = if R::SPAWNED { args.detach() } else { args };
        (self.f)(args).into_outcome()
    }
}

/// The message a panic carried, for the error hook: its text when it was
/// given one (`panic!("...")`), else a placeholder.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(not a string)".to_owned()
    }
}
