//! A buffering router sends the frames queued at one moment as one bulk
//! message. A wiretap on the server counts events; an error hook would see
//! any malformed frame. Here 1,000 events go out in a handful of bulks.
//!
//! Run with `cargo run --example buffered`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nmsg::{args, Args, Buffering, Client, Flow, Server};
use tokio::sync::Notify;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::tcp("127.0.0.1:0").start();
    let Ok(nmsg::transport::Address::Tcp(addr)) = server.started().await else {
        return Err("server did not start".into());
    };
    let count = Arc::new(AtomicUsize::new(0));
    let all_in = Arc::new(Notify::new());
    {
        let (count, all_in) = (count.clone(), all_in.clone());
        server.on_socket(move |socket| {
            let (count, all_in) = (count.clone(), all_in.clone());
            socket.router().set_wiretap(move |args: &Args| {
                let seq: u64 = args.get(0).unwrap_or(0);
                if count.fetch_add(1, Ordering::SeqCst) + 1 == 1000 {
                    println!("server: wiretap saw 1000 events, the last one #{seq}");
                    all_in.notify_one();
                }
                Flow::Stop // counted; no handler needed
            });
        });
    }

    for (name, buffering) in [
        ("idle flush", Buffering::Idle),
        ("10 ms cycle", Buffering::Cycle(Duration::from_millis(10))),
    ] {
        count.store(0, Ordering::SeqCst);
        let client = Client::tcp(addr.to_string()).buffering(buffering).start();
        client.connected().await;
        for seq in 1..=1000u64 {
            client.router().emit("tick", args![seq])?;
        }
        tokio::time::timeout(Duration::from_secs(10), all_in.notified()).await?;
        println!("client ({name}): 1000 events delivered as bulk messages");
        client.stop().await;
    }
    server.stop().await;
    Ok(())
}
