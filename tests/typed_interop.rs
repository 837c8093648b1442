//! The typed layer against itself and against the dynamic API: both lower to
//! the same frames, so every mix works. See `typed_support` for the transport.

mod js_support;
mod typed_support;

use std::time::Duration;

use nmsg::{args, Args, Callback, Peer, RemoteCallback, Value};
use typed_support::*;

/// The replies every `Greeter` server of these tests gives, typed or dynamic:
/// a plain value, error-first with a value and with an error, and error-first
/// with `()`.
async fn expect_greeter_replies(client: &GreeterClient) -> Result<(), nmsg::Error> {
    assert_eq!(client.ping().await?, "pong");
    assert_eq!(client.div(6.0, 3.0).await?, Ok(2.0));
    assert_eq!(
        client.div(1.0, 0.0).await?,
        Err("division by zero".to_string())
    );
    assert_eq!(client.check(true).await?, Ok(()));
    assert_eq!(client.check(false).await?, Err("not ok".to_string()));
    Ok(())
}

async fn typed_client_against_typed_service_over(transport: Transport) -> Result<(), nmsg::Error> {
    let link = connect_with(transport, None).await;
    let greeter = GreeterApi::new(MyGreeter::default());
    greeter.serve(&link.server);
    let client = GreeterClient::new(&link.client);

    client.hello("Ann".into())?;
    client.hello("Bob".into())?;
    // Frames keep their order, so both names are in before `count` is answered.
    assert_eq!(client.count().await?, 2);
    assert_eq!(*greeter.service().names.lock().unwrap(), ["Ann", "Bob"]);
    expect_greeter_replies(&client).await?;
    link.stop().await;
    Ok(())
}

#[tokio::test]
async fn typed_client_against_typed_service_over_tcp() -> Result<(), nmsg::Error> {
    typed_client_against_typed_service_over(Transport::Tcp).await
}

#[tokio::test]
async fn typed_client_against_typed_service_in_memory() -> Result<(), nmsg::Error> {
    typed_client_against_typed_service_over(Transport::Memory).await
}

#[tokio::test]
async fn typed_client_against_dynamic_handlers() -> Result<(), nmsg::Error> {
    let link = connect().await;
    let (hello_tx, hello_rx) = tokio::sync::oneshot::channel();
    let hello_tx = std::sync::Mutex::new(Some(hello_tx));
    link.server
        .on("hello", move |args: Args| -> Result<(), nmsg::Error> {
            let name: String = args.get(0)?;
            hello_tx.lock().unwrap().take().unwrap().send(name).unwrap();
            Ok(())
        });
    link.server
        .on("count", |args: Args| -> Result<(), nmsg::Error> {
            args.callback(0)?.call((7,))
        });
    link.server
        .on("ping", |args: Args| -> Result<(), nmsg::Error> {
            args.callback(0)?.call(("pong",))
        });
    // Written as a JavaScript handler would: `cb(null, a / b)` or `cb(err)`.
    link.server
        .on("div", |args: Args| -> Result<(), nmsg::Error> {
            let (a, b, cb): (f64, f64, RemoteCallback) = args.parse()?;
            if b == 0.0 {
                cb.call(("division by zero",))
            } else {
                cb.call((Value::Nil, a / b))
            }
        });
    link.server
        .on("check", |args: Args| -> Result<(), nmsg::Error> {
            let (ok, cb): (bool, RemoteCallback) = args.parse()?;
            if ok {
                cb.call((Value::Nil,))
            } else {
                cb.call(("not ok",))
            }
        });
    link.server
        .on("pick-hand", |args: Args| -> Result<(), nmsg::Error> {
            args.callback(0)?.call((hand("white"), hand("black")))
        });
    let client = GreeterClient::new(&link.client);

    client.hello("Ann".into())?;
    assert_eq!(hello_rx.await.unwrap(), "Ann");
    assert_eq!(client.count().await?, 7);
    expect_greeter_replies(&client).await?;
    let (hands, picked) = Callback::once();
    client.pick_hand(hands)?;
    let (left, right) = picked.await?;
    assert_eq!(open(left).await?, "white");
    assert_eq!(open(right).await?, "black");
    Ok(())
}

