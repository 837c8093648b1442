//! Authentication: the client's credentials ride on the hello, the server
//! checks them before it serves the connection (see
//! [`protocol`](crate::protocol#authentication) for the frames).
//!
//! A client asks its credentials closure on every connection
//! ([`ClientBuilder::credentials`](crate::ClientBuilder::credentials)); a
//! server's authenticator ([`ServerBuilder::authenticate`](crate::ServerBuilder::authenticate))
//! accepts them, with an [`AuthIdentity`] its handlers can read, or rejects
//! them with a [`Reject`]. A plain connection without authentication pays
//! nothing: none of this runs.

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use crate::framing::PREFIX_LEN;
use crate::session::handshake::read_first;
use crate::session::wire::{self, Ext, Form};
use crate::transport::{Address, BoxFuture, BoxStream};
use crate::{Error, Value};

/// Default [`ServerBuilder::auth_timeout`](crate::ServerBuilder::auth_timeout)
/// and [`ClientBuilder::auth_timeout`](crate::ClientBuilder::auth_timeout): 5 s.
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(5);

/// Default [`ServerBuilder::max_credentials_size`](crate::ServerBuilder::max_credentials_size):
/// 64 KiB, room for a large token.
pub const DEFAULT_MAX_CREDENTIALS_SIZE: usize = 64 * 1024;

/// What a server's authenticator is given: the credentials of a client's
/// hello, and who sent them.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AuthRequest {
    /// The credentials, as the client gave them (any value: a token string
    /// in most setups).
    pub credentials: Value,
    /// The peer's address.
    pub peer: Address,
}

/// An authenticator's refusal, with the reason the client is told (in a
/// `deny` frame, then [`Error::AuthRejected`]) and the server reports
/// ([`ServerEvent::AuthRejected`](crate::ServerEvent::AuthRejected)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    reason: String,
}

impl Reject {
    /// A refusal for `reason` (sent to the client: say what, not secrets).
    pub fn new(reason: impl Into<String>) -> Self {
        Reject {
            reason: reason.into(),
        }
    }

    /// The reason.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl From<&str> for Reject {
    fn from(reason: &str) -> Self {
        Reject::new(reason)
    }
}

impl From<String> for Reject {
    fn from(reason: String) -> Self {
        Reject::new(reason)
    }
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Who an authenticated peer is: what the server's authenticator attached
/// when it accepted the credentials (any type), read by handlers through
/// [`Socket::auth_identity`](crate::Socket::auth_identity),
/// [`Router::auth_identity`](crate::Router::auth_identity) and
/// [`Peer::auth_identity`](crate::Peer::auth_identity).
///
/// ```
/// let identity = nmsg::AuthIdentity::new(String::from("ann"));
/// assert_eq!(identity.get::<String>().map(String::as_str), Some("ann"));
/// assert!(identity.get::<u32>().is_none());
/// ```
pub struct AuthIdentity(Box<dyn Any + Send + Sync>);

impl AuthIdentity {
    /// An identity holding `value`.
    pub fn new<T: Any + Send + Sync>(value: T) -> Self {
        AuthIdentity(Box::new(value))
    }

    /// The value, if it is a `T`.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl std::fmt::Debug for AuthIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthIdentity").finish_non_exhaustive()
    }
}

/// A client's credentials closure, asked on every connection.
pub(crate) type CredentialsFn =
    Arc<dyn Fn() -> BoxFuture<'static, Result<Value, Error>> + Send + Sync>;

/// Wraps a closure that gives something serializable.
pub(crate) fn credentials_fn<F, T>(f: F) -> CredentialsFn
where
    F: Fn() -> T + Send + Sync + 'static,
    T: serde::Serialize,
{
    Arc::new(move || {
        let value = crate::to_value(&f());
        Box::pin(std::future::ready(value))
    })
}

/// Wraps an async closure that gives something serializable.
pub(crate) fn credentials_async_fn<F, Fut, T>(f: F) -> CredentialsFn
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, Error>> + Send + 'static,
    T: serde::Serialize,
{
    Arc::new(move || {
        let fut = f();
        Box::pin(async move { crate::to_value(&fut.await?) })
    })
}

/// A server's authenticator.
pub(crate) type Authenticator = Arc<
    dyn Fn(AuthRequest) -> BoxFuture<'static, Result<Option<AuthIdentity>, Reject>> + Send + Sync,
