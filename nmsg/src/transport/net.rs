//! The transport traits, and TCP and Unix domain socket implementations.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};

use super::peer::PeerIdentity;

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
    /// Accepts the next stream, with what the transport knows of the peer,
    /// or with the handshake that must come first (TLS). A server calls
    /// this one. Default: [`Acceptor::accept`], with no identity.
    fn accept_peer(&mut self) -> BoxFuture<'_, io::Result<Accepted>> {
        Box::pin(async move {
            let (stream, peer) = self.accept().await?;
            Ok(Accepted::Ready {
                stream,
                peer,
                identity: None,
            })
        })
    }
    /// The address it is bound to (with the real port when bound to port 0).
    fn local_addr(&self) -> Address;
    /// Called once when the server stops (a Unix listener removes its socket file).
    fn close(&mut self) {}
}

/// A stream an [`Acceptor`] accepted, before it is served.
#[non_exhaustive]
pub enum Accepted {
    /// Ready to serve.
    Ready {
        /// The stream.
        stream: BoxStream,
        /// The peer's address.
        peer: Address,
        /// What the transport verified about the peer, if anything.
        identity: Option<PeerIdentity>,
    },
    /// Ready once `handshake` is done (TLS). A server runs it on a task of
    /// its own, so that a slow peer holds up no other; it bounds its own
    /// time. It gives the stream to serve and the peer's identity.
    Handshake {
        /// The peer's address.
        peer: Address,
        /// The handshake.
        handshake: BoxFuture<'static, io::Result<(BoxStream, Option<PeerIdentity>)>>,
    },
}

impl fmt::Debug for Accepted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Accepted::Ready { peer, identity, .. } => f
                .debug_struct("Ready")
                .field("peer", peer)
                .field("identity", identity)
                .finish(),
            Accepted::Handshake { peer, .. } => {
                f.debug_struct("Handshake").field("peer", peer).finish()
            }
        }
    }
}

/// TCP: connects to or binds a `host:port` address. Sets `TCP_NODELAY` on
/// every stream, and TCP keepalive ([`Tcp::keepalive`]).
#[derive(Debug, Clone)]
pub struct Tcp {
    addr: String,
    keepalive: Option<Keepalive>,
}

impl Tcp {
    /// A TCP transport for `addr` (`host:port`; resolved at every attempt),
    /// with the default [`Keepalive`].
    pub fn new(addr: impl Into<String>) -> Self {
        Tcp {
            addr: addr.into(),
            keepalive: Some(Keepalive::default()),
        }
    }

    /// TCP keepalive on every stream it connects or accepts (default
    /// [`Keepalive::default`]: a first probe after 60 s without traffic,
    /// then every 10 s, 6 unanswered probes drop the connection); `None`
    /// turns it off. The system then notices a peer that is gone without
    /// closing (a machine switched off, a network cut, a NAT that forgot the
    /// connection): the connection ends with an I/O error, which frees a
    /// server's slot and makes a client that only listens reconnect.
    pub fn keepalive(mut self, keepalive: Option<Keepalive>) -> Self {
        self.keepalive = keepalive;
        self
    }

    async fn connect_stream(&self) -> io::Result<tokio::net::TcpStream> {
        let stream = tokio::net::TcpStream::connect(&self.addr).await?;
        self.prepare(&stream)?;
        Ok(stream)
    }

    /// Sets the stream's options: `TCP_NODELAY`, and keepalive.
    fn prepare(&self, stream: &tokio::net::TcpStream) -> io::Result<()> {
        stream.set_nodelay(true)?;
        if let Some(keepalive) = &self.keepalive {
            socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive.params())?;
        }
        Ok(())
    }
}

/// TCP keepalive settings ([`Tcp::keepalive`]): after `time` without
/// traffic the system sends a probe, then one every `interval` while none is
/// answered; after `retries` unanswered probes the connection is reset. A
/// dead peer is noticed within `time + interval × retries` of silence.
///
/// The default, 60 s, 10 s and 6 probes, notices a dead peer within two
/// minutes (the systems' own defaults take over two hours: Linux waits
/// 7,200 s, then 9 probes 75 s apart), costs an idle connection one small
/// packet a minute, and lets a network come back from a minute of outage
/// before its connections are given up. Where the system cannot set the
/// interval or the count, only `time` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Without traffic this long, the first probe is sent.
    pub time: std::time::Duration,
    /// The wait between unanswered probes.
    pub interval: std::time::Duration,
    /// Unanswered probes after which the connection is dropped.
    pub retries: u32,
}

