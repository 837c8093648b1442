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
    let server = Server::builder(net.binder("svc")).session(options).start();
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
    let net = Network::new();
    let (server, sockets) = server(&net, SessionOptions::default()).await;
    let up = Arc::new(Mutex::new(Vec::new()));
    let sink = up.clone();
    server.on("up", move |args: Args| {
        sink.lock().unwrap().push(args.get::<u64>(0).unwrap());
    });
    let cutter = Cutter::new(&net, "svc");
    cutter.plan(cuts.iter().copied());
    let client = Client::builder(cutter.clone())
        .session(SessionOptions::default())
        .start();
    let mut started = client.events();
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let (mut ce, mut se) = (client.events(), server.events());
    let l = log.clone();
    tokio::spawn(async move {
        while let Ok(e) = ce.recv().await {
            l.lock().unwrap().push(format!("client {e:?}"));
        }
    });
    let l = log.clone();
    tokio::spawn(async move {
        while let Ok(e) = se.recv().await {
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
