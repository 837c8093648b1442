//! Addresses as the user writes them (`HOST:PORT`, `unix:PATH`), connecting
//! to one and listening on one.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use nmsg::transport::{Address, Connection};
use nmsg::{Router, Server};

use crate::{CodecName, Failure};

/// Where to connect or listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// `HOST:PORT`.
    Tcp(String),
    /// `unix:PATH`.
    Unix(PathBuf),
}

impl FromStr for Target {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("`unix:` needs a socket path: unix:PATH".into());
            }
            return Ok(Target::Unix(path.into()));
        }
        match text.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Target::Tcp(text.to_owned()))
            }
            _ => Err(format!(
                "`{text}` is not an address: write HOST:PORT (127.0.0.1:7000) or unix:PATH"
            )),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp(addr) => f.write_str(addr),
            Target::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Connects once (a command line does not retry), within `timeout`, and
/// drives `router` over the connection.
pub(crate) async fn connect(
    target: &Target,
    router: Router,
    timeout: Duration,
) -> Result<Connection, Failure> {
    let cannot = |why: String| Failure::usage(format!("cannot connect to {target}: {why}"));
    let connecting = async move {
        match target {
            Target::Tcp(addr) => {
                let stream = tokio::net::TcpStream::connect(addr.as_str()).await?;
                // Small messages, each awaited: no Nagle delay.
                stream.set_nodelay(true)?;
                Ok::<_, std::io::Error>(Connection::spawn(stream, router))
            }
            #[cfg(unix)]
            Target::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok(Connection::spawn(stream, router))
            }
            #[cfg(not(unix))]
            Target::Unix(_) => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "Unix sockets need a Unix system",
            )),
        }
    };
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(e)) => Err(cannot(e.to_string())),
        Err(_) => Err(cannot(format!("no connection within {timeout:?}"))),
    }
}

/// A server listening on `target`, started: its address as the user would
/// write it (the real port, for port 0).
/// The server retries an address in use; this gives up after `timeout`.
pub(crate) async fn listen(
    target: &Target,
    codec: CodecName,
    timeout: Duration,
) -> Result<(Server, Target), Failure> {
    let builder = match target {
        Target::Tcp(addr) => Server::tcp(addr.as_str()),
        Target::Unix(path) => Server::unix(path.clone()),
    };
    let server = builder.router(|options| codec.apply(options)).start();
    let cannot = |why: String| Failure::usage(format!("cannot listen on {target}: {why}"));
    match tokio::time::timeout(timeout, server.started()).await {
        Ok(Ok(Address::Tcp(addr))) => Ok((server, Target::Tcp(addr.to_string()))),
        Ok(Ok(Address::Unix(path))) => Ok((server, Target::Unix(path))),
        Ok(Ok(other)) => Ok((server, Target::Tcp(other.to_string()))),
        Ok(Err(e)) => Err(cannot(e.to_string())),
        Err(_) => {
            server.stop().await;
            Err(cannot(format!(
                "not listening within {timeout:?} (in use?)"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_as_written() {
        assert_eq!(
            "127.0.0.1:7000".parse(),
            Ok(Target::Tcp("127.0.0.1:7000".into()))
        );
        assert_eq!("[::1]:7000".parse(), Ok(Target::Tcp("[::1]:7000".into())));
        assert_eq!(
            "unix:/tmp/a.sock".parse(),
            Ok(Target::Unix("/tmp/a.sock".into()))
        );
        for bad in [
            "7000",
            "localhost",
            "host:port",
            ":7000",
            "unix:",
            "h:70000",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
    }
}
