//! A connector that breaks its connections on purpose: after a chosen
//! number of bytes in either direction, at once on request, or by going
//! silent without closing (a half-open connection).

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use nmsg::transport::memory::{MemoryConnector, Network};
use nmsg::transport::{Address, BoxFuture, BoxStream, Connector};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

/// Where a connection is cut: after this many bytes read by the client
/// (`Read`) or written by it (`Write`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    Read(usize),
    Write(usize),
}

/// What the live connection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Open,
    /// Fails every read and write (the client's end is dropped then, and
    /// the server sees the end of the stream).
    Broken,
    /// Takes writes and drops them, never gives a read: a half-open link.
    Silent,
}

#[derive(Default)]
struct Shared {
    plans: VecDeque<Cut>,
    live: Vec<Arc<Mutex<State>>>,
    refuse: bool,
    connections: usize,
}

struct State {
    mode: Mode,
    cut: Option<Cut>,
    read: usize,
    written: usize,
    wakers: Vec<Waker>,
}

impl State {
    fn set(&mut self, mode: Mode) {
        self.mode = mode;
        for w in self.wakers.drain(..) {
            w.wake();
        }
    }
}

/// A memory connector whose connections break as planned.
#[derive(Clone)]
pub struct Cutter {
    inner: MemoryConnector,
    shared: Arc<Mutex<Shared>>,
}

impl Cutter {
    pub fn new(net: &Network, name: &str) -> Self {
        Cutter {
            inner: net.connector(name),
            shared: Arc::default(),
        }
    }

    /// The next connections are cut at these points, one each, in order.
    pub fn plan(&self, cuts: impl IntoIterator<Item = Cut>) {
        self.shared.lock().unwrap().plans.extend(cuts);
    }

    /// Breaks the live connections now.
    pub fn break_now(&self) {
        self.set_all(Mode::Broken);
    }

    /// Makes the live connections silent, without closing them.
    pub fn silence(&self) {
        self.set_all(Mode::Silent);
    }

    /// New connections are refused (true) or made (false).
    pub fn refuse(&self, refuse: bool) {
        self.shared.lock().unwrap().refuse = refuse;
    }

    /// Connections made so far.
    pub fn connections(&self) -> usize {
        self.shared.lock().unwrap().connections
    }

    fn set_all(&self, mode: Mode) {
        let live = self.shared.lock().unwrap().live.clone();
        for state in live {
            state.lock().unwrap().set(mode);
        }
    }
}

impl Connector for Cutter {
    fn connect(&self) -> BoxFuture<'_, io::Result<(BoxStream, Address)>> {
        Box::pin(async move {
            if self.shared.lock().unwrap().refuse {
                return Err(io::ErrorKind::ConnectionRefused.into());
            }
            let (stream, address) = self.inner.connect().await?;
            // The memory connector's streams are duplex streams.
            let stream: BoxStream = stream;
            let state = {
                let mut shared = self.shared.lock().unwrap();
                shared.connections += 1;
                let state = Arc::new(Mutex::new(State {
                    mode: Mode::Open,
                    cut: shared.plans.pop_front(),
                    read: 0,
                    written: 0,
                    wakers: Vec::new(),
                }));
                shared.live.push(state.clone());
                state
            };
            Ok((
                Box::new(CutStream {
                    inner: stream,
                    state,
                }) as BoxStream,
                address,
            ))
        })
    }

    fn address(&self) -> String {
        self.inner.address()
    }
}

struct CutStream {
    inner: BoxStream,
    state: Arc<Mutex<State>>,
}

fn broken() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "cut by the test")
}

impl AsyncRead for CutStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut state = this.state.lock().unwrap();
        match state.mode {
            Mode::Broken => return Poll::Ready(Err(broken())),
            Mode::Silent => {
                if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    state.wakers.push(cx.waker().clone());
                }
                return Poll::Pending;
            }
            Mode::Open => {}
        }
        state.wakers.push(cx.waker().clone());
        if state.wakers.len() > 8 {
            state.wakers.drain(..4);
        }
        let allowed = match state.cut {
            Some(Cut::Read(n)) => {
                if state.read >= n {
                    state.set(Mode::Broken);
                    return Poll::Ready(Err(broken()));
                }
                n - state.read
            }
            _ => usize::MAX,
        };
        let room = buf.remaining().min(allowed);
        let mut scratch = vec![0u8; room];
        let mut limited = ReadBuf::new(&mut scratch);
        drop(state);
        std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut limited))?;
        let got = limited.filled().len();
        buf.put_slice(limited.filled());
        this.state.lock().unwrap().read += got;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for CutStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut state = this.state.lock().unwrap();
        match state.mode {
            Mode::Broken => return Poll::Ready(Err(broken())),
            Mode::Silent => return Poll::Ready(Ok(data.len())),
            Mode::Open => {}
        }
        let allowed = match state.cut {
            Some(Cut::Write(n)) => {
                if state.written >= n {
                    state.set(Mode::Broken);
                    return Poll::Ready(Err(broken()));
                }
                n - state.written
            }
            _ => usize::MAX,
        };
        drop(state);
        let len = data.len().min(allowed);
        let n = std::task::ready!(Pin::new(&mut this.inner).poll_write(cx, &data[..len]))?;
        this.state.lock().unwrap().written += n;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.state.lock().unwrap().mode != Mode::Open {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// Keeps the type of the memory stream in view (the connector boxes it).
pub type Duplex = DuplexStream;
