//! Faults at a close: a close is bounded against a peer that never reads,
//! what a server socket loses at its end is counted and reported, and a
//! graceful stop drains the peer's input, so that the system does not reset
//! the connection and discard the tail of a reply. Over the in-memory
//! transport under tokio's paused time, and over TCP on 127.0.0.1 for the
//! reset.

use std::time::Duration;

use nmsg::transport::memory::{Network, BUFFER_SIZE};
use nmsg::transport::{CloseReason, Connection, ConnectionOptions, Connector};
use nmsg::{args, Args, Buffering, Error, Router, Server, ServerEvent, Socket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

const LIMIT: Duration = Duration::from_secs(60);

/// The stream's buffer in the tests below.
const PIPE: usize = 64;

/// What one frame emitted as `router.emit(event, args)` takes on the wire,
/// unbuffered (its length prefix included).
fn wire_len(event: &str, arg: &str) -> usize {
    let probe = Router::new();
    probe.emit(event, args![arg]).unwrap();
    probe.link().take_outgoing().unwrap().len()
}

/// Every `FramesLost` reported to `router`'s error hook, as (frames, bytes).
fn losses_of(router: &Router) -> mpsc::UnboundedReceiver<(usize, usize)> {
    let (tx, rx) = mpsc::unbounded_channel();
    router.on_error(move |e| {
        if let Error::FramesLost { frames, bytes, .. } = e {
            let _ = tx.send((frames, bytes));
        }
    });
    rx
}

/// Lets other tasks run until `done` holds (at most 1,000 turns).
async fn until(mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the condition never held");
}

fn is_timed_out(reason: &CloseReason) -> bool {
    matches!(reason, CloseReason::Io { kind, .. } if *kind == std::io::ErrorKind::TimedOut)
}

/// The next server event that `pick` maps to something.
async fn next_event<T>(
    events: &mut broadcast::Receiver<ServerEvent>,
    mut pick: impl FnMut(ServerEvent) -> Option<T>,
) -> T {
    loop {
        let event = tokio::time::timeout(LIMIT, events.recv())
            .await
            .expect("the event never came")
            .unwrap();
        if let Some(t) = pick(event) {
            return t;
        }
    }
}

fn lost_event(event: ServerEvent) -> Option<(u64, usize, usize)> {
    match event {
        ServerEvent::Lost {
            socket,
            frames,
            bytes,
            ..
        } => Some((socket, frames, bytes)),
        _ => None,
    }
}

// ----- the bound of a close -----

/// A peer that never reads: `Connection::close` ends at the default bound
/// (5 s), says it timed out, and reports exactly what it did not write.
#[tokio::test(start_paused = true)]
async fn connection_close_is_bounded_by_default_against_a_peer_that_never_reads() {
    let router = Router::new();
    let mut lost = losses_of(&router);
    let big = "x".repeat(1000);
    router.emit("big", args![&big]).unwrap();
    let (mine, _never_reads) = tokio::io::duplex(PIPE);
    let conn = Connection::spawn(mine, router.clone());
    until(|| router.queued_frames() == 0).await;

    let began = Instant::now();
    let reason = tokio::time::timeout(LIMIT, conn.close())
        .await
        .expect("close never ended");
    assert_eq!(began.elapsed(), nmsg::DEFAULT_STOP_TIMEOUT);
    assert!(is_timed_out(&reason), "{reason:?}");
    assert_eq!(lost.try_recv(), Ok((1, wire_len("big", &big))));
}

/// `ConnectionOptions::stop_timeout` sets the bound; the frames queued at
/// the close (its tail) are counted with the one it was writing.
#[tokio::test(start_paused = true)]
async fn connection_close_is_bounded_by_its_stop_timeout() {
    let router = Router::new();
    let mut lost = losses_of(&router);
    let big = "x".repeat(1000);
    router.emit("big", args![&big]).unwrap();
    let (mine, _never_reads) = tokio::io::duplex(PIPE);
    let options = ConnectionOptions::new().stop_timeout(Duration::from_secs(2));
    let conn = Connection::spawn_with(mine, router.clone(), options);
    until(|| router.queued_frames() == 0).await;
    router.emit("tail", args!["t"]).unwrap();

    let began = Instant::now();
    let reason = tokio::time::timeout(LIMIT, conn.close()).await.unwrap();
    assert_eq!(began.elapsed(), Duration::from_secs(2));
    assert!(is_timed_out(&reason), "{reason:?}");
    let bytes = wire_len("big", &big) + wire_len("tail", "t");
    assert_eq!(lost.try_recv(), Ok((2, bytes)));
}

/// A server whose sockets send `first` (small) then a frame larger than the
/// in-memory stream holds, and hand the test their sockets.
async fn server_that_sends_more_than_a_stream_holds(
    net: &Network,
    stop_timeout: Duration,
) -> (Server, mpsc::UnboundedReceiver<Socket>) {
    let server = Server::builder(net.binder("svc"))
        .buffering(Buffering::Off)
        .stop_timeout(stop_timeout)
        .start();
    let (tx, sockets) = mpsc::unbounded_channel();
    server.on_socket(move |socket| {
        socket.router().emit("first", args!["f"]).unwrap();
        let big = "x".repeat(BUFFER_SIZE + 1024);
        socket.router().emit("big", args![&big]).unwrap();
        let _ = tx.send(socket);
    });
    server.started().await.unwrap();
    (server, sockets)
}

fn big_len() -> usize {
    wire_len("big", &"x".repeat(BUFFER_SIZE + 1024))
}

/// A server socket's close ends at the server's stop timeout against a peer
/// that never reads, and reports what it did not write (the big frame; the
/// first was written whole).
#[tokio::test(start_paused = true)]
async fn socket_close_is_bounded_by_the_servers_stop_timeout() {
    let net = Network::new();
    let (server, mut sockets) =
        server_that_sends_more_than_a_stream_holds(&net, Duration::from_secs(1)).await;
    let mut events = server.events();
    let (_never_reads, _) = net.connector("svc").connect().await.unwrap();
    let socket = sockets.recv().await.unwrap();
    let mut lost = losses_of(socket.router());
    until(|| socket.router().queued_frames() == 0).await;

    let began = Instant::now();
    let reason = tokio::time::timeout(LIMIT, socket.close())
        .await
        .expect("close never ended");
    assert_eq!(began.elapsed(), Duration::from_secs(1));
    assert!(is_timed_out(&reason), "{reason:?}");
    assert_eq!(lost.try_recv(), Ok((1, big_len())));
    let (id, frames, bytes) = next_event(&mut events, lost_event).await;
    assert_eq!((id, frames, bytes), (socket.id(), 1, big_len()));
    server.stop().await;
}

// ----- what a server socket loses -----

/// The peer goes away while the socket writes: the frame it was writing and
/// every frame still queued behind it are reported, once, as one loss, in a
/// `ServerEvent::Lost` and to the socket's error hook.
#[tokio::test(start_paused = true)]
async fn a_socket_reports_the_frames_still_queued_when_its_connection_ends() {
    let net = Network::new();
    let (server, mut sockets) =
        server_that_sends_more_than_a_stream_holds(&net, Duration::from_secs(1)).await;
    let mut events = server.events();
    let (mut peer, _) = net.connector("svc").connect().await.unwrap();
    let socket = sockets.recv().await.unwrap();
    let mut lost = losses_of(socket.router());
    until(|| socket.router().queued_frames() == 0).await;
    // Queued behind the big frame, which waits for room.
    for i in 0..5u64 {
        socket.router().emit("queued", args![i]).unwrap();
    }
    let mut prefix = [0u8; 4];
    peer.read_exact(&mut prefix).await.unwrap();
    drop(peer);

    let queued = 5 * {
        let probe = Router::new();
        probe.emit("queued", args![0u64]).unwrap();
        probe.link().take_outgoing().unwrap().len()
    };
    let expected = (6, big_len() + queued);
    let (id, frames, bytes) = next_event(&mut events, lost_event).await;
    assert_eq!((id, frames, bytes), (socket.id(), expected.0, expected.1));
    assert_eq!(lost.try_recv(), Ok(expected));
    assert!(lost.try_recv().is_err(), "reported twice");
    server.stop().await;
}

/// A socket dropped at the server's stop timeout: exactly what the peer did
/// not get is reported. The first frame was written whole and is not; the
/// big one, the tail taken at the stop and the frames queued while it
/// stopped are.
#[tokio::test(start_paused = true)]
async fn a_socket_dropped_at_the_stop_timeout_reports_exactly_what_it_did_not_write() {
    let net = Network::new();
    let (server, mut sockets) =
        server_that_sends_more_than_a_stream_holds(&net, Duration::from_secs(1)).await;
    let mut events = server.events();
    let (mut peer, _) = net.connector("svc").connect().await.unwrap();
    let socket = sockets.recv().await.unwrap();
    let mut lost = losses_of(socket.router());
    until(|| socket.router().queued_frames() == 0).await;
    let small = {
        let probe = Router::new();
        probe.emit("more", args![0u64]).unwrap();
        probe.link().take_outgoing().unwrap().len()
    };
    // The stop's tail.
    for i in 0..3u64 {
        socket.router().emit("more", args![i]).unwrap();
    }
    let stopping = tokio::spawn({
        let server = server.clone();
        async move { server.stop().await }
    });
    // Queued while it stops: never taken.
    let mut late = 0;
    for i in 0..5u64 {
        tokio::task::yield_now().await;
        if socket.router().emit("more", args![i]).is_ok() {
            late += 1;
        }
    }
    tokio::time::timeout(LIMIT, stopping)
        .await
        .expect("the stop never ended")
        .unwrap();

    let expected = (1 + 3 + late, big_len() + (3 + late) * small);
    assert_eq!(lost.try_recv(), Ok(expected));
    assert!(lost.try_recv().is_err(), "reported twice");
    let (id, frames, bytes) = next_event(&mut events, lost_event).await;
    assert_eq!((id, frames, bytes), (socket.id(), expected.0, expected.1));
    // The first frame did arrive.
    let mut first = vec![0u8; wire_len("first", "f")];
    peer.read_exact(&mut first).await.unwrap();
}

// ----- a graceful stop drains input -----

/// A peer sends while the server stops in the middle of a 16 MiB reply.
/// The server reads and discards what arrives until the peer closes its
/// side, so the peer gets the whole reply and then an orderly end of stream.
/// (Closing with unread input makes the system reset the connection: the
/// peer then reads "connection reset", and the reset discards what the
/// server had written and not yet sent.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_keeps_sending_while_the_server_stops_gets_the_whole_reply_and_an_orderly_end()
{
    const PARTS: usize = 256;
    let part = "p".repeat(64 * 1024);
    let server = Server::tcp("127.0.0.1:0")
        .buffering(Buffering::Off)
        .stop_timeout(LIMIT)
        .start();
    server.on("noop", |_: Args| {});
    server.on_socket({
        let part = part.clone();
        move |socket| {
            for _ in 0..PARTS {
                socket.router().emit("part", args![&part]).unwrap();
            }
        }
    });
    let nmsg::transport::Address::Tcp(address) = server.started().await.unwrap() else {
        panic!("not a TCP address");
    };
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();

    // The reply has begun, and waits for the peer to read (more than the
    // system's buffers hold): stop the server in the middle of it.
    let mut prefix = [0u8; 4];
    reader.read_exact(&mut prefix).await.unwrap();
    let stopping = tokio::spawn({
        let server = server.clone();
        async move { server.stop().await }
    });
    // The stop has begun: the server no longer counts the socket, and has
    // asked it to close.
    let began = Instant::now();
    while server.socket_count() > 0 {
        assert!(began.elapsed() < LIMIT, "the stop never began");
        tokio::task::yield_now().await;
    }

    // From now on the peer sends valid messages without pause, until told
    // to stop; then it closes its side.
    let noop = {
        let probe = Router::new();
        probe.emit("noop", args![0u64]).unwrap();
        probe.link().take_outgoing().unwrap().repeat(64)
    };
    let (stop_sending, mut told) = tokio::sync::oneshot::channel::<()>();
    let sending = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut told => break,
                written = writer.write_all(&noop) => if written.is_err() { return },
            }
        }
        let _ = writer.shutdown().await;
    });

    // Every frame carries its id: the parts differ in length by a byte or two.
    let whole = {
        let probe = Router::new();
        for _ in 0..PARTS {
            probe.emit("part", args![&part]).unwrap();
        }
        probe.link().take_outgoing().unwrap().len()
    };
    let mut got = prefix.len();
    let mut buf = vec![0u8; 64 * 1024];
    let mut stop_sending = Some(stop_sending);
    let end = loop {
        if got == whole {
            if let Some(stop) = stop_sending.take() {
                let _ = stop.send(());
            }
        }
        match tokio::time::timeout(LIMIT, reader.read(&mut buf))
            .await
            .expect("the server neither sent nor closed")
        {
            Ok(0) => break Ok(()),
            Ok(n) => got += n,
            Err(e) => break Err(e),
        }
    };
    assert_eq!(got, whole, "bytes of the reply received ({end:?})");
    assert!(
        end.is_ok(),
        "the stream ended with {end:?}, not an orderly end"
    );
    tokio::time::timeout(LIMIT, stopping)
        .await
        .expect("the stop never ended")
        .unwrap();
    sending.await.unwrap();
}

/// `Connection::close` waits for the peer to close its side (reading and
/// discarding what it sends meanwhile), and ends at once when it does.
#[tokio::test(start_paused = true)]
async fn a_close_reads_until_the_peer_closes_its_side() {
    let router = Router::new();
    let (mine, mut theirs) = tokio::io::duplex(PIPE);
    let conn = Connection::spawn(mine, router.clone());
    router.emit("last", args!["l"]).unwrap();
    let closing = tokio::spawn(async move { conn.close().await });
    let mut last = vec![0u8; wire_len("last", "l")];
    theirs.read_exact(&mut last).await.unwrap();
    // Its write side is shut down: the peer reads the end of the stream.
    assert_eq!(theirs.read(&mut [0u8; 1]).await.unwrap(), 0);
    // What the peer still sends is read (more than the stream holds), not dispatched.
    theirs.write_all(&[0u8; 4 * PIPE]).await.unwrap();
    let began = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!closing.is_finished(), "it did not wait for the peer");
    theirs.shutdown().await.unwrap();
    let reason = tokio::time::timeout(LIMIT, closing).await.unwrap().unwrap();
    assert_eq!(reason, CloseReason::Local);
    assert_eq!(began.elapsed(), Duration::from_secs(1));
}
