//! What nmsg tells an application's tracing and metrics stacks: a server and
//! a client over loopback TCP, with `tracing-subscriber`'s formatter showing
//! the spans and lifecycle events (at `DEBUG`), and metrics-util's
//! `DebuggingRecorder` as the metrics recorder, whose snapshot is printed at
//! the end. In production the recorder would be an exporter's
//! (`metrics-exporter-prometheus`, …) and the subscriber would have an
//! OpenTelemetry layer (`tracing-opentelemetry`); nmsg installs neither.
//!
//! Run with `cargo run --example observe`.

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use nmsg::{args, Args, Callback, Client, Error, Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Span events on close: each span is printed with its fields once it
    // ends (an OpenTelemetry layer would export it then).
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_target(false)
        .init();
    // Installed before any router is built: routers register their
    // handles when they are built.
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install()?;
    nmsg::observe::describe_metrics();

    let server = Server::tcp("127.0.0.1:0").start();
    let nmsg::transport::Address::Tcp(addr) = server.started().await? else {
        unreachable!("a TCP server")
    };
    server.on("add", |args: Args| -> Result<(), Error> {
        let (a, b): (i64, i64) = (args.get(0)?, args.get(1)?);
        tracing::info!(a, b, "adding");
        args.callback(2)?.call((a + b,))
    });
    server.on("note", |args: Args| {
        let text: String = args.get(0).unwrap_or_default();
        tracing::info!(%text, "noted");
    });
    server.on("ignore", |_: Args| {});

    let client = Client::tcp(addr.to_string()).start();
    client.connected().await;
    let router = client.router();
    let (sum,): (i64,) = router.request("add", args![2, 40]).await?;
    tracing::info!(sum, "the client has its answer");
    router.emit("note", args!["fire and forget"])?;
    // A callback the server never calls: it times out (a counter).
    let (never, unanswered) = Callback::<()>::once();
    router.emit_with_timeout("ignore", args![never], Duration::from_millis(100))?;
    let outcome = unanswered.await;
    tracing::info!(?outcome, "the unanswered callback");

    client.stop().await;
    server.stop().await;

    println!("metrics:");
    let mut rows: Vec<(String, String)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, unit, _, value)| {
            let value = match value {
                DebugValue::Counter(n) => n.to_string(),
                DebugValue::Gauge(g) => g.0.to_string(),
                DebugValue::Histogram(h) => format!("{} samples", h.len()),
            };
            let unit = unit.map(|u| format!(" {}", u.as_str())).unwrap_or_default();
            (key.key().name().to_owned(), format!("{value}{unit}"))
        })
        .collect();
    rows.sort();
    for (name, value) in rows {
        println!("  {name:<32} {value}");
    }
    Ok(())
}
