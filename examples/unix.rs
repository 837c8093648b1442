//! The same protocol over a Unix domain socket.
//!
//! Run with `cargo run --example unix`.

use nmsg::{args, Args, Client, Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("nmsg-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("echo.sock");
    let _ = std::fs::remove_file(&path);

    let server = Server::unix(&path).start();
    server.on("echo", |args: Args| -> Result<(), nmsg::Error> {
        let (text, reply): (String, nmsg::RemoteCallback) = args.parse()?;
        reply.call((text,))
    });
    let address = server.started().await?;
    println!("server: listening on {address}");

    let client = Client::unix(&path).start();
    let (reply,): (String,) = client
        .router()
        .request("echo", args!["hello over a Unix socket"])
        .await?;
    println!("client: echo answered {reply:?}");

    client.stop().await;
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
