//! The original's nested callbacks example: `ping(data, err, done)` where the
//! server calls `err` with a message, then `done` with a reply and a callback
//! of its own, which the client calls with a callback again, and so on.
//!
//! Run with `cargo run --example callbacks`.

use std::time::Duration;

use nmsg::{args, Args, Callback, Client, RemoteCallback, Server};

/// The server's `inner` callback: called with `cb2`, which gets a text and a
/// callback of the server's again.
type Inner = Callback<(Callback<(String, Callback<(String,)>)>,)>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::tcp("127.0.0.1:0").start();
    let addr = server.started().await?;
    let nmsg::transport::Address::Tcp(addr) = addr else {
        unreachable!("a TCP server")
    };

    server.on("ping", |args: Args| -> Result<(), nmsg::Error> {
        let data: nmsg::Value = args.get(0)?;
        println!("server: ping received with {data}");
        let err = args.callback(1)?;
        let done = args.callback(2)?;
        println!("server: calling err(\"This is error message\")");
        err.call(("This is error message",))?;
        println!("server: calling done(\"pong\", inner)");
        let inner = Callback::new(|(cb2,): (RemoteCallback,)| {
            println!("server: inner called; calling cb2 with a callback of its own");
            let deepest = Callback::new(|(text,): (String,)| {
                println!("server: the deepest callback got {text:?}");
            });
            let _ = cb2.call(("You can have as many levels as you want...", deepest));
        });
        done.call(("pong", inner))
    });

    let client = Client::tcp(addr.to_string()).start();
    let (finished, all_done) = Callback::<()>::once();
    let err =
        Callback::new(|(message,): (String,)| println!("client: err called with {message:?}"));
    let done = Callback::new(move |(reply, inner): (String, Inner)| {
        println!("client: done called with {reply:?}; calling inner(cb2)");
        let cb2 = Callback::new(move |(text, deepest): (String, Callback<(String,)>)| {
            println!("client: cb2 called with {text:?}; answering the deepest callback");
            let _ = deepest.call(("from the client, three levels down".to_owned(),));
            let _ = finished.call(());
        });
        let _ = inner.call((cb2,));
    });
    println!("client: emitting ping({{\"key\": \"value\"}}, err, done)");
    client.router().emit(
        "ping",
        args![serde_json::json!({"key": "value"}), err, done],
    )?;

    tokio::time::timeout(Duration::from_secs(10), all_done).await??;
    client.stop().await;
    server.stop().await;
    println!("done");
    Ok(())
}
