//! TLS over TCP (feature `tls`), with rustls through tokio-rustls.
//!
//! [`Server::tls`](crate::Server::tls) and [`Client::tls`](crate::Client::tls)
//! take a rustls configuration; [`server_config`] and [`client_config`] build
//! one from PEM files read with [`load_certs`], [`load_private_key`] and
//! [`load_roots`]. [`TlsBinder`] and [`TlsConnector`] are the transports
//! underneath, over TCP or any other [`Binder`] and [`Connector`].
//!
//! **The crypto provider.** nmsg's TLS builds rustls with the `aws-lc-rs`
//! provider only, and every configuration made here names it ([`provider`]):
//! no process-level default provider is needed, so none can be missing or
//! ambiguous (rustls's `ServerConfig::builder()` panics when no default is
//! installed and more than one provider is compiled in). `aws-lc-rs` rather
//! than `ring`: it is rustls's default, it has the post-quantum key exchange
//! (X25519MLKEM768) that rustls prefers, and rustls 0.23.48 deprecated its
//! `ring` provider for want of it; it builds with a C compiler alone (no
//! CMake), at the cost of a longer first build. A configuration built by
//! hand with another provider works as well: the transports take any
//! `ServerConfig` and `ClientConfig`.
//!
//! **The handshake** is bounded ([`TlsBinder::handshake_timeout`],
//! [`TlsConnector::handshake_timeout`]; default
//! [`DEFAULT_HANDSHAKE_TIMEOUT`], 10 s), and a server runs each on a task of
//! its own, so a peer that never finishes it holds up nobody else. A plain
//! client at a TLS server, or a TLS client at a plain server, fails at once
//! when it sends its first bytes, with an error that says so (and at the
//! bound otherwise). Certificate errors say which check failed: an unknown
//! issuer, a name the certificate is not valid for, an expired certificate.
//!
//! **Mutual TLS.** A server configuration with a client certificate verifier
//! ([`ClientAuth`]) makes clients present a certificate; the verified one is
//! the socket's [`PeerIdentity::Certificate`], with its subject and subject
//! alternative names.
//!
//! ```no_run
//! # #[tokio::main]
//! # async fn main() -> std::io::Result<()> {
//! use nmsg::transport::tls;
//!
//! let server_config = tls::server_config(
//!     tls::load_certs("server.pem")?,
//!     tls::load_private_key("server-key.pem")?,
//!     tls::ClientAuth::None,
//! )?;
//! let server = nmsg::Server::tls("127.0.0.1:8443", server_config).start();
//!
//! let client_config = tls::client_config(tls::load_roots("ca.pem")?, None)?;
//! let client = nmsg::Client::tls("127.0.0.1:8443", "localhost", client_config).start();
//! # Ok(()) }
//! ```

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls;

use super::net::{Accepted, Acceptor, Address, Binder, BoxFuture, BoxStream, Connector};
use super::peer::{PeerCertificate, PeerIdentity, SubjectAltName};
use super::Tcp;

pub use rustls_pki_types as pki_types;
pub use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Default [`TlsBinder::handshake_timeout`] and
/// [`TlsConnector::handshake_timeout`]: 10 s, ample for a handshake across
/// the world, short enough that a peer that does not speak TLS is noticed.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The crypto provider of every configuration this module builds: rustls's
/// `aws-lc-rs` provider (see the [module docs](self) for why).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Whether a server asks its clients for a certificate (mutual TLS), and
/// which certificate authorities it trusts for them.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ClientAuth {
    /// No client certificate is asked for.
    None,
    /// A client may present a certificate signed by one of these roots; one
    /// that presents none is served too (without an identity).
    Optional(RootCertStore),
    /// A client must present a certificate signed by one of these roots; one
    /// that presents none fails the handshake.
    Required(RootCertStore),
}

/// A server configuration with [`provider`]: this certificate chain (the
/// server's certificate first) and key, TLS 1.2 and 1.3, and client
/// certificates as `clients` says.
///
/// Fails if the key does not match the certificate, or the roots of
/// `clients` hold no usable certificate.
pub fn server_config(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    clients: ClientAuth,
) -> io::Result<ServerConfig> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(invalid)?;
    let builder = match &clients {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Optional(roots) | ClientAuth::Required(roots) => {
            let optional = matches!(&clients, ClientAuth::Optional(_));
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots.clone()),
                provider,
            );
            let verifier = if optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(verifier.build().map_err(invalid)?)
        }
    };
    builder.with_single_cert(cert_chain, key).map_err(invalid)
}

