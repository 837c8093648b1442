//! The wildcard handler `*` sees every event, with the event name first, after
//! the event's own handler (if any) has run.
//!
//! Run with `cargo run --example wildcard`.

use nmsg::{args, Args, Client, Server};
use tokio::sync::mpsc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::tcp("127.0.0.1:0").start();
    let Ok(nmsg::transport::Address::Tcp(addr)) = server.started().await else {
        return Err("server did not start".into());
    };
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    server.on_socket(move |socket| {
        let seen = seen_tx.clone();
        socket.router().on("greet", |args: Args| {
            println!("server: greet handler: {args:?}");
        });
        socket.router().on("*", move |args: Args| {
            let name: String = args.get(0).unwrap_or_default();
            println!(
                "server: wildcard saw `{name}` with {} more argument(s)",
                args.len() - 1
            );
            let _ = seen.send(name);
        });
    });

    let client = Client::tcp(addr.to_string()).start();
    client.router().emit("greet", args!["Ann"])?;
    client.router().emit("anything", args![1, 2, 3])?;
    client.router().emit("else", ())?;
    for _ in 0..3 {
        seen.recv().await.ok_or("server went away")?;
    }
    client.stop().await;
    server.stop().await;
    Ok(())
}
