//! TLS over TCP: real handshakes over 127.0.0.1 with certificates made here
//! (rcgen). Served and refused peers, mutual TLS and the identity handlers
//! see, certificate errors that say which check failed, and a peer that does
//! not speak TLS (either way) noticed at once, not at a timeout.

use std::time::Duration;

use nmsg::transport::tls::{self, ClientAuth, TlsBinder};
use nmsg::transport::{Address, PeerIdentity, SubjectAltName};
use nmsg::{args, Args, Client, ClientEvent, Error, Peer, Server, ServerEvent};
use tokio::sync::broadcast;

mod tls_support;
use tls_support::{Ca, Issued};

/// A bound on waits that only keeps a broken test from hanging: every
/// outcome awaited here comes in milliseconds.
const LIMIT: Duration = Duration::from_secs(5);

/// A TLS server on 127.0.0.1:0 with `server`'s certificate, serving `echo`,
/// and its address.
async fn tls_server(server: &Issued, clients: ClientAuth) -> (Server, String) {
    let config = tls::server_config(server.chain(), server.key(), clients).unwrap();
    start(Server::tls("127.0.0.1:0", config)).await
}

async fn start(builder: nmsg::ServerBuilder) -> (Server, String) {
    let server = builder.start();
    server.on("echo", |args: Args| -> Result<(), Error> {
        let text: String = args.get(0)?;
        args.callback(1)?.call((text,))
    });
    let Address::Tcp(addr) = server.started().await.unwrap() else {
        panic!("not a TCP address")
    };
    (server, addr.to_string())
}

/// A client that retries quickly (the tests look at its first attempts).
fn quick(client: nmsg::ClientBuilder) -> Client {
    client
        .backoff(nmsg::Backoff {
            initial: Duration::from_millis(50),
            factor: 1.0,
            max: Duration::from_millis(50),
            jitter: 0.0,
            seed: None,
        })
        .start()
}

async fn echo(client: &Client) -> Result<String, Error> {
    let request = client.router().request::<(String,)>("echo", args!["hi"]);
    Ok(tokio::time::timeout(LIMIT, request)
        .await
        .expect("no answer in time")?
        .0)
}

/// The error of the client's first failed attempt.
async fn first_failure(events: &mut broadcast::Receiver<ClientEvent>) -> String {
    tokio::time::timeout(LIMIT, async {
        loop {
            match events.recv().await.unwrap() {
                ClientEvent::Reconnecting { error, .. } => return error,
                ClientEvent::Disconnected { reason } => return reason,
                _ => {}
            }
        }
    })
    .await
    .expect("no failed attempt in time")
}

/// The server's first refusal: a failed handshake or a refused peer.
async fn server_refusal(events: &mut broadcast::Receiver<ServerEvent>) -> String {
    tokio::time::timeout(LIMIT, async {
        loop {
            match events.recv().await.unwrap() {
                ServerEvent::HandshakeFailed { error, .. } => return error,
                ServerEvent::Refused { reason, .. } => return reason,
                _ => {}
            }
        }
    })
    .await
    .expect("no refusal in time")
}

fn assert_mentions(text: &str, words: &[&str]) {
    for word in words {
        assert!(text.contains(word), "{word:?} is not in: {text}");
    }
}

#[tokio::test]
async fn rust_client_and_server_talk_over_tls() {
    let ca = Ca::new("test CA");
    let (server, addr) = tls_server(&ca.issue(&["localhost"]), ClientAuth::None).await;
    let config = tls::client_config(ca.roots(), None).unwrap();
    let client = Client::tls(&addr, "localhost", config).start();
    assert_eq!(echo(&client).await.unwrap(), "hi");
    // The server's emits reach the client too, encrypted the same way.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = std::sync::Mutex::new(Some(tx));
    client.router().on("hello", move |args: Args| {
        if let Some(tx) = tx.lock().unwrap().take() {
            let _ = tx.send(args.get::<String>(0).unwrap());
        }
    });
    assert_eq!(server.broadcast("hello", ("there",)), 1);
    assert_eq!(
        tokio::time::timeout(LIMIT, rx).await.unwrap().unwrap(),
        "there"
    );
    // Without mutual TLS, the client has no identity.
    assert_eq!(server.sockets()[0].identity(), None);
    client.stop().await;
    server.stop().await;
}