/// A client configuration with [`provider`]: trusts the certificate
/// authorities of `roots`, and presents `identity` (a certificate chain and
/// its key) to a server that asks for one (mutual TLS).
pub fn client_config(
    roots: RootCertStore,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> io::Result<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(invalid)?
        .with_root_certificates(roots);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(invalid),
    }
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
}

/// The certificates of a PEM file (`-----BEGIN CERTIFICATE-----` blocks),
/// in their order: for a server's or a client's own chain, its certificate
/// first. Fails if the file holds none.
pub fn load_certs(path: impl AsRef<Path>) -> io::Result<Vec<CertificateDer<'static>>> {
    let path = path.as_ref();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_error(path, "certificates", e))?;
    if certs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "no certificate in {}: expected PEM blocks '-----BEGIN CERTIFICATE-----'",
                path.display()
            ),
        ));
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS #8, PKCS #1 RSA or SEC1 EC).
pub fn load_private_key(path: impl AsRef<Path>) -> io::Result<PrivateKeyDer<'static>> {
    let path = path.as_ref();
    PrivateKeyDer::from_pem_file(path).map_err(|e| pem_error(path, "a private key", e))
}

/// The certificate authorities of a PEM file, as trust roots.
pub fn load_roots(path: impl AsRef<Path>) -> io::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(&path)? {
        roots.add(cert).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a certificate of {} is not a usable trust root: {e}",
                    path.as_ref().display()
                ),
            )
        })?;
    }
    Ok(roots)
}

fn pem_error(path: &Path, what: &str, e: rustls_pki_types::pem::Error) -> io::Error {
    let kind = match &e {
        rustls_pki_types::pem::Error::Io(e) => e.kind(),
        _ => io::ErrorKind::InvalidData,
    };
    let detail = match &e {
        rustls_pki_types::pem::Error::NoItemsFound => "none found".to_owned(),
        e => e.to_string(),
    };
    io::Error::new(
        kind,
        format!(
            "cannot read {what} from PEM file {}: {detail}",
            path.display()
        ),
    )
}

/// The server side of TLS: binds with another binder ([`Tcp`] for
/// [`TlsBinder::tcp`]) and runs a TLS handshake on every stream it accepts.
#[derive(Clone)]
pub struct TlsBinder {
    inner: Arc<dyn Binder>,
    acceptor: tokio_rustls::TlsAcceptor,
    timeout: Duration,
}

impl std::fmt::Debug for TlsBinder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsBinder")
            .field("address", &self.inner.address())
            .field("handshake_timeout", &self.timeout)
            .finish()
    }
}

impl TlsBinder {
    /// TLS over TCP on `addr` (`host:port`).
    pub fn tcp(addr: impl Into<String>, config: impl Into<Arc<ServerConfig>>) -> Self {
        TlsBinder::new(Tcp::new(addr), config)
    }

    /// TLS over the streams `inner` accepts.
    pub fn new(inner: impl Binder, config: impl Into<Arc<ServerConfig>>) -> Self {
        TlsBinder {
            inner: Arc::new(inner),
            acceptor: tokio_rustls::TlsAcceptor::from(config.into()),
            timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// How long a client may take to complete its handshake once accepted
    /// (default [`DEFAULT_HANDSHAKE_TIMEOUT`], 10 s); past it the connection
    /// is dropped and reported as a
    /// [`ServerEvent::HandshakeFailed`](crate::ServerEvent::HandshakeFailed).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl Binder for TlsBinder {
    fn bind(&self) -> BoxFuture<'_, io::Result<Box<dyn Acceptor>>> {
        Box::pin(async move {
            let inner = self.inner.bind().await?;
            Ok(Box::new(TlsAcceptor {
                inner,
                tls: self.clone(),
            }) as Box<dyn Acceptor>)
        })
    }

    fn address(&self) -> String {
        format!("tls+{}", self.inner.address())
    }
}

struct TlsAcceptor {
    inner: Box<dyn Acceptor>,
    tls: TlsBinder,
}

impl Acceptor for TlsAcceptor {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, Address)>> {
        Box::pin(async move {
            match self.accept_peer().await? {
                Accepted::Ready { stream, peer, .. } => Ok((stream, peer)),
                Accepted::Handshake { handshake, peer } => Ok((handshake.await?.0, peer)),
            }
        })
    }

