//! Client and server over real sockets (127.0.0.1, port 0, and a temporary
//! Unix socket), and over the in-memory network where time is paused.

use std::net::SocketAddr;
use std::time::Duration;

use nmsg::transport::memory::Network;
use nmsg::transport::Address;
use nmsg::{args, Args, Backoff, Client, ClientEvent, Error, RemoteCallback, Server, ServerEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const LIMIT: Duration = Duration::from_secs(20);

fn fast() -> Backoff {
    Backoff::new(Duration::from_millis(10), Duration::from_millis(200))
}

async fn tcp_addr(server: &Server) -> SocketAddr {
    match server.started().await {
        Ok(Address::Tcp(a)) => a,
        other => panic!("server did not start on TCP: {other:?}"),
    }
}

/// An echo server on 127.0.0.1 with a random port.
async fn echo_server() -> (Server, SocketAddr) {
    let server = Server::tcp("127.0.0.1:0").start();
    server.on("echo", |args: Args| -> Result<(), Error> {
        let (value, reply): (nmsg::Value, RemoteCallback) = args.parse()?;
        reply.call((value,))
    });
    let addr = tcp_addr(&server).await;
    (server, addr)
}

/// A server handler that forwards every `n` event's number into a channel.
fn collect_numbers(server: &Server) -> mpsc::UnboundedReceiver<u64> {
    let (tx, rx) = mpsc::unbounded_channel();
    server.on("n", move |args: Args| -> Result<(), Error> {
        let _ = tx.send(args.get::<u64>(0)?);
        Ok(())
    });
    rx
}

async fn expect_numbers(
    rx: &mut mpsc::UnboundedReceiver<u64>,
    range: std::ops::RangeInclusive<u64>,
) {
    for want in range {
        let got = tokio::time::timeout(LIMIT, rx.recv())
            .await
            .expect("numbers stopped arriving");
        assert_eq!(got, Some(want));
    }
}

#[tokio::test]
async fn emit_before_the_server_exists_is_delivered_once_it_starts() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let client = Client::tcp(addr.to_string()).backoff(fast()).start();
    for n in 1..=3u64 {
        client.router().emit("n", args![n]).unwrap();
    }
    assert!(!client.is_connected());
    let server = Server::tcp(addr.to_string()).start();
    let mut rx = collect_numbers(&server);
    expect_numbers(&mut rx, 1..=3).await;
    client.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn server_restart_mid_stream_loses_nothing_queued_or_sent_after() {
    let server = Server::tcp("127.0.0.1:0").start();
    let mut rx = collect_numbers(&server);
    let addr = tcp_addr(&server).await;
    let client = Client::tcp(addr.to_string()).backoff(fast()).start();
    let mut events = client.events();
    for n in 1..=100u64 {
        client.router().emit("n", args![n]).unwrap();
    }
    expect_numbers(&mut rx, 1..=100).await;

    server.stop().await;
    loop {
        match tokio::time::timeout(LIMIT, events.recv())
            .await
            .unwrap()
            .unwrap()
        {
            ClientEvent::Disconnected { .. } => break,
            _ => continue,
        }
    }
    for n in 101..=200u64 {
        client.router().emit("n", args![n]).unwrap(); // queued while the server is down
    }
    let restarted = Server::tcp(addr.to_string()).start();
    let mut rx = collect_numbers(&restarted);
    tcp_addr(&restarted).await;
    for n in 201..=300u64 {
        client.router().emit("n", args![n]).unwrap(); // after the restart
    }
    expect_numbers(&mut rx, 101..=300).await;
    client.stop().await;
    restarted.stop().await;
}

/// The next `n` failed attempts of `events`, each as (attempt, delay in
/// seconds, seconds since `start` when it was reported).
async fn reconnect_attempts(
    events: &mut tokio::sync::broadcast::Receiver<ClientEvent>,
    start: tokio::time::Instant,
    n: usize,
) -> Vec<(u32, u64, u64)> {
    let mut seen = Vec::new();
    while seen.len() < n {
        match events.recv().await.unwrap() {
            ClientEvent::Reconnecting { attempt, delay, .. } => {
                seen.push((attempt, delay.as_secs(), start.elapsed().as_secs()))
            }
            other => panic!("expected a failed attempt, got {other:?}"),
        }
    }
    seen
}

#[tokio::test(start_paused = true)]
async fn reconnect_attempts_follow_the_backoff_schedule() {
    let net = Network::new();
    let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
    let client = Client::builder(net.connector("nowhere"))
        .backoff(backoff)
        .start();
    let mut events = client.events();
    let start = tokio::time::Instant::now();
    // attempt n fails at the sum of the delays before it; the delay doubles up to 8 s
    assert_eq!(
        reconnect_attempts(&mut events, start, 6).await,
        [
            (1, 1, 0),
            (2, 2, 1),
            (3, 4, 3),
            (4, 8, 7),
            (5, 8, 15),
            (6, 8, 23)
        ]
    );

    // a server appearing ends the retries: the seventh attempt, at 31 s, connects
    let server = Server::builder(net.binder("nowhere")).start();
    match events.recv().await.unwrap() {
        ClientEvent::Connected { .. } => assert_eq!(start.elapsed().as_secs(), 31),
        other => panic!("expected the connection, got {other:?}"),
    }
    assert!(client.is_connected());

    // the connection lives longer than the first delay, then the server goes:
    // the schedule starts over, with a first attempt at once
    tokio::time::sleep(Duration::from_secs(100)).await;
    server.stop().await;
    let lost = tokio::time::Instant::now();
    assert!(matches!(
        events.recv().await.unwrap(),
        ClientEvent::Disconnected { .. }
    ));
    assert_eq!(
        reconnect_attempts(&mut events, lost, 4).await,
        [(1, 1, 0), (2, 2, 1), (3, 4, 3), (4, 8, 7)]
    );
    client.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_connection_the_server_drops_at_once_counts_as_a_failed_attempt() {
    use nmsg::transport::Binder;
    let net = Network::new();
    let mut acceptor = net.binder("closer").bind().await.unwrap();
    // a listener that accepts and closes every connection at once
    let closer = tokio::spawn(async move {
        loop {
            let (stream, _) = acceptor.accept().await.unwrap();
            drop(stream);
        }
    });
    let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
    let client = Client::builder(net.connector("closer"))
        .backoff(backoff)
        .start();
    let mut events = client.events();
    let start = tokio::time::Instant::now();
    let mut seen = Vec::new();
    let mut connections = 0;
    while seen.len() < 4 {
        match events.recv().await.unwrap() {
            ClientEvent::Connected { .. } => {
                connections += 1;
                // a client that retried at once would connect here again and again
                assert!(connections <= seen.len() + 1, "reconnected without a delay");
            }
            ClientEvent::Disconnected { .. } => {}
            ClientEvent::Reconnecting { attempt, delay, .. } => {
                seen.push((attempt, delay.as_secs(), start.elapsed().as_secs()))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // the schedule grows as if no attempt had connected
    assert_eq!(seen, [(1, 1, 0), (2, 2, 1), (3, 4, 3), (4, 8, 7)]);
    client.stop().await;
    closer.abort();
}

#[tokio::test(start_paused = true)]
async fn server_retries_binding_while_the_address_is_taken() {
    let net = Network::new();
    let first = Server::builder(net.binder("svc")).start();
    first.started().await.unwrap();
    let second = Server::builder(net.binder("svc"))
        .backoff(Backoff::new(
            Duration::from_secs(1),
            Duration::from_secs(60),
        ))
        .start();
    let mut events = second.events();
    for want in [1u64, 2, 4] {
        match events.recv().await.unwrap() {
            ServerEvent::BindFailed { delay, .. } => assert_eq!(delay.as_secs(), want),
            other => panic!("unexpected {other:?}"),
        }
    }
    first.stop().await;
    assert!(second.started().await.is_ok());
    second.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_full_offline_queue_gives_the_documented_error_and_emit_wait_waits() {
    use std::future::Future;
    let net = Network::new();
    let client = Client::builder(net.connector("later"))
        .backoff(fast())
        .max_queued_frames(5)
        .start();
    for n in 0..5u64 {
        client.router().emit("n", args![n]).unwrap();
    }
    match client.router().emit("n", args![5u64]) {
        Err(Error::QueueFull { frames: 5, .. }) => {}
        other => panic!("expected QueueFull, got {other:?}"),
    }
    // with backpressure the caller waits while the queue is full...
    let mut waiting = std::pin::pin!(client.router().emit_wait("n", args![5u64]));
    let mut poll_once = || {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        waiting.as_mut().poll(&mut cx)
    };
    assert!(poll_once().is_pending());
    // (a second of reconnection attempts later, still nothing has room)
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(poll_once().is_pending());
    assert_eq!(client.router().queued_frames(), 5);
    // ...and goes on once the connection takes the queue
    let server = Server::builder(net.binder("later")).start();
    let mut rx = collect_numbers(&server);
    tokio::time::timeout(LIMIT, waiting)
        .await
        .expect("emit_wait still waits with room in the queue")
        .unwrap();
    expect_numbers(&mut rx, 0..=5).await;
    client.stop().await;
    server.stop().await;
}

/// Tells a reply failed at the disconnect from one left to its callback
/// timeout (15 s by default), with room for a loaded machine.
const AT_ONCE: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_dropped_connection_fails_pending_replies_at_once_not_at_their_timeout() {
    let server = Server::tcp("127.0.0.1:0").start();
    let (asked_tx, mut asked) = mpsc::unbounded_channel();
    server.on("never", move |args: Args| {
        // keep the callback, never answer
        let _ = asked_tx.send(args.callback(0));
    });
    let addr = tcp_addr(&server).await;
    let client = Client::tcp(addr.to_string()).backoff(fast()).start();
    let router = client.router().clone();
    let reply = tokio::spawn(async move { router.request::<()>("never", ()).await });
    asked.recv().await.unwrap().unwrap();
    let started = tokio::time::Instant::now();
    server.stop().await;
    let result = tokio::time::timeout(AT_ONCE, reply)
        .await
        .expect("the reply did not fail at the disconnect");
    assert!(matches!(result.unwrap(), Err(Error::Disconnected(_))));
    assert!(started.elapsed() < AT_ONCE);
    client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_each_do_a_hundred_echo_round_trips() {
    let (server, addr) = echo_server().await;
    let mut tasks = Vec::new();
    for c in 0..200u64 {
        tasks.push(tokio::spawn(async move {
            let client = Client::tcp(addr.to_string()).backoff(fast()).start();
            for i in 0..100u64 {
                let value = format!("client {c} call {i}");
                let (back,): (String,) = client
                    .router()
                    .request("echo", args![&value])
                    .await
                    .unwrap();
                assert_eq!(back, value);
            }
            client.stop().await;
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .unwrap()
            .unwrap();
    }
    server.stop().await;
}

async fn echo_once(client: &Client, text: &str) {
    let (back,): (String,) =
        tokio::time::timeout(LIMIT, client.router().request("echo", args![text]))
            .await
            .expect("echo timed out")
            .expect("echo failed");
    assert_eq!(back, text);
}

async fn assert_dropped(mut raw: tokio::net::TcpStream) {
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(LIMIT, raw.read(&mut buf))
        .await
        .expect("server kept the bad connection open");
    assert!(
        matches!(n, Ok(0) | Err(_)),
        "expected the server to close, read {n:?}"
    );
}

#[tokio::test]
async fn bad_framing_drops_that_connection_and_others_keep_being_served() {
    let (server, addr) = echo_server().await;
    let good = Client::tcp(addr.to_string()).backoff(fast()).start();
    echo_once(&good, "before").await;

    // garbage: an HTTP request reads as a length prefix of about 1.2 GB
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_dropped(raw).await;
    echo_once(&good, "after garbage").await;

    // a length prefix of 0x7fffffff: refused on the prefix, nothing allocated
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw.write_all(&[0x7f, 0xff, 0xff, 0xff, 1, 2, 3])
        .await
        .unwrap();
    assert_dropped(raw).await;
    echo_once(&good, "after oversized").await;

    // half a frame, then the peer closes
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw.write_all(&[0, 0, 0, 20, 0x82, 0xa1]).await.unwrap();
    raw.shutdown().await.unwrap();
    drop(raw);
    echo_once(&good, "after half a frame").await;

    // a zero-length message
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw.write_all(&[0, 0, 0, 0]).await.unwrap();
    assert_dropped(raw).await;
    echo_once(&good, "after zero length").await;

    good.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn malformed_payloads_are_skipped_and_the_same_connection_goes_on() {
    let (server, addr) = echo_server().await;
    let (errors_tx, mut errors) = mpsc::unbounded_channel();
    server.on_socket(move |socket| {
        let errors = errors_tx.clone();
        socket.router().on_error(move |e| {
            let _ = errors.send(e.to_string());
        });
    });
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    // a frame whose `e` is a number, then a valid echo on the same connection
    let bad: &[u8] = &[0x82, 0xa1, b'i', 1, 0xa1, b'e', 7];
    let echo: &[u8] = &[
        0x84, 0xa1, b'i', 2, 0xa1, b'e', 0xa4, b'e', b'c', b'h', b'o', 0xa1, b'a', 0x91, 0xa2,
        b'h', b'i', 0xa1, b'c', 0x91, 1,
    ];
    for payload in [bad, echo] {
        raw.write_all(&(payload.len() as u32).to_be_bytes())
            .await
            .unwrap();
        raw.write_all(payload).await.unwrap();
    }
    let error = tokio::time::timeout(LIMIT, errors.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(error.contains("`e`"), "{error}");
    // the echo's answer comes back on the same connection: a bulk with one response frame
    let mut len = [0u8; 4];
    tokio::time::timeout(LIMIT, raw.read_exact(&mut len))
        .await
        .unwrap()
        .unwrap();
    let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
    raw.read_exact(&mut payload).await.unwrap();
    let frames = nmsg::Codec::decode_all(&nmsg::MsgPack, &payload)
        .unwrap()
        .into_frames();
    let frame = frames[0].as_ref().unwrap();
    assert_eq!(
        frame.kind,
        nmsg::frame::FrameKind::Response { to: 2, position: 1 }
    );
    let text: String =
        nmsg::codec::decode_arg(&nmsg::MsgPack, &payload[frame.data[0].clone()]).unwrap();
    assert_eq!(text, "hi");
    // Gone before the stop, which otherwise waits for the peer to close its
    // side (up to the stop timeout).
    drop(raw);
    server.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused_and_the_others_are_served() {
    let server = Server::tcp("127.0.0.1:0").max_connections(2).start();
    server.on("echo", |args: Args| -> Result<(), Error> {
        let (v, cb): (String, RemoteCallback) = args.parse()?;
        cb.call((v,))
    });
    let addr = tcp_addr(&server).await;
    let mut events = server.events();
    let a = Client::tcp(addr.to_string()).backoff(fast()).start();
    let b = Client::tcp(addr.to_string()).backoff(fast()).start();
    echo_once(&a, "a").await;
    echo_once(&b, "b").await;
    let raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    loop {
        match tokio::time::timeout(LIMIT, events.recv())
            .await
            .unwrap()
            .unwrap()
        {
            ServerEvent::Refused { .. } => break,
            _ => continue,
        }
    }
    assert_dropped(raw).await;
    echo_once(&a, "a again").await;
    a.stop().await;
    b.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn the_server_emits_to_a_socket_and_the_client_answers() {
    let server = Server::tcp("127.0.0.1:0").start();
    let (sockets_tx, mut sockets) = mpsc::unbounded_channel();
    server.on_socket(move |socket| {
        let _ = sockets_tx.send(socket);
    });
    let addr = tcp_addr(&server).await;
    let client = Client::tcp(addr.to_string()).start();
    client
        .router()
        .on("question", |args: Args| -> Result<(), Error> {
            let (q, answer): (String, RemoteCallback) = args.parse()?;
            answer.call((format!("answer to {q}"),))
        });
    let (hello_tx, mut hellos) = mpsc::unbounded_channel();
    client
        .router()
        .on("hello", move |args: Args| -> Result<(), Error> {
            let (to, n): (String, u32) = args.parse()?;
            let _ = hello_tx.send((to, n, args.len()));
            Ok(())
        });
    let socket = sockets.recv().await.unwrap();
    let (reply,): (String,) = socket
        .router()
        .request("question", args!["life"])
        .await
        .unwrap();
    assert_eq!(reply, "answer to life");
    assert_eq!(server.broadcast("hello", ("all", 7u32)), 1);
    let hello = tokio::time::timeout(LIMIT, hellos.recv())
        .await
        .expect("the broadcast did not arrive");
    assert_eq!(hello, Some(("all".to_owned(), 7, 2)));
    client.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn stop_flushes_what_is_queued_and_reports_lifecycle_events() {
    let server = Server::tcp("127.0.0.1:0").start();
    let mut rx = collect_numbers(&server);
    let addr = tcp_addr(&server).await;
    let client = Client::tcp(addr.to_string()).backoff(fast()).start();
    let mut events = client.events();
    client.connected().await;
    for n in 1..=500u64 {
        client.router().emit("n", args![n]).unwrap();
    }
    client.stop().await;
    expect_numbers(&mut rx, 1..=500).await;
    assert!(matches!(
        client.router().emit("n", args![0u64]),
        Err(Error::Closed)
    ));
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push(e);
    }
    assert!(
        matches!(seen.last(), Some(ClientEvent::Stopped { unsent: 0 })),
        "{seen:?}"
    );
    server.stop().await;
}

#[cfg(unix)]
#[tokio::test]
async fn echo_over_a_unix_socket() {
    let dir = std::env::temp_dir().join(format!(
        "nmsg-test-{}-{}",
        std::process::id(),
        fastrand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.sock");
    let server = Server::unix(&path).start();
    server.on("echo", |args: Args| -> Result<(), Error> {
        let (v, cb): (String, RemoteCallback) = args.parse()?;
        cb.call((v,))
    });
    assert_eq!(server.started().await.unwrap(), Address::Unix(path.clone()));
    let client = Client::unix(&path).backoff(fast()).start();
    echo_once(&client, "over unix").await;
    client.stop().await;
    server.stop().await;
    assert!(!path.exists(), "the server removes its socket file");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn fastrand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Reads length-prefixed MsgPack messages until the answers (`r`) to frames
/// `1..=n` have all arrived; adds every `r` read to `seen`.
fn answers_up_to(stream: &mut std::net::TcpStream, seen: &mut Vec<u64>, n: u64) {
    use std::io::Read;
    while !(1..=n).all(|id| seen.contains(&id)) {
        let mut prefix = [0; 4];
        stream
            .read_exact(&mut prefix)
            .expect("an answer within the time limit");
        let mut payload = vec![0; u32::from_be_bytes(prefix) as usize];
        stream.read_exact(&mut payload).expect("a whole message");
        let message = rmpv::decode::read_value(&mut &payload[..]).unwrap();
        let frames = match message {
            rmpv::Value::Array(frames) => frames,
            single => vec![single],
        };
        for frame in frames {
            let r = frame
                .as_map()
                .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some("r")))
                .and_then(|(_, v)| v.as_u64())
                .expect("an answer frame");
            seen.push(r);
        }
    }
}

#[test]
fn by_default_a_batch_is_answered_every_14_requests_or_on_one_cpu_once_all_is_handled() {
    if std::thread::available_parallelism().is_ok_and(|cpus| cpus.get() == 1) {
        // With one CPU no peer can run meanwhile, so by default a connection
        // answers a batch once it has handled all of it: nothing is written
        // while the sixteenth request blocks (`taskset -c 0` runs this branch).
        answers_before_a_blocked_request(None, 16, 0);
    } else {
        // A write after every 14 requests handled: the first 14 answers go
        // out while the fifteenth blocks.
        answers_before_a_blocked_request(None, 15, 14);
    }
}

#[test]
fn a_dispatch_burst_set_in_the_options_applies_on_any_machine() {
    // With a burst of 4, the answers to the first 4 requests go out while the
    // handler of the sixth blocks, whatever the number of CPUs.
    answers_before_a_blocked_request(Some(4), 6, 4);
}

#[test]
fn without_a_dispatch_burst_limit_a_batch_is_answered_once_all_of_it_is_handled() {
    // usize::MAX: nothing is written while the sixth request's handler blocks
    // (the test waits a quarter of a second for that), then all 20 answers.
    answers_before_a_blocked_request(Some(usize::MAX), 6, 0);
}

/// Twenty requests arrive in one write; the handler of request `blocked_at`
/// blocks its connection until the test has read the answers to the first
/// `early` of them. A connection that handled `blocked_at` requests or more
/// before its first write would send none of them in time. With `early` 0 the
/// test instead checks that no answer arrives for 250 ms while it blocks.
/// The test reads with a blocking socket of its own, not on the server's
/// runtime, whose worker the handler blocks.
fn answers_before_a_blocked_request(burst: Option<usize>, blocked_at: u64, early: u64) {
    use std::io::Write;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (release, blocked) = std::sync::mpsc::channel::<()>();
    let blocked = std::sync::Mutex::new(blocked);
    let (server, addr) = rt.block_on(async {
        let mut server = Server::tcp("127.0.0.1:0");
        if let Some(burst) = burst {
            server = server.dispatch_burst(burst);
        }
        let server = server.start();
        server.on("n", move |args: Args| -> Result<(), Error> {
            let (n, reply): (u64, RemoteCallback) = args.parse()?;
            if n == blocked_at {
                let _ = blocked.lock().unwrap().recv_timeout(LIMIT);
            }
            reply.call((n,))
        });
        let addr = tcp_addr(&server).await;
        (server, addr)
    });
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(LIMIT / 2)).unwrap();
    let mut batch = Vec::new();
    for id in 1..=20u64 {
        let frame = rmpv::Value::Map(vec![
            ("i".into(), id.into()),
            ("e".into(), "n".into()),
            ("a".into(), rmpv::Value::Array(vec![id.into()])),
            ("c".into(), rmpv::Value::Array(vec![1.into()])),
        ]);
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &frame).unwrap();
        batch.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        batch.extend_from_slice(&bytes);
    }
    stream.write_all(&batch).unwrap();
    let mut seen = Vec::new();
    if early == 0 {
        stream
            .set_read_timeout(Some(Duration::from_millis(250)))
            .unwrap();
        let mut byte = [0; 1];
        let waited = stream.peek(&mut byte);
        assert!(
            waited.as_ref().is_err_and(|e| matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            )),
            "an answer arrived while a request of the batch was still being handled: {waited:?}"
        );
        stream.set_read_timeout(Some(LIMIT / 2)).unwrap();
    }
    answers_up_to(&mut stream, &mut seen, early);
    assert!(seen.iter().all(|&r| r < blocked_at), "{seen:?}");
    release.send(()).unwrap();
    answers_up_to(&mut stream, &mut seen, 20);
    seen.sort();
    assert_eq!(seen, (1..=20).collect::<Vec<u64>>());
    rt.block_on(server.stop());
}

/// A callback invoked while the outgoing queue is full: `call` fails with
/// `QueueFull` and sends nothing; `call_wait` waits for room, and the answer
/// arrives once the peer reads again.
#[tokio::test(flavor = "current_thread")]
async fn call_wait_waits_for_room_where_call_fails_on_a_full_queue() {
    // The asking side: a router whose frames are carried by hand.
    let asker = nmsg::Router::new();
    let answer = asker.request::<(u32,)>("ask", ());
    let ask = asker.link().take_outgoing().expect("the request is queued");

    // The answering side: a connection on a small pipe nobody reads yet.
    let answerer = nmsg::Router::builder().max_queued_frames(4).build();
    let (kept_tx, mut kept_rx) = mpsc::unbounded_channel::<RemoteCallback>();
    answerer.on("ask", move |args: Args| -> Result<(), Error> {
        kept_tx.send(args.callback(0)?).unwrap();
        Ok(())
    });
    let (mut ours, theirs) = tokio::io::duplex(64);
    let _connection = nmsg::transport::Connection::spawn(theirs, answerer.clone());
    ours.write_all(&ask).await.unwrap();
    let callback = kept_rx.recv().await.unwrap();

    // Fill the pipe and then the queue: the connection task writes what it
    // can at each yield, until the pipe is full and its write waits.
    for _ in 0..16 {
        while answerer.emit("filler", ()).is_ok() {}
        tokio::task::yield_now().await;
    }
    while answerer.emit("filler", ()).is_ok() {}
    assert!(matches!(
        callback.call((7u32,)),
        Err(Error::QueueFull { frames: 4, .. })
    ));
    assert!(
        !callback.is_invoked(),
        "a failed call leaves the callback to call again"
    );
    // Claimed at once; dropped before it sent, it gives the callback back.
    let dropped = callback.call_wait((7u32,));
    assert!(callback.is_invoked());
    drop(dropped);
    assert!(!callback.is_invoked(), "a dropped call_wait sent nothing");
    let waiting = tokio::spawn(callback.call_wait((7u32,)));
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished(), "the queue is full: call_wait waits");

    // Read what the answerer writes, message by message, into the asker.
    let reader = tokio::spawn(async move {
        loop {
            let mut prefix = [0u8; 4];
            if ours.read_exact(&mut prefix).await.is_err() {
                return;
            }
            let mut payload = vec![0u8; u32::from_be_bytes(prefix) as usize];
            ours.read_exact(&mut payload).await.unwrap();
            asker.link().dispatch(payload.into());
        }
    });
    waiting
        .await
        .unwrap()
        .expect("call_wait sends once there is room");
    let (n,) = tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .expect("the answer arrives")
        .unwrap();
    assert_eq!(n, 7);
    reader.abort();
}
