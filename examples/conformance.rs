//! The conformance peer of CONFORMANCE.md, in Rust: one binary, two modes.
//!
//! ```text
//! cargo run --example conformance -- serve   --addr 127.0.0.1:0    [--codec msgpack|json] [--buffered]
//! cargo run --example conformance -- connect --addr 127.0.0.1:7000 [--codec msgpack|json] [--buffered]
//! ```
//!
//! `serve` prints `LISTENING HOST:PORT` (the real port, also for port 0), then
//! serves every conformance event on every connection until killed. `connect`
//! runs the scenarios against a server, prints `PASS name` or `FAIL name: why`
//! for each, then `N passed, M failed`, and exits non-zero if any failed. The
//! scenarios and their names are the same as the JavaScript peer's in `tests/js`.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nmsg::Peer;

use nmsg::transport::Address;
use nmsg::{
    args, Args, Buffering, Callback, Client, Error, RemoteCallback, Router, Server, Socket, Value,
};

const SCENARIO_TIMEOUT: Duration = Duration::from_secs(10);

struct Options {
    serve: bool,
    addr: String,
    json: bool,
    buffered: bool,
}

fn usage(problem: &str) -> ! {
    eprintln!("{problem}\nusage: conformance serve|connect --addr HOST:PORT [--codec msgpack|json] [--buffered]");
    std::process::exit(2);
}

fn options() -> Options {
    let mut args = std::env::args().skip(1);
    let serve = match args.next().as_deref() {
        Some("serve") => true,
        Some("connect") => false,
        other => usage(&format!("unknown mode {other:?}")),
    };
    let (mut addr, mut json, mut buffered) = (None, false, false);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = args.next(),
            "--codec" => match args.next().as_deref() {
                Some("msgpack") => json = false,
                Some("json") => json = true,
                other => usage(&format!("unknown codec {other:?}")),
            },
            "--buffered" => buffered = true,
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    let addr = addr.unwrap_or_else(|| usage("--addr is required"));
    Options {
        serve,
        addr,
        json,
        buffered,
    }
}

#[tokio::main]
async fn main() {
    let opts = options();
    let code = if opts.serve {
        serve(opts).await
    } else {
        connect(opts).await
    };
    std::process::exit(code);
}

// ---------------------------------------------------------------------------
// serve
// ---------------------------------------------------------------------------