>;

/// A server's authentication: its check and its bounds.
pub(crate) struct ServerAuth {
    pub(crate) check: Authenticator,
    pub(crate) timeout: Duration,
    pub(crate) max_hello: usize,
}

impl ServerAuth {
    /// The verdict on a hello's credentials `k` (none: rejected), within
    /// what is left of the auth timeout since `begun`.
    pub(crate) async fn verdict(
        &self,
        k: Option<Value>,
        peer: &Address,
        begun: tokio::time::Instant,
    ) -> Result<Option<AuthIdentity>, Reject> {
        let Some(credentials) = k else {
            return Err(Reject::new(
                "the hello has no credentials, and this server requires authentication \
                 (give the client credentials)",
            ));
        };
        let request = AuthRequest {
            credentials,
            peer: peer.clone(),
        };
        let left = self.timeout.saturating_sub(begun.elapsed());
        match tokio::time::timeout(left, (self.check)(request)).await {
            Ok(verdict) => verdict,
            Err(_) => Err(Reject::new(format!(
                "the server's authenticator did not answer within {:?} (auth_timeout)",
                self.timeout
            ))),
        }
    }
}

/// How a plain client's authentication hello failed.
#[derive(Debug)]
pub(crate) enum HelloFailed {
    /// The server said `deny`.
    Rejected(Error),
    /// Anything else: no answer, a stream that broke.
    Other(String),
}

impl std::fmt::Display for HelloFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HelloFailed::Rejected(e) => e.fmt(f),
            HelloFailed::Other(s) => f.write_str(s),
        }
    }
}

/// A plain client's handshake (a client with credentials, without
/// sessions): writes `{"x":"hello","v":1,"p":1,"k":credentials}` and reads
/// the answer, a welcome without a session or a deny, within `timeout`.
/// Reads no more than that one message: what follows is the connection's.
pub(crate) async fn plain_hello(
    stream: &mut BoxStream,
    k: Value,
    codec: &str,
    timeout: Duration,
) -> Result<(), HelloFailed> {
    let form = Form::of(codec);
    let exchange = async {
        let mut out = BytesMut::new();
        let hello = Ext::Hello {
            s: None,
            n: 0,
            k: Some(k),
            plain: true,
        };
        wire::put(form, &hello, &mut out);
        stream.write_all(&out).await?;
        stream.flush().await?;
        let mut buf = Vec::new();
        let whole = read_first(stream, &mut buf, DEFAULT_MAX_CREDENTIALS_SIZE).await?;
        Ok::<_, std::io::Error>(whole.then_some(buf))
    };
    let unanswered = || {
        HelloFailed::Other(format!(
            "the server did not answer the authentication hello within {timeout:?}: it does \
             not ask for authentication (start the client without credentials, or the \
             server with `.authenticate(..)`)"
        ))
    };
    let buf = match tokio::time::timeout(timeout, exchange).await {
        Err(_) => return Err(unanswered()),
        Ok(Err(e)) => {
            return Err(HelloFailed::Other(format!(
                "the connection ended during the authentication hello: {e}"
            )))
        }
        Ok(Ok(None)) => return Err(unanswered()),
        Ok(Ok(Some(buf))) => buf,
    };
    let payload = &buf[PREFIX_LEN..];
    match wire::is_ext(payload).then(|| wire::decode(form, payload)) {
        Some(Some(Ext::Admit)) => Ok(()),
        Some(Some(Ext::Deny(reason))) => Err(HelloFailed::Rejected(Error::AuthRejected { reason })),
        Some(Some(Ext::Welcome { .. })) => Err(HelloFailed::Other(
            "the server answered the authentication hello with a session: a server should \
             not start a session for a plain client"
                .into(),
        )),
        _ => Err(unanswered()),
    }
}

/// Writes `ext` on `stream` (a server's welcome or deny, before the
/// connection is served), within `timeout`; for a deny, then closes.
pub(crate) async fn write_ext(
    stream: &mut BoxStream,
    codec: &str,
    ext: &Ext,
    timeout: Duration,
) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    wire::put(Form::of(codec), ext, &mut out);
    let close = matches!(ext, Ext::Deny(_));
    let write = async {
        stream.write_all(&out).await?;
        if close {
            stream.shutdown().await?;
        } else {
            stream.flush().await?;
        }
        Ok(())
    };
    tokio::time::timeout(timeout, write)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}