/// Many requests at once, and large ones: TLS buffers what it encrypts, and
/// what a write left there goes out only with a flush, which a connection
/// must make when it has nothing more to write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_requests_in_flight_and_large_ones_are_all_answered_over_tls() {
    let ca = Ca::new("test CA");
    let (server, addr) = tls_server(&ca.issue(&["localhost"]), ClientAuth::None).await;
    let client = Client::tls(
        &addr,
        "localhost",
        tls::client_config(ca.roots(), None).unwrap(),
    )
    .start();
    let router = client.router();
    for round in 0..5 {
        let calls = (0..2000).map(|i| {
            let text = if i % 100 == 0 {
                "x".repeat(256 * 1024)
            } else {
                i.to_string()
            };
            let reply = router.request::<(String,)>("echo", args![text.clone()]);
            async move { (reply.await.unwrap().0 == text) as usize }
        });
        let matched: usize = tokio::time::timeout(LIMIT, futures_util::future::join_all(calls))
            .await
            .unwrap_or_else(|_| panic!("round {round}: not every request was answered in time"))
            .into_iter()
            .sum();
        assert_eq!(matched, 2000);
    }
    client.stop().await;
    server.stop().await;
}

#[nmsg::events]
trait WhoAmI {
    /// The peer's certificate's common name, as a typed handler sees it.
    async fn whoami(&self, peer: Peer) -> String;
}

struct Names;

