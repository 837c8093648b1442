//! The transport traits, and TCP and Unix domain socket implementations.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream a connection runs over.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// A boxed [`Stream`].
pub type BoxStream = Box<dyn Stream>;

/// A boxed future, as the transport traits return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a transport connects or listens.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Address {
    /// A TCP socket address.
    Tcp(SocketAddr),
    /// A Unix domain socket path.
    Unix(PathBuf),
    /// Any other transport's address, as text.
    Other(String),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(a) => write!(f, "tcp://{a}"),
            Address::Unix(p) => write!(f, "unix://{}", p.display()),
            Address::Other(s) => f.write_str(s),
        }
    }
}

/// The client side of a transport: opens a new stream to the server.
pub trait Connector: Send + Sync + 'static {
    /// Opens one stream. Called again for every reconnection attempt.
    fn connect(&self) -> BoxFuture<'_, io::Result<(BoxStream, Address)>>;
    /// Where it connects, for logs and events.
    fn address(&self) -> String;
}

/// The server side of a transport: binds a listener.
pub trait Binder: Send + Sync + 'static {
    /// Binds. A server retries an error that retrying may fix (such as the
    /// address being taken) with backoff, and ends its start with any other
    /// ([`Server::started`](crate::Server::started) says which are which).
    fn bind(&self) -> BoxFuture<'_, io::Result<Box<dyn Acceptor>>>;
    /// Where it binds, for logs and events.
    fn address(&self) -> String;
}

/// A bound listener.
pub trait Acceptor: Send + 'static {
    /// Accepts the next stream, with the peer's address.
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, Address)>>;
    /// The address it is bound to (with the real port when bound to port 0).
    fn local_addr(&self) -> Address;
    /// Called once when the server stops (a Unix listener removes its socket file).
    fn close(&mut self) {}
}

/// TCP: connects to or binds a `host:port` address. Sets `TCP_NODELAY` on every stream.
#[derive(Debug, Clone)]
pub struct Tcp {
    addr: String,
}

impl Tcp {
    /// A TCP transport for `addr` (`host:port`; resolved at every attempt).
    pub fn new(addr: impl Into<String>) -> Self {
        Tcp { addr: addr.into() }
    }
}

impl Connector for Tcp {
    fn connect(&self) -> BoxFuture<'_, io::Result<(BoxStream, Address)>> {
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(&self.addr).await?;
            stream.set_nodelay(true)?;
            let peer = stream.peer_addr()?;
            Ok((Box::new(stream) as BoxStream, Address::Tcp(peer)))
        })
    }

    fn address(&self) -> String {
        format!("tcp://{}", self.addr)
    }
}

impl Binder for Tcp {
    fn bind(&self) -> BoxFuture<'_, io::Result<Box<dyn Acceptor>>> {
        Box::pin(async move {
            let listener = tokio::net::TcpListener::bind(&self.addr).await?;
            Ok(Box::new(TcpAcceptor(listener)) as Box<dyn Acceptor>)
        })
    }

    fn address(&self) -> String {
        format!("tcp://{}", self.addr)
    }
}

struct TcpAcceptor(tokio::net::TcpListener);

impl Acceptor for TcpAcceptor {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, Address)>> {
        Box::pin(async move {
            let (stream, peer) = self.0.accept().await?;
            stream.set_nodelay(true)?;
            Ok((Box::new(stream) as BoxStream, Address::Tcp(peer)))
        })
    }

    fn local_addr(&self) -> Address {
        match self.0.local_addr() {
            Ok(a) => Address::Tcp(a),
            Err(e) => Address::Other(format!("tcp (unknown address: {e})")),
        }
    }
}

/// Unix domain sockets: connects to or binds a socket path.
///
/// The server removes its socket file when it stops (or its listener is
/// dropped), only if the file at the path is still the socket it bound: one
/// that another process put there since (after removing the first) stays. A
/// file left at the path by a process that died makes the bind fail as
/// "address in use", which the server retries; remove such a file before
/// starting.
///
/// The socket file's mode is what the process's umask leaves, unless
/// [`Unix::mode`] sets one.
#[derive(Debug, Clone)]
pub struct Unix {
    path: PathBuf,
    /// `None`: what the umask gives.
    mode: Option<u32>,
}

impl Unix {
    /// A Unix socket transport for `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Unix {
            path: path.into(),
            mode: None,
        }
    }

    /// The permission bits the server's socket file gets once bound, such as
    /// `0o600` (only this user may connect) or `0o660` (and the group);
    /// default: none set, the file has what the process's umask leaves
    /// (often `0o755`). They are set right after the bind: until then, for
    /// a moment, the file has the umask's; where that matters, put the socket
    /// in a directory only the intended users may enter. A mode that cannot
    /// be set fails the bind. Only for binding; a client ignores it.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = Some(mode);
        self
    }
}

#[cfg(unix)]
impl Connector for Unix {
    fn connect(&self) -> BoxFuture<'_, io::Result<(BoxStream, Address)>> {
        Box::pin(async move {
            let stream = tokio::net::UnixStream::connect(&self.path).await?;
            Ok((
                Box::new(stream) as BoxStream,
                Address::Unix(self.path.clone()),
            ))
        })
    }

    fn address(&self) -> String {
        format!("unix://{}", self.path.display())
    }
}

#[cfg(unix)]
impl Binder for Unix {
    fn bind(&self) -> BoxFuture<'_, io::Result<Box<dyn Acceptor>>> {
        Box::pin(async move {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            let listener = tokio::net::UnixListener::bind(&self.path)?;
            // What the bind created, to know it again at the end; the file
            // is removed (it is this listener's) if what follows fails.
            let mut acceptor = UnixAcceptor {
                listener,
                path: self.path.clone(),
                created: None,
            };
            let file = std::fs::symlink_metadata(&self.path)?;
            acceptor.created = Some((file.dev(), file.ino()));
            if let Some(mode) = self.mode {
                if let Err(e) =
                    std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(mode))
                {
                    acceptor.close();
                    return Err(e);
                }
            }
            Ok(Box::new(acceptor) as Box<dyn Acceptor>)
        })
    }

    fn address(&self) -> String {
        format!("unix://{}", self.path.display())
    }
}

#[cfg(unix)]
struct UnixAcceptor {
    listener: tokio::net::UnixListener,
    path: PathBuf,
    /// The device and inode of the socket file the bind created; `None`
    /// once it was removed (or never known).
    created: Option<(u64, u64)>,
}

#[cfg(unix)]
impl Acceptor for UnixAcceptor {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, Address)>> {
        Box::pin(async move {
            let (stream, _) = self.listener.accept().await?;
            Ok((
                Box::new(stream) as BoxStream,
                Address::Unix(self.path.clone()),
            ))
        })
    }

    fn local_addr(&self) -> Address {
        Address::Unix(self.path.clone())
    }

    /// Removes the socket file, if the file at the path is still the one
    /// the bind created (same device and inode).
    fn close(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let Some((dev, ino)) = self.created.take() else {
            return;
        };
        match std::fs::symlink_metadata(&self.path) {
            Ok(file) if file.dev() == dev && file.ino() == ino => {
                let _ = std::fs::remove_file(&self.path);
            }
            _ => {}
        }
    }
}

#[cfg(unix)]
impl Drop for UnixAcceptor {
    fn drop(&mut self) {
        self.close();
    }
}