async fn serve(opts: Options) -> i32 {
    let mut builder = Server::tcp(&opts.addr).buffering(if opts.buffered {
        Buffering::Idle
    } else {
        Buffering::Off
    });
    if opts.json {
        builder = builder.codec(nmsg::Json);
    }
    let server = builder.start();
    server.on_socket(install_handlers);
    match server.started().await {
        Some(Address::Tcp(addr)) => println!("LISTENING {addr}"),
        other => {
            eprintln!("could not listen: {other:?}");
            return 1;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    server.stop().await;
    0
}

/// The conformance events whose shapes a trait can state. `add` (integers or
/// floats, refused otherwise), `countdown` (whose callback gets either
/// `("done")` or `(n, next)`) and `stats` (per-connection state kept by the
/// wildcard) stay dynamic.
#[nmsg::events]
pub trait Conformance {
    /// `cb(value)`.
    fn echo(&self, value: Value) -> Value;
    /// `err(..)`, then `done("pong", inner)`; `inner(cb2)` calls `cb2(..)`.
    fn ping(&self, data: Value, err: Callback<(String,)>, done: Done);
    /// `cb(left, right)`; `left(c)` calls `c("white")`, `right(c)` calls `c("black")`.
    #[nmsg(event = "pick-hand")]
    fn pick_hand(&self, cb: Callback<(Hand, Hand)>);
    /// `cb2(value)`, then `cb0(value)`.
    fn multi(&self, cb0: Callback<(Value,)>, value: Value, cb2: Callback<(Value,)>);
    /// Emits `event(payload)` back on this connection, then `cb(true)`.
    fn notify(&self, event: String, payload: Value, cb: Callback<(bool,)>, peer: Peer);
}

/// A hand of `pick-hand`: called with a callback that gets the colour.
type Hand = Callback<(Callback<(String,)>,)>;

/// `ping`'s `done`: gets "pong" and `inner`, which is called with a callback for the last text.
type Done = Callback<(String, Callback<(Callback<(String,)>,)>)>;

struct Conformer;

impl Conformance for Conformer {
    fn echo(&self, value: Value) -> Value {
        value
    }

    fn ping(&self, _data: Value, err: Callback<(String,)>, done: Done) {
        let _ = err.call(("This is error message".to_owned(),));
        let inner = Callback::new(|(cb2,): (Callback<(String,)>,)| {
            let _ = cb2.call(("You can have as many levels as you want...".to_owned(),));
        });
        let _ = done.call(("pong".to_owned(), inner));
    }

    fn pick_hand(&self, cb: Callback<(Hand, Hand)>) {
        let hand = |colour: &'static str| -> Hand {
            Callback::new(move |(c,): (Callback<(String,)>,)| {
                let _ = c.call((colour.to_owned(),));
            })
        };
        let _ = cb.call((hand("white"), hand("black")));
    }

    fn multi(&self, cb0: Callback<(Value,)>, value: Value, cb2: Callback<(Value,)>) {
        let _ = cb2.call((value.clone(),));
        let _ = cb0.call((value,));
    }

    fn notify(&self, event: String, payload: Value, cb: Callback<(bool,)>, peer: Peer) {
        if peer.router().emit(&event, (payload,)).is_ok() {
            let _ = cb.call((true,));
        }
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_i64().map(|i| i as f64))
        .or_else(|| v.as_u64().map(|u| u as f64))
}

/// Every conformance event, on one connection's router. They are registered
/// as that router's `on` handlers (not in the server's shared `Api`) because the
/// wildcard, which counts events for `stats`, runs only after `on` handlers.
fn install_handlers(socket: Socket) {
    let router = socket.router();
    router.on_error(|e| match e {
        Error::Unhandled(_) => {}
        other => eprintln!("conformance server: {other}"),
    });
    ConformanceApi::new(Conformer).serve(router);
    router.on("add", |args: Args| -> Result<(), Error> {
        let (a, b, cb): (Value, Value, RemoteCallback) = args.parse()?;
        match (a.as_i64(), b.as_i64()) {
            (Some(x), Some(y)) if x.checked_add(y).is_some() => cb.call((x + y,)),
            _ => match (as_f64(&a), as_f64(&b)) {
                (Some(x), Some(y)) => cb.call((x + y,)),
                _ => Err(Error::Argument {
                    index: 0,
                    reason: format!("add takes two numbers, got {a} and {b}"),
                }),
            },
        }
    });
    router.on("countdown", |args: Args| -> Result<(), Error> {
        let (n, cb): (u64, RemoteCallback) = args.parse()?;
        countdown(n, cb)
    });
    let stats = Arc::new(Mutex::new((0u64, Value::Nil)));
    let counted = stats.clone();
    router.on("*", move |args: Args| -> Result<(), Error> {
        let name: String = args.get(0)?;
        let mut s = counted.lock().unwrap();
        s.0 += 1;
        s.1 = Value::from(name);
        Ok(())
    });
    router.on("stats", move |args: Args| -> Result<(), Error> {
        let (cb,): (RemoteCallback,) = args.parse()?;
        let (events, last) = stats.lock().unwrap().clone();
        let map = Value::Map(vec![
            (Value::from("events"), Value::from(events)),
            (Value::from("last"), last),
        ]);
        cb.call((map,))
    });
}

fn countdown(n: u64, cb: RemoteCallback) -> Result<(), Error> {
    if n == 0 {
        return cb.call(("done",));
    }
    let next = Callback::new(move |(cb2,): (RemoteCallback,)| {
        let _ = countdown(n - 1, cb2);
    });
    cb.call((n, next))
}

// ---------------------------------------------------------------------------
// connect
// ---------------------------------------------------------------------------

type Outcome = Result<(), String>;

async fn connect(opts: Options) -> i32 {
    let mut builder = Client::tcp(&opts.addr).buffering(if opts.buffered {
        Buffering::Idle
    } else {
        Buffering::Off
    });
    if opts.json {
        builder = builder.codec(nmsg::Json);
    }
    let client = builder.start();
    let router = client.router().clone();
    router.on_error(|e| eprintln!("conformance client: {e}"));
    if tokio::time::timeout(SCENARIO_TIMEOUT, client.connected())
        .await
        .is_err()
    {
        eprintln!("could not connect to {}", opts.addr);
    }

    let mut results: Vec<(&str, Outcome)> = Vec::new();
    macro_rules! scenario {
        ($name:expr, $body:expr) => {{
            let outcome = run($body).await;
            match &outcome {
                Ok(()) => println!("PASS {}", $name),
                Err(why) => println!("FAIL {}: {}", $name, why),
            }
            results.push(($name, outcome));
        }};
    }
    let r = &router;
    scenario!("echo-string", echo_same(r, Value::from("hello")));
    scenario!(
        "echo-unicode",
        echo_same(r, Value::from("héllo wörld ✓ 日本語 🚀"))
    );
    scenario!("echo-nested-map", echo_same(r, nested_map()));
    scenario!("echo-big-int", async move {
        echo_same(r, Value::from(1_099_511_627_776u64)).await?;
        echo_same(r, Value::from(-5_000_000_000i64)).await
    });
    scenario!("echo-float", async move {
        echo_same(r, Value::from(3.5f64)).await?;
        echo_same(r, Value::from(-0.125f64)).await
    });
    if !opts.json {
        scenario!(
            "echo-binary",
            echo_same(r, Value::Binary((0..=255u8).collect()))
        );
    }
    scenario!("echo-1mib", echo_same(r, Value::from("x".repeat(1 << 20))));
    scenario!("add", async move {
        let (sum,): (f64,) = r
            .request("add", args![2, 40])
            .await
            .map_err(|e| e.to_string())?;
        expect(sum == 42.0, format!("add(2, 40) gave {sum}"))?;
        let (sum,): (f64,) = r
            .request("add", args![1.5, 2.25])
            .await
            .map_err(|e| e.to_string())?;
        expect(sum == 3.75, format!("add(1.5, 2.25) gave {sum}"))
    });
    scenario!("ping", ping(r));
    scenario!("pick-hand", pick_hand(r));
    scenario!("countdown", countdown_scenario(r, 50));
    scenario!("multi", multi(r));
    scenario!("notify", notify(r));
    scenario!("inflight-2000", inflight(r, 2000));
    scenario!("unknown-event", async move {
        r.emit("no-such-event", args![1, Callback::new(|_: Args| {})])
            .map_err(|e| e.to_string())?;
        echo_same(r, Value::from("after")).await
    });
    // Events this client emitted before `stats` (callback invocations are not
    // events): one per echo, two each for echo-big-int, echo-float, add and
    // unknown-event, one for each other scenario, and 2,000 in inflight-2000.
    let emitted_so_far = 2000 + if opts.json { 17 } else { 18 };
    scenario!("stats", async move {
        let (stats,): (Value,) = r.request("stats", ()).await.map_err(|e| e.to_string())?;
        let events = stats["events"]
            .as_u64()
            .ok_or(format!("no events count in {stats}"))?;
        expect(
            stats["last"].is_str(),
            format!("no last event name in {stats}"),
        )?;
        // `stats` itself is counted or not, depending on when the server's wildcard runs
        expect(
            events >= emitted_so_far,
            format!("{events} events counted, expected at least {emitted_so_far}"),
        )
    });

    let failed = results.iter().filter(|(_, o)| o.is_err()).count();
    println!("{} passed, {} failed", results.len() - failed, failed);
    client.stop().await;
    if failed > 0 {
        1
    } else {
        0
    }
}

async fn run(body: impl Future<Output = Outcome>) -> Outcome {
    match tokio::time::timeout(SCENARIO_TIMEOUT, body).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!("no answer within {SCENARIO_TIMEOUT:?}")),
    }
}

