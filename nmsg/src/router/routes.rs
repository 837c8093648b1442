//! What routes an incoming event: the router's own handlers, a shared
//! [`Api`], the wildcard, the wiretap and the error hook; running a handler,
//! and reporting its errors and panics.

use std::collections::HashMap;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arc_swap::ArcSwap;
use futures_util::FutureExt;

use crate::args::Args;
use crate::error::{Error, Panicked};
use crate::frame::FrameKind;
use crate::handler::{panic_message, BoxError, ErasedHandler, FnHandler, HandlerReturn, Outcome};

use super::flow::Handlers;
use super::Router;

/// The wildcard event name: its handler sees every event, with the name first.
pub const WILDCARD: &str = "*";

/// What a wiretap tells the router to do with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Route the event as usual.
    Continue,
    /// Stop here: no handler sees the event.
    Stop,
}

pub(super) type ErrorHook = Arc<dyn Fn(Error) + Send + Sync>;
pub(super) type Wiretap = Arc<dyn Fn(&Args) -> Flow + Send + Sync>;

/// A table of handlers that many routers can share (a server serves every
/// socket with one). A method in the router's `Api` takes precedence over the
/// router's own `on` handlers for that event.
///
/// ```
/// let api = nmsg::Api::new();
/// api.on("ping", |args: nmsg::Args| -> Result<(), nmsg::Error> {
///     args.callback(0)?.call(("pong",))
/// });
/// assert!(api.contains("ping"));
/// ```
#[derive(Clone, Default)]
pub struct Api {
    /// Replaced whole when a method is set or removed (copy on write), so the
    /// routers that share it look methods up without a lock or a shared write.
    table: Arc<ArcSwap<HandlerMap>>,
}

/// Handlers by event name, hashed with foldhash under a fixed seed: a fast,
/// non-cryptographic hash is safe here because only this side adds names, so a
/// peer cannot fill a bucket (it only looks names up), and a fixed seed takes no
/// room in each table (a `RandomState` takes 16 bytes). SipHash cost more per
/// routed event (BENCHMARKS.md).
type HandlerMap = HashMap<String, Arc<dyn ErasedHandler>, foldhash::fast::FixedState>;

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.table.load().keys()).finish()
    }
}

impl Api {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the method for `event`, replacing any earlier one.
    pub fn on<F, R, M>(&self, event: impl Into<String>, handler: F) -> &Self
    where
        F: Fn(Args) -> R + Send + Sync + 'static,
        R: HandlerReturn<M>,
        M: 'static,
    {
        let event = event.into();
        let handler = erase(handler);
        self.table.rcu(|table| {
            let mut table = HandlerMap::clone(table);
            table.insert(event.clone(), handler.clone());
            table
        });
        self
    }

    /// Removes the method for `event`; true if there was one.
    pub fn off(&self, event: &str) -> bool {
        let mut removed = false;
        self.table.rcu(|table| {
            let mut table = HandlerMap::clone(table);
            removed = table.remove(event).is_some();
            table
        });
        removed
    }

    /// True if the table has a method for `event`.
    pub fn contains(&self, event: &str) -> bool {
        self.table.load().get(event).is_some()
    }
}

/// A router's routes. Replaced whole (copy on write) when one of them
/// changes, which is rare: routing an event takes no lock and clones no
/// handler, and a handler may change the routes while it runs. Routers with
/// none share one empty table. Beside them, the async handlers that run.
pub(super) struct RouteTable {
    table: ArcSwap<Routes>,
    pub(super) handlers: Handlers,
}

#[derive(Clone, Default)]
struct Routes {
    by_event: HandlerMap,
    api: Option<Api>,
    /// Boxed, and made when one of them is set: most routers have none.
    rare: Option<Box<RareRoutes>>,
}

#[derive(Clone, Default)]
struct RareRoutes {
    wildcard: Option<Arc<dyn ErasedHandler>>,
    wiretap: Option<Wiretap>,
    error_hook: Option<ErrorHook>,
}

impl Routes {
    fn rare(&self) -> Option<&RareRoutes> {
        self.rare.as_deref()
    }

    fn rare_mut(&mut self) -> &mut RareRoutes {
        self.rare.get_or_insert_with(Box::default)
    }
}

/// Routes that routers start with, shared until one of them changes its own
/// (a server's sockets start with the server's [`Api`], and hold one table
/// between them, not one each).
#[derive(Clone)]
pub(crate) struct InitialRoutes(Arc<Routes>);