impl Default for Keepalive {
    /// 60 s, 10 s, 6 probes.
    fn default() -> Self {
        Keepalive {
            time: std::time::Duration::from_secs(60),
            interval: std::time::Duration::from_secs(10),
            retries: 6,
        }
    }
}

impl Keepalive {
    fn params(&self) -> socket2::TcpKeepalive {
        let params = socket2::TcpKeepalive::new().with_time(self.time);
        // Where socket2 can set them: the interval and the probe count.
        #[cfg(any(
            target_os = "android",
            target_os = "freebsd",
            target_os = "fuchsia",
            target_os = "illumos",
            target_os = "ios",
            target_os = "linux",
            target_os = "macos",
            target_os = "netbsd",
            target_os = "windows",
        ))]
        let params = params
            .with_interval(self.interval)
            .with_retries(self.retries);
        params
    }
}

impl Connector for Tcp {
    fn connect(&self) -> BoxFuture<'_, io::Result<(BoxStream, Address)>> {
        Box::pin(async move {
            let stream = self.connect_stream().await?;
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
            Ok(Box::new(TcpAcceptor {
                listener,
                tcp: self.clone(),
            }) as Box<dyn Acceptor>)
        })
    }

    fn address(&self) -> String {
        format!("tcp://{}", self.addr)
    }
}

struct TcpAcceptor {
    listener: tokio::net::TcpListener,
    /// The options of the streams it accepts.
    tcp: Tcp,
}

impl TcpAcceptor {
    async fn accept_stream(&mut self) -> io::Result<(tokio::net::TcpStream, SocketAddr)> {
        let (stream, peer) = self.listener.accept().await?;
        self.tcp.prepare(&stream)?;
        Ok((stream, peer))
    }
}

impl Acceptor for TcpAcceptor {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, Address)>> {
        Box::pin(async move {
            let (stream, peer) = self.accept_stream().await?;
            Ok((Box::new(stream) as BoxStream, Address::Tcp(peer)))
        })
    }

    fn local_addr(&self) -> Address {
        match self.listener.local_addr() {
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

    /// With the peer process's credentials ([`PeerIdentity::Unix`]).
    fn accept_peer(&mut self) -> BoxFuture<'_, io::Result<Accepted>> {
        Box::pin(async move {
            let (stream, _) = self.listener.accept().await?;
            let cred = stream.peer_cred()?;
            let identity = PeerIdentity::Unix(super::peer::UnixCredentials {
                uid: cred.uid(),
                gid: cred.gid(),
                pid: cred.pid(),
            });
            Ok(Accepted::Ready {
                stream: Box::new(stream) as BoxStream,
                peer: Address::Unix(self.path.clone()),
                identity: Some(identity),
            })
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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::time::Duration;

    type Kept = (bool, Duration, Duration, u32);

    /// The keepalive of a socket, as the system reports it.
    fn read_back(stream: &tokio::net::TcpStream) -> Kept {
        let socket = socket2::SockRef::from(stream);
        (
            socket.keepalive().unwrap(),
            socket.tcp_keepalive_time().unwrap(),
            socket.tcp_keepalive_interval().unwrap(),
            socket.tcp_keepalive_retries().unwrap(),
        )
    }

    /// A TCP pair made by `tcp`'s connector and acceptor: the keepalive of
    /// the connected and the accepted socket.
    async fn pair(tcp: Tcp) -> [Kept; 2] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mut acceptor = TcpAcceptor {
            listener,
            tcp: tcp.clone(),
        };
        let connector = Tcp { addr, ..tcp };
        let (connected, accepted) =
            tokio::join!(connector.connect_stream(), acceptor.accept_stream());
        [
            read_back(&connected.unwrap()),
            read_back(&accepted.unwrap().0),
        ]
    }

    #[tokio::test]
    async fn tcp_streams_have_keepalive_60_10_6_by_default() {
        let want = (true, Duration::from_secs(60), Duration::from_secs(10), 6);
        assert_eq!(pair(Tcp::new("unused")).await, [want, want]);
    }

    #[tokio::test]
    async fn tcp_keepalive_is_set_as_asked_or_off() {
        let keepalive = Keepalive {
            time: Duration::from_secs(5),
            interval: Duration::from_secs(2),
            retries: 3,
        };
        let want = (true, Duration::from_secs(5), Duration::from_secs(2), 3);
        let tcp = Tcp::new("unused").keepalive(Some(keepalive));
        assert_eq!(pair(tcp).await, [want, want]);
        let [connected, accepted] = pair(Tcp::new("unused").keepalive(None)).await;
        assert!(!connected.0 && !accepted.0, "{connected:?} {accepted:?}");
    }
}
