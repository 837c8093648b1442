//! Faults of the outgoing queue: what a lost connection loses, and that it is
//! counted and reported; answers never go to a later connection. Over the
//! in-memory transport, one end often read and written by the test itself,
//! under tokio's paused time.

use std::time::Duration;

use nmsg::frame::{FrameKind, Message};
use nmsg::transport::memory::{Network, BUFFER_SIZE};
use nmsg::transport::{Acceptor, Binder, BoxStream, Connection};
use nmsg::{
    args, Args, Backoff, Buffering, Callback, Client, ClientEvent, Codec, Error, MsgPack,
    RemoteCallback, Router,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc};

const LIMIT: Duration = Duration::from_secs(20);

fn fast() -> Backoff {
    Backoff::new(Duration::from_millis(10), Duration::from_millis(200))
}

// ----- raw ends and messages -----

async fn raw_listener(net: &Network, name: &str) -> Box<dyn Acceptor> {
    net.binder(name).bind().await.unwrap()
}

async fn raw_accept(listener: &mut Box<dyn Acceptor>) -> BoxStream {
    let (stream, _) = tokio::time::timeout(LIMIT, listener.accept())
        .await
        .expect("no connection came")
        .unwrap();
    stream
}

/// The next whole length-prefixed message's payload; `None` at the end of the
/// stream, also when it ends inside a message.
async fn read_payload(stream: &mut (impl AsyncRead + Unpin)) -> Option<Vec<u8>> {
    let mut prefix = [0; 4];
    let read = tokio::time::timeout(LIMIT, stream.read_exact(&mut prefix))
        .await
        .expect("nothing arrived");
    match read {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
        Err(e) => panic!("{e}"),
    }
    let mut payload = vec![0; u32::from_be_bytes(prefix) as usize];
    match stream.read_exact(&mut payload).await {
        Ok(_) => Some(payload),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => None,
        Err(e) => panic!("{e}"),
    }
}

/// The frames of a MsgPack message: for each, its event name, or `None` for a response.
fn frame_kinds(payload: &[u8]) -> Vec<Option<String>> {
    MsgPack
        .decode_all(payload)
        .unwrap()
        .into_frames()
        .into_iter()
        .map(|frame| match frame.unwrap().kind {
            FrameKind::Event(name) => Some(name.to_string()),
            FrameKind::Response { .. } => None,
        })
        .collect()
}

/// The length-prefixed messages of `bytes`, each as (where it ends, how many frames it has).
fn messages_of(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut at = 0;
    let mut out = Vec::new();
    while at < bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let end = at + 4 + len;
        let frames = MsgPack.decode_all(&bytes[at + 4..end]).unwrap();
        let frames = match frames {
            Message::Single(_) => 1,
            Message::Bulk(frames) => frames.len(),
        };
        out.push((end, frames));
        at = end;
    }
    out
}

