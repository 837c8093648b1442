//! A shared `Api`: one handler table serves every socket of a server, with no
//! per-socket registration. Two clients call it.
//!
//! Run with `cargo run --example api`.

use nmsg::{args, Api, Args, Client, Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let api = Api::new();
    api.on("add", |args: Args| -> Result<(), nmsg::Error> {
        let (a, b, reply): (f64, f64, nmsg::RemoteCallback) = args.parse()?;
        reply.call((a + b,))
    });
    api.on("upper", |args: Args| -> Result<(), nmsg::Error> {
        let (text, reply): (String, nmsg::RemoteCallback) = args.parse()?;
        reply.call((text.to_uppercase(),))
    });

    let server = Server::tcp("127.0.0.1:0").api(api).start();
    let Ok(nmsg::transport::Address::Tcp(addr)) = server.started().await else {
        return Err("server did not start".into());
    };
    println!("server: listening on {addr}, serving `add` and `upper` from one Api");

    for name in ["first", "second"] {
        let client = Client::tcp(addr.to_string()).start();
        let (sum,): (f64,) = client.router().request("add", args![2, 40]).await?;
        let (shout,): (String,) = client.router().request("upper", args![name]).await?;
        println!("{name} client: add(2, 40) = {sum}, upper({name:?}) = {shout:?}");
        client.stop().await;
    }
    server.stop().await;
    Ok(())
}
