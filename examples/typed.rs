//! The typed layer end to end over TCP: a trait marked `#[nmsg::events]`, a
//! server that serves an implementation of it to every socket, and a client
//! that calls it through the generated `GreeterClient`, including a call from
//! the server back to the client on the same connection.
//!
//! Run with `cargo run --example typed`.

use std::time::Duration;

use nmsg::transport::Address;
use nmsg::{Callback, Client, Peer, Server};

/// A hand of the `pick-hand` game: a callback that gets a callback for the colour.
type Hand = Callback<(Callback<(String,)>,)>;

/// What the server offers.
#[nmsg::events]
pub trait Greeter {
    /// An event without a reply.
    fn hello(&self, name: String);
    /// A reply.
    async fn ping(&self) -> String;
    /// Error-first, as Node: `cb(null, quotient)` or `cb(error)`.
    async fn div(&self, a: f64, b: f64) -> Result<f64, String>;
    /// Nested callbacks, with a wire name of its own.
    #[nmsg(event = "pick-hand")]
    fn pick_hand(&self, hands: Callback<(Hand, Hand)>);
    /// Calls the client back (its `Guest` service) before answering.
    async fn join(&self, name: String, peer: Peer) -> Result<String, String>;
}

/// What the client offers, for the server to call.
#[nmsg::events]
pub trait Guest {
    async fn welcome(&self, text: String) -> String;
}

struct MyGreeter;

impl Greeter for MyGreeter {
    fn hello(&self, name: String) {
        println!("server: hello from {name}");
    }

    async fn ping(&self) -> String {
        "pong".into()
    }

    async fn div(&self, a: f64, b: f64) -> Result<f64, String> {
        if b == 0.0 {
            Err("division by zero".into())
        } else {
            Ok(a / b)
        }
    }

    fn pick_hand(&self, hands: Callback<(Hand, Hand)>) {
        let hand = |colour: &'static str| -> Hand {
            Callback::new(move |(reply,): (Callback<(String,)>,)| {
                let _ = reply.call((colour.to_string(),));
            })
        };
        let _ = hands.call((hand("white"), hand("black")));
    }

    async fn join(&self, name: String, peer: Peer) -> Result<String, String> {
        println!("server: {name} joins; welcoming them on their connection");
        let answer = GuestClient::new(&peer)
            .welcome(format!("welcome, {name}"))
            .await
            .map_err(|e| e.to_string())?;
        Ok(format!("{name} said {answer:?}"))
    }
}

struct MyGuest;

impl Guest for MyGuest {
    async fn welcome(&self, text: String) -> String {
        println!("client: the server says {text:?}");
        "glad to be here".into()
    }
}

/// Opens a hand the server gave: invokes it, and waits for the colour.
async fn open(hand: Hand) -> Result<String, nmsg::Error> {
    let (reply, colour) = Callback::once();
    hand.call((reply,))?;
    Ok(colour.await?.0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::tcp("127.0.0.1:0")
        .api(GreeterApi::new(MyGreeter).into_api())
        .start();
    let Ok(Address::Tcp(addr)) = server.started().await else {
        return Err("the server did not start".into());
    };
    println!(
        "server: listening on {addr}, serving {:?}",
        GreeterClient::EVENTS
    );

    let client = Client::tcp(addr.to_string()).start();
    GuestApi::new(MyGuest).serve(client.router());
    let greeter = GreeterClient::new(client.router()).with_timeout(Duration::from_secs(5));

    greeter.hello("Ann".into())?;
    println!("client: hello(\"Ann\") queued");

    println!("client: ping() = {:?}", greeter.ping().await?);
    println!("client: div(6, 3) = {:?}", greeter.div(6.0, 3.0).await?);
    println!("client: div(1, 0) = {:?}", greeter.div(1.0, 0.0).await?);

    let (hands, picked) = Callback::once();
    greeter.pick_hand(hands)?;
    let (left, right) = picked.await?;
    println!(
        "client: pick-hand gave {} and {}",
        open(left).await?,
        open(right).await?
    );

    println!(
        "client: join(\"Ann\") = {:?}",
        greeter.join("Ann".into()).await?
    );

    client.stop().await;
    server.stop().await;
    println!("done");
    Ok(())
}