impl WhoAmI for Names {
    async fn whoami(&self, peer: Peer) -> String {
        match peer.identity().as_deref() {
            Some(PeerIdentity::Certificate(cert)) => cert.common_name.clone().unwrap_or_default(),
            other => format!("no certificate: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_mutual_tls_client_certificate_reaches_socket_router_and_typed_peer() {
    let ca = Ca::new("test CA");
    let (server, addr) =
        tls_server(&ca.issue(&["localhost"]), ClientAuth::Required(ca.roots())).await;
    WhoAmIApi::new(Names).register(server.api());
    server.on("dynamic", |args: Args| -> Result<(), Error> {
        let identity = args.peer().peer_identity().expect("an identity");
        let cert = identity.certificate().expect("a certificate");
        let dns: Vec<String> = cert.dns_names().map(str::to_owned).collect();
        args.callback(0)?.call((cert.subject.clone(), dns))
    });
    let alice = ca.issue_with(&["alice.example"], |params| {
        let uri = "spiffe://example/alice".try_into().unwrap();
        params.subject_alt_names.push(rcgen::SanType::URI(uri));
    });
    let config = tls::client_config(ca.roots(), Some(alice.identity())).unwrap();
    let client = Client::tls(&addr, "localhost", config).start();

    let typed = WhoAmIClient::new(client.router());
    let name = tokio::time::timeout(LIMIT, typed.whoami()).await.unwrap();
    assert_eq!(name.unwrap(), "alice.example");

    let (subject, dns): (String, Vec<String>) =
        tokio::time::timeout(LIMIT, client.router().request("dynamic", ()))
            .await
            .unwrap()
            .unwrap();
    assert_mentions(&subject, &["CN=alice.example", "O=nmsg tests"]);
    assert_eq!(dns, ["alice.example"]);

    let socket = &server.sockets()[0];
    let identity = socket.identity().unwrap();
    let cert = identity.certificate().unwrap();
    assert_eq!(cert.der, alice.cert.as_ref());
    assert_eq!(
        cert.subject_alt_names,
        [
            SubjectAltName::Dns("alice.example".into()),
            SubjectAltName::Uri("spiffe://example/alice".into()),
        ]
    );
    client.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_without_a_certificate_saying_so() {
    let ca = Ca::new("test CA");
    let (server, addr) =
        tls_server(&ca.issue(&["localhost"]), ClientAuth::Required(ca.roots())).await;
    let mut server_events = server.events();
    let config = tls::client_config(ca.roots(), None).unwrap();
    let client = quick(Client::tls(&addr, "localhost", config));
    let mut events = client.events();
    let refused = server_refusal(&mut server_events).await;
    assert_mentions(&refused, &["presented no certificate", "requires one"]);
    // TLS 1.3: the client's handshake ends before the server checks its
    // certificate; the server's alert then ends the connection.
    let failure = first_failure(&mut events).await;
    assert_mentions(&failure, &["CertificateRequired"]);
    assert_eq!(server.socket_count(), 0);
    client.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn optional_mutual_tls_serves_clients_with_and_without_a_certificate() {
    let ca = Ca::new("test CA");
    let (server, addr) =
        tls_server(&ca.issue(&["localhost"]), ClientAuth::Optional(ca.roots())).await;
    let anonymous = Client::tls(
        &addr,
        "localhost",
        tls::client_config(ca.roots(), None).unwrap(),
    )
    .start();
    assert_eq!(echo(&anonymous).await.unwrap(), "hi");
    assert_eq!(server.sockets()[0].identity(), None);
    anonymous.stop().await;

    let bob = ca.issue(&["bob.example"]);
    let named = Client::tls(
        &addr,
        "localhost",
        tls::client_config(ca.roots(), Some(bob.identity())).unwrap(),
    )
    .start();
    assert_eq!(echo(&named).await.unwrap(), "hi");
    let sockets = server.sockets();
    let identity = sockets[0].identity().unwrap();
    let cert = identity.certificate().unwrap();
    assert_eq!(cert.common_name.as_deref(), Some("bob.example"));
    named.stop().await;
    server.stop().await;
}

/// Connects with `roots` and `name` to a server with `cert`, and gives the
/// client's first failure and the server's.
async fn rejected(cert: &Issued, roots: tls::RootCertStore, name: &str) -> (String, String) {
    let (server, addr) = tls_server(cert, ClientAuth::None).await;
    let mut server_events = server.events();
    let client = quick(Client::tls(
        &addr,
        name,
        tls::client_config(roots, None).unwrap(),
    ));
    let mut events = client.events();
    let failure = first_failure(&mut events).await;
    let refusal = server_refusal(&mut server_events).await;
    assert!(!client.is_connected());
    client.stop().await;
    server.stop().await;
    (failure, refusal)
}

#[tokio::test]
async fn a_server_certificate_of_an_unknown_ca_fails_saying_unknown_issuer() {
    let (ca, other) = (Ca::new("test CA"), Ca::new("another CA"));
    let (failure, refusal) = rejected(&ca.issue(&["localhost"]), other.roots(), "localhost").await;
    assert_mentions(
        &failure,
        &["unknown certificate authority", "unknown issuer"],
    );
    assert_mentions(&refusal, &["does not trust", "unknown CA"]);
}

#[tokio::test]
async fn a_server_certificate_for_another_name_fails_saying_wrong_name() {
    let ca = Ca::new("test CA");
    let (failure, _) = rejected(&ca.issue(&["localhost"]), ca.roots(), "db.example").await;
    assert_mentions(
        &failure,
        &["not valid for the server name", "wrong name", "localhost"],
    );
}

#[tokio::test]
async fn an_expired_server_certificate_fails_saying_expired() {
    let ca = Ca::new("test CA");
    let (failure, _) = rejected(&ca.issue_expired(&["localhost"]), ca.roots(), "localhost").await;
    assert_mentions(&failure, &["certificate has expired"]);
}

#[tokio::test]
async fn a_plain_client_at_a_tls_server_is_dropped_at_once_saying_why() {
    let ca = Ca::new("test CA");
    let (server, addr) = tls_server(&ca.issue(&["localhost"]), ClientAuth::None).await;
    let mut server_events = server.events();
    let client = quick(Client::tcp(&addr));
    // Queued now, written as soon as the connection is up.
    client.router().emit("echo", ("hi",)).unwrap();
    let mut events = client.events();
    let began = tokio::time::Instant::now();
    let refusal = server_refusal(&mut server_events).await;
    assert_mentions(&refusal, &["does not speak TLS", "plain nmsg client"]);
    let failure = first_failure(&mut events).await;
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "took {:?}: the handshake timeout, not the first bytes, ended it",
        began.elapsed()
    );
    assert!(!failure.is_empty());
    client.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn a_tls_client_at_a_plain_server_fails_at_once_saying_why() {
    let ca = Ca::new("test CA");
    let (server, addr) = start(Server::tcp("127.0.0.1:0")).await;
    let client = quick(Client::tls(
        &addr,
        "localhost",
        tls::client_config(ca.roots(), None).unwrap(),
    ));
    let mut events = client.events();
    let began = tokio::time::Instant::now();
    let failure = first_failure(&mut events).await;
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "took {:?}: the handshake timeout, not the server's answer, ended it",
        began.elapsed()
    );
    assert_mentions(
        &failure,
        &["TLS handshake failed", "plain (non-TLS) nmsg server"],
    );
    client.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn a_silent_peer_is_dropped_at_the_handshake_timeout_without_holding_up_others() {
    let ca = Ca::new("test CA");
    let cert = ca.issue(&["localhost"]);
    let config = tls::server_config(cert.chain(), cert.key(), ClientAuth::None).unwrap();
    let binder = TlsBinder::tcp("127.0.0.1:0", config).handshake_timeout(Duration::from_secs(2));
    let (server, addr) = start(Server::builder(binder)).await;
    let mut server_events = server.events();
    // Connects, and says nothing.
    let silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // Meanwhile a TLS client is served: before the silent one is dropped.
    let client = Client::tls(
        &addr,
        "localhost",
        tls::client_config(ca.roots(), None).unwrap(),
    )
    .start();
    assert_eq!(echo(&client).await.unwrap(), "hi");
    while let Ok(event) = server_events.try_recv() {
        assert!(
            !matches!(event, ServerEvent::HandshakeFailed { .. }),
            "the silent peer held up the others until it was dropped: {event:?}"
        );
    }
    let refusal = server_refusal(&mut server_events).await;
    assert_mentions(&refusal, &["did not finish within 2s"]);
    drop(silent);
    client.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn a_tls_client_gives_up_a_silent_server_at_its_handshake_timeout() {
    let ca = Ca::new("test CA");
    // Accepts, and says nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let connector = tls::TlsConnector::tcp(
        &addr,
        "localhost",
        tls::client_config(ca.roots(), None).unwrap(),
    )
    .handshake_timeout(Duration::from_millis(300));
    let client = quick(Client::builder(connector));
    let mut events = client.events();
    let failure = first_failure(&mut events).await;
    assert_mentions(
        &failure,
        &["did not finish within 300ms", "is the server a TLS server?"],
    );
    client.stop().await;
    held.abort();
}

#[tokio::test]
async fn connections_in_their_handshake_count_towards_max_connections() {
    let ca = Ca::new("test CA");
    let cert = ca.issue(&["localhost"]);
    let config = tls::server_config(cert.chain(), cert.key(), ClientAuth::None).unwrap();
    let (server, addr) = start(Server::tls("127.0.0.1:0", config).max_connections(1)).await;
    let mut server_events = server.events();
    // Accepted first (the listener's queue is in order), and in its
    // handshake until the timeout: the one connection the server allows.
    let silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let client = quick(Client::tls(
        &addr,
        "localhost",
        tls::client_config(ca.roots(), None).unwrap(),
    ));
    let refusal = server_refusal(&mut server_events).await;
    assert_mentions(&refusal, &["1 connections, its limit (max_connections)"]);
    drop(silent);
    client.stop().await;
    server.stop().await;
}

#[test]
fn pem_files_load_and_bad_ones_say_what_is_wrong() {
    let ca = Ca::new("test CA");
    let cert = ca.issue(&["localhost"]);
    let dir = tls_support::TempDir::new("pem");
    let cert_path = dir.write("cert.pem", &cert.cert_pem);
    let key_path = dir.write("key.pem", &cert.key_pem);
    let ca_path = dir.write("ca.pem", &ca.pem());
    assert_eq!(tls::load_certs(&cert_path).unwrap(), cert.chain());
    assert_eq!(tls::load_private_key(&key_path).unwrap(), cert.key());
    assert_eq!(tls::load_roots(&ca_path).unwrap().len(), 1);

    let error = tls::load_certs(&key_path).unwrap_err().to_string();
    assert_mentions(&error, &["no certificate in", "BEGIN CERTIFICATE"]);
    let error = tls::load_private_key(&cert_path).unwrap_err().to_string();
    assert_mentions(
        &error,
        &["cannot read a private key", "key.pem"[..0].as_ref()],
    );
    let missing = dir.path().join("missing.pem");
    let error = tls::load_certs(&missing).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
    assert_mentions(&error.to_string(), &["missing.pem"]);
    // A key that is not the certificate's.
    let other = ca.issue(&["localhost"]);
    let error = tls::server_config(cert.chain(), other.key(), ClientAuth::None).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
}
