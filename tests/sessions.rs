//! Sessions (issue 18) over the in-memory transport, with connections cut
//! at chosen points: exactly once and in order both ways, pending replies
//! and callbacks across breaks, expiry, heartbeats, and peers without sessions.

mod session_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nmsg::transport::memory::Network;
use nmsg::{
    args, Args, Callback, Client, ClientEvent, Error, Router, Server, ServerEvent, SessionOptions,
};
use session_support::{Cut, Cutter};
use tokio::sync::broadcast;

/// Far longer than any of these exchanges takes in paused time.
const LIMIT: Duration = Duration::from_secs(600);

/// A server with sessions on `net` at "svc", and its sockets' routers by
/// session id.
async fn server(net: &Network, options: SessionOptions) -> (Server, Sockets) {
    server_queue(net, options, nmsg::DEFAULT_MAX_QUEUED_FRAMES).await
}

async fn server_queue(net: &Network, options: SessionOptions, queue: usize) -> (Server, Sockets) {
    let server = Server::builder(net.binder("svc"))
        .session(options)
        .router(|r| r.max_queued_frames(queue))
        .start();
    server.started().await.unwrap();
    let routers = Arc::new(Mutex::new(std::collections::HashMap::new()));
    let by_id = routers.clone();
    server.on_socket(move |socket| {
        by_id
            .lock()
            .unwrap()
            .insert(socket.id(), socket.router().clone());
    });
    let sessions = Arc::new(Mutex::new(std::collections::HashMap::new()));
    let by_session = sessions.clone();
    let mut events = server.events();
    tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            if let ServerEvent::SessionStarted {
                socket, session, ..
            } = e
            {
                by_session.lock().unwrap().insert(session, socket);
            }
        }
    });
    (server, Sockets { routers, sessions })
}

/// A session server's sockets.
struct Sockets {
    routers: Arc<Mutex<std::collections::HashMap<u64, Router>>>,
    sessions: Arc<Mutex<std::collections::HashMap<String, u64>>>,
}

