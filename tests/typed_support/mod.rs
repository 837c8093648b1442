//! What the typed tests share: the connection they run over, and the services
//! they call.
//!
//! Tests call [`connect`] (or [`connect_with`]) and never name a transport:
//! each gets a real `nmsg::Server` and `nmsg::Client`, over TCP on
//! `127.0.0.1:0` by default, or over the in-memory network where a test needs
//! tokio's paused time.

#![allow(dead_code)]

use std::sync::Mutex;
use std::time::Duration;

use nmsg::transport::memory::Network;
use nmsg::transport::Address;
use nmsg::{Api, Callback, Client, Peer, Router, Server, Socket};
use tokio::sync::{mpsc, oneshot};

/// How long a test waits for something that should happen at once, before it
/// fails instead of hanging.
pub const LIMIT: Duration = Duration::from_secs(10);

/// How the two ends are connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP on 127.0.0.1, a free port.
    Tcp,
    /// The in-memory network: no sockets, so tokio's paused time applies.
    Memory,
}

/// A server and a client with one live connection between them.
pub struct Link {
    /// The client's router.
    pub client: Router,
    /// The server's router for this client's socket.
    pub server: Router,
    client_handle: Client,
    server_handle: Server,
    socket: Socket,
}

impl Link {
    /// The server drops the connection; waits until it is down.
    pub async fn disconnect(&self) {
        self.socket.close().await;
    }

    /// The server.
    pub fn server_handle(&self) -> &Server {
        &self.server_handle
    }

    /// Another client of the same server (over TCP).
    pub async fn another_client(&self) -> Client {
        let Some(Address::Tcp(addr)) = self.server_handle.local_addr() else {
            panic!("another_client needs a TCP link");
        };
        let client = Client::tcp(addr.to_string()).start();
        tokio::time::timeout(LIMIT, client.connected())
            .await
            .expect("the client connects");
        client
    }

    /// Stops both ends.
    pub async fn stop(&self) {
        self.client_handle.stop().await;
        self.server_handle.stop().await;
    }
}

/// A fresh server and client over TCP.
pub async fn connect() -> Link {
    connect_with(Transport::Tcp, None).await
}

/// A fresh server (serving `api` for every socket, if given) and client over `transport`.
pub async fn connect_with(transport: Transport, api: Option<Api>) -> Link {
    let net = Network::new();
    let builder = match transport {
        Transport::Tcp => Server::tcp("127.0.0.1:0"),
        Transport::Memory => Server::builder(net.binder("typed")),
    };
    let server = match api {
        Some(api) => builder.api(api),
        None => builder,
    }
    .start();
    let (tx, rx) = oneshot::channel();
    let tx = Mutex::new(Some(tx));
    server.on_socket(move |socket| {
        if let Some(tx) = tx.lock().unwrap().take() {
            let _ = tx.send(socket);
        }
    });
    let address = server.started().await.expect("the server starts");
    let client = match (transport, address) {
        (Transport::Tcp, Address::Tcp(addr)) => Client::tcp(addr.to_string()).start(),
        (Transport::Memory, _) => Client::builder(net.connector("typed")).start(),
        (_, other) => panic!("unexpected address {other:?}"),
    };
    let socket = tokio::time::timeout(LIMIT, rx)
        .await
        .expect("the client connects")
        .expect("the server hands the socket over");
    Link {
        client: client.router().clone(),
        server: socket.router().clone(),
        client_handle: client,
        server_handle: server,
        socket,
    }
}

/// What a router reports to its error hook, as it happens.
pub fn collect_errors(router: &Router) -> mpsc::UnboundedReceiver<nmsg::Error> {
    let (tx, rx) = mpsc::unbounded_channel();
    router.on_error(move |e| {
        let _ = tx.send(e);
    });
    rx
}

/// The next error reported, within [`LIMIT`].
pub async fn next_error(errors: &mut mpsc::UnboundedReceiver<nmsg::Error>) -> nmsg::Error {
    tokio::time::timeout(LIMIT, errors.recv())
        .await
        .expect("an error is reported")
        .expect("the error hook is alive")
}

/// A callback whose arguments are one callback that takes a string: a hand of
/// the `pick-hand` game.
pub type Hand = Callback<(Callback<(String,)>,)>;

/// The service most tests use: one method of each shape.
#[nmsg::events]
pub trait Greeter {
    /// An event with no reply.
    fn hello(&self, name: String);
    /// A reply computed synchronously.
    fn count(&self) -> u64;
    /// A reply computed asynchronously.
    async fn ping(&self) -> String;
    /// Error-first.
    async fn div(&self, a: f64, b: f64) -> Result<f64, String>;
    /// Error-first without a value: `cb(null)` or `cb(err)`.
    fn check(&self, ok: bool) -> Result<(), String>;
    /// Nested callbacks, with a wire name of its own.
    #[nmsg(event = "pick-hand")]
    fn pick_hand(&self, hands: Callback<(Hand, Hand)>);
    /// Callbacks first and last.
    fn multi(&self, first: Callback<(String,)>, value: String, last: Callback<(String,)>);
}

/// Records the names `hello` was called with.
#[derive(Default)]
pub struct MyGreeter {
    pub names: Mutex<Vec<String>>,
}

impl Greeter for MyGreeter {
    fn hello(&self, name: String) {
        self.names.lock().unwrap().push(name);
    }

    fn count(&self) -> u64 {
        self.names.lock().unwrap().len() as u64
    }

    async fn ping(&self) -> String {
        tokio::task::yield_now().await;
        "pong".into()
    }

    async fn div(&self, a: f64, b: f64) -> Result<f64, String> {
        if b == 0.0 {
            Err("division by zero".into())
        } else {
            Ok(a / b)
        }
    }

    fn check(&self, ok: bool) -> Result<(), String> {
        if ok {
            Ok(())
        } else {
            Err("not ok".into())
        }
    }

    fn pick_hand(&self, hands: Callback<(Hand, Hand)>) {
        let _ = hands.call((hand("white"), hand("black")));
    }

    fn multi(&self, first: Callback<(String,)>, value: String, last: Callback<(String,)>) {
        let _ = last.call((format!("last {value}"),));
        let _ = first.call((format!("first {value}"),));
    }
}

/// A hand that answers `colour`.
pub fn hand(colour: &'static str) -> Hand {
    Callback::new(move |(reply,): (Callback<(String,)>,)| {
        let _ = reply.call((colour.to_string(),));
    })
}

/// Opens a hand the peer gave: invokes it and waits for the colour.
pub async fn open(hand: Hand) -> Result<String, nmsg::Error> {
    let (reply, colour) = Callback::once();
    hand.call((reply,))?;
    Ok(colour.await?.0)
}

/// A server-side service that calls its clients back through their `Peer`.
#[nmsg::events]
pub trait Lobby {
    /// Welcomes the guest (a call back to the client) and returns its answer.
    async fn join(&self, name: String, peer: Peer) -> Result<String, String>;
}

/// What clients serve, for the lobby to call.
#[nmsg::events]
pub trait Guest {
    async fn welcome(&self, text: String) -> String;
}

pub struct MyLobby;

impl Lobby for MyLobby {
    async fn join(&self, name: String, peer: Peer) -> Result<String, String> {
        GuestClient::new(&peer)
            .welcome(format!("welcome, {name}"))
            .await
            .map_err(|e| e.to_string())
    }
}

pub struct MyGuest;

impl Guest for MyGuest {
    async fn welcome(&self, text: String) -> String {
        format!("thanks for the {text:?}")
    }
}
