//! TLS from start to end: certificates, a server that asks its clients for
//! one (mutual TLS), a client that presents one, and an event with a reply,
//! which the server's handler answers with the name in the client's
//! certificate.
//!
//! ```text
//! cargo run --example tls                       # certificates made here (rcgen)
//! cargo run --example tls -- CA.pem SERVER.pem SERVER-KEY.pem CLIENT.pem CLIENT-KEY.pem
//! ```
//!
//! With files, the server's certificate must be valid for `localhost`, and
//! both certificates signed by the CA of `CA.pem`. In production the PEM
//! files come from your certificate authority; the generated ones here only
//! live as long as the example.

use nmsg::transport::tls::{self, ClientAuth};
use nmsg::transport::PeerIdentity;
use nmsg::{args, Args, Client, RemoteCallback, Server};

/// PEM texts: the CA, the server's certificate and key, the client's.
struct Pem {
    ca: String,
    server: (String, String),
    client: (String, String),
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files: Vec<String> = std::env::args().skip(1).collect();
    let pem = match files.as_slice() {
        [] => generate()?,
        [ca, cert, key, client_cert, client_key] => Pem {
            ca: std::fs::read_to_string(ca)?,
            server: (
                std::fs::read_to_string(cert)?,
                std::fs::read_to_string(key)?,
            ),
            client: (
                std::fs::read_to_string(client_cert)?,
                std::fs::read_to_string(client_key)?,
            ),
        },
        _ => {
            return Err(
                "usage: tls [CA.pem SERVER.pem SERVER-KEY.pem CLIENT.pem CLIENT-KEY.pem]".into(),
            )
        }
    };
    // The PEM helpers read files; the example writes its texts to a
    // directory of its own, as they would be on disk.
    let dir = std::env::temp_dir().join(format!("nmsg-tls-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let write = |name: &str, text: &str| -> std::io::Result<std::path::PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, text)?;
        Ok(path)
    };
    let ca = write("ca.pem", &pem.ca)?;
    let (server_cert, server_key) = (
        write("server.pem", &pem.server.0)?,
        write("server-key.pem", &pem.server.1)?,
    );
    let (client_cert, client_key) = (
        write("client.pem", &pem.client.0)?,
        write("client-key.pem", &pem.client.1)?,
    );

    // The server: its certificate and key, and the CA its clients'
    // certificates must be signed by (mutual TLS; `ClientAuth::None` asks
    // for none).
    let server_config = tls::server_config(
        tls::load_certs(&server_cert)?,
        tls::load_private_key(&server_key)?,
        ClientAuth::Required(tls::load_roots(&ca)?),
    )?;
    let server = Server::tls("127.0.0.1:0", server_config).start();
    server.on("greet", |args: Args| -> Result<(), nmsg::Error> {
        let (text, reply): (String, RemoteCallback) = args.parse()?;
        // The verified certificate of the client that sent it.
        let who = match args.peer().peer_identity().as_deref() {
            Some(PeerIdentity::Certificate(cert)) => cert.subject.clone(),
            _ => "someone without a certificate".to_owned(),
        };
        reply.call((format!("{text}, {who}"),))
    });
    let address = server.started().await?;
    println!("server: listening on {address} (TLS, client certificates required)");

    // The client: the CA it trusts for the server, the name the server's
    // certificate must hold, and its own certificate and key.
    let client_config = tls::client_config(
        tls::load_roots(&ca)?,
        Some((
            tls::load_certs(&client_cert)?,
            tls::load_private_key(&client_key)?,
        )),
    )?;
    let nmsg::transport::Address::Tcp(addr) = address else {
        return Err("not a TCP address".into());
    };
    let client = Client::tls(addr.to_string(), "localhost", client_config).start();
    let (reply,): (String,) = client.router().request("greet", args!["hello"]).await?;
    println!("client: greet answered {reply:?}");

    client.stop().await;
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A CA, a server certificate for `localhost` and a client certificate for
/// `example-client`, both signed by the CA.
fn generate() -> Result<Pem, rcgen::Error> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "nmsg example CA");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let issue = |name: &str| -> Result<(String, String), rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![name.to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    Ok(Pem {
        ca: ca_cert.pem(),
        server: issue("localhost")?,
        client: issue("example-client")?,
    })
}
