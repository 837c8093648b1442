//! The README story: the client emits `ping` before the server exists; the
//! server starts a moment later, and the ping, queued meanwhile, arrives.
//!
//! Run with `cargo run --example ping`. Prints, in this order:
//! `Sending ping.`, `Server started.`, `Ping received!`

use std::time::Duration;

use nmsg::{Args, Backoff, Client, Server};
use tokio::sync::{mpsc, watch};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A free port for this run (the server does not exist yet, so ask the OS for
    // one). The socket that got it stays bound, not listening, until just before
    // the server binds the port: meanwhile connections to it are refused, and
    // no other program can take it.
    let reserved = tokio::net::TcpSocket::new_v4()?;
    reserved.bind("127.0.0.1:0".parse()?)?;
    let addr = reserved.local_addr()?.to_string();

    // Retry quickly, so the example does not wait the default 1 s between attempts.
    let client = Client::tcp(&addr)
        .backoff(Backoff::new(
            Duration::from_millis(20),
            Duration::from_millis(500),
        ))
        .start();
    println!("Sending ping.");
    client.router().emit("ping", ())?; // queued: nothing is listening yet

    tokio::time::sleep(Duration::from_millis(100)).await; // "a moment later"
    drop(reserved);
    let server = Server::tcp(&addr).start();
    let (started_tx, started) = watch::channel(false);
    let (received_tx, mut received) = mpsc::channel(1);
    server.on("ping", move |_args: Args| {
        let mut started = started.clone();
        let received = received_tx.clone();
        async move {
            // Print after "Server started." even if the ping wins the race to the console.
            let _ = started.wait_for(|s| *s).await;
            println!("Ping received!");
            let _ = received.send(()).await;
        }
    });
    server.started().await?;
    println!("Server started.");
    started_tx.send(true)?;

    tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await?
        .ok_or("the ping handler went away")?;
    client.stop().await;
    server.stop().await;
    Ok(())
}
