//! What a transport verified about a connection's peer: the certificate a
//! TLS peer presented, or the credentials of a Unix socket's peer process.
//! A server's handlers read it through [`Socket::identity`](crate::Socket::identity),
//! [`Peer::identity`](crate::Peer::identity) or [`Router::peer_identity`](crate::Router::peer_identity).

use std::net::IpAddr;

/// Who the peer of a connection is, as its transport verified it.
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() {
/// use nmsg::transport::PeerIdentity;
///
/// let server = nmsg::Server::unix("/tmp/app.sock").start();
/// server.on("whoami", |args: nmsg::Args| -> Result<(), nmsg::Error> {
///     let uid = match args.peer().peer_identity().as_deref() {
///         Some(PeerIdentity::Unix(cred)) => Some(cred.uid),
///         _ => None,
///     };
///     args.callback(0)?.call((uid,))
/// });
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerIdentity {
    /// A TLS peer's certificate, verified against the server's client CA
    /// (mutual TLS). A TLS client that presented none has no identity.
    Certificate(PeerCertificate),
    /// A Unix socket peer's process credentials, as the system gives them
    /// (`SO_PEERCRED` or its equivalent): the peer cannot forge them.
    Unix(UnixCredentials),
}

impl PeerIdentity {
    /// The certificate, if the peer is a TLS peer that presented one.
    pub fn certificate(&self) -> Option<&PeerCertificate> {
        match self {
            PeerIdentity::Certificate(c) => Some(c),
            _ => None,
        }
    }

    /// The process credentials, if the peer is on a Unix socket.
    pub fn unix(&self) -> Option<&UnixCredentials> {
        match self {
            PeerIdentity::Unix(c) => Some(c),
            _ => None,
        }
    }
}

impl std::fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerIdentity::Certificate(c) => write!(f, "certificate {}", c.subject),
            PeerIdentity::Unix(c) => write!(f, "uid {} gid {}", c.uid, c.gid),
        }
    }
}

/// The credentials of the process at the other end of a Unix socket, taken
/// when the connection was accepted (those of the process that connected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UnixCredentials {
    /// The user id.
    pub uid: u32,
    /// The group id.
    pub gid: u32,
    /// The process id, where the system says it (Linux, Android, macOS, the
    /// BSDs but OpenBSD and NetBSD give none).
    pub pid: Option<i32>,
}

/// The verified end-entity certificate of a TLS peer, and the names in it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerCertificate {
    /// The certificate, DER-encoded, for checks of one's own (a pinned
    /// fingerprint, other extensions).
    pub der: Vec<u8>,
    /// The subject's distinguished name, as RFC 4514 writes it
    /// (`CN=alice, O=Example`).
    pub subject: String,
    /// The subject's common name (CN), if it has one.
    pub common_name: Option<String>,
    /// The subject alternative names: what a certificate names its holder by.
    pub subject_alt_names: Vec<SubjectAltName>,
}

impl PeerCertificate {
    /// The DNS names among the subject alternative names.
    pub fn dns_names(&self) -> impl Iterator<Item = &str> {
        self.subject_alt_names.iter().filter_map(|n| match n {
            SubjectAltName::Dns(name) => Some(name.as_str()),
            _ => None,
        })
    }
}

/// One subject alternative name of a [`PeerCertificate`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubjectAltName {
    /// A DNS name (`service.example.com`).
    Dns(String),
    /// An IP address.
    Ip(IpAddr),
    /// An e-mail address (RFC 822 name).
    Email(String),
    /// A URI (a SPIFFE id: `spiffe://example.org/service`).
    Uri(String),
}