impl InitialRoutes {
    /// No routes but `api`.
    pub(crate) fn with_api(api: Api) -> Self {
        InitialRoutes(Arc::new(Routes {
            api: Some(api),
            ..Routes::default()
        }))
    }
}

impl RouteTable {
    /// No routes; the empty table is shared.
    pub(super) fn new() -> Self {
        static EMPTY: std::sync::OnceLock<Arc<Routes>> = std::sync::OnceLock::new();
        Self::starting_with(EMPTY.get_or_init(|| Arc::new(Routes::default())).clone())
    }

    /// The routes of `initial`, shared with the other routers made with it
    /// until one of them changes.
    pub(super) fn with_initial(initial: &InitialRoutes) -> Self {
        Self::starting_with(initial.0.clone())
    }

    fn starting_with(routes: Arc<Routes>) -> Self {
        RouteTable {
            table: ArcSwap::new(routes),
            handlers: Handlers::default(),
        }
    }

    /// The events starting with `prefix` that these routes serve (the
    /// router's own and its `Api`'s), sorted, each once.
    pub(super) fn handled_with_prefix(&self, prefix: &str) -> Vec<String> {
        let routes = self.table.load();
        let api = routes.api.as_ref().map(|api| api.table.load_full());
        let mut names: Vec<String> = routes
            .by_event
            .keys()
            .chain(api.iter().flat_map(|table| table.keys()))
            .filter(|name| name.starts_with(prefix))
            .cloned()
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Events that arrived with no handler ([`Router::unhandled_events`]).
    pub(super) fn unhandled(&self) -> u64 {
        u64::from(self.handlers.unhandled.load(Ordering::Relaxed))
    }

    /// Applies `change` to a copy of the routes and puts the copy in place
    /// (`change` runs again if another thread changed them meanwhile).
    fn change(&self, mut change: impl FnMut(&mut Routes)) {
        self.table.rcu(|routes| {
            let mut routes = Routes::clone(routes);
            change(&mut routes);
            routes
        });
    }

    pub(super) fn on(&self, event: String, handler: Arc<dyn ErasedHandler>) {
        self.change(|r| {
            if event == WILDCARD {
                r.rare_mut().wildcard = Some(handler.clone());
            } else {
                r.by_event.insert(event.clone(), handler.clone());
            }
        });
    }

    pub(super) fn off(&self, event: &str) -> bool {
        let mut removed = false;
        self.change(|r| {
            removed = if event == WILDCARD {
                r.rare.as_mut().and_then(|r| r.wildcard.take()).is_some()
            } else {
                r.by_event.remove(event).is_some()
            };
        });
        removed
    }

    pub(super) fn set_api(&self, api: Option<Api>) {
        self.change(|r| r.api = api.clone());
    }

    pub(super) fn set_wiretap(&self, tap: Wiretap) {
        self.change(|r| r.rare_mut().wiretap = Some(tap.clone()));
    }

    pub(super) fn set_error_hook(&self, hook: ErrorHook) {
        self.change(|r| r.rare_mut().error_hook = Some(hook.clone()));
    }

    /// Gives `error` to the error hook, or logs it without one.
    pub(super) fn report(&self, error: Error) {
        let hook = self.table.load().rare().and_then(|r| r.error_hook.clone());
        match hook {
            Some(hook) => hook(error),
            None => match &error {
                Error::StrayResponse { .. } => {
                    tracing::debug!(%error, "nmsg")
                }
                _ => tracing::warn!(%error, "nmsg"),
            },
        }
    }

    /// Routes an incoming event of `router` to its handlers.
    pub(super) fn route_event(&self, router: &Router, args: Args) {
        // Held while the handlers run: a handler that changes the routes
        // replaces them without waiting for this snapshot to go.
        let routes = self.table.load();
        // The name is copied (inline up to 24 bytes), not shared: `args` goes
        // to the handler, and the name is needed after it for error reports.
        let event = match &args.received.frame.kind {
            FrameKind::Event(name) => name.clone(),
            FrameKind::Response { .. } => Default::default(),
        };
        let rare = routes.rare();
        if let Some(tap) = rare.and_then(|r| r.wiretap.as_ref()) {
            // A panicking wiretap is reported like a panicking handler, and the
            // event goes no further; unwinding would end the connection's task
            // without telling the router.
            match std::panic::catch_unwind(AssertUnwindSafe(|| tap(&args))) {
                Ok(Flow::Continue) => {}
                Ok(Flow::Stop) => return,
                Err(panic) => {
                    return self.report(Error::HandlerPanicked {
                        what: Panicked::Wiretap,
                        event: event.into(),
                        message: panic_message(&*panic),
                    })
                }
            }
        }
        if let Some(api) = &routes.api {
            if let Some(method) = api.table.load().get(event.as_str()) {
                return run(router, &event, &**method, args);
            }
        }
        let handler = routes.by_event.get(event.as_str());
        match (handler, rare.and_then(|r| r.wildcard.as_ref())) {
            // Ignored, with no report: a peer may emit events this side does
            // not serve (the original's first TCP server writes every
            // message back to its sender), and that is no error.
            (None, None) => {
                let _ = self.handlers.unhandled.fetch_update(
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                    |n| n.checked_add(1),
                );
                tracing::debug!(
                    event = event.as_str(),
                    "nmsg: no handler for the event; ignored"
                );
            }
            (Some(handler), None) => run(router, &event, &**handler, args),
            (handler, Some(wildcard)) => {
                if let Some(handler) = handler {
                    run(router, &event, &**handler, args.clone());
                }
                run(router, &event, &**wildcard, args.with_event_name());
            }
        }
    }
}

/// Runs `handler` for `event`: a sync one here, an async one spawned on the
/// runtime (counted among the router's running handlers, and cancelled when
/// it closes); its errors and panics go to `router`'s error hook.
fn run(router: &Router, event: &str, handler: &dyn ErasedHandler, args: Args) {
    if crate::observe::spans_wanted() {
        return run_traced(router, event, handler, args);
    }
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| handler.call(args)));
    finish(router, event, outcome);
}

