//! What `nmsg::observe` records as spans and lifecycle events, captured by a
//! small tracing `Layer` set for the test's thread only (a current-thread
//! runtime runs every task of the test on it).
//!
//! Alone in its test binary: with one thread-scoped subscriber in the
//! process, tracing asks a callsite's interest of the subscriber of whichever
//! thread reaches it first, so a test without one running beside it could
//! leave nmsg's callsites disabled for good.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use nmsg::transport::memory::Network;
use nmsg::{args, Args, Client, Error, Server};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// A server over an in-memory network answering `echo(n, cb)` with `cb(n)`
/// and ignoring `silent`, at most `max` connections.
fn echo_server(net: &Network, max: usize) -> Server {
    let server = Server::builder(net.binder("svc"))
        .max_connections(max)
        .start();
    server.on("echo", |args: Args| -> Result<(), Error> {
        let n: u32 = args.get(0)?;
        args.callback(1)?.call((n,))
    });
    server.on("silent", |_: Args| {});
    server
}

/// A span or an event seen by [`Capture`], with its fields as text.
#[derive(Debug, Clone)]
struct Seen {
    /// The span's name, or the event's message.
    name: String,
    span: Option<u64>,
    /// For an event: the name of the span it happened in.
    within: Option<String>,
    fields: HashMap<String, String>,
}

impl Seen {
    fn field(&self, name: &str) -> &str {
        self.fields.get(name).map_or("", String::as_str)
    }
}

impl Visit for Seen {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.fields
            .insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.fields
            .insert(field.name().to_owned(), value.to_owned());
    }
}

/// A layer that keeps every span and event.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Seen>>>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut seen = Seen {
            name: attrs.metadata().name().to_owned(),
            span: Some(id.into_u64()),
            within: None,
            fields: HashMap::new(),
        };
        attrs.record(&mut seen);
        self.0.lock().unwrap().push(seen);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut all = self.0.lock().unwrap();
        if let Some(seen) = all.iter_mut().rev().find(|s| s.span == Some(id.into_u64())) {
            values.record(seen);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut seen = Seen {
            name: String::new(),
            span: None,
            within: ctx.event_span(event).map(|s| s.name().to_owned()),
            fields: HashMap::new(),
        };
        event.record(&mut seen);
        seen.name = seen.fields.remove("message").unwrap_or_default();
        self.0.lock().unwrap().push(seen);
    }
}

impl Capture {
    /// The spans named `name`.
    fn spans(&self, name: &str) -> Vec<Seen> {
        let all = self.0.lock().unwrap();
        all.iter()
            .filter(|s| s.span.is_some() && s.name == name)
            .cloned()
            .collect()
    }

    /// The events whose message is `message`.
    fn events(&self, message: &str) -> Vec<Seen> {
        let all = self.0.lock().unwrap();
        all.iter()
            .filter(|s| s.span.is_none() && s.name == message)
            .cloned()
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn spans_name_the_event_frame_peer_and_kind_for_opentelemetry() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let _local = tracing::subscriber::set_default(subscriber);

    let net = Network::new();
    let server = echo_server(&net, 10);
    let (tx, mut handled) = tokio::sync::mpsc::unbounded_channel();
    server.on("later", move |_: Args| {
        let tx = tx.clone();
        async move {
            tokio::task::yield_now().await;
            tracing::info!("in the async handler");
            let _ = tx.send(());
        }
    });
    let client = Client::builder(net.connector("svc")).start();
    client.connected().await;
    let peer = "memory://svc";

    // A call: emit (client), handle (server), respond (producer), callback (consumer).
    let (_,): (u32,) = client.router().request("echo", args![7]).await.unwrap();
    let emit = &capture.spans("nmsg.emit")[0];
    assert_eq!(emit.field("otel.name"), "echo");
    assert_eq!(emit.field("otel.kind"), "client");
    assert_eq!(emit.field("rpc.system"), "nmsg");
    assert_eq!(emit.field("rpc.method"), "echo");
    assert_eq!(emit.field("nmsg.event"), "echo");
    assert_eq!(emit.field("network.peer.address"), peer);
    let id = emit.field("nmsg.frame_id").to_owned();
    assert!(!id.is_empty(), "{emit:?}");

    let handle = &capture.spans("nmsg.handle")[0];
    assert_eq!(handle.field("otel.name"), "echo");
    assert_eq!(handle.field("otel.kind"), "server");
    assert_eq!(handle.field("rpc.system"), "nmsg");
    assert_eq!(handle.field("nmsg.frame_id"), id);
    assert_eq!(handle.field("network.peer.address"), peer);

    let respond = &capture.spans("nmsg.respond")[0];
    assert_eq!(respond.field("otel.kind"), "producer");
    assert_eq!(respond.field("rpc.system"), "nmsg");
    assert_eq!(respond.field("nmsg.callback.frame"), id);
    assert_eq!(respond.field("nmsg.callback.position"), "1");
    let response_id = respond.field("nmsg.frame_id").to_owned();
    assert!(!response_id.is_empty(), "{respond:?}");

    let callback = &capture.spans("nmsg.callback")[0];
    assert_eq!(callback.field("otel.kind"), "consumer");
    assert_eq!(callback.field("rpc.system"), "nmsg");
    assert_eq!(callback.field("nmsg.callback.frame"), id);
    assert_eq!(callback.field("nmsg.frame_id"), response_id);
    assert_eq!(callback.field("network.peer.address"), peer);

    // An event without callbacks: producer and consumer; an async handler
    // runs in its span.
    client.router().emit("later", args![1]).unwrap();
    handled.recv().await.unwrap();
    let emit = &capture.spans("nmsg.emit")[1];
    assert_eq!(emit.field("otel.name"), "later");
    assert_eq!(emit.field("otel.kind"), "producer");
    let handle = &capture.spans("nmsg.handle")[1];
    assert_eq!(handle.field("otel.name"), "later");
    assert_eq!(handle.field("otel.kind"), "consumer");
    let inside = &capture.events("in the async handler")[0];
    assert_eq!(inside.within.as_deref(), Some("nmsg.handle"));

    // The lifecycle, as events with fields.
    let connected = &capture.events("nmsg client connected")[0];
    assert_eq!(connected.field("peer"), peer);
    assert_eq!(connected.field("reconnect"), "false");
    let accepted = &capture.events("nmsg server accepted a connection")[0];
    assert_eq!(accepted.field("peer"), peer);
    server.sockets()[0].close().await;
    client.connected().await;
    // Both ends of the connection, each with its peer and reason.
    let closed = capture.events("nmsg connection closed");
    let reasons: Vec<(&str, &str)> = closed
        .iter()
        .map(|e| (e.field("peer"), e.field("reason")))
        .collect();
    assert!(reasons.contains(&(peer, "closed locally")), "{reasons:?}");
    assert!(
        reasons.contains(&(peer, "the peer closed the connection")),
        "{reasons:?}"
    );
    let disconnected = &capture.events("nmsg client disconnected")[0];
    assert!(!disconnected.field("reason").is_empty());
    let backoff = capture.events("nmsg client backing off");
    let reconnected = capture.events("nmsg client connected");
    assert!(
        reconnected.len() == 2 && reconnected[1].field("reconnect") == "true",
        "{reconnected:?} after {backoff:?}"
    );
    client.stop().await;
    server.stop().await;
}