    fn accept_peer(&mut self) -> BoxFuture<'_, io::Result<Accepted>> {
        Box::pin(async move {
            let (stream, peer) = self.inner.accept().await?;
            let acceptor = self.tls.acceptor.clone();
            let timeout = self.tls.timeout;
            let handshake = Box::pin(async move {
                let tls = tokio::time::timeout(timeout, acceptor.accept(stream))
                    .await
                    .map_err(|_| {
                        io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!(
                                "TLS handshake did not finish within {timeout:?}: the peer \
                                 may not speak TLS (a plain nmsg client?)"
                            ),
                        )
                    })?
                    .map_err(|e| explain(e, Side::Server))?;
                let identity = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|cert| parse_certificate(cert.as_ref()))
                    .transpose()?
                    .map(PeerIdentity::Certificate);
                Ok((Box::new(tls) as BoxStream, identity))
            });
            Ok(Accepted::Handshake { peer, handshake })
        })
    }

    fn local_addr(&self) -> Address {
        self.inner.local_addr()
    }

    fn close(&mut self) {
        self.inner.close();
    }
}

/// The client side of TLS: connects with another connector ([`Tcp`] for
/// [`TlsConnector::tcp`]) and runs a TLS handshake on the stream, checking
/// the server's certificate against `server_name`.
#[derive(Clone)]
pub struct TlsConnector {
    inner: Arc<dyn Connector>,
    connector: tokio_rustls::TlsConnector,
    /// An invalid name fails each connection attempt, saying why.
    server_name: Result<ServerName<'static>, String>,
    timeout: Duration,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector")
            .field("address", &self.inner.address())
            .field("server_name", &self.server_name)
            .field("handshake_timeout", &self.timeout)
            .finish()
    }
}

impl TlsConnector {
    /// TLS over TCP to `addr` (`host:port`), expecting a certificate valid
    /// for `server_name` (a DNS name or an IP address).
    pub fn tcp(
        addr: impl Into<String>,
        server_name: impl Into<String>,
        config: impl Into<Arc<ClientConfig>>,
    ) -> Self {
        TlsConnector::new(Tcp::new(addr), server_name, config)
    }

