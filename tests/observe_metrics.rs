//! What `nmsg::observe` records as metrics, read with metrics-util's
//! `DebuggingRecorder`, installed for the test's thread only (a
//! current-thread runtime runs every task of the test on it).

use std::collections::HashMap;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use nmsg::observe::*;
use nmsg::transport::memory::Network;
use nmsg::{args, Args, Callback, Client, ClientEvent, Error, Router, Server, ServerEvent};

/// The totals of a `DebuggingRecorder`'s metrics. Its snapshots reset what
/// they read (gauges too), so the totals add them up.
struct Totals {
    snapshotter: Snapshotter,
    seen: HashMap<String, f64>,
}

impl Totals {
    fn new(recorder: &DebuggingRecorder) -> Totals {
        Totals {
            snapshotter: recorder.snapshotter(),
            seen: HashMap::new(),
        }
    }

    fn get(&mut self, name: &str) -> f64 {
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let value = match value {
                DebugValue::Counter(n) => n as f64,
                DebugValue::Gauge(g) => g.0,
                DebugValue::Histogram(_) => continue,
            };
            *self.seen.entry(key.key().name().to_owned()).or_default() += value;
        }
        self.seen.get(name).copied().unwrap_or(0.0)
    }
}

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

#[tokio::test(start_paused = true)]
async fn the_metrics_count_frames_bytes_calls_timeouts_losses_and_connections() {
    let recorder = DebuggingRecorder::new();
    let mut totals = Totals::new(&recorder);
    let _local = metrics::set_default_local_recorder(&recorder);
    describe_metrics();

    let net = Network::new();
    let server = echo_server(&net, 1);
    let mut server_events = server.events();
    let client = Client::builder(net.connector("svc")).start();
    let mut client_events = client.events();
    client.connected().await;

    // A call: a frame each way, every byte sent received.
    let (n,): (u32,) = client.router().request("echo", args![7]).await.unwrap();
    assert_eq!(n, 7);
    assert_eq!(totals.get(FRAMES_SENT), 2.0);
    assert_eq!(totals.get(FRAMES_RECEIVED), 2.0);
    let sent = totals.get(BYTES_SENT);
    assert!(sent > 8.0, "{sent}");
    assert_eq!(totals.get(BYTES_RECEIVED), sent);
    assert_eq!(totals.get(CALLS_IN_FLIGHT), 0.0);
    assert_eq!(totals.get(QUEUED_FRAMES), 0.0);
    assert_eq!(totals.get(CONNECTIONS), 1.0);

    // A frame queued, then in flight until its callback times out.
    let (cb, reply) = Callback::<()>::once();
    let router = client.router();
    router
        .emit_with_timeout("silent", args![cb], Duration::from_secs(1))
        .unwrap();
    assert_eq!(totals.get(QUEUED_FRAMES), 1.0);
    assert_eq!(totals.get(CALLS_IN_FLIGHT), 1.0);
    assert!(matches!(reply.await, Err(Error::Timeout(_))));
    assert_eq!(totals.get(CALLBACK_TIMEOUTS), 1.0);
    assert_eq!(totals.get(CALLS_IN_FLIGHT), 0.0);
    assert_eq!(totals.get(QUEUED_FRAMES), 0.0);
    assert_eq!(totals.get(FRAMES_SENT), 3.0);

    // The server drops the connection: the client reconnects.
    assert_eq!(totals.get(RECONNECTS), 0.0);
    server.sockets()[0].close().await;
    loop {
        if let ClientEvent::Connected { .. } = client_events.recv().await.unwrap() {
            break;
        }
    }
    assert_eq!(totals.get(RECONNECTS), 1.0);

    // A second client, refused: the server is at its limit.
    let refused = Client::builder(net.connector("svc")).start();
    loop {
        if let ServerEvent::Refused { .. } = server_events.recv().await.unwrap() {
            break;
        }
    }
    assert_eq!(totals.get(CONNECTIONS_REFUSED), 1.0);
    refused.stop().await;
    client.stop().await;
    server.stop().await;
    assert_eq!(totals.get(CONNECTIONS), 0.0);

    // A response queued for a connection that is lost is dropped: lost.
    let (a, b) = (Router::new(), Router::new());
    b.on("ask", |args: Args| -> Result<(), Error> {
        args.callback(0)?.call(("late",))
    });
    let (cb, _reply) = Callback::<(String,)>::once();
    a.emit("ask", args![cb]).unwrap();
    let out = a.link().take_outgoing().unwrap();
    b.link().dispatch(out.slice(4..));
    assert_eq!(totals.get(QUEUED_FRAMES), 1.0, "the response");
    assert_eq!(totals.get(CALLS_IN_FLIGHT), 1.0, "a waits");
    b.link().connection_lost("gone");
    assert_eq!(totals.get(FRAMES_LOST), 1.0);
    assert!(totals.get(BYTES_LOST) > 4.0);
    assert_eq!(totals.get(QUEUED_FRAMES), 0.0);
    // A router that goes takes what the gauges count of it.
    drop(a);
    assert_eq!(totals.get(CALLS_IN_FLIGHT), 0.0);
}
