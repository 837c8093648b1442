//! The in-memory transport: two routers linked by an in-process duplex stream,
//! with the same framing as a socket. For tests and examples.

use super::Connection;
use crate::router::Router;
use crate::sync::MutexExt;

/// Buffer size of each direction of the in-memory stream.
pub const BUFFER_SIZE: usize = 256 * 1024;

/// Links two routers: what one emits, the other receives. Returns the two
/// ends' connections; dropping them does not close the link, calling
/// [`Connection::close`] does.
pub fn link(a: &Router, b: &Router) -> (Connection, Connection) {
    let (x, y) = tokio::io::duplex(BUFFER_SIZE);
    (
        Connection::spawn(x, a.clone()),
        Connection::spawn(y, b.clone()),
    )
}

/// Two new routers with default options, linked.
pub fn pair() -> (Router, Router, (Connection, Connection)) {
    let (a, b) = (Router::new(), Router::new());
    let conns = link(&a, &b);
    (a, b, conns)
}

/// An in-process network of named endpoints, for running a [`Server`](crate::Server)
/// and [`Client`](crate::Client)s without sockets (and with tokio's paused time).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let net = nmsg::transport::memory::Network::new();
/// let server = nmsg::Server::builder(net.binder("svc")).start();
/// let client = nmsg::Client::builder(net.connector("svc")).start();
/// client.connected().await;
/// # client.stop().await; server.stop().await;
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Network {
    endpoints: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Endpoint>>>,
}

type Endpoint = tokio::sync::mpsc::Sender<tokio::io::DuplexStream>;

impl Network {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// A connector to the endpoint `name`; connecting fails with
    /// `ConnectionRefused` while nothing is bound there.
    pub fn connector(&self, name: &str) -> MemoryConnector {
        MemoryConnector {
            net: self.clone(),
            name: name.to_owned(),
        }
    }

    /// A binder for the endpoint `name`; binding fails with `AddrInUse`
    /// while another listener holds it.
    pub fn binder(&self, name: &str) -> MemoryBinder {
        MemoryBinder {
            net: self.clone(),
            name: name.to_owned(),
        }
    }
}

/// Connects to a [`Network`] endpoint.
#[derive(Debug, Clone)]
pub struct MemoryConnector {
    net: Network,
    name: String,
}

/// Binds a [`Network`] endpoint.
#[derive(Debug, Clone)]
pub struct MemoryBinder {
    net: Network,
    name: String,
}

impl super::Connector for MemoryConnector {
    fn connect(&self) -> super::BoxFuture<'_, std::io::Result<(super::BoxStream, super::Address)>> {
        Box::pin(async move {
            let endpoint = self.net.endpoints.locked().get(&self.name).cloned();
            let refused = || {
                std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "no listener at this memory endpoint",
                )
            };
            let endpoint = endpoint.ok_or_else(refused)?;
            let (mine, theirs) = tokio::io::duplex(BUFFER_SIZE);
            endpoint.send(theirs).await.map_err(|_| refused())?;
            Ok((
                Box::new(mine) as super::BoxStream,
                super::Address::Other(format!("memory://{}", self.name)),
            ))
        })
    }

    fn address(&self) -> String {
        format!("memory://{}", self.name)
    }
}

impl super::Binder for MemoryBinder {
    fn bind(&self) -> super::BoxFuture<'_, std::io::Result<Box<dyn super::Acceptor>>> {
        Box::pin(async move {
            let mut endpoints = self.net.endpoints.locked();
            if endpoints.get(&self.name).is_some_and(|tx| !tx.is_closed()) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "memory endpoint is taken",
                ));
            }
            let (tx, rx) = tokio::sync::mpsc::channel(1024);
            endpoints.insert(self.name.clone(), tx);
            Ok(Box::new(MemoryAcceptor {
                rx,
                net: self.net.clone(),
                name: self.name.clone(),
            }) as Box<dyn super::Acceptor>)
        })
    }

    fn address(&self) -> String {
        format!("memory://{}", self.name)
    }
}

struct MemoryAcceptor {
    rx: tokio::sync::mpsc::Receiver<tokio::io::DuplexStream>,
    net: Network,
    name: String,
}

impl super::Acceptor for MemoryAcceptor {
    fn accept(
        &mut self,
    ) -> super::BoxFuture<'_, std::io::Result<(super::BoxStream, super::Address)>> {
        Box::pin(async move {
            match self.rx.recv().await {
                Some(s) => Ok((
                    Box::new(s) as super::BoxStream,
                    super::Address::Other(format!("memory://{}", self.name)),
                )),
                None => Err(std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    "memory endpoint closed",
                )),
            }
        })
    }

    fn local_addr(&self) -> super::Address {
        super::Address::Other(format!("memory://{}", self.name))
    }

    fn close(&mut self) {
        self.rx.close();
        let mut endpoints = self.net.endpoints.locked();
        if endpoints.get(&self.name).is_some_and(|tx| tx.is_closed()) {
            endpoints.remove(&self.name);
        }
    }
}