    /// TLS over the streams `inner` connects.
    pub fn new(
        inner: impl Connector,
        server_name: impl Into<String>,
        config: impl Into<Arc<ClientConfig>>,
    ) -> Self {
        let name = server_name.into();
        let server_name = ServerName::try_from(name.clone()).map_err(|e| {
            format!("'{name}' is not a valid TLS server name (a DNS name or an IP address): {e}")
        });
        TlsConnector {
            inner: Arc::new(inner),
            connector: tokio_rustls::TlsConnector::from(config.into()),
            server_name,
            timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// How long the handshake may take once connected (default
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`], 10 s); past it the attempt fails and
    /// the client retries with its backoff.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl Connector for TlsConnector {
    fn connect(&self) -> BoxFuture<'_, io::Result<(BoxStream, Address)>> {
        Box::pin(async move {
            let name = self
                .server_name
                .clone()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let (stream, address) = self.inner.connect().await?;
            let timeout = self.timeout;
            let tls = tokio::time::timeout(timeout, self.connector.connect(name, stream))
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "TLS handshake with {address} did not finish within {timeout:?}: \
                             is the server a TLS server?"
                        ),
                    )
                })?
                .map_err(|e| explain(e, Side::Client))?;
            Ok((Box::new(tls) as BoxStream, address))
        })
    }

    fn address(&self) -> String {
        format!("tls+{}", self.inner.address())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

/// A handshake error, said so that one knows which check failed and what to do.
fn explain(error: io::Error, side: Side) -> io::Error {
    use rustls::{AlertDescription as Alert, CertificateError as Cert, Error as Tls};
    let whose = match side {
        Side::Client => "the server's",
        Side::Server => "the client's",
    };
    let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<Tls>()) else {
        let text = match (error.kind(), side) {
            (io::ErrorKind::UnexpectedEof, Side::Client) => format!(
                "TLS handshake failed: the server closed the connection ({error}); \
                 is it a plain (non-TLS) nmsg server? (or one that refused the \
                 connection: see its events)"
            ),
            (io::ErrorKind::UnexpectedEof, Side::Server) => {
                format!("TLS handshake failed: the client closed the connection ({error})")
            }
            _ => format!("TLS handshake failed: {error}"),
        };
        return io::Error::new(error.kind(), text);
    };
    let what = match tls {
        Tls::InvalidCertificate(cert) => match cert {
            Cert::UnknownIssuer => format!(
                "{whose} certificate is signed by an unknown certificate authority \
                 (unknown issuer): add its CA to the trusted roots"
            ),
            Cert::NotValidForName | Cert::NotValidForNameContext { .. } => {
                let presented = match cert {
                    Cert::NotValidForNameContext {
                        expected,
                        presented,
                    } => format!(
                        " (expected {expected:?}, the certificate names {})",
                        presented.join(", ")
                    ),
                    _ => String::new(),
                };
                format!(
                    "{whose} certificate is not valid for the server name (wrong name){presented}: \
                     connect with a name the certificate holds"
                )
            }
            Cert::Expired | Cert::ExpiredContext { .. } => {
                format!("{whose} certificate has expired: renew it")
            }
            Cert::NotValidYet | Cert::NotValidYetContext { .. } => {
                format!("{whose} certificate is not valid yet: check the clocks, or its start date")
            }
            Cert::Revoked => format!("{whose} certificate is revoked"),
            Cert::BadSignature => format!("{whose} certificate has a bad signature"),
            other => format!("{whose} certificate is invalid: {other:?}"),
        },
        Tls::NoCertificatesPresented => {
            "the client presented no certificate, and this server requires one (mutual TLS): \
             give the client a certificate"
                .to_owned()
        }
        Tls::AlertReceived(Alert::CertificateRequired) => {
            "the server requires a client certificate (mutual TLS), and none was presented: \
             give the client a certificate"
                .to_owned()
        }
        Tls::AlertReceived(Alert::UnknownCA) => {
            "the peer does not trust this side's certificate (unknown CA)".to_owned()
        }
        Tls::AlertReceived(Alert::BadCertificate) => {
            "the peer rejected this side's certificate (bad certificate)".to_owned()
        }
        Tls::AlertReceived(alert) => format!("the peer sent the TLS alert {alert:?}"),
        Tls::InvalidMessage(_) | Tls::InappropriateMessage { .. } => match side {
            Side::Server => format!(
                "the client does not speak TLS ({tls}): is it a plain nmsg client? \
                 connect with Client::tls"
            ),
            Side::Client => {
                format!("the server does not speak TLS ({tls}): is it a plain nmsg server?")
            }
        },
        other => other.to_string(),
    };
    io::Error::new(error.kind(), format!("TLS handshake failed: {what}"))
}

/// The names of a DER certificate (verified by rustls already).
fn parse_certificate(der: &[u8]) -> io::Result<PeerCertificate> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("cannot read the peer's certificate: {e}"),
        )
    })?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    let mut subject_alt_names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            subject_alt_names.push(match name {
                GeneralName::DNSName(n) => SubjectAltName::Dns((*n).to_owned()),
                GeneralName::RFC822Name(n) => SubjectAltName::Email((*n).to_owned()),
                GeneralName::URI(n) => SubjectAltName::Uri((*n).to_owned()),
                GeneralName::IPAddress(ip) => match ip.len() {
                    4 => SubjectAltName::Ip(<[u8; 4]>::try_from(*ip).unwrap().into()),
                    16 => SubjectAltName::Ip(<[u8; 16]>::try_from(*ip).unwrap().into()),
                    _ => continue,
                },
                _ => continue,
            });
        }
    }
    Ok(PeerCertificate {
        der: der.to_vec(),
        subject: cert.subject().to_string(),
        common_name,
        subject_alt_names,
    })
}