/// What a connection that took `chunk` whole and wrote its first `written`
/// bytes loses: (frames, bytes) of every message from the first not written whole.
fn unwritten_of(chunk: &[u8], written: usize) -> (usize, usize) {
    let mut start = 0;
    let mut lost_frames = 0;
    let mut lost_from = None;
    for (end, frames) in messages_of(chunk) {
        if end > written {
            lost_frames += frames;
            lost_from.get_or_insert(start);
        }
        start = end;
    }
    (lost_frames, chunk.len() - lost_from.unwrap_or(chunk.len()))
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

/// The next client event that `pick` maps to something.
async fn next_event<T>(
    events: &mut broadcast::Receiver<ClientEvent>,
    mut pick: impl FnMut(ClientEvent) -> Option<T>,
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

fn lost_event(event: ClientEvent) -> Option<(usize, usize)> {
    match event {
        ClientEvent::Lost { frames, bytes, .. } => Some((frames, bytes)),
        _ => None,
    }
}

// ----- finding 2: answers never go to another connection -----

/// The client answers a request of its first connection while its queue
/// waits behind a write the server does not read; the server drops the
/// connection. The answer (which carries a callback of its own) is dropped,
/// not sent to the second connection, where its id would name an unrelated
/// request; its callback fails; what was dropped is reported; the event
/// queued after it still goes out.
async fn a_response_queued_at_a_loss_goes_to_no_other_connection(buffering: Buffering) {
    let net = Network::new();
    let mut listener = raw_listener(&net, "svc").await;
    let client = Client::builder(net.connector("svc"))
        .backoff(fast())
        .buffering(buffering)
        .start();
    let mut events = client.events();
    let (asked_tx, mut asked) = mpsc::unbounded_channel::<RemoteCallback>();
    client
        .router()
        .on("ask", move |args: Args| -> Result<(), Error> {
            let _ = asked_tx.send(args.callback(0)?);
            Ok(())
        });
    let mut first = raw_accept(&mut listener).await;

    // The server's request, frame id 1, with a callback at position 0.
    let probe = Router::new();
    let (cb, _) = Callback::<()>::once();
    probe.emit("ask", args![cb]).unwrap();
    first
        .write_all(&probe.link().take_outgoing().unwrap())
        .await
        .unwrap();
    let reply = tokio::time::timeout(LIMIT, asked.recv())
        .await
        .unwrap()
        .unwrap();

    // A frame larger than the stream's buffer: the connection takes it and
    // waits for room that never comes.
    let big = "x".repeat(BUFFER_SIZE + 1024);
    client.router().emit("big", args![&big]).unwrap();
    until(|| client.router().queued_frames() == 0).await;

    let (its_callback, its_reply) = Callback::<()>::once();
    reply.call(args!["answer", its_callback]).unwrap();
    client.router().emit("after", args![1u64]).unwrap();
    assert_eq!(client.router().queued_frames(), 2);
    assert_eq!(client.router().pending_frames(), 1);
    drop(first);

    let mut second = raw_accept(&mut listener).await;
    let payload = read_payload(&mut second).await.unwrap();
    assert_eq!(
        frame_kinds(&payload),
        [Some("after".to_string())],
        "the first message on the new connection"
    );
    let ended = tokio::time::timeout(LIMIT, its_reply).await.unwrap();
    assert!(matches!(ended, Err(Error::Disconnected(_))), "{ended:?}");
    assert_eq!(client.router().pending_frames(), 0);
    // The big frame, taken and not written whole, and the answer.
    let (frames, bytes) = next_event(&mut events, lost_event).await;
    assert_eq!(frames, 2);
    assert!(bytes > big.len(), "{bytes}");
    client.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_response_queued_at_a_loss_goes_to_no_other_connection_unbuffered() {
    a_response_queued_at_a_loss_goes_to_no_other_connection(Buffering::Off).await;
}

#[tokio::test(start_paused = true)]
async fn a_response_queued_at_a_loss_goes_to_no_other_connection_in_bulks() {
    a_response_queued_at_a_loss_goes_to_no_other_connection(Buffering::Idle).await;
}

// ----- finding 6: what a connection took and did not write -----

/// The stream's buffer in the tests below: the connection writes this much
/// of what it took, then waits.
const PIPE: usize = 64;

/// `n` events of the same size, about 20 bytes each.
fn emit_n(router: &Router, n: u64) {
    for i in 0..n {
        router.emit("n", args![i, "pad"]).unwrap();
    }
}

/// A router like `router`, with the same `n` events queued: what its
/// connection takes at once.
fn chunk_of(builder: impl Fn() -> Router, n: u64) -> Vec<u8> {
    let probe = builder();
    emit_n(&probe, n);
    probe.link().take_outgoing().unwrap().to_vec()
}

/// Ten events are taken in one go; the stream takes [`PIPE`] bytes of them;
/// the peer goes away. Exactly the messages not written whole are reported.
async fn taken_and_unwritten_at_a_break_are_reported(builder: impl Fn() -> Router) {
    const N: u64 = 10;
    let router = builder();
    let mut lost = losses_of(&router);
    emit_n(&router, N);
    let (mine, theirs) = tokio::io::duplex(PIPE);
    let conn = Connection::spawn(mine, router.clone());
    until(|| router.queued_frames() == 0).await;
    drop(theirs);
    tokio::time::timeout(LIMIT, conn.closed()).await.unwrap();

    let chunk = chunk_of(&builder, N);
    let expected = unwritten_of(&chunk, PIPE);
    assert!(expected.0 > 0, "the test loses nothing");
    assert_eq!(lost.try_recv(), Ok(expected));
    assert!(lost.try_recv().is_err(), "reported twice");
}

#[tokio::test(start_paused = true)]
async fn taken_and_unwritten_at_a_break_are_reported_unbuffered() {
    taken_and_unwritten_at_a_break_are_reported(Router::new).await;
}

#[tokio::test(start_paused = true)]
async fn taken_and_unwritten_at_a_break_are_reported_in_one_bulk() {
    taken_and_unwritten_at_a_break_are_reported(|| {
        Router::builder().buffering(Buffering::Idle).build()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn taken_and_unwritten_at_a_break_are_reported_in_bulks_of_a_few() {
    // Bulks of at most 50 bytes: the first is written whole, a frame count
    // of its own.
    let builder = || {
        Router::builder()
            .buffering(Buffering::Idle)
            .max_message_size(50)
            .build()
    };
    let messages = messages_of(&chunk_of(builder, 10));
    assert!(messages.len() > 2 && messages[0].0 <= PIPE && messages[0].1 > 1);
    taken_and_unwritten_at_a_break_are_reported(builder).await;
}

/// A peer that never reads, and a client stopped with frames it cannot
/// write: every frame emitted was either read by the peer, reported lost,
/// or counted unsent at the stop, exactly.
#[tokio::test(start_paused = true)]
async fn unsent_and_lost_account_for_every_frame_emitted_to_a_peer_that_never_reads() {
    let net = Network::new();
    let mut listener = raw_listener(&net, "svc").await;
    let client = Client::builder(net.connector("svc"))
        .stop_timeout(Duration::from_secs(1))
        .start();
    let mut events = client.events();
    let mut peer = raw_accept(&mut listener).await;
    client.connected().await;

    let pad = "x".repeat(4000);
    let mut emitted = 0;
    // Taken in one go and written in part: the stream holds BUFFER_SIZE.
    for _ in 0..100 {
        client.router().emit("n", args![&pad]).unwrap();
        emitted += 1;
    }
    until(|| client.router().queued_frames() == 0).await;
    // Queued behind the write: the stop takes them as its last write.
    for _ in 0..10 {
        client.router().emit("n", args![&pad]).unwrap();
        emitted += 1;
    }
    let stopping = tokio::spawn({
        let client = client.clone();
        async move { client.stop().await }
    });
    // Queued while it stops: never taken.
    for _ in 0..5 {
        tokio::task::yield_now().await;
        for _ in 0..10 {
            if client.router().emit("n", args![&pad]).is_ok() {
                emitted += 1;
            }
        }
    }
    stopping.await.unwrap();

    let (lost, lost_bytes) = next_event(&mut events, lost_event).await;
    let unsent = next_event(&mut events, |e| match e {
        ClientEvent::Stopped { unsent } => Some(unsent),
        _ => None,
    })
    .await;
    let mut read = 0;
    while let Some(payload) = read_payload(&mut peer).await {
        read += frame_kinds(&payload).len();
    }
    assert!(read > 0 && lost > 0 && unsent > 0, "{read} {lost} {unsent}");
    assert_eq!(
        read + lost + unsent,
        emitted,
        "{read} read, {lost} lost, {unsent} unsent"
    );
    // Every message is one frame of the same size.
    let probe = Router::new();
    probe.emit("n", args![&pad]).unwrap();
    let message = probe.link().take_outgoing().unwrap().len();
    assert_eq!(lost_bytes, lost * message);
}

/// A connection dropped at its stop timeout says exactly what it did not
/// write: the messages of what it was writing not written whole, and the
/// tail it took at the stop. An aborted one cannot say what it wrote: what it
/// took since it last had nothing to write is reported whole.
#[tokio::test(start_paused = true)]
async fn close_within_and_abort_report_what_the_connection_took() {
    for how in ["close_within", "close_within with a tail", "abort"] {
        let router = Router::new();
        let mut lost = losses_of(&router);
        emit_n(&router, 10);
        let (mine, _theirs) = tokio::io::duplex(PIPE);
        let conn = Connection::spawn(mine, router.clone());
        until(|| router.queued_frames() == 0).await;
        let chunk = chunk_of(Router::new, 10);
        let mut expected = unwritten_of(&chunk, PIPE);
        if how == "close_within with a tail" {
            emit_n(&router, 3);
            let tail = chunk_of(Router::new, 13).len() - chunk.len();
            expected = (expected.0 + 3, expected.1 + tail);
        }
        if how == "abort" {
            conn.abort();
            expected = (10, chunk.len());
        } else {
            conn.close_within(Duration::from_secs(1)).await;
        }
        assert_eq!(lost.try_recv(), Ok(expected), "{how}");
        tokio::task::yield_now().await;
        assert!(lost.try_recv().is_err(), "{how}: reported twice");
    }
}

/// A connection that wrote all it took loses nothing when it is aborted.
#[tokio::test(start_paused = true)]
async fn an_idle_connection_aborted_reports_no_loss() {
    let router = Router::new();
    let mut lost = losses_of(&router);
    let (mine, mut theirs) = tokio::io::duplex(BUFFER_SIZE);
    let conn = Connection::spawn(mine, router.clone());
    emit_n(&router, 3);
    for _ in 0..3 {
        read_payload(&mut theirs).await.unwrap();
    }
    // Written: the connection waits for more.
    until(|| router.queued_frames() == 0).await;
    tokio::task::yield_now().await;
    conn.abort();
    assert!(lost.try_recv().is_err());
}

/// A server socket's losses go to its router's error hook.
#[tokio::test(start_paused = true)]
async fn a_server_sockets_lost_frames_go_to_its_error_hook() {
    let net = Network::new();
    let server = nmsg::Server::builder(net.binder("svc")).start();
    let (lost_tx, mut lost) = mpsc::unbounded_channel();
    server.on_socket(move |socket| {
        let lost_tx = lost_tx.clone();
        socket.router().on_error(move |e| {
            if let Error::FramesLost { frames, .. } = e {
                let _ = lost_tx.send(frames);
            }
        });
        let big = "x".repeat(BUFFER_SIZE + 1024);
        socket.router().emit("big", args![&big]).unwrap();
    });
    server.started().await.unwrap();
    let (peer, _) = nmsg::transport::Connector::connect(&net.connector("svc"))
        .await
        .unwrap();
    // Wait until the socket wrote what the stream holds, then go away.
    let mut peer = peer;
    let mut first = [0u8; 4];
    peer.read_exact(&mut first).await.unwrap();
    drop(peer);
    let frames = tokio::time::timeout(LIMIT, lost.recv()).await.unwrap();
    assert_eq!(frames, Some(1));
    server.stop().await;
}