fn expect(ok: bool, why: String) -> Outcome {
    if ok {
        Ok(())
    } else {
        Err(why)
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 80 {
        format!(
            "{}… ({} chars)",
            &s[..s.char_indices().nth(60).map_or(s.len(), |(i, _)| i)],
            s.len()
        )
    } else {
        s
    }
}

async fn echo_same(r: &Router, value: Value) -> Outcome {
    let (back,): (Value,) = r
        .request("echo", args![&value])
        .await
        .map_err(|e| e.to_string())?;
    expect(
        back == value,
        format!("sent {}, got {}", short(&value), short(&back)),
    )
}

fn nested_map() -> Value {
    nmsg::to_value(&serde_json::json!({
        "name": "nmsg",
        "list": [1, "two", {"three": [3]}],
        "nested": {"deep": {"deeper": true}},
        "none": null
    }))
    .expect("a JSON value converts")
}

async fn ping(r: &Router) -> Outcome {
    type Inner = Callback<(Callback<(String,)>,)>;
    // err must run before done: record the order in which they run.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Option<Inner>)>();
    let tx2 = tx.clone();
    let err = Callback::new(move |(message,): (String,)| {
        let _ = tx.send((format!("err({message})"), None));
    });
    let done = Callback::new(move |(pong, inner): (String, Inner)| {
        let _ = tx2.send((format!("done({pong})"), Some(inner)));
    });
    let data = nmsg::to_value(&serde_json::json!({"key": "value"})).unwrap();
    r.emit("ping", args![data, err, done])
        .map_err(|e| e.to_string())?;
    let (first, _) = rx.recv().await.ok_or("err was never called")?;
    expect(
        first == "err(This is error message)",
        format!("first call was {first}"),
    )?;
    let (second, inner) = rx.recv().await.ok_or("done was never called")?;
    expect(second == "done(pong)", format!("second call was {second}"))?;
    let (cb2, deepest) = Callback::<(String,)>::once();
    inner
        .expect("done carries inner")
        .call((cb2,))
        .map_err(|e| e.to_string())?;
    let (text,) = deepest.await.map_err(|e| format!("cb2: {e}"))?;
    expect(
        text == "You can have as many levels as you want...",
        format!("cb2 got {text:?}"),
    )
}

async fn pick_hand(r: &Router) -> Outcome {
    type Hand = Callback<(Callback<(String,)>,)>;
    let (left, right): (Hand, Hand) = r
        .request("pick-hand", ())
        .await
        .map_err(|e| e.to_string())?;
    let (c, white) = Callback::<(String,)>::once();
    left.call((c,)).map_err(|e| e.to_string())?;
    let (c, black) = Callback::<(String,)>::once();
    right.call((c,)).map_err(|e| e.to_string())?;
    let (white,) = white.await.map_err(|e| e.to_string())?;
    let (black,) = black.await.map_err(|e| e.to_string())?;
    expect(
        white == "white" && black == "black",
        format!("left gave {white:?}, right gave {black:?}"),
    )
}

async fn countdown_scenario(r: &Router, from: u64) -> Outcome {
    let (first, mut reply) = Callback::<Args>::once();
    r.emit("countdown", args![from, first])
        .map_err(|e| e.to_string())?;
    for want in (1..=from).rev() {
        let args = reply.await.map_err(|e| format!("level {want}: {e}"))?;
        let n: u64 = args.get(0).map_err(|e| format!("level {want}: {e}"))?;
        expect(n == want, format!("expected {want}, got {n}"))?;
        let next = args.callback(1).map_err(|e| format!("level {want}: {e}"))?;
        let (cb, r2) = Callback::<Args>::once();
        next.call((cb,)).map_err(|e| e.to_string())?;
        reply = r2;
    }
    let last = reply.await.map_err(|e| e.to_string())?;
    let done: String = last.get(0).map_err(|e| e.to_string())?;
    expect(done == "done", format!("the last level gave {done:?}"))
}

async fn multi(r: &Router) -> Outcome {
    // The order is recorded when each callback runs (in arrival order), not
    // when a future is polled.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(&'static str, String)>();
    let tx2 = tx.clone();
    let cb0 = Callback::new(move |(v,): (String,)| {
        let _ = tx.send(("cb0", v));
    });
    let cb2 = Callback::new(move |(v,): (String,)| {
        let _ = tx2.send(("cb2", v));
    });
    r.emit("multi", args![cb0, "v", cb2])
        .map_err(|e| e.to_string())?;
    let mut rx = rx;
    let mut calls = Vec::new();
    while calls.len() < 2 {
        calls.push(
            rx.recv()
                .await
                .ok_or("a callback was dropped without being called")?,
        );
    }
    let want = [("cb2", "v".to_owned()), ("cb0", "v".to_owned())];
    expect(
        calls == want,
        format!("callbacks ran as {calls:?}, expected cb2(\"v\") then cb0(\"v\")"),
    )
}

async fn notify(r: &Router) -> Outcome {
    let payload = nmsg::to_value(&serde_json::json!({"hello": "from server"})).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = Mutex::new(Some(tx));
    r.on("notified", move |args: Args| {
        if let Some(tx) = tx.lock().unwrap().take() {
            let _ = tx.send(args.value(0));
        }
    });
    let (ok,): (bool,) = r
        .request("notify", args!["notified", &payload])
        .await
        .map_err(|e| e.to_string())?;
    expect(ok, "notify answered false".into())?;
    let got = rx
        .await
        .map_err(|_| "the notified event never came".to_string())?
        .map_err(|e| e.to_string())?;
    r.off("notified");
    expect(
        got == payload,
        format!("notified with {got}, expected {payload}"),
    )
}

async fn inflight(r: &Router, n: u64) -> Outcome {
    let calls: Vec<_> = (0..n)
        .map(|i| r.request::<(u64,)>("echo", args![i]))
        .collect();
    let answers = futures_util::future::join_all(calls).await;
    for (i, answer) in answers.into_iter().enumerate() {
        let (v,) = answer.map_err(|e| format!("call {i}: {e}"))?;
        expect(v == i as u64, format!("call {i} answered {v}"))?;
    }
    Ok(())
}

#[allow(dead_code)]
fn _assert_socket_is_send(s: Socket) -> impl Send {
    s
}