#[tokio::test]
async fn dynamic_emit_against_typed_service() -> Result<(), nmsg::Error> {
    let link = connect().await;
    let greeter = GreeterApi::new(MyGreeter::default());
    greeter.serve(&link.server);
    let client = &link.client;

    client.emit("hello", ("Ann",))?;
    let (count,): (u64,) = client.request("count", ()).await?;
    assert_eq!(count, 1);
    let (pong,): (String,) = client.request("ping", ()).await?;
    assert_eq!(pong, "pong");
    // Error-first on the wire: `(null, value)`, `(err)`, and `(null)` for `Ok(())`.
    let answer: Args = client.request("div", (6.0, 3.0)).await?;
    assert_eq!(answer.len(), 2);
    assert_eq!(answer.value(0)?, Value::Nil);
    assert_eq!(answer.get::<f64>(1)?, 2.0);
    let answer: Args = client.request("div", (1.0, 0.0)).await?;
    assert_eq!(answer.len(), 1);
    assert_eq!(answer.get::<String>(0)?, "division by zero");
    let answer: Args = client.request("check", (true,)).await?;
    assert_eq!(answer.len(), 1);
    assert_eq!(answer.value(0)?, Value::Nil);
    // Callbacks in the first and the last position.
    let (first, first_reply) = Callback::<(String,)>::once();
    let (last, last_reply) = Callback::<(String,)>::once();
    client.emit("multi", args![first, "x", last])?;
    assert_eq!(last_reply.await?.0, "last x");
    assert_eq!(first_reply.await?.0, "first x");
    Ok(())
}

/// `done` of the original's nested example: "pong", and a callback whose
/// argument is a callback again.
type Done = Callback<(String, Callback<(Callback<(String,)>,)>)>;

/// The original's nested example: `ping(data, err, done)`.
#[nmsg::events]
trait Nested {
    fn ping(&self, data: Value, err: Callback<(String,)>, done: Done);
}

struct NestedService;

impl Nested for NestedService {
    fn ping(&self, _data: Value, err: Callback<(String,)>, done: Done) {
        let _ = err.call(("This is error message".into(),));
        let inner = Callback::new(|(cb2,): (Callback<(String,)>,)| {
            let _ = cb2.call(("You can have as many levels as you want...".into(),));
        });
        let _ = done.call(("pong".into(), inner));
    }
}

#[tokio::test]
async fn original_nested_example_as_a_typed_trait() -> Result<(), nmsg::Error> {
    let link = connect().await;
    NestedApi::new(NestedService).serve(&link.server);
    let client = NestedClient::new(&link.client);
    let (err, err_reply) = Callback::once();
    let (done, done_reply) = Callback::once();
    client.ping(Value::from("some data"), err, done)?;
    assert_eq!(err_reply.await?.0, "This is error message");
    let (pong, inner) = done_reply.await?;
    assert_eq!(pong, "pong");
    let (cb2, deepest) = Callback::once();
    inner.call((cb2,))?;
    assert_eq!(
        deepest.await?.0,
        "You can have as many levels as you want..."
    );

    // The same frames from a dynamic peer, as the original's client sends them.
    let (err, err_reply) = Callback::<(String,)>::once();
    let (done, done_reply) = Done::once();
    link.client.emit("ping", args![Value::Nil, err, done])?;
    assert_eq!(err_reply.await?.0, "This is error message");
    let (_, inner) = done_reply.await?;
    let (cb2, deepest) = Callback::once();
    inner.call((cb2,))?;
    assert_eq!(
        deepest.await?.0,
        "You can have as many levels as you want..."
    );
    Ok(())
}

#[tokio::test]
async fn pick_hand_as_a_typed_trait() -> Result<(), nmsg::Error> {
    let link = connect().await;
    GreeterApi::new(MyGreeter::default()).serve(&link.server);
    let client = GreeterClient::new(&link.client);
    let (hands, picked) = Callback::once();
    client.pick_hand(hands)?;
    let (left, right) = picked.await?;
    assert_eq!(open(left).await?, "white");
    assert_eq!(open(right).await?, "black");

    // A closure instead of a one-shot: the hands are opened inside it.
    let (colours_tx, mut colours) = tokio::sync::mpsc::unbounded_channel();
    client.pick_hand(Callback::new(move |(left, right): (Hand, Hand)| {
        for hand in [left, right] {
            let tx = colours_tx.clone();
            let _ = hand.call((Callback::new(move |(colour,): (String,)| {
                let _ = tx.send(colour);
            }),));
        }
    }))?;
    let mut seen = vec![colours.recv().await.unwrap(), colours.recv().await.unwrap()];
    seen.sort();
    assert_eq!(seen, ["black", "white"]);
    Ok(())
}

