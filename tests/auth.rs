//! Authentication (issue 15) over the in-memory transport, in paused time:
//! credentials on the hello (plain and session clients), rejections with
//! their reason and backoff, tokens refreshed between connections, the
//! identity handlers read, and peers that do not authenticate refused
//! within the bound.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nmsg::transport::memory::Network;
use nmsg::transport::Connector;
use nmsg::{
    Args, AuthIdentity, AuthRequest, Client, ClientEvent, Error, Peer, Reject, Server, ServerEvent,
    SessionOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast;

/// Far longer than any of these exchanges takes in paused time.
const LIMIT: Duration = Duration::from_secs(600);

/// Who a token says the peer is, in these tests.
#[derive(Debug, Clone, PartialEq)]
struct User(String);

/// A server on `net` at "svc" that accepts the tokens `ok` accepts, as
/// the user named by the token.
async fn server_with(
    net: &Network,
    session: bool,
    ok: impl Fn(&str) -> bool + Send + Sync + 'static,
) -> Server {
    let ok = Arc::new(ok);
    let mut builder = Server::builder(net.binder("svc")).authenticate(move |req: AuthRequest| {
        let ok = ok.clone();
        async move {
            match req.credentials.as_str() {
                Some(token) if ok(token) => {
                    Ok(Some(AuthIdentity::new(User(format!("user of {token}")))))
                }
                Some(token) => Err(Reject::new(format!("unknown token {token:?}"))),
                None => Err(Reject::new("the token must be a string")),
            }
        }
    });
    if session {
        builder = builder.session(SessionOptions::default());
    }
    let server = builder.start();
    server.started().await.unwrap();
    // whoami(cb): the user the socket authenticated as, read by the handler
    // through the typed Peer.
    WhoApi::new(Whom).register(server.api());
    server
}

#[nmsg::events]
trait Who {
    fn whoami(&self, peer: Peer) -> String {
        peer.auth_identity()
            .and_then(|i| i.get::<User>().map(|u| u.0.clone()))
            .unwrap_or_else(|| "nobody".into())
    }
}

struct Whom;
impl Who for Whom {}

async fn event<E: Clone, T>(
    events: &mut broadcast::Receiver<E>,
    mut pick: impl FnMut(&E) -> Option<T>,
) -> T {
    tokio::time::timeout(LIMIT, async {
        loop {
            let e = events.recv().await.expect("events");
            if let Some(t) = pick(&e) {
                return t;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no such event within {LIMIT:?}"))
}

fn client(net: &Network, session: bool, token: &str) -> Client {
    let token = token.to_owned();
    let mut builder = Client::builder(net.connector("svc")).credentials(move || token.clone());
    if session {
        builder = builder.session(SessionOptions::default());
    }
    builder.start()
}

/// A good token: served, and the handler reads who the peer is (typed
/// `Peer`), as does the socket.
async fn accepted(session: bool) {
    let net = Network::new();
    let server = server_with(&net, session, |t| t == "secret").await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    server.on_socket(move |socket| {
        let user = socket
            .auth_identity()
            .and_then(|i| i.get::<User>().cloned());
        let router_user = socket
            .router()
            .auth_identity()
            .and_then(|i| i.get::<User>().cloned());
        assert_eq!(user, router_user);
        sink.lock().unwrap().push(user);
    });
    let client = client(&net, session, "secret");
    let who = WhoClient::new(client.router()).whoami().await.unwrap();
    assert_eq!(who, "user of secret");
    assert_eq!(*seen.lock().unwrap(), [Some(User("user of secret".into()))]);
    client.stop().await;
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_good_token_is_served_and_handlers_read_the_identity() {
    accepted(false).await;
}

#[tokio::test(start_paused = true)]
async fn a_good_token_on_a_session_hello_is_served_and_handlers_read_the_identity() {
    accepted(true).await;
}

/// A wrong token: the client gets the server's reason as an event and as an
/// error on its router's error hook, and backs off (each attempt waits
/// longer than the last); the server makes no socket and says why.
async fn wrong_token(session: bool) {
    let net = Network::new();
    let server = server_with(&net, session, |t| t == "secret").await;
    let mut server_events = server.events();
    let client = client(&net, session, "guess");
    let errors = Arc::new(Mutex::new(Vec::new()));
    let sink = errors.clone();
    client.router().on_error(move |e: Error| {
        sink.lock().unwrap().push(e.to_string());
    });
    let mut events = client.events();
    let mut delays = Vec::new();
    for attempt in 1..=3 {
        let reason = event(&mut events, |e| match e {
            ClientEvent::AuthRejected { reason } => Some(reason.clone()),
            ClientEvent::Connected { .. } if !session => panic!("connected with a wrong token"),
            _ => None,
        })
        .await;
        assert_eq!(reason, r#"unknown token "guess""#);
        let (n, delay, error) = event(&mut events, |e| match e {
            ClientEvent::Reconnecting {
                attempt,
                delay,
                error,
            } => Some((*attempt, *delay, error.clone())),
            _ => None,
        })
        .await;
        assert_eq!(n, attempt);
        assert_eq!(
            error,
            r#"the server rejected the authentication: unknown token "guess""#
        );
        delays.push(delay);
    }
    assert!(
        delays[0] < delays[1] && delays[1] < delays[2],
        "backs off: {delays:?}"
    );
    let (_peer, reason) = event(&mut server_events, |e| match e {
        ServerEvent::AuthRejected { peer, reason } => Some((peer.clone(), reason.clone())),
        ServerEvent::Connected { .. } => panic!("a socket for a wrong token"),
        _ => None,
    })
    .await;
    assert_eq!(reason, r#"unknown token "guess""#);
    assert_eq!(server.socket_count(), 0);
    assert!(
        errors
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.contains(r#"rejected the authentication: unknown token "guess""#)),
        "{errors:?}"
    );
    client.stop().await;
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_wrong_token_is_rejected_with_its_reason_and_the_client_backs_off() {
    wrong_token(false).await;
}

#[tokio::test(start_paused = true)]
async fn a_wrong_token_on_a_session_hello_is_rejected_and_the_client_backs_off() {
    wrong_token(true).await;
}

/// A session client without credentials: its hello has none, the server
/// denies it and says so.
#[tokio::test(start_paused = true)]
async fn a_session_client_without_credentials_is_told_the_server_requires_them() {
    let net = Network::new();
    let server = server_with(&net, true, |_| true).await;
    let mut server_events = server.events();
    let client = Client::builder(net.connector("svc"))
        .session(SessionOptions::default())
        .start();
    let mut events = client.events();
    let reason = event(&mut events, |e| match e {
        ClientEvent::AuthRejected { reason } => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert!(reason.contains("has no credentials"), "{reason}");
    let reason = event(&mut server_events, |e| match e {
        ServerEvent::AuthRejected { reason, .. } => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert!(reason.contains("requires authentication"), "{reason}");
    client.stop().await;
    server.stop().await;
}

/// A token that changes between connections: the closure is called on
/// every connection, the first (stale) token is rejected, the next
/// accepted, and after a break the client authenticates again with a
/// fresh one, which the new socket's handlers see.
async fn refreshed(session: bool) {
    let net = Network::new();
    // Tokens 2 and later are good.
    let server = server_with(&net, session, |t| t != "tok-1").await;
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let mut builder = Client::builder(net.connector("svc"))
        .credentials(move || format!("tok-{}", counter.fetch_add(1, Ordering::SeqCst) + 1));
    if session {
        builder = builder.session(SessionOptions::default());
    }
    let client = builder.start();
    let mut events = client.events();
    let reason = event(&mut events, |e| match e {
        ClientEvent::AuthRejected { reason } => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert_eq!(reason, r#"unknown token "tok-1""#);
    let who = WhoClient::new(client.router()).whoami().await.unwrap();
    assert_eq!(who, "user of tok-2");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // A break: the client connects again, with a token asked anew.
    for socket in server.sockets() {
        socket.close().await;
    }
    event(&mut events, |e| {
        matches!(e, ClientEvent::Disconnected { .. }).then_some(())
    })
    .await;
    if session {
        // A closed session socket ends its session: a new one, with tok-3.
        event(&mut events, |e| {
            matches!(e, ClientEvent::SessionLost { .. }).then_some(())
        })
        .await;
    } else {
        event(&mut events, |e| {
            matches!(e, ClientEvent::Connected { .. }).then_some(())
        })
        .await;
    }
    let who = WhoClient::new(client.router()).whoami().await.unwrap();
    assert_eq!(who, "user of tok-3");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    client.stop().await;
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_token_refreshed_between_reconnects_is_asked_for_each_connection() {
    refreshed(false).await;
}

#[tokio::test(start_paused = true)]
async fn a_session_token_refreshed_between_reconnects_is_asked_for_each_connection() {
    refreshed(true).await;
}

/// A peer that does not authenticate, as the JavaScript original: its
/// first message is a plain one. Refused at once, the stream closed, the
/// reason in the server's events; no handler runs.
#[tokio::test(start_paused = true)]
async fn a_plain_first_message_is_refused_at_once() {
    let net = Network::new();
    let server = server_with(&net, false, |_| true).await;
    let ran = Arc::new(AtomicU32::new(0));
    let count = ran.clone();
    server.on("ping", move |_: Args| {
        count.fetch_add(1, Ordering::SeqCst);
    });
    let mut server_events = server.events();
    let (mut stream, _) = net.connector("svc").connect().await.unwrap();
    // {"i":null? ...}: a plain emit of "ping", as the original writes it.
    let frame = rmp_frame(&[("e", "ping".into()), ("a", nmsg::Value::Array(vec![]))]);
    stream.write_all(&frame).await.unwrap();
    let at = tokio::time::Instant::now();
    let reason = event(&mut server_events, |e| match e {
        ServerEvent::AuthRejected { reason, .. } => Some(reason.clone()),
        ServerEvent::Connected { .. } => panic!("a socket for a peer that did not authenticate"),
        _ => None,
    })
    .await;
    assert!(
        reason.contains("first message was not a hello with credentials"),
        "{reason}"
    );
    assert_eq!(at.elapsed(), Duration::ZERO);
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(1), stream.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "closed: {read:?}");
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert_eq!(server.socket_count(), 0);
    server.stop().await;
}

/// A peer that says nothing (a plain client that only listens): refused
/// when the auth timeout passes, not before, not later.
#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_refused_at_the_auth_timeout() {
    let net = Network::new();
    let server = Server::builder(net.binder("svc"))
        .authenticate(|_: AuthRequest| async { Ok(None) })
        .auth_timeout(Duration::from_secs(3))
        .start();
    server.started().await.unwrap();
    server.on_socket(|socket| {
        let _ = socket.router().emit("welcome", ("secret news",));
    });
    let mut server_events = server.events();
    let at = tokio::time::Instant::now();
    let listener = Client::builder(net.connector("svc")).start();
    let reason = event(&mut server_events, |e| match e {
        ServerEvent::AuthRejected { reason, .. } => Some(reason.clone()),
        ServerEvent::Connected { .. } => panic!("a socket for a silent peer"),
        _ => None,
    })
    .await;
    assert_eq!(at.elapsed(), Duration::from_secs(3));
    assert!(
        reason.contains("no hello with credentials within 3s"),
        "{reason}"
    );
    listener.stop().await;
    server.stop().await;
}

/// An authenticator that does not answer: the peer is refused at the auth
/// timeout, and told so.
#[tokio::test(start_paused = true)]
async fn an_authenticator_that_hangs_is_bounded_by_the_auth_timeout() {
    let net = Network::new();
    let server = Server::builder(net.binder("svc"))
        .authenticate(|_: AuthRequest| std::future::pending())
        .start();
    server.started().await.unwrap();
    let at = tokio::time::Instant::now();
    // Waits longer than the server: the server's bound is what ends it.
    let client = Client::builder(net.connector("svc"))
        .credentials(|| "x")
        .auth_timeout(Duration::from_secs(10))
        .start();
    let mut events = client.events();
    let reason = event(&mut events, |e| match e {
        ClientEvent::AuthRejected { reason } => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert_eq!(at.elapsed(), nmsg::DEFAULT_AUTH_TIMEOUT);
    assert!(reason.contains("did not answer within 5s"), "{reason}");
    client.stop().await;
    server.stop().await;
}

/// A client with credentials against a server that does not authenticate:
/// each attempt fails at the auth timeout with an error that says so.
#[tokio::test(start_paused = true)]
async fn credentials_against_a_server_without_auth_say_it_does_not_ask_for_them() {
    let net = Network::new();
    let server = Server::builder(net.binder("svc")).start();
    server.started().await.unwrap();
    let client = client(&net, false, "x");
    let mut events = client.events();
    let error = event(&mut events, |e| match e {
        ClientEvent::Reconnecting { error, .. } => Some(error.clone()),
        ClientEvent::Connected { .. } => panic!("connected without an answer to its hello"),
        _ => None,
    })
    .await;
    assert!(error.contains("does not ask for authentication"), "{error}");
    client.stop().await;
    server.stop().await;
}

/// A plain message frame: a MessagePack map with these pairs, length-prefixed.
fn rmp_frame(pairs: &[(&str, nmsg::Value)]) -> Vec<u8> {
    let map = nmsg::Value::Map(
        pairs
            .iter()
            .map(|(k, v)| (nmsg::Value::from(*k), v.clone()))
            .collect(),
    );
    let mut payload = Vec::new();
    rmpv::encode::write_value(&mut payload, &map).unwrap();
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&payload);
    out
}

/// Credentials from an async closure: its token is used; its error fails
/// the attempt (said in the client's events) and is retried after the backoff.
#[tokio::test(start_paused = true)]
async fn async_credentials_are_awaited_and_their_error_fails_the_attempt() {
    let net = Network::new();
    let server = server_with(&net, false, |t| t == "fetched").await;
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let client = Client::builder(net.connector("svc"))
        .credentials_async(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if n == 0 {
                    Err(Error::Closed)
                } else {
                    Ok("fetched")
                }
            }
        })
        .start();
    let mut events = client.events();
    let error = event(&mut events, |e| match e {
        ClientEvent::Reconnecting { error, .. } => Some(error.clone()),
        _ => None,
    })
    .await;
    assert!(error.contains("the credentials closure failed"), "{error}");
    let who = WhoClient::new(client.router()).whoami().await.unwrap();
    assert_eq!(who, "user of fetched");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    client.stop().await;
    server.stop().await;
}

/// A client with credentials and without sessions against a server with
/// sessions and without authentication: its plain hello (`p`) is welcomed
/// without a session, and it is served as a plain client.
#[tokio::test(start_paused = true)]
async fn a_plain_hello_to_a_session_server_without_auth_gets_a_plain_connection() {
    let net = Network::new();
    let server = Server::builder(net.binder("svc"))
        .session(SessionOptions::default())
        .start();
    server.started().await.unwrap();
    WhoApi::new(Whom).register(server.api());
    let mut server_events = server.events();
    let client = client(&net, false, "anything");
    let who = WhoClient::new(client.router()).whoami().await.unwrap();
    assert_eq!(who, "nobody");
    event(&mut server_events, |e| match e {
        ServerEvent::Connected { .. } => Some(()),
        ServerEvent::SessionStarted { .. } => panic!("a session for a plain hello"),
        _ => None,
    })
    .await;
    client.stop().await;
    server.stop().await;
}

/// A session client with credentials against a server that authenticates
/// without sessions: told so, and it backs off.
#[tokio::test(start_paused = true)]
async fn a_session_client_against_an_auth_server_without_sessions_says_so() {
    let net = Network::new();
    let server = server_with(&net, false, |_| true).await;
    let client = client(&net, true, "secret");
    let mut events = client.events();
    let error = event(&mut events, |e| match e {
        ClientEvent::Reconnecting { error, .. } => Some(error.clone()),
        _ => None,
    })
    .await;
    assert!(
        error.contains("authenticates but does not support sessions"),
        "{error}"
    );
    client.stop().await;
    server.stop().await;
}

/// A server stopped while its authenticator runs serves nobody once the
/// verdict comes: no welcome, no socket.
#[tokio::test(start_paused = true)]
async fn a_verdict_that_comes_after_the_stop_admits_nobody() {
    let net = Network::new();
    let gate = Arc::new(tokio::sync::Notify::new());
    let (asked_tx, mut asked) = tokio::sync::mpsc::unbounded_channel();
    let held = gate.clone();
    let server = Server::builder(net.binder("svc"))
        .authenticate(move |_: AuthRequest| {
            let held = held.clone();
            let _ = asked_tx.send(());
            async move {
                held.notified().await;
                Ok(None)
            }
        })
        .start();
    server.started().await.unwrap();
    let client = Client::builder(net.connector("svc"))
        .credentials(|| "x")
        .auth_timeout(Duration::from_secs(60))
        .start();
    let mut events = client.events();
    asked.recv().await.unwrap();
    server.stop().await;
    gate.notify_one();
    let connected = tokio::time::timeout(
        Duration::from_secs(30),
        event(&mut events, |e| {
            matches!(e, ClientEvent::Connected { .. }).then_some(())
        }),
    )
    .await;
    assert!(connected.is_err(), "a client admitted after the stop");
    assert_eq!(server.socket_count(), 0);
    client.stop().await;
}

/// Connections waiting to authenticate count toward `max_connections`:
/// silent peers cannot pile up beyond it.
#[tokio::test(start_paused = true)]
async fn connections_waiting_to_authenticate_count_toward_max_connections() {
    let net = Network::new();
    let server = Server::builder(net.binder("svc"))
        .authenticate(|_: AuthRequest| async { Ok(None) })
        .max_connections(2)
        .start();
    server.started().await.unwrap();
    let mut server_events = server.events();
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(net.connector("svc").connect().await.unwrap());
    }
    event(&mut server_events, |e| match e {
        ServerEvent::Refused { .. } => Some(()),
        ServerEvent::AuthRejected { .. } => panic!("the third was not refused at once"),
        _ => None,
    })
    .await;
    // Once the two are refused at the auth timeout, there is room again.
    for _ in 0..2 {
        event(&mut server_events, |e| {
            matches!(e, ServerEvent::AuthRejected { .. }).then_some(())
        })
        .await;
    }
    let client = client(&net, false, "x");
    let mut events = client.events();
    event(&mut events, |e| {
        matches!(e, ClientEvent::Connected { .. }).then_some(())
    })
    .await;
    client.stop().await;
    server.stop().await;
}
