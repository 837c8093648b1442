//! A server's side of the handshake: the first message of a new connection
//! decides whether it is a session connection (a `hello`) or a plain one
//! (anything else, or nothing within the hello wait).

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use crate::framing::PREFIX_LEN;
use crate::transport::BoxStream;

use super::wire::{self, Ext, Form};

/// The largest first message taken for a possible `hello` without
/// authentication: a larger one is a plain connection's, known from its
/// length prefix alone. (With authentication the hello carries credentials:
/// [`ServerBuilder::max_credentials_size`](crate::ServerBuilder::max_credentials_size).)
pub(crate) const MAX_HELLO: usize = 1024;

/// What the first message of a connection said.
pub(crate) enum First {
    /// A `hello`: resume session `s` (having received `n` messages), or a
    /// new session.
    Hello {
        s: Option<String>,
        n: u64,
        /// Credentials, if the hello carries some.
        k: Option<rmpv::Value>,
        /// A plain connection that authenticates (`"p":1`): no session.
        plain: bool,
        stream: BoxStream,
    },
    /// A plain connection: its stream, with what was read of it put back.
    Plain(BoxStream),
    /// No whole first message within the wait: a plain connection whose
    /// client has said nothing yet.
    Silent(BoxStream),
    /// The stream ended or failed before a whole first message.
    Gone,
}

/// Reads the first message of `stream`, within `wait`: no more than one
/// message (a hello of at most `max` bytes), so that nothing after it is read.
pub(crate) async fn first_message(
    mut stream: BoxStream,
    wait: std::time::Duration,
    codec: &str,
    max: usize,
) -> First {
    let mut buf = Vec::new();
    let read = tokio::time::timeout(wait, read_first(&mut stream, &mut buf, max)).await;
    let silent = match read {
        // Nothing whole came: there is nothing to serve.
        Ok(Err(_)) => return First::Gone,
        Ok(Ok(true)) => {
            let payload = &buf[PREFIX_LEN..];
            if wire::is_ext(payload) {
                if let Some(Ext::Hello { s, n, k, plain }) = wire::decode(Form::of(codec), payload)
                {
                    return First::Hello {
                        s,
                        n,
                        k,
                        plain,
                        stream,
                    };
                }
            }
            false
        }
        Ok(Ok(false)) => false,
        Err(_) => true,
    };
    let stream = Box::new(Rewind {
        pre: buf,
        at: 0,
        inner: stream,
    });
    if silent {
        First::Silent(stream)
    } else {
        First::Plain(stream)
    }
}

/// Reads into `buf` up to the end of the first message; `true` when it is
/// whole and small enough to be a hello, `false` when its prefix says it is
/// larger (then only the prefix was read). Bytes read stay in `buf` if the
/// future is dropped midway.
pub(crate) async fn read_first<S: AsyncRead + Unpin + ?Sized>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<bool> {
    let mut want = PREFIX_LEN;
    loop {
        if buf.len() == PREFIX_LEN && want == PREFIX_LEN {
            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if len == 0 || len > max {
                return Ok(false);
            }
            want = PREFIX_LEN + len;
        }
        if buf.len() == want {
            return Ok(true);
        }
        let mut chunk = [0u8; MAX_HELLO];
        let room = (want - buf.len()).min(MAX_HELLO);
        let n = stream.read(&mut chunk[..room]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A stream whose first bytes were read already: they are read again first.
struct Rewind {
    pre: Vec<u8>,
    at: usize,
    inner: BoxStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.pre.len() {
            let n = (this.pre.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.pre[this.at..this.at + n]);
            this.at += n;
            if this.at == this.pre.len() {
                this.pre = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