/// [`run`] in an `nmsg.handle` span ([`crate::observe`]); an async handler
/// enters it at each poll.
#[cold]
#[inline(never)]
fn run_traced(router: &Router, event: &str, handler: &dyn ErasedHandler, args: Args) {
    let frame = &args.received.frame;
    let span = tracing::debug_span!(
        "nmsg.handle",
        otel.name = event,
        otel.kind = crate::observe::incoming_kind(!frame.callbacks.is_empty()),
        rpc.system = "nmsg",
        rpc.method = event,
        nmsg.event = event,
        nmsg.frame_id = frame.id,
        network.peer.address = router.peer(),
    );
    let _entered = span.enter();
    let outcome = match std::panic::catch_unwind(AssertUnwindSafe(|| handler.call(args))) {
        Ok(Outcome::Later(future)) => {
            let future = tracing::Instrument::instrument(future, span.clone());
            Ok(Outcome::Later(Box::pin(future)))
        }
        outcome => outcome,
    };
    finish(router, event, outcome);
}

/// What follows a handler's call: its error or panic reported, an async
/// handler's future spawned.
fn finish(router: &Router, event: &str, outcome: std::thread::Result<Outcome>) {
    match outcome {
        Ok(Outcome::Done(Ok(()))) => {}
        Ok(Outcome::Done(Err(e))) => router.report(handler_error(event, e)),
        Ok(Outcome::Later(future)) => match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let event = event.to_owned();
                router.spawn_handler(&runtime, move |running| async move {
                    let outcome = AssertUnwindSafe(future).catch_unwind().await;
                    let router = running.router();
                    match outcome {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => router.report(handler_error(&event, e)),
                        Err(panic) => router.report(Error::HandlerPanicked {
                            what: Panicked::Handler,
                            event,
                            message: panic_message(&*panic),
                        }),
                    }
                })
            }
            Err(_) => router.report(Error::NoRuntime),
        },
        Err(panic) => router.report(Error::HandlerPanicked {
            what: Panicked::Handler,
            event: event.to_owned(),
            message: panic_message(&*panic),
        }),
    }
}

fn handler_error(event: &str, source: BoxError) -> Error {
    Error::Handler {
        event: event.to_owned(),
        source,
    }
}

/// A handler made from a closure, erased.
pub(super) fn erase<F, R, M>(handler: F) -> Arc<dyn ErasedHandler>
where
    F: Fn(Args) -> R + Send + Sync + 'static,
    R: HandlerReturn<M>,
    M: 'static,
{
    Arc::new(FnHandler::new(handler))
}