#[tokio::test]
async fn server_calls_the_client_back_on_the_same_connection() -> Result<(), nmsg::Error> {
    let link = connect().await;
    LobbyApi::new(MyLobby).serve(&link.server);
    GuestApi::new(MyGuest).serve(&link.client);
    let lobby = LobbyClient::new(&link.client);
    let answer = lobby.join("Ann".into()).await?;
    assert_eq!(answer, Ok("thanks for the \"welcome, Ann\"".to_string()));
    Ok(())
}

#[tokio::test]
async fn a_shared_api_serves_every_socket_of_a_server() -> Result<(), nmsg::Error> {
    let greeter = GreeterApi::new(MyGreeter::default());
    let link = connect_with(Transport::Tcp, Some(greeter.clone().into())).await;
    let second = link.another_client().await;
    for router in [&link.client, second.router()] {
        let client = GreeterClient::new(router);
        client.hello("someone".into())?;
        assert_eq!(client.ping().await?, "pong");
    }
    // One service behind both sockets.
    assert_eq!(GreeterClient::new(&link.client).count().await?, 2);
    for event in GreeterClient::EVENTS {
        assert!(link.server_handle().api().contains(event), "{event}");
    }
    second.stop().await;
    link.stop().await;
    Ok(())
}

#[nmsg::events(rename_all = "camelCase")]
trait Renamed {
    fn get_name(&self) -> String;
    #[nmsg(event = "explicit_wins")]
    fn set_name(&self, name: String);
}

#[nmsg::events(rename_all = "kebab-case")]
trait Kebab {
    fn get_name(&self) -> String;
}

struct Names;

impl Renamed for Names {
    fn get_name(&self) -> String {
        "camel".into()
    }
    fn set_name(&self, _name: String) {}
}

impl Kebab for Names {
    fn get_name(&self) -> String {
        "kebab".into()
    }
}

#[tokio::test]
async fn renamed_events_are_what_the_wire_sees() -> Result<(), nmsg::Error> {
    assert_eq!(RenamedClient::EVENTS, ["getName", "explicit_wins"]);
    assert_eq!(KebabClient::EVENTS, ["get-name"]);
    let link = connect().await;
    RenamedApi::new(Names).serve(&link.server);
    KebabApi::new(Names).serve(&link.server);
    let (camel,): (String,) = link.client.request("getName", ()).await?;
    let (kebab,): (String,) = link.client.request("get-name", ()).await?;
    assert_eq!((camel.as_str(), kebab.as_str()), ("camel", "kebab"));
    assert_eq!(RenamedClient::new(&link.client).get_name().await?, "camel");
    Ok(())
}

/// Default bodies, sync and async, and a `Peer` that is not the last parameter.
#[nmsg::events]
trait Defaults {
    fn twice(&self, n: u32) -> u32 {
        n * 2
    }
    async fn later(&self, n: u32) -> u32 {
        tokio::time::sleep(Duration::from_millis(1)).await;
        n + 1
    }
    fn whoami(&self, peer: Peer, tag: String) -> String {
        let _ = peer.router();
        format!("{tag}: served")
    }
}

struct UsesDefaults;
impl Defaults for UsesDefaults {}

#[tokio::test]
async fn default_method_bodies_serve_too() -> Result<(), nmsg::Error> {
    let link = connect().await;
    DefaultsApi::new(UsesDefaults).serve(&link.server);
    let client = DefaultsClient::new(&link.client);
    assert_eq!(client.twice(21).await?, 42);
    assert_eq!(client.later(41).await?, 42);
    assert_eq!(client.whoami("me".into()).await?, "me: served");
    Ok(())
}

#[tokio::test]
async fn a_reply_can_be_a_callback() -> Result<(), nmsg::Error> {
    #[nmsg::events]
    trait Factory {
        /// Replies with a callback the caller invokes later.
        fn adder(&self, base: i64) -> Callback<(i64, Callback<(i64,)>)>;
    }
    struct F;
    impl Factory for F {
        fn adder(&self, base: i64) -> Callback<(i64, Callback<(i64,)>)> {
            Callback::new(move |(n, reply): (i64, Callback<(i64,)>)| {
                let _ = reply.call((base + n,));
            })
        }
    }
    let link = connect().await;
    FactoryApi::new(F).serve(&link.server);
    let add = FactoryClient::new(&link.client).adder(40).await?;
    let (reply, sum) = Callback::once();
    add.call((2, reply))?;
    assert_eq!(sum.await?.0, 42);
    Ok(())
}