impl Sockets {
    /// The router of the socket of session `s` (once it has one).
    async fn by_session(&self, s: &str) -> Router {
        loop {
            let socket = self.sessions.lock().unwrap().get(s).copied();
            if let Some(socket) = socket {
                if let Some(router) = self.routers.lock().unwrap().get(&socket) {
                    return router.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// The router of the socket of the client's session (once it has one).
    async fn of(&self, client: &Client, events: &mut broadcast::Receiver<ClientEvent>) -> Router {
        let session = loop {
            match events.recv().await.unwrap() {
                ClientEvent::SessionStarted { session } => break session,
                ClientEvent::SessionLost { session, .. } => break session,
                _ => {}
            }
        };
        let _ = client;
        loop {
            let socket = self.sessions.lock().unwrap().get(&session).copied();
            if let Some(socket) = socket {
                if let Some(router) = self.routers.lock().unwrap().get(&socket) {
                    return router.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Numbers received on `event`, in order.
fn record(router: &Router, event: &str) -> Arc<Mutex<Vec<u64>>> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    router.on(event, move |args: Args| {
        sink.lock().unwrap().push(args.get::<u64>(0).unwrap());
    });
    got
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    tokio::time::timeout(LIMIT, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: not within {LIMIT:?}"));
}

/// `n` events each way between a session client and server, over
/// connections cut as `cuts` say: every event arrives once, in order.
async fn exchange(n: u64, cuts: &[Cut]) {
    exchange_with(n, cuts, SessionOptions::default()).await
}

async fn exchange_with(n: u64, cuts: &[Cut], options: SessionOptions) {
    exchange_queue(n, cuts, options, nmsg::DEFAULT_MAX_QUEUED_FRAMES).await
}

/// With queues of at most `queue` frames, so that a take is small.
async fn exchange_queue(n: u64, cuts: &[Cut], options: SessionOptions, queue: usize) {
    let net = Network::new();
    let (server, sockets) = server_queue(&net, options.clone(), queue).await;
    let up = Arc::new(Mutex::new(Vec::new()));
    let sink = up.clone();
    server.on("up", move |args: Args| {
        sink.lock().unwrap().push(args.get::<u64>(0).unwrap());
    });
    let cutter = Cutter::new(&net, "svc");
    cutter.plan(cuts.iter().copied());
    let client = Client::builder(cutter.clone())
        .session(options)
        .max_queued_frames(queue)
        .start();
    let mut started = client.events();
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let (mut ce, mut se) = (client.events(), server.events());
    let l = log.clone();
    tokio::spawn(async move {
        while let Ok(e) = ce.recv().await {
            if std::env::var_os("SESSION_TEST_LOG").is_some() {
                eprintln!("client {e:?}");
            }
            l.lock().unwrap().push(format!("client {e:?}"));
        }
    });
    let l = log.clone();
    tokio::spawn(async move {
        while let Ok(e) = se.recv().await {
            if std::env::var_os("SESSION_TEST_LOG").is_some() {
                eprintln!("server {e:?}");
            }
            l.lock().unwrap().push(format!("server {e:?}"));
        }
    });
    let down = record(client.router(), "down");
    let sender = {
        let router = client.router().clone();
        tokio::spawn(async move {
            for i in 1..=n {
                router.emit_wait("up", args![i]).await.unwrap();
            }
        })
    };
    let router = sockets.of(&client, &mut started).await;
    for i in 1..=n {
        router.emit_wait("down", args![i]).await.unwrap();
    }
    sender.await.unwrap();
    let expected: Vec<u64> = (1..=n).collect();
    let ok = tokio::time::timeout(LIMIT, async {
        while !(up.lock().unwrap().len() >= n as usize && down.lock().unwrap().len() >= n as usize)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(
        ok.is_ok(),
        "up {} down {} events {:#?}",
        up.lock().unwrap().len(),
        down.lock().unwrap().len(),
        log.lock().unwrap()
    );
    assert_eq!(
        *up.lock().unwrap(),
        expected,
        "client to server, cuts {cuts:?}"
    );
    assert_eq!(
        *down.lock().unwrap(),
        expected,
        "server to client, cuts {cuts:?}"
    );
    client.stop().await;
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn events_arrive_once_and_in_order_both_ways_without_breaks() {
    exchange(500, &[]).await;
}

/// A replay buffer of 16 messages (and queues of 4 frames, so that a take
/// of the queue does not overshoot it): writing pauses until the peer's
/// acks make room (an idle peer acknowledges after the ack delay), and
/// nothing is dropped.
#[tokio::test(start_paused = true)]
async fn a_full_replay_buffer_pauses_writing_until_acks_come() {
    let options = SessionOptions::default().max_replay_messages(16);
    let start = tokio::time::Instant::now();
    exchange_queue(1000, &[Cut::Read(4000), Cut::Write(2500)], options, 4).await;
    // Acks, not heartbeats (every 25 s, acks too), make the room.
    let took = start.elapsed();
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[tokio::test(start_paused = true)]
async fn events_arrive_once_and_in_order_both_ways_across_breaks() {
    exchange(
        2000,
        &[
            Cut::Write(10),
            Cut::Read(7),
            Cut::Write(3000),
            Cut::Read(5000),
            Cut::Write(1),
            Cut::Read(20_001),
        ],
    )
    .await;
}

/// A client with sessions through `cutter`, and a log of its events.
/// Its requests wait for answers up to 10 minutes: a request's timeout runs
/// across breaks, and these tests wait out heartbeats and windows.
fn client(cutter: &Cutter, options: SessionOptions) -> (Client, broadcast::Receiver<ClientEvent>) {
    let client = Client::builder(cutter.clone())
        .session(options)
        .router(|r| r.default_timeout(Duration::from_secs(600)))
        .start();
    let events = client.events();
    (client, events)
}

/// Waits for the client event `pick` accepts.
async fn client_event<T>(
    events: &mut broadcast::Receiver<ClientEvent>,
    mut pick: impl FnMut(&ClientEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(LIMIT, async {
        loop {
            let e = events.recv().await.expect("client events");
            if let Some(t) = pick(&e) {
                return t;
            }
        }
    })
    .await
    .expect("client event")
}

async fn server_event<T>(
    events: &mut broadcast::Receiver<ServerEvent>,
    mut pick: impl FnMut(&ServerEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(LIMIT, async {
        loop {
            let e = events.recv().await.expect("server events");
            if let Some(t) = pick(&e) {
                return t;
            }
        }
    })
    .await
    .expect("server event")
}

fn resumed(e: &ClientEvent) -> Option<()> {
    matches!(e, ClientEvent::Resumed { .. }).then_some(())
}

/// Callbacks the server's handler of `event` received, by arrival.
fn hold(
    server: &Server,
    event: &str,
) -> tokio::sync::mpsc::UnboundedReceiver<nmsg::RemoteCallback> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    server.on(event, move |args: Args| {
        let cb = args.callback(args.len() - 1).unwrap();
        let _ = tx.send(cb);
    });
    rx
}

/// A request made before a break is answered after it: once on the
/// connection that resumed, once while the client was away (the answer
/// waits in the socket's queue).
#[tokio::test(start_paused = true)]
async fn a_request_issued_before_a_break_completes_after_it() {
    let net = Network::new();
    let (server, _sockets) = server(&net, SessionOptions::default()).await;
    let mut pings = hold(&server, "ping");
    let mut server_events = server.events();
    let cutter = Cutter::new(&net, "svc");
    let (client, mut events) = client(&cutter, SessionOptions::default());
    client_event(&mut events, |e| {
        matches!(e, ClientEvent::SessionStarted { .. }).then_some(())
    })
    .await;

    // Answered after the resume.
    let reply = client.router().request::<(String,)>("ping", args![1]);
    let cb = pings.recv().await.unwrap();
    cutter.break_now();
    client_event(&mut events, resumed).await;
    server_event(&mut server_events, |e| {
        matches!(e, ServerEvent::Resumed { .. }).then_some(())
    })
    .await;
    cb.call(args!["pong"]).unwrap();
    assert_eq!(reply.await.unwrap().0, "pong");

    // Answered while away.
    let reply = client.router().request::<(String,)>("ping", args![2]);
    let cb = pings.recv().await.unwrap();
    cutter.refuse(true);
    cutter.break_now();
    server_event(&mut server_events, |e| {
        matches!(e, ServerEvent::Away { .. }).then_some(())
    })
    .await;
    cb.call(args!["pong while away"]).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    cutter.refuse(false);
    assert_eq!(reply.await.unwrap().0, "pong while away");
    client.stop().await;
    server.stop().await;
}

/// Callbacks three deep, with a break before each invocation: each runs
/// exactly once.
#[tokio::test(start_paused = true)]
async fn callbacks_three_deep_survive_a_break_at_each_level() {
    let net = Network::new();
    let (server, _sockets) = server(&net, SessionOptions::default()).await;
    let cutter = Cutter::new(&net, "svc");
    let (client, mut events) = client(&cutter, SessionOptions::default());
    let runs = Arc::new(Mutex::new(Vec::<&'static str>::new()));
    let (cb1_tx, mut cb1_rx) = tokio::sync::mpsc::unbounded_channel();
    server.on("deep", move |args: Args| {
        let _ = cb1_tx.send(args.callback(0).unwrap());
    });
    client_event(&mut events, |e| {
        matches!(e, ClientEvent::SessionStarted { .. }).then_some(())
    })
    .await;

    // level 1: the client's callback, invoked by the server with a callback of its own.
    let (level1, reply1) = Callback::<(nmsg::RemoteCallback,)>::once();
    client.router().emit("deep", args![level1]).unwrap();
    let cb1 = cb1_rx.recv().await.unwrap();
    cutter.break_now();
    client_event(&mut events, resumed).await;
    let (cb3_tx, mut cb3_rx) = tokio::sync::mpsc::unbounded_channel();
    let server_runs = runs.clone();
    let level2 = Callback::new(move |(cb3,): (nmsg::RemoteCallback,)| {
        server_runs.lock().unwrap().push("level 2 on the server");
        let _ = cb3_tx.send(cb3);
    });
    cb1.call(args![level2]).unwrap();
    let (cb2,) = reply1.await.unwrap();
    runs.lock().unwrap().push("level 1 on the client");

    // level 2: the server's callback, invoked by the client with a third.
    cutter.break_now();
    client_event(&mut events, resumed).await;
    let (level3, reply3) = Callback::<(String,)>::once();
    cb2.call(args![level3]).unwrap();
    let cb3 = cb3_rx.recv().await.unwrap();

    // level 3: the client's, invoked by the server.
    cutter.break_now();
    client_event(&mut events, resumed).await;
    cb3.call(args!["bottom"]).unwrap();
    assert_eq!(reply3.await.unwrap().0, "bottom");
    runs.lock().unwrap().push("level 3 on the client");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        *runs.lock().unwrap(),
        [
            "level 1 on the client",
            "level 2 on the server",
            "level 3 on the client"
        ]
    );
    client.stop().await;
    server.stop().await;
}

/// The link goes silent while five plain emits and a request are written
/// (they wait unacknowledged), the client stays away past the window: the
/// server's socket expires, and on return the client's request fails with
/// `SessionLost`, the emits are resent on the new session (or dropped, by
/// option), and the event counts them.
async fn lost_session(unacked: nmsg::Unacked) -> (usize, usize, Vec<u64>) {
    let net = Network::new();
    let window = Duration::from_secs(10);
    let (server, _sockets) = server(&net, SessionOptions::default().window(window)).await;
    let mut server_events = server.events();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    server.on("up", move |args: Args| {
        sink.lock().unwrap().push(args.get::<u64>(0).unwrap());
    });
    let _pings = hold(&server, "ping");
    let cutter = Cutter::new(&net, "svc");
    let (client, mut events) = client(&cutter, SessionOptions::default().unacked(unacked));
    client_event(&mut events, |e| {
        matches!(e, ClientEvent::SessionStarted { .. }).then_some(())
    })
    .await;
    cutter.silence();
    for i in 1..=5u64 {
        client.router().emit("up", args![i]).unwrap();
    }
    let reply = client.router().request::<(String,)>("ping", args![0]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    cutter.refuse(true);
    cutter.break_now();
    server_event(&mut server_events, |e| {
        matches!(e, ServerEvent::SessionExpired { .. }).then_some(())
    })
    .await;
    cutter.refuse(false);
    let error = tokio::time::timeout(LIMIT, reply)
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(error, Error::SessionLost { .. }), "{error}");
    let (resent, dropped) = client_event(&mut events, |e| match e {
        ClientEvent::SessionLost {
            resent, dropped, ..
        } => Some((*resent, *dropped)),
        _ => None,
    })
    .await;
    let expired = server_event(&mut server_events, |e| match e {
        ServerEvent::SessionStarted { expired, .. } => Some(*expired),
        _ => None,
    })
    .await;
    assert!(
        expired,
        "the new socket says the session asked for had expired"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    client.stop().await;
    server.stop().await;
    let got = got.lock().unwrap().clone();
    (resent, dropped, got)
}

#[tokio::test(start_paused = true)]
async fn a_lost_session_fails_pending_replies_and_resends_plain_emits() {
    let (resent, dropped, got) = lost_session(nmsg::Unacked::Resend).await;
    assert_eq!((resent, dropped), (5, 1));
    assert_eq!(got, [1, 2, 3, 4, 5]);
}

#[tokio::test(start_paused = true)]
async fn a_lost_session_drops_plain_emits_by_option_and_counts_them() {
    let (resent, dropped, got) = lost_session(nmsg::Unacked::Drop).await;
    assert_eq!((resent, dropped), (0, 6));
    assert_eq!(got, [] as [u64; 0]);
}

/// A server restarted: the client's pending reply fails with
/// `SessionLost` as soon as the new server welcomes it.
#[tokio::test(start_paused = true)]
async fn a_restarted_server_fails_pending_replies_with_session_lost() {
    let net = Network::new();
    let (server1, _s) = server(&net, SessionOptions::default()).await;
    let _pings = hold(&server1, "ping");
    let cutter = Cutter::new(&net, "svc");
    let (client, mut events) = client(&cutter, SessionOptions::default());
    client_event(&mut events, |e| {
        matches!(e, ClientEvent::SessionStarted { .. }).then_some(())
    })
    .await;
    let reply = client.router().request::<(String,)>("ping", args![0]);
    tokio::time::sleep(Duration::from_millis(10)).await;
    server1.stop().await;
    let (server2, _s) = server(&net, SessionOptions::default()).await;
    let error = tokio::time::timeout(LIMIT, reply)
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(error, Error::SessionLost { .. }), "{error}");
    client.stop().await;
    server2.stop().await;
}

/// A half-open connection (nothing arrives, nothing closes) is found by the
/// heartbeat within interval + timeout; the client resumes, and the reply
/// the server wrote into the void arrives.
#[tokio::test(start_paused = true)]
async fn a_half_open_connection_is_found_by_the_heartbeat_and_resumed() {
    let net = Network::new();
    let (server, _s) = server(&net, SessionOptions::default()).await;
    let mut pings = hold(&server, "ping");
    let cutter = Cutter::new(&net, "svc");
    let (client, mut events) = client(&cutter, SessionOptions::default());
    client_event(&mut events, |e| {
        matches!(e, ClientEvent::SessionStarted { .. }).then_some(())
    })
    .await;
    let reply = client.router().request::<(String,)>("ping", args![0]);
    let cb = pings.recv().await.unwrap();
    cutter.silence();
    let silent = tokio::time::Instant::now();
    cb.call(args!["into the void"]).unwrap();
    client_event(&mut events, |e| {
        matches!(e, ClientEvent::Disconnected { .. }).then_some(())
    })
    .await;
    let found = silent.elapsed();
    let bound = nmsg::DEFAULT_HEARTBEAT_INTERVAL + nmsg::DEFAULT_HEARTBEAT_TIMEOUT;
    assert!(found <= bound, "found after {found:?}, more than {bound:?}");
    assert!(
        found >= nmsg::DEFAULT_HEARTBEAT_TIMEOUT,
        "found after {found:?}"
    );
    client_event(&mut events, resumed).await;
    assert_eq!(reply.await.unwrap().0, "into the void");
    client.stop().await;
    server.stop().await;
}

/// A plain client is served by a session server as by any server: what it
/// emits arrives, and a client that only listens gets the server's emits
/// (after the hello wait).
#[tokio::test(start_paused = true)]
async fn a_plain_client_is_served_by_a_session_server() {
    let net = Network::new();
    let server = Server::builder(net.binder("svc"))
        .session(SessionOptions::default())
        .start();
    server.started().await.unwrap();
    server.on_socket(|socket| {
        socket.router().emit("hi", args![7u64]).unwrap();
    });
    server.on("echo", |args: Args| {
        let n = args.get::<u64>(0).unwrap();
        args.callback(1).unwrap().call(args![n + 1]).unwrap();
    });
    // Listens only.
    let listener = Client::builder(net.connector("svc")).start();
    let hi = record(listener.router(), "hi");
    // Emits.
    let talker = Client::builder(net.connector("svc")).start();
    let answer: (u64,) = talker.router().request("echo", args![41u64]).await.unwrap();
    assert_eq!(answer.0, 42);
    until("the listener's hi", || hi.lock().unwrap().len() == 1).await;
    assert_eq!(*hi.lock().unwrap(), [7]);
    listener.stop().await;
    talker.stop().await;
    server.stop().await;
}

/// A session client against a server without sessions: each attempt fails
/// after the hello timeout with an error that says so, and backs off.
#[tokio::test(start_paused = true)]
async fn a_session_client_against_a_plain_server_says_it_does_not_support_sessions() {
    let net = Network::new();
    let server = Server::builder(net.binder("svc")).start();
    server.started().await.unwrap();
    let client = Client::builder(net.connector("svc"))
        .session(SessionOptions::default())
        .start();
    let mut events = client.events();
    let mut attempts = Vec::new();
    while attempts.len() < 2 {
        let (attempt, delay, error) = client_event(&mut events, |e| match e {
            ClientEvent::Reconnecting {
                attempt,
                delay,
                error,
            } => Some((*attempt, *delay, error.clone())),
            _ => None,
        })
        .await;
        assert!(error.contains("does not support sessions"), "{error}");
        attempts.push((attempt, delay));
    }
    assert_eq!(attempts[0].0, 1);
    assert_eq!(attempts[1].0, 2);
    assert!(attempts[1].1 > attempts[0].1, "backs off: {attempts:?}");
    client.stop().await;
    server.stop().await;
}

mod cut_points {
    use super::*;
    use proptest::prelude::*;

    fn cut() -> impl Strategy<Value = Cut> {
        prop_oneof![
            (1usize..12_000).prop_map(Cut::Read),
            (1usize..12_000).prop_map(Cut::Write),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Wherever the connections are cut (in the handshake, inside a
        /// message, in either direction, several times), every event
        /// arrives once and in order, both ways.
        #[test]
        fn any_cut_points_keep_delivery_exactly_once_and_in_order(
            cuts in proptest::collection::vec(cut(), 1..6),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .unwrap();
            runtime.block_on(exchange(300, &cuts));
        }
    }
}

/// An idle, healthy session connection stays up: pings are answered, and
/// no heartbeat deadline closes it (nor the replay age: acks come).
#[tokio::test(start_paused = true)]
async fn an_idle_session_connection_is_kept_up_by_its_heartbeat() {
    let net = Network::new();
    let (server, _s) = server(&net, SessionOptions::default()).await;
    let cutter = Cutter::new(&net, "svc");
    let (client, mut events) = client(&cutter, SessionOptions::default());
    client_event(&mut events, |e| {
        matches!(e, ClientEvent::SessionStarted { .. }).then_some(())
    })
    .await;
    client.router().emit("one", ()).unwrap();
    tokio::time::sleep(Duration::from_secs(600)).await;
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push(e);
    }
    assert!(seen.is_empty(), "{seen:?}");
    assert_eq!(cutter.connections(), 1);
    client.stop().await;
    server.stop().await;
}

/// Over TCP: a session client and server, a request, a resume after the
/// server's side of the connection is closed.
#[tokio::test]
async fn sessions_over_tcp_resume_after_the_server_closes_the_connection() {
    let server = Server::tcp("127.0.0.1:0")
        .session(SessionOptions::default())
        .start();
    let address = server.started().await.unwrap();
    let mut pings = hold(&server, "ping");
    let sockets = Arc::new(Mutex::new(Vec::new()));
    let kept = sockets.clone();
    server.on_socket(move |socket| kept.lock().unwrap().push(socket));
    let nmsg::transport::Address::Tcp(address) = address else {
        panic!("{address:?}")
    };
    let client = Client::tcp(address.to_string())
        .session(SessionOptions::default())
        .start();
    let mut events = client.events();
    if std::env::var_os("SESSION_TEST_LOG").is_some() {
        let mut log = client.events();
        tokio::spawn(async move {
            while let Ok(e) = log.recv().await {
                eprintln!("client {e:?}");
            }
        });
        let mut log = server.events();
        tokio::spawn(async move {
            while let Ok(e) = log.recv().await {
                eprintln!("server {e:?}");
            }
        });
    }
    let reply = client.router().request::<(String,)>("ping", args![0]);
    let cb = tokio::time::timeout(LIMIT, pings.recv())
        .await
        .unwrap()
        .unwrap();
    // Closing a session socket ends its session: the client gets a new one,
    // and its pending reply fails with SessionLost.
    let socket = sockets.lock().unwrap()[0].clone();
    socket.close().await;
    let error = tokio::time::timeout(LIMIT, reply)
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(error, Error::SessionLost { .. }), "{error}");
    drop(cb);
    client_event(&mut events, |e| {
        matches!(e, ClientEvent::SessionLost { .. }).then_some(())
    })
    .await;
    let reply = client.router().request::<(String,)>("ping", args![1]);
    let cb = tokio::time::timeout(LIMIT, pings.recv())
        .await
        .unwrap()
        .unwrap();
    cb.call(args!["pong"]).unwrap();
    assert_eq!(reply.await.unwrap().0, "pong");
    client.stop().await;
    server.stop().await;
}

/// The JSON codec: extension frames in JSON, a request across a break.
#[tokio::test(start_paused = true)]
async fn sessions_speak_json_too() {
    let net = Network::new();
    let server = Server::builder(net.binder("svc"))
        .codec(nmsg::Json)
        .session(SessionOptions::default())
        .start();
    server.started().await.unwrap();
    let mut pings = hold(&server, "ping");
    let cutter = Cutter::new(&net, "svc");
    let client = Client::builder(cutter.clone())
        .codec(nmsg::Json)
        .session(SessionOptions::default())
        .start();
    let mut events = client.events();
    client_event(&mut events, |e| {
        matches!(e, ClientEvent::SessionStarted { .. }).then_some(())
    })
    .await;
    let reply = client.router().request::<(String,)>("ping", args![0]);
    let cb = pings.recv().await.unwrap();
    cutter.break_now();
    client_event(&mut events, resumed).await;
    cb.call(args!["pong"]).unwrap();
    assert_eq!(reply.await.unwrap().0, "pong");
    client.stop().await;
    server.stop().await;
}

/// A link that breaks twenty times, each time just after the handshake:
/// a completed handshake resets the backoff, so the breaks cost no waiting.
#[tokio::test(start_paused = true)]
async fn a_flapping_link_reconnects_at_once_after_each_handshake() {
    let start = tokio::time::Instant::now();
    exchange(300, &[Cut::Read(100); 20]).await;
    let took = start.elapsed();
    assert!(took < Duration::from_millis(500), "took {took:?}");
}

/// Messages kept through an absence longer than the replay age are written
/// again on resume with their age counted from then: the resumed connection
/// is not closed as unresponsive before the peer can acknowledge them.
#[tokio::test(start_paused = true)]
async fn an_absence_longer_than_the_replay_age_resumes_once() {
    let net = Network::new();
    let (server, _s) = server(
        &net,
        SessionOptions::default().window(Duration::from_secs(600)),
    )
    .await;
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    server.on("up", move |args: Args| {
        sink.lock().unwrap().push(args.get::<u64>(0).unwrap());
    });
    let cutter = Cutter::new(&net, "svc");
    let (client, mut events) = client(&cutter, SessionOptions::default());
    client_event(&mut events, |e| {
        matches!(e, ClientEvent::SessionStarted { .. }).then_some(())
    })
    .await;
    cutter.silence();
    for i in 1..=5u64 {
        client.router().emit("up", args![i]).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    cutter.refuse(true);
    cutter.break_now();
    tokio::time::sleep(nmsg::DEFAULT_MAX_REPLAY_AGE + Duration::from_secs(60)).await;
    cutter.refuse(false);
    until("the five events", || got.lock().unwrap().len() == 5).await;
    tokio::time::sleep(Duration::from_secs(300)).await;
    let mut resumes = 0;
    while let Ok(e) = events.try_recv() {
        if let ClientEvent::Resumed { .. } = e {
            resumes += 1;
        }
    }
    assert_eq!(resumes, 1);
    assert_eq!(*got.lock().unwrap(), [1, 2, 3, 4, 5]);
    client.stop().await;
    server.stop().await;
}

/// A hand-written session server: reads length-prefixed messages and
/// answers with extension frames in MessagePack.
mod fake {
    use nmsg::transport::BoxStream;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    pub async fn read(stream: &mut BoxStream) -> Vec<u8> {
        let mut prefix = [0u8; 4];
        stream.read_exact(&mut prefix).await.unwrap();
        let mut payload = vec![0u8; u32::from_be_bytes(prefix) as usize];
        stream.read_exact(&mut payload).await.unwrap();
        payload
    }

    pub fn value(payload: &[u8]) -> rmpv::Value {
        rmpv::decode::read_value(&mut &payload[..]).unwrap()
    }

    pub fn get<'v>(map: &'v rmpv::Value, key: &str) -> Option<&'v rmpv::Value> {
        map.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// The next message, or `None` when the stream ended first.
    pub async fn try_read(stream: &mut BoxStream) -> Option<Vec<u8>> {
        let mut prefix = [0u8; 4];
        stream.read_exact(&mut prefix).await.ok()?;
        let mut payload = vec![0u8; u32::from_be_bytes(prefix) as usize];
        stream.read_exact(&mut payload).await.ok()?;
        Some(payload)
    }

    /// Writes an extension frame of kind `x` with these keys.
    pub async fn ext(stream: &mut BoxStream, x: &str, keys: &[(&str, rmpv::Value)]) {
        use rmpv::Value;
        let mut map = vec![(Value::from("x"), Value::from(x))];
        map.extend(keys.iter().map(|(k, v)| (Value::from(*k), v.clone())));
        let mut payload = Vec::new();
        rmpv::encode::write_value(&mut payload, &Value::Map(map)).unwrap();
        let mut out = (payload.len() as u32).to_be_bytes().to_vec();
        out.extend(payload);
        stream.write_all(&out).await.unwrap();
    }

    /// A hello that resumes session `s` having received `n` messages.
    pub async fn resume(stream: &mut BoxStream, s: &str, n: u64) {
        let keys = [
            ("v", rmpv::Value::from(1)),
            ("s", rmpv::Value::from(s)),
            ("n", rmpv::Value::from(n)),
        ];
        ext(stream, "hello", &keys).await;
    }

    pub fn str<'v>(map: &'v rmpv::Value, key: &str) -> Option<&'v str> {
        get(map, key).and_then(|v| v.as_str())
    }

    pub async fn welcome(stream: &mut BoxStream, s: &str, n: u64, z: &str) {
        use rmpv::Value;
        let map = Value::Map(vec![
            (Value::from("x"), Value::from("welcome")),
            (Value::from("v"), Value::from(1)),
            (Value::from("s"), Value::from(s)),
            (Value::from("n"), Value::from(n)),
            (Value::from("z"), Value::from(z)),
        ]);
        let mut payload = Vec::new();
        rmpv::encode::write_value(&mut payload, &map).unwrap();
        let mut out = (payload.len() as u32).to_be_bytes().to_vec();
        out.extend(payload);
        stream.write_all(&out).await.unwrap();
    }
}

/// A server that says it resumed the session but counts messages the
/// client never wrote: the session cannot resume, so the client loses it
/// (its pending reply fails with `SessionLost`) and asks for a new one.
#[tokio::test(start_paused = true)]
async fn a_resume_with_a_count_that_does_not_fit_loses_the_session() {
    use nmsg::transport::Binder;
    let net = Network::new();
    let mut acceptor = net.binder("svc").bind().await.unwrap();
    let (client, mut events) = client(&Cutter::new(&net, "svc"), SessionOptions::default());
    let (mut first, _) = acceptor.accept().await.unwrap();
    let hello = fake::value(&fake::read(&mut first).await);
    assert_eq!(
        fake::get(&hello, "x").and_then(|v| v.as_str()),
        Some("hello")
    );
    assert!(fake::get(&hello, "s").is_none());
    fake::welcome(&mut first, "aa", 0, "new").await;
    let reply = client.router().request::<(String,)>("ping", args![0]);
    let request = fake::value(&fake::read(&mut first).await);
    assert!(fake::get(&request, "i").is_some(), "{request}");
    drop(first);

    let (mut second, _) = acceptor.accept().await.unwrap();
    let hello = fake::value(&fake::read(&mut second).await);
    assert_eq!(fake::get(&hello, "s").and_then(|v| v.as_str()), Some("aa"));
    fake::welcome(&mut second, "aa", 999, "resumed").await;
    let error = tokio::time::timeout(LIMIT, reply)
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(error, Error::SessionLost { .. }), "{error}");
    let dropped = client_event(&mut events, |e| match e {
        ClientEvent::SessionLost { dropped, .. } => Some(*dropped),
        _ => None,
    })
    .await;
    assert_eq!(dropped, 1);

    let (mut third, _) = acceptor.accept().await.unwrap();
    let hello = fake::value(&fake::read(&mut third).await);
    assert!(
        fake::get(&hello, "s").is_none(),
        "asks for a new session: {hello}"
    );
    client.stop().await;
}

/// A JSON client's hello is JSON, as its data is.
#[tokio::test(start_paused = true)]
async fn a_json_client_says_hello_in_json() {
    use nmsg::transport::Binder;
    let net = Network::new();
    let mut acceptor = net.binder("svc").bind().await.unwrap();
    let client = Client::builder(net.connector("svc"))
        .codec(nmsg::Json)
        .session(SessionOptions::default())
        .start();
    let (mut stream, _) = acceptor.accept().await.unwrap();
    let hello = fake::read(&mut stream).await;
    assert_eq!(String::from_utf8_lossy(&hello), r#"{"x":"hello","v":1}"#);
    client.stop().await;
}

/// While its client is away, a session socket keeps its router: what the
/// server emits to it queues, and arrives, in order, when the client resumes.
#[tokio::test(start_paused = true)]
async fn emits_to_an_away_socket_arrive_on_return() {
    let net = Network::new();
    let (server, sockets) = server(&net, SessionOptions::default()).await;
    let mut server_events = server.events();
    let cutter = Cutter::new(&net, "svc");
    let (client, mut events) = client(&cutter, SessionOptions::default());
    let got = record(client.router(), "news");
    let mut started = client.events();
    let router = sockets.of(&client, &mut started).await;
    cutter.refuse(true);
    cutter.break_now();
    server_event(&mut server_events, |e| {
        matches!(e, ServerEvent::Away { .. }).then_some(())
    })
    .await;
    for i in 1..=10u64 {
        router.emit("news", args![i]).unwrap();
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(got.lock().unwrap().is_empty());
    cutter.refuse(false);
    client_event(&mut events, resumed).await;
    until("the news", || got.lock().unwrap().len() == 10).await;
    assert_eq!(*got.lock().unwrap(), (1..=10).collect::<Vec<u64>>());
    client.stop().await;
    server.stop().await;
}

/// A session that expires with messages the server wrote and the client
/// never acknowledged: they are counted as lost (nothing lost without a count).
#[tokio::test(start_paused = true)]
async fn an_expired_session_counts_what_the_client_never_acknowledged() {
    let net = Network::new();
    let window = Duration::from_secs(10);
    let (server, sockets) = server(&net, SessionOptions::default().window(window)).await;
    let mut server_events = server.events();
    let cutter = Cutter::new(&net, "svc");
    let (client, _events) = client(&cutter, SessionOptions::default());
    let mut started = client.events();
    let router = sockets.of(&client, &mut started).await;
    cutter.silence();
    for i in 1..=3u64 {
        router.emit("news", args![i]).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    cutter.refuse(true);
    cutter.break_now();
    let lost = server_event(&mut server_events, |e| match e {
        ServerEvent::Lost { frames, .. } => Some(*frames),
        _ => None,
    })
    .await;
    assert_eq!(lost, 3);
    client.stop().await;
    server.stop().await;
}

/// A hello read late, after a newer connection of the same client resumed
/// the session: the server reads each connection's first message on a task
/// of its own, and a busy server may get to a connection the client gave
/// up on (cut before its welcome) after the one the client uses now, which
/// has acknowledged more since. That stale connection is dropped; the
/// session goes on. (It ended the session: "the client asked to resume
/// having received 0 messages, which does not fit what was written", and
/// the client's next hello got `expired`.)
#[tokio::test(start_paused = true)]
async fn a_stale_hello_read_after_a_newer_resume_does_not_end_the_session() {
    use nmsg::transport::Connector;
    let net = Network::new();
    // The stale connection's hello is read whenever the test writes it.
    let (server, sockets) = server(&net, SessionOptions::default().hello_wait(LIMIT)).await;
    let mut server_events = server.events();
    let connector = net.connector("svc");
    let (mut first, _) = connector.connect().await.unwrap();
    fake::ext(&mut first, "hello", &[("v", rmpv::Value::from(1))]).await;
    let welcome = fake::value(&fake::read(&mut first).await);
    assert_eq!(fake::str(&welcome, "z"), Some("new"), "{welcome}");
    let s = fake::str(&welcome, "s").unwrap().to_owned();
    let router = sockets.by_session(&s).await;
    drop(first);
    server_event(&mut server_events, |e| {
        matches!(e, ServerEvent::Away { .. }).then_some(())
    })
    .await;

    // Cut before its welcome, as the client sees it: its hello is read
    // only after the next connection's.
    let (mut stale, _) = connector.connect().await.unwrap();
    let (mut live, _) = connector.connect().await.unwrap();
    fake::resume(&mut live, &s, 0).await;
    let welcome = fake::value(&fake::read(&mut live).await);
    assert_eq!(fake::str(&welcome, "z"), Some("resumed"), "{welcome}");
    router.emit("news", args![1]).unwrap();
    let news = fake::value(&fake::read(&mut live).await);
    assert!(fake::get(&news, "x").is_none(), "data: {news}");
    fake::ext(&mut live, "ack", &[("n", rmpv::Value::from(1))]).await;
    // Answered once the ack before it was read.
    fake::ext(&mut live, "ping", &[("n", rmpv::Value::from(1))]).await;
    let pong = fake::value(&fake::read(&mut live).await);
    assert_eq!(fake::str(&pong, "x"), Some("pong"), "{pong}");

    fake::resume(&mut stale, &s, 0).await;
    drop(stale);
    router.emit("news", args![2]).unwrap();
    let news = fake::try_read(&mut live)
        .await
        .map(|m| fake::value(&m))
        .expect("the live connection carries the session on, but the server closed it");
    assert!(fake::get(&news, "x").is_none(), "data: {news}");

    // And the client's next connection resumes it.
    drop(live);
    let (mut next, _) = connector.connect().await.unwrap();
    fake::resume(&mut next, &s, 2).await;
    let welcome = fake::value(&fake::read(&mut next).await);
    assert_eq!(fake::str(&welcome, "z"), Some("resumed"), "{welcome}");
    server.stop().await;
}