// ----- the typed client against the JavaScript peer -----
//
// `tests/js/typed-peer.js` serves the `Greeter` and `Lobby` events as a Node.js
// program writes them, with the JavaScript nmsg peer of `tests/js`: answers
// through `cb(value)`, error-first `cb(null, v)` / `cb(err)`, nested callbacks.

mod js_peer {
    use std::process::Stdio;
    use std::time::Duration;

    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::process::{Child, Command};

    pub const LIMIT: Duration = super::LIMIT;

    use super::js_support::{js_dir, js_ready};

    /// The running JavaScript server; killed when dropped (a failing test too).
    pub struct JsServer {
        _child: Child,
        pub addr: String,
    }

    /// Starts `typed-peer.js` on 127.0.0.1 port 0 with `codec` and waits for
    /// the address it listens on.
    pub async fn start(codec: &str) -> JsServer {
        js_ready();
        let mut child = Command::new("node")
            .arg("typed-peer.js")
            .args(["--addr", "127.0.0.1:0", "--codec", codec])
            .current_dir(js_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start node typed-peer.js");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        tokio::time::timeout(LIMIT, BufReader::new(stdout).read_line(&mut line))
            .await
            .expect("typed-peer.js did not report its address within the limit")
            .expect("read typed-peer.js's stdout");
        let addr = line
            .trim()
            .strip_prefix("LISTENING ")
            .unwrap_or_else(|| panic!("typed-peer.js printed {line:?}, not LISTENING HOST:PORT"))
            .to_owned();
        JsServer {
            _child: child,
            addr,
        }
    }
}

/// Awaits `f` within [`LIMIT`], failing the test if it takes longer.
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {LIMIT:?}"))
}

/// A trait whose answer types do not fit what the JavaScript peer sends.
#[nmsg::events]
pub trait Mismatched {
    /// The peer answers `count` with a number.
    fn count(&self) -> String;
    /// The peer answers `div` with `cb(null, number)`: not a string.
    async fn div(&self, a: f64, b: f64) -> Result<String, String>;
}

async fn typed_client_against_the_javascript_peer(codec: &str) -> Result<(), nmsg::Error> {
    let js = js_peer::start(codec).await;
    let client = match codec {
        "json" => nmsg::Client::tcp(&js.addr).codec(nmsg::Json).start(),
        _ => nmsg::Client::tcp(&js.addr).start(),
    };
    GuestApi::new(MyGuest).serve(client.router());
    let greeter = GreeterClient::new(client.router());

    // no reply; frames keep their order, so both names are in before `count`
    greeter.hello("Ann".into())?;
    greeter.hello("Bob".into())?;
    assert_eq!(within("count", greeter.count()).await?, 2);

    // cb(value), answered on a later turn of the event loop
    assert_eq!(within("ping", greeter.ping()).await?, "pong");

    // error-first: cb(null, v) is Ok(v), cb(err) is Err(err)
    assert_eq!(within("div(6, 3)", greeter.div(6.0, 3.0)).await?, Ok(2.0));
    assert_eq!(within("div(1, 4)", greeter.div(1.0, 4.0)).await?, Ok(0.25));
    assert_eq!(
        within("div(1, 0)", greeter.div(1.0, 0.0)).await?,
        Err("division by zero".to_string())
    );
    assert_eq!(within("check(true)", greeter.check(true)).await?, Ok(()));
    assert_eq!(
        within("check(false)", greeter.check(false)).await?,
        Err("not ok".to_string())
    );

    // nested callbacks, both ways
    let (hands, picked) = Callback::once();
    greeter.pick_hand(hands)?;
    let (left, right) = within("pick-hand", picked).await?;
    assert_eq!(within("left hand", open(left)).await?, "white");
    assert_eq!(within("right hand", open(right)).await?, "black");

    // callbacks first and last, answered last first
    let (first, first_reply) = Callback::once();
    let (last, last_reply) = Callback::once();
    greeter.multi(first, "x".into(), last)?;
    assert_eq!(within("multi last", last_reply).await?.0, "last x");
    assert_eq!(within("multi first", first_reply).await?.0, "first x");

    // the peer calls the client's typed service before answering, error-first
    let lobby = LobbyClient::new(client.router());
    assert_eq!(
        within("join", lobby.join("Ann".into())).await?,
        Ok("thanks for the \"welcome, Ann\"".to_string())
    );

    // answers of the wrong type are errors, not a hang or a panic
    let mismatched = MismatchedClient::new(client.router());
    let wrong = within("count as a string", mismatched.count()).await;
    assert!(wrong.is_err(), "a number read as a String: {wrong:?}");
    let wrong = within("div as a string", mismatched.div(6.0, 3.0)).await;
    assert!(wrong.is_err(), "cb(null, 2) read as Ok(String): {wrong:?}");

    // and the peer saw nothing wrong on its side: no protocol error, no stray
    // or duplicate response, no handler that threw, no unhandled event
    let (problems, reply) = Callback::<(Vec<String>,)>::once();
    client.router().emit("problems", args![problems])?;
    let (problems,) = within("problems", reply).await?;
    assert!(
        problems.is_empty(),
        "the JavaScript peer reported: {problems:#?}"
    );

    client.stop().await;
    Ok(())
}

#[tokio::test]
async fn typed_client_against_the_javascript_peer_with_msgpack() -> Result<(), nmsg::Error> {
    typed_client_against_the_javascript_peer("msgpack").await
}

#[tokio::test]
async fn typed_client_against_the_javascript_peer_with_json() -> Result<(), nmsg::Error> {
    typed_client_against_the_javascript_peer("json").await
}

// ---------------------------------------------------------------------------
// a typed Rust server, a Node.js client sending JavaScript numbers
// ---------------------------------------------------------------------------

/// The example: what a Node.js client calls with `Date.now()` and
/// other JavaScript numbers, typed as integers on the Rust side.
#[nmsg::events]
pub trait Clock {
    fn tick(&self, at: u64);
    async fn add(&self, a: i64, b: i64) -> i64;
    #[nmsg(event = "last-tick")]
    fn last_tick(&self) -> u64;
    #[nmsg(event = "echo-text")]
    fn echo_text(&self, text: String) -> String;
}

#[derive(Default)]
struct MyClock {
    last: std::sync::Mutex<u64>,
}

impl Clock for MyClock {
    fn tick(&self, at: u64) {
        *self.last.lock().unwrap() = at;
    }

    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }

    fn last_tick(&self) -> u64 {
        *self.last.lock().unwrap()
    }

    fn echo_text(&self, text: String) -> String {
        text
    }
}

/// Serves `Clock` on 127.0.0.1 and runs `tests/js/clock-client.js` against
/// it with `args`: every check of the client passes (exact numbers and text
/// back), and the server's error hook hears nothing.
async fn clock_answers_a_node_client(args: &[&str]) {
    use std::process::Stdio;
    js_support::js_ready();
    let server = nmsg::Server::tcp("127.0.0.1:0").start();
    let (errors_tx, mut errors) = tokio::sync::mpsc::unbounded_channel();
    server.on_socket(move |socket| {
        let errors = errors_tx.clone();
        socket.router().on_error(move |e| {
            let _ = errors.send(e.to_string());
        });
        ClockApi::new(MyClock::default()).serve(socket.router());
    });
    let nmsg::transport::Address::Tcp(addr) = server.started().await.expect("the server starts")
    else {
        panic!("not a TCP address");
    };
    // Each check that gets no answer costs the client 5 s: a bound of its own.
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("node")
            .arg("clock-client.js")
            .args(["--addr", &addr.to_string()])
            .args(args)
            .current_dir(js_support::js_dir())
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("clock-client.js did not end within 60 s")
    .expect("run node clock-client.js");
    let stdout = String::from_utf8_lossy(&out.stdout);
    server.stop().await;
    let mut heard = Vec::new();
    while let Ok(e) = errors.try_recv() {
        heard.push(e);
    }
    assert!(
        out.status.success() && stdout.ends_with("6 passed, 0 failed\n"),
        "clock-client.js {args:?} ({}):\n{stdout}\nthe server's error hook heard: {heard:?}",
        out.status
    );
    assert!(heard.is_empty(), "the server's error hook heard {heard:?}");
}

#[tokio::test]
async fn typed_server_answers_a_node_client_writing_int64() {
    clock_answers_a_node_client(&["--library", "@msgpack/msgpack"]).await
}

#[tokio::test]
async fn typed_server_answers_a_node_client_with_msgpack_lite_0_1() {
    clock_answers_a_node_client(&["--library", "msgpack-lite-0.1"]).await
}

#[tokio::test]
async fn typed_server_answers_a_node_client_with_msgpack_lite_0_2() {
    clock_answers_a_node_client(&["--library", "msgpack-lite-0.2"]).await
}

#[tokio::test]
async fn typed_server_answers_a_node_client_of_the_2016_release() {
    clock_answers_a_node_client(&["--library", "msgpack-lite-0.1", "--dialect", "2016"]).await
}
